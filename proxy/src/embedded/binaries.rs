//! Finding the PostgreSQL server binaries (`initdb`, `postgres`, and beside them `psql`):
//! on PATH first, then under Debian's `/usr/lib/postgresql/<version>/bin`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::EmbeddedError;

/// Where the server binaries are, and whether that came from PATH.
pub(super) struct Binaries {
    pub(super) initdb: PathBuf,
    pub(super) postgres: PathBuf,
    pub(super) bin_dir: Option<PathBuf>,
}

/// The first PATH directory holding both `initdb` and `postgres` (so they match), else the
/// newest `/usr/lib/postgresql/<version>/bin`, where Debian and Ubuntu put them.
pub(super) fn find_binaries() -> Result<Binaries, EmbeddedError> {
    let has_both =
        |dir: &Path| is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"));
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .filter(|p| p.is_absolute())
                .collect()
        })
        .unwrap_or_default();
    let found = |dir: &Path, bin_dir: Option<PathBuf>| Binaries {
        initdb: dir.join("initdb"),
        postgres: dir.join("postgres"),
        bin_dir,
    };
    if let Some(dir) = path_dirs.iter().find(|dir| has_both(dir)) {
        return Ok(found(dir, None));
    }
    let lib_dirs = versioned_bin_dirs(Path::new("/usr/lib/postgresql"));
    if let Some(dir) = lib_dirs.iter().find(|dir| has_both(dir)) {
        return Ok(found(dir, Some(dir.clone())));
    }
    let path_list: Vec<String> = path_dirs.iter().map(|p| p.display().to_string()).collect();
    Err(EmbeddedError::BinariesNotFound {
        searched: format!(
            "PATH ({}) and /usr/lib/postgresql/*/bin ({})",
            path_list.join(":"),
            if lib_dirs.is_empty() {
                "none exist".to_owned()
            } else {
                lib_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    })
}

/// `<root>/<version>/bin` for every numeric version directory, newest first.
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
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
}
