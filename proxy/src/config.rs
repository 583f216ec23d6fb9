//! Tandem's configuration: the TOML file, flag overrides, and validation.
//!
//! A bad file must give one clear line naming the key and the reason (the binary exits 2),
//! so parsing keeps the TOML error's position and validation names keys the user wrote.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration, as read from `tandem.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the proxy listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The real server: `postgres://[user@]host[:port][/db]` or `host=... port=...`.
    /// Only its host, port and TLS settings are used; user and database come from each client.
    #[serde(default = "default_upstream")]
    pub upstream: String,
    /// Session threads: 0 = one per CPU, 1 = one event loop for everything, N = N threads.
    /// Each thread runs its sessions start to finish, so a round trip never crosses threads.
    #[serde(default)]
    pub workers: usize,
    /// Log filter (`info`, `debug`, `tandem=trace`...); `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Log lines as plain text (`text`, the default) or one JSON object per line (`json`).
    #[serde(default)]
    pub log_format: LogFormat,
    /// Client-facing TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// TLS towards the upstream.
    #[serde(default)]
    pub upstream_tls: UpstreamTlsConfig,
    /// Limits that protect the proxy and the upstream from bad or greedy clients.
    #[serde(default)]
    pub limits: Limits,
    /// Migration rules, one per legacy table (`[[rule]]` in the file). They only seed the
    /// rule store: a table that already has a row there keeps the stored rule.
    #[serde(default, rename = "rule")]
    pub rules: Vec<tandem_rules::Rule>,
    /// The rule store in the upstream database.
    #[serde(default)]
    pub store: StoreConfig,
    /// The admin console (database `tandem` on the same listener).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Shadow-read sampling.
    #[serde(default)]
    pub shadow: ShadowConfig,
    /// The Prometheus endpoint; off unless `[metrics]` names a `listen` address.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("\"{other}\" is not a log format; use text or json")),
        }
    }
}

/// The Prometheus text endpoint (see docs/metrics.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve `GET /metrics` on (`127.0.0.1:9187`); none = no endpoint.
    pub listen: Option<String>,
}

impl MetricsConfig {
    /// The endpoint's address, when one is configured.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.listen
            .as_deref()
            .map(|l| {
                l.parse().map_err(|e| ConfigError::Invalid {
                    key: "metrics.listen",
                    reason: format!("\"{l}\" is not an address like 127.0.0.1:9187 ({e})"),
                })
            })
            .transpose()
    }
}

/// Shadow-read sampling limits (the share sampled is each rule's `sample_rate`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowConfig {
    /// Reads waiting for comparison; when full, new samples are dropped (and counted).
    pub queue_size: usize,
    /// Samples kept per table in `<store>.shadow_samples`; older ones are pruned (each
    /// query shape keeps its newest `SHAPE_SAMPLES_KEPT` whatever the table's count).
    pub retention: i64,
    /// Per-shape coverage: read shapes are counted and the top ones compared at least
    /// `min_comparisons` times, besides the random share (docs/parity.md).
    pub coverage: bool,
    /// Shapes per table, by executions across the fleet, that coverage compares (and the
    /// parity gate's `--min-coverage` and `--max-slowdown` look at).
    pub top_k: i64,
    /// A shape executed at least this often is compared too, even outside the top K.
    pub min_executions: i64,
    /// Comparisons each covered shape gets.
    pub min_comparisons: i64,
    /// A comparison whose target time exceeds the legacy time by this factor records both
    /// plans (`EXPLAIN`, no ANALYZE) for the report.
    pub slowdown_factor: f64,
    /// How often each instance writes its shape counts to the store and reads back which
    /// shapes still need comparisons, in milliseconds.
    pub flush_ms: u64,
    /// Shapes one instance tracks at most; new shapes beyond it are counted as untracked.
    pub max_shapes: usize,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            queue_size: 256,
            retention: 10_000,
            coverage: true,
            top_k: 50,
            min_executions: 100,
            min_comparisons: 5,
            slowdown_factor: 2.0,
            flush_ms: 2_000,
            max_shapes: 5_000,
        }
    }
}

/// Who may use the admin console, authenticated by Tandem itself with SCRAM-SHA-256.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin user name.
    pub user: String,
    /// The password, or a PostgreSQL SCRAM-SHA-256 verifier (`SCRAM-SHA-256$...`).
    #[serde(default)]
    pub password: Option<String>,
    /// Name of an environment variable holding the password (or verifier).
    #[serde(default)]
    pub password_env: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_env", &self.password_env)
            .finish()
    }
}

impl AdminConfig {
    /// The SCRAM verifier for the configured password: parsed when it is one, derived
    /// (random salt, 4096 iterations, as PostgreSQL does) when it is a plain password.
    pub fn verifier(&self) -> Result<crate::control::admin::scram::Verifier, ConfigError> {
        let secret = match (&self.password, &self.password_env) {
            (Some(p), None) => p.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| ConfigError::Invalid {
                key: "admin.password_env",
                reason: format!("environment variable {var} is not set"),
            })?,
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "admin.password",
                    reason: "give password or password_env, not both".into(),
                })
            }
            (None, None) => {
                return Err(ConfigError::Invalid {
                    key: "admin.password",
                    reason: "the admin console needs password or password_env".into(),
                })
            }
        };
        if secret.is_empty() {
            return Err(ConfigError::Invalid {
                key: "admin.password",
                reason: "must not be empty".into(),
            });
        }
        if secret.starts_with("SCRAM-SHA-256$") {
            crate::control::admin::scram::Verifier::parse(&secret).map_err(|reason| {
                ConfigError::Invalid {
                    key: "admin.password",
                    reason,
                }
            })
        } else {
            Ok(crate::control::admin::scram::Verifier::from_password(
                &secret,
            ))
        }
    }
}

/// The rule store (`tandem.rules` in the upstream URL's database).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Use the store. Default: on when the file has `[[rule]]` entries or `[admin]`.
    /// Without it the proxy is a plain relay and needs no login of its own upstream.
    pub enabled: Option<bool>,
    /// How often each instance checks the store's version, in case a NOTIFY was missed (ms).
    pub poll_interval_ms: u64,
    /// The store's schema; its NOTIFY channel is `<schema>_rules`. Instances that share a
    /// schema share their rules.
    pub schema: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            poll_interval_ms: 1000,
            schema: "tandem".into(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:6432".into()
}
fn default_upstream() -> String {
    "postgres://postgres@127.0.0.1:5432/postgres".into()
}
fn default_log_level() -> String {
    "info".into()
}

/// Client-facing TLS: PEM certificate chain and private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Path to the PEM certificate chain.
    pub cert: PathBuf,
    /// Path to the PEM private key.
    pub key: PathBuf,
}

/// Upstream TLS mode, named after libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Never TLS.
    #[default]
    Disable,
    /// TLS when the server offers it, without verification.
    Prefer,
    /// TLS required, certificate not verified.
    Require,
    /// TLS required, certificate chain and host name verified against `ca`.
    VerifyFull,
}

/// TLS towards the upstream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// disable | prefer | require | verify-full.
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    /// PEM file of the CA(s) that sign the upstream's certificate (verify-full).
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// Limits. Every one is configurable; defaults suit a small production proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Client sessions at once; the next gets SQLSTATE 53300.
    pub max_clients: usize,
    /// Largest message body a client may send (bytes).
    pub max_message_bytes: usize,
    /// Largest startup packet (bytes); Postgres uses 10000.
    pub max_startup_packet_bytes: usize,
    /// Time a client has to finish TLS, startup and authentication (ms).
    pub startup_timeout_ms: u64,
    /// Close a client idle outside a transaction this long (ms); 0 = never.
    pub client_idle_timeout_ms: u64,
    /// Time to connect to the upstream (ms).
    pub upstream_connect_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long sessions may drain before they are closed (ms).
    pub shutdown_timeout_ms: u64,
    /// Bytes the shared plan cache may hold (statement texts plus their plans); 0 turns
    /// the cache off. Statements over 1/64 of it are never cached.
    pub plan_cache_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_clients: 1000,
            max_message_bytes: 256 * 1024 * 1024,
            max_startup_packet_bytes: 10_000,
            startup_timeout_ms: 15_000,
            client_idle_timeout_ms: 0,
            upstream_connect_timeout_ms: 5_000,
            shutdown_timeout_ms: 30_000,
            plan_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Startup timeout as a Duration.
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }
    /// Client idle timeout, if enabled.
    pub fn client_idle_timeout(&self) -> Option<Duration> {
        (self.client_idle_timeout_ms > 0)
            .then(|| Duration::from_millis(self.client_idle_timeout_ms))
    }
    /// Upstream connect timeout.
    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }
    /// Drain time on shutdown.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            upstream: default_upstream(),
            log_level: default_log_level(),
            log_format: LogFormat::default(),
            workers: 0,
            tls: None,
            upstream_tls: UpstreamTlsConfig::default(),
            limits: Limits::default(),
            rules: Vec::new(),
            store: StoreConfig::default(),
            admin: None,
            shadow: ShadowConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// Where the upstream lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddr {
    /// TCP host and port.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix-domain socket: the socket file's full path.
    Unix(PathBuf),
}

/// A configuration problem, always naming the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or a key has the wrong type or name.
    #[error("{path}:{line}: {key}: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// The key (dotted), or the line's text when none can be named.
        key: String,
        /// What the parser said.
        reason: String,
    },
    /// A value parsed but is not acceptable.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The key (dotted).
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| syntax_error(text, origin, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Whether the rule store is used (see [`StoreConfig::enabled`]).
    pub fn store_enabled(&self) -> bool {
        self.store
            .enabled
            .unwrap_or(!self.rules.is_empty() || self.admin.is_some())
    }

    /// Checks values that TOML types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.metrics.listen_addr()?;
        if let Some(admin) = &self.admin {
            if admin.user.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "admin.user",
                    reason: "must not be empty".into(),
                });
            }
            admin.verifier()?;
            if self.store.enabled == Some(false) {
                return Err(ConfigError::Invalid {
                    key: "store.enabled",
                    reason: "the admin console changes rules in the store; it cannot be off with [admin]".into(),
                });
            }
        }
        self.upstream_addr()?;
        let l = &self.limits;
        let positive = |key, v: u64| {
            if v == 0 {
                Err(ConfigError::Invalid {
                    key,
                    reason: "must be greater than 0".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("limits.max_clients", l.max_clients as u64)?;
        positive("limits.startup_timeout_ms", l.startup_timeout_ms)?;
        positive(
            "limits.upstream_connect_timeout_ms",
            l.upstream_connect_timeout_ms,
        )?;
        if l.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "limits.max_message_bytes",
                reason: format!("{} is too small; use at least 1024", l.max_message_bytes),
            });
        }
        if !(8..=1 << 20).contains(&l.max_startup_packet_bytes) {
            return Err(ConfigError::Invalid {
                key: "limits.max_startup_packet_bytes",
                reason: "must be between 8 and 1048576".into(),
            });
        }
        if let Some(tls) = &self.tls {
            for (key, p) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                if !p.exists() {
                    return Err(ConfigError::Invalid {
                        key,
                        reason: format!("file {} does not exist", p.display()),
                    });
                }
            }
        }
        if self.upstream_tls.mode == UpstreamTlsMode::VerifyFull && self.upstream_tls.ca.is_none() {
            return Err(ConfigError::Invalid {
                key: "upstream_tls.ca",
                reason: "verify-full needs a CA file".into(),
            });
        }
        let sh = &self.shadow;
        positive("shadow.flush_ms", sh.flush_ms)?;
        positive("shadow.max_shapes", sh.max_shapes as u64)?;
        positive("shadow.top_k", sh.top_k.max(0) as u64)?;
        positive("shadow.min_comparisons", sh.min_comparisons.max(0) as u64)?;
        positive("shadow.min_executions", sh.min_executions.max(0) as u64)?;
        if sh.slowdown_factor.is_nan() || sh.slowdown_factor < 1.0 {
            return Err(ConfigError::Invalid {
                key: "shadow.slowdown_factor",
                reason: format!("{} must be at least 1", sh.slowdown_factor),
            });
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if self.rules[..i].iter().any(|r| r.table == rule.table) {
                return Err(ConfigError::Invalid {
                    key: "rule.table",
                    reason: format!("two rules for table {}", rule.table),
                });
            }
        }
        if let Err(e) = tandem_rules::refuse_chains(&self.rules) {
            return Err(ConfigError::Invalid {
                key: "rule.target",
                reason: e.to_string(),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(ConfigError::Invalid {
                key: "log_level",
                reason: e.to_string(),
            });
        }
        Ok(())
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| ConfigError::Invalid {
            key: "listen",
            reason: format!(
                "\"{}\" is not an address like 127.0.0.1:6432 ({e})",
                self.listen
            ),
        })
    }

    /// The upstream's address.
    pub fn upstream_addr(&self) -> Result<UpstreamAddr, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            key: "upstream",
            reason,
        };
        let pg = tokio_postgres::Config::from_str(&self.upstream).map_err(|e| {
            // Not echoed: the string may hold a password.
            invalid(format!(
                "not a connection string libpq accepts ({}); write postgres://user@host:5432/db \
                 or host=... port=...",
                crate::error_text::chain(&e)
            ))
        })?;
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        match pg.get_hosts().first() {
            None => Ok(UpstreamAddr::Tcp {
                host: "127.0.0.1".into(),
                port,
            }),
            Some(tokio_postgres::config::Host::Tcp(host)) => Ok(UpstreamAddr::Tcp {
                host: host.clone(),
                port,
            }),
            Some(tokio_postgres::config::Host::Unix(dir)) => {
                Ok(UpstreamAddr::Unix(dir.join(format!(".s.PGSQL.{port}"))))
            }
        }
    }
}

fn syntax_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let line_no = text[..offset].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let table = text[..offset]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = match line.split_once('=') {
        Some((k, _)) if !line.starts_with('[') => {
            let k = k.trim().to_string();
            match table {
                Some(t) => format!("{t}.{k}"),
                None => k,
            }
        }
        _ => line.to_string(),
    };
    ConfigError::Syntax {
        path: origin.to_string(),
        line: line_no,
        key,
        reason: e.message().trim().replace('\n', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.listen_addr().unwrap().port(), 6432);
        assert_eq!(
            c.upstream_addr().unwrap(),
            UpstreamAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 5432
            }
        );
    }

    #[test]
    fn metrics_and_log_format_parse() {
        let c = Config::parse(
            "log_format = \"json\"\n[metrics]\nlisten = \"127.0.0.1:9187\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            c.metrics.listen_addr().unwrap(),
            Some("127.0.0.1:9187".parse().unwrap())
        );
        let d = Config::parse("", "t.toml").unwrap();
        assert_eq!(d.log_format, LogFormat::Text);
        assert_eq!(d.metrics.listen_addr().unwrap(), None);
        let e = Config::parse("log_format = \"yaml\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("log_format"), "{e}");
        let e = Config::parse("[metrics]\nlisten = \"nowhere\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("metrics.listen"), "{e}");
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("JSON ".parse::<LogFormat>().is_err());
    }

    #[test]
    fn full_file_parses() {
        let c = Config::parse(
            r#"
listen = "0.0.0.0:7000"
upstream = "postgres://u@db.example:6543/app"
[upstream_tls]
mode = "require"
[limits]
max_clients = 5
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.limits.max_clients, 5);
        assert_eq!(c.upstream_tls.mode, UpstreamTlsMode::Require);
        assert_eq!(
            c.upstream_addr().unwrap(),
            UpstreamAddr::Tcp {
                host: "db.example".into(),
                port: 6543
            }
        );
    }

    #[test]
    fn unix_socket_upstream() {
        let c = Config::parse("upstream = \"host=/tmp port=5433\"", "t.toml").unwrap();
        assert_eq!(
            c.upstream_addr().unwrap(),
            UpstreamAddr::Unix("/tmp/.s.PGSQL.5433".into())
        );
    }

    #[test]
    fn rules_parse_with_defaults() {
        let c = Config::parse(
            "[[rule]]\ntable = \"public.orders\"\nmode = \"dual_write\"\n\n[[rule]]\ntable = \"items\"\ntarget = \"items_shadow\"\nkey = [\"id\"]\non_mirror_error = \"record\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].target.to_string(), "public.orders_v2");
        assert_eq!(c.rules[1].target.to_string(), "public.items_shadow");
        let e = Config::parse("[[rule]]\ntable = \"t\"\nmode = \"sideways\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode"), "{e}");
    }

    #[test]
    fn a_rule_whose_table_is_another_rules_target_is_a_config_error() {
        let e = Config::parse(
            "[[rule]]\ntable = \"orders\"\n\n[[rule]]\ntable = \"orders_v2\"\ntarget = \"orders_v3\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rule.target"), "{e}");
        assert!(
            e.contains("table public.orders_v2 is the target of the rule for public.orders"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[limits]\nmax_clients = \"many\"\n", "t.toml").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("t.toml:2: limits.max_clients: "), "{s}");
        assert!(!s.contains('\n'), "{s}");

        let e = Config::parse("lisen = \"x\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen"), "{e}");

        let e = Config::parse("listen = \"nope\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config key `listen`"), "{e}");

        let e = Config::parse("[limits]\nmax_clients = 0\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.max_clients"), "{e}");

        let e = Config::parse("[upstream_tls]\nmode = \"verify-full\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream_tls.ca"), "{e}");
    }

    #[test]
    fn admin_passwords_come_plain_as_verifiers_or_from_the_environment() {
        let c = Config::parse("[admin]\nuser = \"ops\"\npassword = \"pw\"\n", "t").unwrap();
        assert!(c.store_enabled(), "[admin] turns the store on");
        assert!(
            !format!("{:?}", c.admin).contains("pw\""),
            "password redacted in Debug"
        );
        let verifier = postgres_protocol::password::scram_sha_256(b"pw");
        let c = Config::parse(
            &format!("[admin]\nuser = \"ops\"\npassword = \"{verifier}\"\n"),
            "t",
        )
        .unwrap();
        assert!(c.admin.unwrap().verifier().is_ok());
        std::env::set_var("TANDEM_TEST_ADMIN_PW_CFG", "from-env");
        let c = Config::parse(
            "[admin]\nuser = \"ops\"\npassword_env = \"TANDEM_TEST_ADMIN_PW_CFG\"\n",
            "t",
        );
        assert!(c.is_ok());
        for (text, key) in [
            (
                "[admin]\nuser = \"ops\"\npassword_env = \"TANDEM_TEST_NO_SUCH_VAR\"\n",
                "admin.password_env",
            ),
            ("[admin]\nuser = \"ops\"\n", "admin.password"),
            ("[admin]\nuser = \"\"\npassword = \"x\"\n", "admin.user"),
            (
                "[admin]\nuser = \"ops\"\npassword = \"SCRAM-SHA-256$bad\"\n",
                "admin.password",
            ),
            (
                "[admin]\nuser = \"ops\"\npassword = \"x\"\n[store]\nenabled = false\n",
                "store.enabled",
            ),
        ] {
            let e = Config::parse(text, "t").unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
