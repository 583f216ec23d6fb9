//! A throwaway PgBouncer for the topology tests: in front of Tandem (transaction pooling) or
//! between Tandem and Postgres (session pooling).
//!
//! It listens on a free loopback port, with its config, auth file and log in a fresh temp
//! directory, and runs in the foreground as a child of the test. [`PgBouncer`]'s `Drop`
//! kills it (also when the test panics), and the child asks the kernel to kill it when the
//! test thread that started it dies, so a test process killed outright leaves no PgBouncer
//! behind either. PgBouncer refuses to run as root, so when the tests run as root it runs
//! as the `postgres` OS user, as the harness's Postgres does.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::unique;

/// Where PgBouncer is looked for after `PATH` (Debian installs it in `/usr/sbin`).
const COMMON_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];
/// How long PgBouncer may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// PgBouncer's `pool_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per client connection, reset (`server_reset_query`) on release.
    Session,
    /// A server connection per transaction: one client's transactions land on any of them.
    Transaction,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// A running PgBouncer; killed on drop.
pub struct PgBouncer {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// Its directory (config, auth file, log); removed on drop.
    dir: PathBuf,
    /// The foreground process.
    child: Child,
}

impl PgBouncer {
    /// Starts PgBouncer forwarding every database name to `127.0.0.1:server_port` (the same
    /// database name there), with trust authentication for `user`, `pool_size` server
    /// connections per database and user, and `pool_mode`.
    pub fn start(server_port: u16, user: &str, pool_mode: PoolMode, pool_size: u32) -> PgBouncer {
        let program = find_pgbouncer();
        let dir = std::env::temp_dir().join(unique("pgbouncer"));
        std::fs::create_dir_all(&dir).expect("cannot create PgBouncer's directory");
        let port = free_port();
        std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n"))
            .expect("cannot write PgBouncer's auth file");
        let ini = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {auth}\n\
             pool_mode = {mode}\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 200\n\
             server_reset_query = DISCARD ALL\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {log}\n\
             log_connections = 0\n\
             log_disconnections = 0\n\
             log_stats = 0\n",
            auth = dir.join("userlist.txt").display(),
            mode = pool_mode.as_str(),
            log = dir.join("pgbouncer.log").display(),
        );
        let ini_path = dir.join("pgbouncer.ini");
        std::fs::write(&ini_path, ini).expect("cannot write pgbouncer.ini");
        let mut command = Command::new(&program);
        command
            .arg(&ini_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = run_as() {
            for entry in ["", "userlist.txt", "pgbouncer.ini"] {
                std::os::unix::fs::chown(dir.join(entry), Some(uid), Some(gid))
                    .expect("cannot hand PgBouncer's directory to the postgres user");
            }
            command.uid(uid).gid(gid);
        }
        // SAFETY: prctl is async-signal-safe; it runs after the uid change, which would
        // otherwise clear the death signal again.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        let mut bouncer = PgBouncer { port, dir, child };
        bouncer.wait_ready();
        bouncer
    }

    /// Everything PgBouncer logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "PgBouncer exited during startup ({status}); its log:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PgBouncer did not accept connections within {} s; its log:\n{}",
                READY_TIMEOUT.as_secs(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The PgBouncer binary: on `PATH` or in a common directory; panics naming how to install
/// it when there is none.
pub fn find_pgbouncer() -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .chain(COMMON_DIRS.iter().copied())
        .map(|d| Path::new(d).join("pgbouncer"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "pgbouncer not found on PATH or in {}; the topology tests need it: install it \
                 with `apt-get install -y pgbouncer` (.ci/run does)",
                COMMON_DIRS.join(", ")
            )
        })
}

/// The `postgres` OS user's ids when we are root (PgBouncer refuses to run as root).
fn run_as() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres")
        .expect("cannot look up the postgres OS user")
        .expect(
            "running as root, but there is no `postgres` OS user to run PgBouncer as \
             (PgBouncer refuses to run as root); create one, e.g. `useradd --system postgres`",
        );
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("cannot find a free port")
        .port()
}
