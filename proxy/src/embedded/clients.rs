//! Finding `psql` and `pgbench`, and fetching them when the machine has none.
//!
//! The npm server packages carry no client programs, so on a machine without PostgreSQL
//! they come from Debian's packages: `apt-get download` (no install, nothing on the system
//! changes) of `postgresql-client-<N>` (psql), `postgresql-<N>` (pgbench) and the readline
//! psql links against, unpacked with `dpkg-deb -x` into the cache. They run against the
//! libpq of the npm server package (self-contained, so no Kerberos or LDAP libraries are
//! needed) through small wrapper scripts that set `LD_LIBRARY_PATH`. Clients of one major
//! talk to servers of every supported major.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::binaries::{is_executable, path_dirs, versioned_bin_dirs};
use super::cache::{announce, cache_dir, ensure_dir, have, make_dir, run};
use super::debian;
use super::npm::{server_root, DEFAULT_MAJOR};
use super::EmbeddedError;

/// The client programs fetched together.
const PROGRAMS: [&str; 2] = ["psql", "pgbench"];

/// The path of a PostgreSQL client program (`psql`, `pgbench`): in `near` (the server's
/// bin directory) first, then on PATH, then in `/usr/lib/postgresql/*/bin`, else fetched
/// from Debian's packages into the cache (once).
pub fn client_program(name: &str, near: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    let installed = near
        .map(Path::to_path_buf)
        .into_iter()
        .chain(path_dirs())
        .chain(versioned_bin_dirs(Path::new("/usr/lib/postgresql")))
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path));
    if let Some(path) = installed {
        return Ok(path);
    }
    let fetched = fetch_from_debian()?.join("bin").join(name);
    if is_executable(&fetched) {
        Ok(fetched)
    } else {
        Err(EmbeddedError::Fetch {
            what: format!("finding {name}"),
            output: format!("{} is not among the fetched programs", fetched.display()),
        })
    }
}

/// The cache directory holding `bin/psql` and `bin/pgbench`, fetching them if needed.
fn fetch_from_debian() -> Result<PathBuf, EmbeddedError> {
    if !have("apt-get") {
        return Err(EmbeddedError::Fetch {
            what: "fetching psql and pgbench".into(),
            output: "they are not installed and this is not a Debian-like machine (no apt-get); \
                     install PostgreSQL's client programs"
                .into(),
        });
    }
    let (client, readline) = client_packages()?;
    let major = client.trim_start_matches("postgresql-client-").to_owned();
    let dir = cache_dir().join("clients").join(format!("debian-{major}"));
    let libpq = server_root(DEFAULT_MAJOR)?.join("lib");
    ensure_dir(&dir, |scratch| {
        announce(&format!(
            "downloading psql and pgbench ({client}, postgresql-{major}) from Debian's \
             packages into {} (once)",
            dir.display()
        ));
        let server = format!("postgresql-{major}");
        let mut download = Command::new("apt-get");
        download
            .args(["download", "-q", &client, &server])
            .args(&readline)
            .current_dir(scratch);
        run(&mut download)?;
        debian::unpack(scratch)?;
        write_wrappers(scratch, &dir, &major, &libpq)
    })
}

/// `(postgresql-client-<N>, [readline package])` from the `postgresql-client` metapackage
/// of this machine's Debian release, updating apt's package lists first when they are empty.
fn client_packages() -> Result<(String, Vec<String>), EmbeddedError> {
    let depends = |package: &str| -> Vec<String> {
        Command::new("apt-cache")
            .args(["depends", package])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("Depends: "))
                    .map(|d| d.trim_matches(|c| c == '<' || c == '>').to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let client = |deps: Vec<String>| {
        deps.into_iter()
            .find(|d| d.starts_with("postgresql-client-") && d != "postgresql-client-common")
    };
    let found = match client(depends("postgresql-client")) {
        Some(found) => found,
        None if nix::unistd::geteuid().is_root() => {
            announce("updating apt's package lists to find psql and pgbench");
            run(Command::new("apt-get").args(["update", "-q"]))?;
            client(depends("postgresql-client")).ok_or_else(no_client_package)?
        }
        None => return Err(no_client_package()),
    };
    let readline = depends(&found)
        .into_iter()
        .filter(|d| d.starts_with("libreadline"))
        .collect();
    Ok((found, readline))
}

fn no_client_package() -> EmbeddedError {
    EmbeddedError::Fetch {
        what: "finding psql and pgbench in Debian's packages".into(),
        output: "apt knows no postgresql-client-<N> package (run `apt-get update`, or install \
                 PostgreSQL's client programs)"
            .into(),
    }
}

/// `bin/<program>` scripts that run the unpacked programs with our libraries. They name
/// `final_dir` (where the scratch directory is about to be renamed), not the scratch.
fn write_wrappers(
    scratch: &Path,
    final_dir: &Path,
    major: &str,
    libpq: &Path,
) -> Result<(), EmbeddedError> {
    let lib_path = debian::library_path(scratch, final_dir, Some(libpq))?;
    let bin = scratch.join("bin");
    make_dir(&bin)?;
    for program in PROGRAMS {
        let real = Path::new("root/usr/lib/postgresql")
            .join(major)
            .join("bin")
            .join(program);
        if !is_executable(&scratch.join(&real)) {
            return Err(EmbeddedError::Fetch {
                what: format!("unpacking {program}"),
                output: format!("the packages have no {}", real.display()),
            });
        }
        debian::write_wrapper(
            &bin.join(program),
            &format!("{program} from Debian's packages, with our libpq"),
            &lib_path,
            &final_dir.join(&real),
        )?;
    }
    Ok(())
}
