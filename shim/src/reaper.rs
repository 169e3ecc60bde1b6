//! Reaping of the containers' children.
//!
//! The shim is a child subreaper and reaps with `waitpid(-1)` on SIGCHLD.
//! A child can exit before the code that spawned it has recorded its pid,
//! so spawning happens under the same lock the reaper takes to look up
//! the waiter: an exit is never seen before its waiter is registered.

use std::collections::HashMap;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

#[derive(Default)]
pub struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<i32>>>,
}

impl Reaper {
    /// Runs `spawn` (which creates one child and returns its pid along with
    /// whatever else it made) and registers the child's exit.
    pub fn spawn<T>(
        &self,
        spawn: impl FnOnce() -> anyhow::Result<(Pid, T)>,
    ) -> anyhow::Result<(T, Pid, oneshot::Receiver<i32>)> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let (pid, made) = spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid.as_raw(), tx);
        Ok((made, pid, rx))
    }

    /// Reaps every child that has exited and hands each exit status (the
    /// code, or 128 + signal) to its waiter.
    pub fn reap(&self) {
        loop {
            let (pid, code) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    return;
                }
            };
            let waiter = self
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&pid.as_raw());
            match waiter {
                Some(tx) => {
                    let _ = tx.send(code);
                }
                None => log::debug!("reaped pid {pid} (exit status {code}), not a container"),
            }
        }
    }
}
