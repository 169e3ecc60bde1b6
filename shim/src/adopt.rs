//! The shim's side of `executor::fork`: a process the shim cloned in its
//! own PID namespace (an exec helper, or the child of a container that
//! joins its pod's PID namespace) forks into the target namespace and
//! reports the fork's pid. The reaper registers the fork's exit before
//! the helper is told it may exit, so that exit cannot be missed: the
//! fork becomes the shim's child (the shim is a subreaper) only then.

use std::fs::File;

use executor::protocol::Fork;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::errors::Fail;
use crate::reaper::Reaper;

/// A fork that is the shim's now.
pub struct Adopted {
    pub pid: Pid,
    pub exit: oneshot::Receiver<i32>,
}

/// Reads the released `helper`'s first words, adopts the fork it names
/// and tells the helper so. Returns the status pipe, which carries the
/// fork's own report next. On failure the fork, if any, is killed.
pub async fn adopt_fork(
    what: &str,
    helper: Pid,
    reaper: &Reaper,
    status: File,
    control: &mut File,
) -> Result<(File, Adopted), Fail> {
    let (status, fork) = await_fork(what, status).await?;
    let pid = match fork {
        Fork::Forked(pid) => Pid::from_raw(pid),
        Fork::Report(Err(Some(message))) => {
            return Err(Fail::invalid(format!("{what}: {message}")));
        }
        Fork::Report(_) => {
            return Err(Fail::internal(format!(
                "{what}: the process {helper} ended before it forked"
            )));
        }
    };
    let exit = reaper.adopt(pid);
    if let Err(e) = executor::protocol::adopted(control) {
        let _ = reaper.signal(pid, Signal::SIGKILL);
        return Err(Fail::internal(format!("{what}: tell {helper}: {e}")));
    }
    Ok((status, Adopted { pid, exit }))
}

/// The helper's first words: the pid of its fork, or its report.
async fn await_fork(what: &str, mut status: File) -> Result<(File, Fork), Fail> {
    let read = tokio::task::spawn_blocking(move || {
        let fork = executor::protocol::await_fork(&mut status);
        fork.map(|fork| (status, fork))
    });
    tokio::time::timeout(crate::readiness::PREPARE_TIMEOUT, read)
        .await
        .map_err(|_| Fail::internal(format!("{what}: the process did not fork in time")))?
        .map_err(|e| Fail::internal(format!("{what}: {e}")))?
        .map_err(|e| Fail::internal(format!("{what}: read the fork's report: {e}")))
}
