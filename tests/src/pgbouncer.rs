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
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::unique;

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

/// The PgBouncer binary: installed, else fetched from Debian's packages into the cache
/// (see `tandem::embedded::pgbouncer_program`); panics with the reason when neither works.
pub fn find_pgbouncer() -> PathBuf {
    tandem::embedded::pgbouncer_program()
        .unwrap_or_else(|e| panic!("the topology tests need pgbouncer: {e}"))
}

/// The `postgres` OS user's ids when we are root (PgBouncer refuses to run as root).
fn run_as() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    // PgBouncer refuses to run as root: as `postgres` when there is one, else `nobody` (as
    // the embedded server does).
    let user = ["postgres", "nobody"]
        .into_iter()
        .find_map(|name| nix::unistd::User::from_name(name).ok().flatten())
        .expect("running as root, but there is neither a `postgres` nor a `nobody` OS user to run PgBouncer as");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("cannot find a free port")
        .port()
}
