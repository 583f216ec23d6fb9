//! Programs from Debian's packages, unpacked into the cache rather than installed: the
//! shared steps of fetching `psql`/`pgbench` ([`super::clients`]) and PgBouncer
//! ([`super::pgbouncer`]): unpack the downloaded `.deb` files with `dpkg-deb -x`, and run a
//! program through a wrapper script that finds the unpacked libraries.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cache::{run, sh_quote};
use super::{io_err, EmbeddedError};

/// Unpacks every `.deb` in `scratch` into `scratch/root`, removing the files.
pub(super) fn unpack(scratch: &Path) -> Result<(), EmbeddedError> {
    let root = scratch.join("root");
    for entry in fs::read_dir(scratch).map_err(io_err("listing the downloaded packages"))? {
        let deb = entry
            .map_err(io_err("listing the downloaded packages"))?
            .path();
        if deb.extension().is_some_and(|e| e == "deb") {
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
            fs::remove_file(&deb).map_err(io_err(format!("removing {}", deb.display())))?;
        }
    }
    Ok(())
}

/// The unpacked library directories (`usr/lib/<triplet>`, `lib/<triplet>`), named under
/// `final_dir` (where the scratch directory is about to be renamed), after `first`.
pub(super) fn library_path(
    scratch: &Path,
    final_dir: &Path,
    first: Option<&Path>,
) -> Result<OsString, EmbeddedError> {
    let mut dirs: Vec<PathBuf> = first.map(Path::to_path_buf).into_iter().collect();
    for usr in ["usr/lib", "lib"] {
        if let Ok(entries) = fs::read_dir(scratch.join("root").join(usr)) {
            dirs.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name())
                    .filter(|n| n.to_string_lossy().ends_with("-linux-gnu"))
                    .map(|n| final_dir.join("root").join(usr).join(n)),
            );
        }
    }
    std::env::join_paths(&dirs).map_err(|e| EmbeddedError::Fetch {
        what: "writing a wrapper for the unpacked programs".into(),
        output: e.to_string(),
    })
}

/// Writes `path`, a script that runs `real` with `lib_path` first in `LD_LIBRARY_PATH`.
pub(super) fn write_wrapper(
    path: &Path,
    what: &str,
    lib_path: &OsString,
    real: &Path,
) -> Result<(), EmbeddedError> {
    let script = format!(
        "#!/bin/sh\n# Written by Tandem: {what}.\n\
         LD_LIBRARY_PATH={}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}} exec {} \"$@\"\n",
        sh_quote(lib_path),
        sh_quote(real.as_os_str()),
    );
    let writing = || format!("writing {}", path.display());
    fs::write(path, script).map_err(io_err(writing()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(io_err(writing()))?;
    Ok(())
}
