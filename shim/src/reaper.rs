//! Reaping of the containers' children.
//!
//! The shim is a child subreaper and reaps on SIGCHLD. Two races are
//! closed here. A child can exit before the code that spawned it has
//! recorded its pid: spawning happens under the lock the reaper takes to
//! look up the waiter. And a signal must never reach a recycled pid: the
//! reaper first looks at an exited child without reaping it (`WNOWAIT`,
//! the pid stays taken by the zombie), then reaps it and forgets its pid
//! under the same lock that [`Reaper::signal`] holds while it signals.

use std::collections::HashMap;
use std::sync::Mutex;

use executor::exit::of_wait;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

type Waiters = HashMap<i32, oneshot::Sender<i32>>;

/// Runs `spawn` and registers its child, under the waiters' lock.
fn register<T>(
    waiters: &mut Waiters,
    spawn: impl FnOnce() -> anyhow::Result<(Pid, T)>,
) -> anyhow::Result<(T, Pid, oneshot::Receiver<i32>)> {
    let (pid, made) = spawn()?;
    let (tx, rx) = oneshot::channel();
    waiters.insert(pid.as_raw(), tx);
    Ok((made, pid, rx))
}

#[derive(Default)]
pub struct Reaper {
    waiters: Mutex<Waiters>,
}

impl Reaper {
    /// Runs `spawn` (which creates one child and returns its pid along with
    /// whatever else it made) and registers the child's exit.
    pub fn spawn<T>(
        &self,
        spawn: impl FnOnce() -> anyhow::Result<(Pid, T)>,
    ) -> anyhow::Result<(T, Pid, oneshot::Receiver<i32>)> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        register(&mut waiters, spawn)
    }

    /// As [`Reaper::spawn`], for a child that enters the namespaces of the
    /// registered child `beside`: `spawn` runs only while that one has not
    /// been reaped, so its pid still names it.
    pub fn spawn_beside<T>(
        &self,
        beside: Pid,
        spawn: impl FnOnce() -> anyhow::Result<(Pid, T)>,
    ) -> anyhow::Result<(T, Pid, oneshot::Receiver<i32>)> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if !waiters.contains_key(&beside.as_raw()) {
            anyhow::bail!("process {beside} has exited");
        }
        register(&mut waiters, spawn)
    }

    /// Registers the exit of `pid`, a process forked by a registered child
    /// that is still alive: it becomes the shim's child (the shim is a
    /// subreaper) only when that parent exits, so it cannot be reaped
    /// before this returns.
    pub fn adopt(&self, pid: Pid) -> oneshot::Receiver<i32> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid.as_raw(), tx);
        rx
    }

    /// Sends `signal` to a registered child that has not been reaped yet.
    /// Returns false when the child is already gone.
    pub fn signal(&self, pid: Pid, signal: Signal) -> nix::Result<bool> {
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if !waiters.contains_key(&pid.as_raw()) {
            return Ok(false);
        }
        match kill(pid, signal) {
            Ok(()) => Ok(true),
            Err(Errno::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reaps every child that has exited and hands each exit status to its
    /// waiter.
    pub fn reap(&self) {
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            let pid = match waitid(Id::All, flags) {
                Ok(status) => match of_wait(status) {
                    Some((pid, _)) => pid,
                    None => return,
                },
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return,
                Err(e) => {
                    log::warn!("waitid: {e}");
                    return;
                }
            };
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            let Some((pid, code)) = waitpid(pid, None).ok().and_then(of_wait) else {
                continue;
            };
            match waiters.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(code);
                }
                None => log::debug!("reaped pid {pid} (exit status {code}), not a container"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_status_and_never_signals_a_reaped_pid() {
        let reaper = Reaper::default();
        let (child, pid, mut exit) = reaper
            .spawn(|| {
                let child = std::process::Command::new("sleep").arg("30").spawn()?;
                Ok((Pid::from_raw(child.id() as i32), child))
            })
            .unwrap();
        assert!(reaper.signal(pid, Signal::SIGKILL).unwrap());
        let code = loop {
            reaper.reap();
            match exit.try_recv() {
                Ok(code) => break code,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        };
        assert_eq!(code, 137);
        // The pid is free now and may belong to anyone: it is not signalled.
        assert!(!reaper.signal(pid, Signal::SIGKILL).unwrap());
        drop(child);
    }
}
