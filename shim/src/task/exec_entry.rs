//! One process exec'd into a task, as the task table holds it: the
//! service keeps them per task, the exec RPCs (`exec_rpcs`) act on them.

use nix::unistd::Pid;
use tokio::sync::watch;

use super::lifecycle::Status;
use crate::stdio::StdioHold;

/// One exec'd process of a task.
pub(super) struct ExecEntry {
    pub(super) status: watch::Sender<Status>,
    /// The process spec, JSON as containerd sent it.
    pub(super) spec: Vec<u8>,
    pub(super) stdio: [String; 3],
    /// Whether the process has a terminal (its stdout is the terminal's).
    pub(super) terminal: bool,
    pub(super) pid: Option<Pid>,
    pub(super) stdio_hold: Option<StdioHold>,
}

impl ExecEntry {
    pub(super) fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// The running process, to be killed when its task is deleted.
    pub(super) fn running(&self) -> Option<(Pid, watch::Receiver<Status>)> {
        (self.status() == Status::Running)
            .then_some(self.pid)
            .flatten()
            .map(|pid| (pid, self.status.subscribe()))
    }
}
