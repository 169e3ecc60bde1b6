//! The operating-system side of a process exec'd into a running native
//! container (the CRI's ExecSync and Exec, `ctr task exec`): a helper
//! the shim clones in its own PID namespace and places in the container's
//! cgroup, which joins the other namespaces itself and forks into the
//! container's PID namespace (executor's exec.rs); the shim adopts the
//! fork (adopt.rs).

use std::path::Path;

use executor::protocol::EXEC_SUBCOMMAND;
use executor::spawn::{Child, spawn_child};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::cgroup::Cgroup;
use crate::errors::Fail;
use crate::reaper::Reaper;
use crate::stdio::StdioHold;

/// The largest process spec an exec may carry: it travels as an argument.
const MAX_PROCESS_SPEC: usize = 64 << 10;

/// The container an exec goes into.
pub struct Target<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub init: Pid,
    pub cgroup: Option<&'a Cgroup>,
}

/// An exec'd process that runs.
pub struct Running {
    pub pid: Pid,
    pub exit: oneshot::Receiver<i32>,
    pub stdio_hold: Option<StdioHold>,
}

/// Checks an Exec request's process spec (JSON) before it is recorded;
/// `terminal` is the request's, which must agree with the spec's.
pub fn check_process(what: &str, spec: &[u8], terminal: bool) -> Result<(), Fail> {
    if spec.len() > MAX_PROCESS_SPEC {
        return Err(Fail::invalid(format!(
            "{what}: the process spec is larger than {MAX_PROCESS_SPEC} bytes"
        )));
    }
    std::str::from_utf8(spec)
        .map_err(|_| Fail::invalid(format!("{what}: the process spec is not UTF-8")))?;
    let process = executor::exec::parse_process(spec)
        .map_err(|e| Fail::invalid(format!("{what}: {}", e.chain())))?;
    if process.terminal().unwrap_or(false) != terminal {
        return Err(Fail::invalid(format!(
            "{what}: the request's terminal ({terminal}) differs from the process spec's terminal"
        )));
    }
    Ok(())
}

/// Starts the process `spec` (checked by [`check_process`]) in `target`
/// with the given stdio, and lets it execve. On failure nothing of it is
/// left.
pub async fn start(
    what: &str,
    exe: &Path,
    reaper: &Reaper,
    target: Target<'_>,
    spec: &[u8],
    (stdio, terminal): (&[String; 3], bool),
) -> Result<Running, Fail> {
    let gone = || Fail::precondition(format!("{what}: task {} is not running", target.id));
    let started = executor::process_start_time(target.init.as_raw()).ok_or_else(gone)?;
    let spec = std::str::from_utf8(spec).map_err(|_| Fail::invalid(format!("{what}: spec")))?;
    let crate::stdio::Opened {
        fds,
        hold: stdio_hold,
    } = crate::stdio::open(&stdio[0], &stdio[1], &stdio[2])
        .map_err(|e| Fail::invalid(format!("{what}: {e:#}")))?;
    let (fds, pending) = match terminal {
        false => (fds, None),
        true => {
            let (pending, fds, theirs) = crate::console::pending(fds)
                .map_err(|e| Fail::internal(format!("{what}: {e:#}")))?;
            (fds, Some((pending, theirs)))
        }
    };
    let (init, started) = (target.init.to_string(), started.to_string());
    let bundle = target.bundle.to_string_lossy();
    let args = [EXEC_SUBCOMMAND, target.id, &bundle, &init, &started, spec];
    // The helper starts in the shim's own PID namespace; it forks into the
    // container's once it has joined every other namespace (executor's
    // exec.rs), and that fork is the exec'd process.
    let (helper, helper_pid, helper_exit) = reaper
        .spawn_beside(target.init, || {
            let stdio = [&fds[0], &fds[1], &fds[2]];
            // The console socket goes to fd 7 (protocol::CONSOLE_FD).
            let console = pending.as_ref().map(|(_, theirs)| theirs);
            let extra = [None, None, console];
            let child = spawn_child(exe, &args, stdio, &extra, CloneFlags::empty())
                .map_err(|e| anyhow::anyhow!(e.chain()))?;
            Ok((child.pid, child))
        })
        .map_err(|e| Fail::precondition(format!("{what}: {e:#}")))?;
    drop(fds);
    let pending = pending.map(|(pending, _)| pending);
    let Child {
        status,
        mut control,
        ..
    } = helper;
    let mut forked = None;
    let ready = async {
        if let Some(cg) = target.cgroup {
            cg.add(helper_pid.as_raw())
                .map_err(|e| Fail::internal(format!("{what}: {e:#}")))?;
        }
        executor::protocol::release(&mut control)
            .map_err(|e| Fail::internal(format!("{what}: release helper {helper_pid}: {e}")))?;
        let (status, adopted) =
            crate::adopt::adopt_fork(what, helper_pid, reaper, status, &mut control).await?;
        let (pid, exit) = (adopted.pid, adopted.exit);
        forked = Some(pid);
        crate::readiness::await_ready(what, pid, status).await?;
        // Sent by the process before its report.
        let console = match pending {
            Some(pending) => Some(
                pending
                    .start(what)
                    .map_err(|e| Fail::internal(format!("{e:#}")))?,
            ),
            None => None,
        };
        crate::readiness::start(&mut control)
            .map_err(|e| Fail::internal(format!("{what}: {e:#}")))?;
        Ok((pid, exit, console))
    };
    let result = ready.await;
    // The helper exits once the shim adopted its fork, or on any failure.
    if result.is_err() {
        let _ = reaper.signal(helper_pid, Signal::SIGKILL);
    }
    let helper_code = helper_exit.await.ok();
    log::debug!("{what}: helper {helper_pid} ended with {helper_code:?}");
    match result {
        Ok((pid, exit, console)) => Ok(Running {
            pid,
            exit,
            stdio_hold: match console {
                Some(console) => Some(StdioHold::with_console(stdio_hold, console)),
                None => stdio_hold,
            },
        }),
        Err(fail) => {
            if let Some(pid) = forked {
                let _ = reaper.signal(pid, Signal::SIGKILL);
            }
            Err(fail)
        }
    }
}
