//! Where downloaded PostgreSQL programs are kept, and how a download gets there: unpacked
//! into a scratch directory beside its final place and renamed into it in one step, so a
//! half-finished download (a killed test run, a full disk) is never mistaken for a good one,
//! and two processes fetching at once both end up using one complete copy.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{io_err, EmbeddedError};

/// The cache root: `TANDEM_CACHE_DIR`, else `/var/cache/tandem` for root (the server runs as
/// another user, who cannot read root's home), else `$XDG_CACHE_HOME/tandem` or
/// `~/.cache/tandem`.
pub fn cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("TANDEM_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/cache/tandem");
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("tandem");
    }
    match var("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("tandem"),
        None => std::env::temp_dir().join("tandem-cache"),
    }
}

/// Makes `dir` and its parents, readable by everyone (the server user reads the binaries).
pub(super) fn make_dir(dir: &Path) -> Result<(), EmbeddedError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io_err(format!("creating {}", dir.display())))
}

/// Returns `dir`, first filling it with `fill` when it does not exist yet.
///
/// `fill` works in a scratch directory beside `dir` that is renamed to `dir` only when it
/// succeeded; another process that finished first wins and our copy is discarded.
pub(super) fn ensure_dir(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), EmbeddedError>,
) -> Result<PathBuf, EmbeddedError> {
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    make_dir(parent)?;
    let name = dir.file_name().unwrap_or(OsStr::new("download"));
    let scratch = parent.join(format!(
        ".{}.partial-{}-{:08x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    make_dir(&scratch)?;
    if let Err(error) = fill(&scratch) {
        let _ = fs::remove_dir_all(&scratch);
        return Err(error);
    }
    match fs::rename(&scratch, dir) {
        Ok(()) => Ok(dir.to_path_buf()),
        Err(_) if dir.is_dir() => {
            let _ = fs::remove_dir_all(&scratch);
            Ok(dir.to_path_buf())
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&scratch);
            Err(io_err(format!("moving a download into {}", dir.display()))(
                e,
            ))
        }
    }
}

/// Runs a set-up command to completion; a failure carries what it printed.
pub(super) fn run(command: &mut Command) -> Result<Vec<u8>, EmbeddedError> {
    let what = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {what}")))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(EmbeddedError::Fetch {
        what,
        output: format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout).trim_end(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        )
        .trim()
        .to_owned(),
    })
}

/// Whether a program can be started (it is on PATH and answers `--version`).
pub(super) fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `text` as one single-quoted `sh` word.
pub(super) fn sh_quote(text: &OsStr) -> String {
    format!("'{}'", text.to_string_lossy().replace('\'', r"'\''"))
}

/// Tells the user, once per download, what is being fetched and from where: through the
/// log when one is set up (the demo), else straight to stderr, not with `eprintln!`, so that
/// a test run's output capture does not hide why the first run waits.
pub(super) fn announce(what: &str) {
    use std::io::Write;
    if tracing::dispatcher::has_been_set() {
        tracing::info!("{what}");
    } else {
        let _ = writeln!(std::io::stderr(), "tandem: {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_nothing_behind() {
        let base = std::env::temp_dir().join(format!("tandem-cache-test-{}", std::process::id()));
        let target = base.join("thing");
        let result = ensure_dir(&target, |scratch| {
            fs::write(scratch.join("half"), "x").map_err(io_err("writing"))?;
            Err(EmbeddedError::Fetch {
                what: "test".into(),
                output: "boom".into(),
            })
        });
        assert!(result.is_err());
        assert!(!target.exists());
        assert_eq!(fs::read_dir(&base).map(|d| d.count()).unwrap_or(0), 0);
        let made = ensure_dir(&target, |scratch| {
            fs::write(scratch.join("whole"), "x").map_err(io_err("writing"))
        });
        assert!(made.is_ok_and(|dir| dir.join("whole").is_file()));
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(sh_quote(OsStr::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
