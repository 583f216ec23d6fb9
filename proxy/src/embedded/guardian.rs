//! The guardian: the `sh` script that parents `initdb` and `postgres`, stops the server and
//! deletes the cluster directory once our end of its stdin pipe closes, and the reader for
//! the `initdb` / `started` / `exited` lines it reports on stdout.

use std::io::{self, BufRead, BufReader};
use std::process::ChildStdout;
use std::sync::mpsc::{self, Receiver};
use std::thread;

use nix::unistd::Pid;

use super::{io_err, EmbeddedError};

/// Guardian script, run as `sh -c GUARDIAN tandem-pg-guardian <dir> <initdb> <postgres argv...>`.
///
/// Paths and the postgres command arrive as positional parameters, so nothing is ever quoted
/// into shell text. The watcher subshell only uses builtins, so killing it leaves no orphans.
/// SIGPIPE is ignored so that reporting to an owner that has died cannot kill the script
/// before it removes the directory.
pub(super) const GUARDIAN: &str = r#"trap '' PIPE
dir=$1
initdb=$2
shift 2
exec 3<&0 0</dev/null
"$initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C \
  3<&- >"$dir/initdb.log" 2>&1
echo "initdb $?"
while IFS= read -r port <&3; do
  "$@" -p "$port" 3<&- >>"$dir/postgres.log" 2>&1 &
  pid=$!
  echo "started $pid"
  (
    while IFS= read -r line; do :; done
    kill -INT "$pid" 2>/dev/null
  ) <&3 >/dev/null 2>&1 &
  watcher=$!
  wait "$pid"
  status=$?
  kill "$watcher" 2>/dev/null
  wait "$watcher" 2>/dev/null
  echo "exited $status"
done
exec 3<&-
rm -rf "$dir"
"#;

/// A line from the guardian's stdout.
pub(super) enum GuardianEvent {
    Initialized { ok: bool },
    Started(Pid),
    Exited,
}

pub(super) fn guardian_gone() -> EmbeddedError {
    EmbeddedError::Io {
        what: "talking to the embedded cluster guardian".into(),
        source: io::Error::new(io::ErrorKind::BrokenPipe, "the guardian shell exited"),
    }
}

/// Forwards the guardian's reports to a channel, so readiness polling can time out.
pub(super) fn read_events(stdout: ChildStdout) -> Result<Receiver<GuardianEvent>, EmbeddedError> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("tandem-pg-guardian".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = match line.split_once(' ') {
                    Some(("initdb", status)) => GuardianEvent::Initialized {
                        ok: status.trim() == "0",
                    },
                    Some(("started", pid)) => match pid.trim().parse() {
                        Ok(pid) => GuardianEvent::Started(Pid::from_raw(pid)),
                        Err(_) => continue,
                    },
                    Some(("exited", _)) => GuardianEvent::Exited,
                    _ => continue,
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        })
        .map_err(io_err("starting the guardian reader thread"))?;
    Ok(rx)
}
