//! Finding PgBouncer, and fetching it when the machine has none (for the topology tests).
//!
//! As with `psql` (see [`super::clients`]): on a Debian-like machine without it, `apt-get
//! download` (nothing installed, nothing on the system changes) of `pgbouncer` and the
//! libraries it links against that the machine lacks (`libevent`, `libc-ares`), unpacked
//! with `dpkg-deb -x` into the cache and run through a wrapper script that sets
//! `LD_LIBRARY_PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::binaries::{is_executable, path_dirs};
use super::cache::{announce, cache_dir, ensure_dir, have, make_dir, run};
use super::debian;
use super::EmbeddedError;

/// Where distributions install PgBouncer, besides `PATH`.
const COMMON_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"];

/// The PgBouncer program: on `PATH` or in a common directory, else fetched from Debian's
/// packages into the cache (once).
pub fn pgbouncer_program() -> Result<PathBuf, EmbeddedError> {
    let installed = path_dirs()
        .into_iter()
        .chain(COMMON_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join("pgbouncer"))
        .find(|path| is_executable(path));
    if let Some(path) = installed {
        return Ok(path);
    }
    if !have("apt-get") {
        return Err(EmbeddedError::Fetch {
            what: "fetching pgbouncer".into(),
            output: "it is not installed and this is not a Debian-like machine (no apt-get); \
                     install PgBouncer"
                .into(),
        });
    }
    let dir = cache_dir().join("pgbouncer");
    let dir = ensure_dir(&dir, |scratch| {
        announce(&format!(
            "downloading pgbouncer from Debian's packages into {} (once)",
            dir.display()
        ));
        let mut packages = vec!["pgbouncer".to_string()];
        packages.extend(library_dependencies("pgbouncer"));
        let mut download = Command::new("apt-get");
        download
            .args(["download", "-q"])
            .args(&packages)
            .current_dir(scratch);
        if run(&mut download).is_err() && nix::unistd::geteuid().is_root() {
            announce("updating apt's package lists to find pgbouncer");
            run(Command::new("apt-get").args(["update", "-q"]))?;
            run(&mut download)?;
        }
        debian::unpack(scratch)?;
        write_wrapper(scratch, &dir)
    })?;
    Ok(dir.join("bin").join("pgbouncer"))
}

/// The `lib*` packages `package` depends on (apt's view of this machine's release), the C
/// library excepted.
fn library_dependencies(package: &str) -> Vec<String> {
    Command::new("apt-cache")
        .args(["depends", package])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .map(|d| d.trim_matches(|c| c == '<' || c == '>').to_owned())
                .filter(|d| d.starts_with("lib") && !d.starts_with("libc6"))
                .collect()
        })
        .unwrap_or_default()
}

/// `bin/pgbouncer`, a script running the unpacked program with the unpacked libraries. It
/// names `final_dir` (where the scratch directory is about to be renamed).
fn write_wrapper(scratch: &Path, final_dir: &Path) -> Result<(), EmbeddedError> {
    let lib_path = debian::library_path(scratch, final_dir, None)?;
    let real = Path::new("root/usr/sbin/pgbouncer");
    if !is_executable(&scratch.join(real)) {
        return Err(EmbeddedError::Fetch {
            what: "unpacking pgbouncer".into(),
            output: format!("the package has no {}", real.display()),
        });
    }
    let bin = scratch.join("bin");
    make_dir(&bin)?;
    debian::write_wrapper(
        &bin.join("pgbouncer"),
        "pgbouncer from Debian's packages",
        &lib_path,
        &final_dir.join(real),
    )
}
