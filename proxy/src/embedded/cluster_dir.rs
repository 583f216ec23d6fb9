//! The cluster's directory on disk: which OS user owns it, creating it, writing private
//! files into it, and reading the end of the logs the server writes there.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Gid, Uid, User};

use super::{io_err, EmbeddedError, SUPERUSER};

const LOG_TAIL_LINES: usize = 30;

/// Who the server runs as: PostgreSQL refuses root, so root borrows the `postgres` user, or
/// `nobody` on a machine that has no PostgreSQL installed (and so no `postgres` user).
pub(super) struct RunAs {
    ids: Option<(Uid, Gid)>,
}

impl RunAs {
    pub(super) fn detect() -> Result<RunAs, EmbeddedError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(RunAs { ids: None });
        }
        for name in [SUPERUSER, "nobody"] {
            match User::from_name(name) {
                Ok(Some(user)) => {
                    return Ok(RunAs {
                        ids: Some((user.uid, user.gid)),
                    })
                }
                Ok(None) => {}
                Err(errno) => {
                    return Err(EmbeddedError::Io {
                        what: format!("looking up the {name} OS user"),
                        source: errno.into(),
                    })
                }
            }
        }
        Err(EmbeddedError::NoPostgresUser)
    }

    /// A command running `program` in `dir` as the server user.
    pub(super) fn command(&self, program: &Path, dir: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(dir);
        if let Some((uid, gid)) = self.ids {
            command.uid(uid.as_raw()).gid(gid.as_raw()).env("HOME", dir);
        }
        command
    }

    fn chown(&self, path: &Path) -> io::Result<()> {
        match self.ids {
            Some((uid, gid)) => {
                std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
            }
            None => Ok(()),
        }
    }
}

pub(super) fn make_cluster_dir(run_as: &RunAs) -> Result<PathBuf, EmbeddedError> {
    let base = std::path::absolute(std::env::temp_dir())
        .map_err(io_err("finding the temporary directory"))?;
    loop {
        let name = format!(
            "tandem-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let dir = base.join(name);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(format!("creating {}", dir.display()))(e)),
        }
        if let Err(e) = run_as.chown(&dir) {
            let _ = fs::remove_dir(&dir);
            return Err(io_err(format!(
                "giving {} to the postgres user",
                dir.display()
            ))(e));
        }
        return Ok(dir);
    }
}

/// Writes a file only the server user may read, as PostgreSQL demands for `server.key`.
pub(super) fn write_private(
    run_as: &RunAs,
    path: &Path,
    contents: &str,
) -> Result<(), EmbeddedError> {
    let what = || format!("writing {}", path.display());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(what()))?;
    file.write_all(contents.as_bytes())
        .map_err(io_err(what()))?;
    run_as.chown(path).map_err(io_err(what()))
}
pub(super) fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

pub(super) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

pub(super) fn log_tail(path: &Path, offset: u64) -> String {
    tail(&read_from(path, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let tail = tail(&text);
        assert!(tail.starts_with(&format!("line {}", 100 - LOG_TAIL_LINES)));
        assert!(tail.ends_with("line 99"));
    }
}
