//! A Python with psycopg 3 for the client tests, set up once.
//!
//! When `python3` already imports psycopg it is used as it is. Otherwise `pip install
//! --target` puts `psycopg[binary]` (which carries its own libpq) into the cache beside the
//! PostgreSQL downloads, and the tests run `python3` with that directory on `PYTHONPATH`:
//! nothing is installed into the system's or the user's Python. This is set-up, like the
//! server download: it runs before any test logic, once per machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The psycopg requirement the client tests are written for.
const REQUIREMENT: &str = "psycopg[binary]>=3.1,<4";

/// A `python3` command that can `import psycopg`; panics with pip's output when it cannot
/// be set up (a failure, never a skip).
pub fn python_with_psycopg() -> Command {
    static SITE: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    let site = SITE.get_or_init(prepare);
    let mut command = Command::new("python3");
    match site {
        Ok(None) => {}
        Ok(Some(dir)) => {
            command.env("PYTHONPATH", dir);
        }
        Err(why) => panic!("cannot set up psycopg 3 for the client tests: {why}"),
    }
    command
}

/// `None` when the system python has psycopg, else the `--target` directory holding it.
fn prepare() -> Result<Option<PathBuf>, String> {
    if imports_psycopg(None) {
        return Ok(None);
    }
    let version = python_version()?;
    let dir = tandem::embedded::cache_dir()
        .join("python")
        .join(format!("psycopg3-py{version}"));
    if imports_psycopg(Some(&dir)) {
        return Ok(Some(dir));
    }
    let scratch = dir.with_file_name(format!(
        ".psycopg3-py{version}.partial-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    // Straight to stderr: the test harness's capture of eprintln! would hide it.
    let _ = writeln!(
        std::io::stderr(),
        "tandem tests: installing {REQUIREMENT} from PyPI into {} (once)",
        dir.display()
    );
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-input", "--target"])
        .arg(&scratch)
        .arg(REQUIREMENT)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(format!(
            "python3 -m pip install --target {} '{REQUIREMENT}' failed:\n{}{}",
            scratch.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if std::fs::rename(&scratch, &dir).is_err() {
        // Another process finished first; its copy is as good as ours.
        let _ = std::fs::remove_dir_all(&scratch);
    }
    if imports_psycopg(Some(&dir)) {
        Ok(Some(dir))
    } else {
        Err(format!(
            "psycopg was installed into {} but does not import",
            dir.display()
        ))
    }
}

fn imports_psycopg(site: Option<&Path>) -> bool {
    let mut command = Command::new("python3");
    command.args(["-c", "from psycopg import connect"]);
    if let Some(dir) = site {
        if !dir.is_dir() {
            return false;
        }
        command.env("PYTHONPATH", dir);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `3.11` for the python3 on PATH (packages with compiled parts are per version).
fn python_version() -> Result<String, String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
        ])
        .output()
        .map_err(|e| format!("python3 is needed for the psycopg client test: {e}"))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !version.is_empty() {
        Ok(version)
    } else {
        Err("python3 did not report its version".into())
    }
}
