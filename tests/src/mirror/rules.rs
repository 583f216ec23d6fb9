//! Dual-write rules for the tests: `[[rule]]` tables built as TOML, parsed through the
//! operator's own config path, and proxies started with them one at a time.

use tandem::config::Config;
use tandem::RunningProxy;

use crate::{proxy_config, start_proxy_with};

/// One `[[rule]]`, written as TOML so it goes through the same parsing as a config file.
#[derive(Debug, Clone)]
pub struct RuleToml {
    /// Legacy table (`public.x`).
    pub table: String,
    /// Target table, when not the default `<table>_v2`.
    pub target: Option<String>,
    /// `off`, `dual_write`...
    pub mode: String,
    /// Key columns; empty means the legacy primary key plus the target's partition key.
    pub key: Vec<String>,
    /// `fail` or `record`.
    pub on_mirror_error: String,
    /// Target-only columns and their expressions.
    pub set: Vec<(String, String)>,
    /// Share of reads sampled for shadow comparison.
    pub sample_rate: f64,
    /// Create a missing target partition on a mirrored write's 23514.
    pub auto_partition: bool,
    /// The guard's policy, when not the default (`mirror`).
    pub guard: Option<String>,
    /// Legacy columns left behind on purpose.
    pub drop_columns: Vec<String>,
    /// Legacy triggers the target does not need.
    pub drop_triggers: Vec<String>,
}

impl RuleToml {
    /// A `dual_write` rule on `public.<table>` with the default target, key and policy.
    pub fn dual_write(table: &str) -> Self {
        Self {
            table: format!("public.{table}"),
            target: None,
            mode: "dual_write".into(),
            key: Vec::new(),
            on_mirror_error: "fail".into(),
            set: Vec::new(),
            sample_rate: 0.0,
            auto_partition: false,
            guard: None,
            drop_columns: Vec::new(),
            drop_triggers: Vec::new(),
        }
    }

    /// Declares legacy triggers the target does not need.
    pub fn drop_triggers(mut self, triggers: &[&str]) -> Self {
        self.drop_triggers = triggers.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Declares legacy columns left behind on purpose.
    pub fn drop_columns(mut self, columns: &[&str]) -> Self {
        self.drop_columns = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Sets the guard's policy (`mirror`, `fail`, `record`, `off`).
    pub fn guard(mut self, guard: &str) -> Self {
        self.guard = Some(guard.to_string());
        self
    }

    /// Sets the target table (schema-qualified).
    pub fn target(mut self, target: &str) -> Self {
        self.target = Some(target.to_string());
        self
    }

    /// Sets the key columns.
    pub fn key(mut self, key: &[&str]) -> Self {
        self.key = key.iter().map(|k| k.to_string()).collect();
        self
    }

    /// Sets the mode (`off`, `dual_write`, ...).
    pub fn mode(mut self, mode: &str) -> Self {
        self.mode = mode.to_string();
        self
    }

    /// Uses the `record` policy.
    pub fn record(mut self) -> Self {
        self.on_mirror_error = "record".into();
        self
    }

    /// Sets the shadow-read sample rate.
    pub fn sample(mut self, rate: f64) -> Self {
        self.sample_rate = rate;
        self
    }

    /// Adds a target-only column filled by `expr`.
    pub fn set(mut self, column: &str, expr: &str) -> Self {
        self.set.push((column.to_string(), expr.to_string()));
        self
    }

    /// The `[[rule]]` table.
    pub fn to_toml(&self) -> String {
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        let mut out = format!(
            "[[rule]]\ntable = {}\nmode = {}\non_mirror_error = {}\nkey = {}\n",
            toml_str(&self.table),
            toml_str(&self.mode),
            toml_str(&self.on_mirror_error),
            list(self.key.iter().map(|k| toml_str(k)).collect()),
        );
        out.push_str(&format!("sample_rate = {}\n", self.sample_rate));
        out.push_str(&format!("auto_partition = {}\n", self.auto_partition));
        if let Some(target) = &self.target {
            out.push_str(&format!("target = {}\n", toml_str(target)));
        }
        if let Some(guard) = &self.guard {
            out.push_str(&format!("guard = {}\n", toml_str(guard)));
        }
        if !self.drop_triggers.is_empty() {
            out.push_str(&format!(
                "drop_triggers = {}\n",
                list(self.drop_triggers.iter().map(|c| toml_str(c)).collect())
            ));
        }
        if !self.drop_columns.is_empty() {
            out.push_str(&format!(
                "drop_columns = {}\n",
                list(self.drop_columns.iter().map(|c| toml_str(c)).collect())
            ));
        }
        if !self.set.is_empty() {
            let pairs = self
                .set
                .iter()
                .map(|(c, e)| format!("[{}, {}]", toml_str(c), toml_str(e)))
                .collect();
            out.push_str(&format!("set = {}\n", list(pairs)));
        }
        out
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The test proxy config (upstream = the test database) with these rules, parsed and
/// validated as a config file would be.
pub fn config_with(rules: &[RuleToml]) -> Config {
    let text: String = rules.iter().map(|r| r.to_toml() + "\n").collect();
    let mut config = proxy_config();
    config.rules = Config::parse(&text, "dual-write test rules")
        .unwrap_or_else(|e| panic!("test rules do not parse: {e}\n{text}"))
        .rules;
    // Every test proxy gets its own rule store, so tests sharing the server never see
    // each other's rules (a fleet test shares one on purpose).
    config.store.schema = crate::unique("tandem_store");
    config
}

/// Serializes proxy starts in the dual-write tests. Proxies that install Tandem's support
/// objects (`tandem.drift`...) on one server at the same moment race in the catalog;
/// `proxies_with_rules_start_together` tests that on its own, so that every other test
/// fails only for what it is about.
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a proxy with rules, one start at a time (see [`STARTING`]).
pub async fn start_ruled_proxy(config: Config) -> RunningProxy {
    let _one_at_a_time = STARTING.lock().await;
    start_proxy_with(config).await
}

/// Waits (at most 15 s) until `proxy` has applied `mode` for its first rule.
pub async fn wait_for_mode(proxy: &RunningProxy, mode: tandem_rules::Mode) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let watch = proxy
        .watch
        .as_ref()
        .expect("a ruled proxy watches its store");
    while watch.current().set.rules.first().map(|r| r.rule.mode) != Some(mode) {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never applied {mode}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
