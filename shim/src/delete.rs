//! The `delete` action: containerd runs it when a shim died, to clean up
//! what that shim left of a container: its child, rootfs mount and cgroup.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use containerd_shim::DeleteResponse;
use containerd_shim::Flags;
use containerd_shim::protos::protobuf::Message;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::container::{PID_FILE, read_pid_file, unmount};
use crate::task::timestamp;

pub fn run(flags: &Flags) -> anyhow::Result<()> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().context("current directory (the bundle)")?
    } else {
        flags.bundle.clone().into()
    };
    let recorded = read_pid_file(&bundle);
    let pid = recorded.map(|(pid, _)| pid);
    let cgroup = executor::spec::load(&bundle)
        .ok()
        .and_then(|spec| crate::cgroup::of_spec(&spec, &flags.id).ok());
    // The start time is checked once the pidfd holds the process: a pid
    // reused after that check cannot be signalled through it.
    if let Some((pid, started)) = recorded
        && let Ok(process) = executor::pidfd::PidFd::open(pid)
        && is_our_child(pid, started)
    {
        let _ = process.signal(Signal::SIGKILL);
        // A paused task dies only once thawed.
        if let Some(cg) = &cgroup {
            let _ = cg.freeze(false);
        }
        wait_gone(pid, Duration::from_secs(5));
    }
    // The rest of the container's cgroup goes too, as runc's `delete
    // --force` kills it: a fork in a pod's shared PID namespace (the
    // container's process, not the recorded child), a child cloned before
    // its pid was recorded, their children.
    if let Some(cg) = &cgroup {
        let _ = cg.signal_all(Signal::SIGKILL, Pid::from_raw(0), false);
        wait_empty(cg, Duration::from_secs(5));
    }
    // Every step is tried, and any failure then fails the action, which is
    // how containerd learns of it (it logs the action's stderr).
    let mut failures = Vec::new();
    if let Err(e) = unmount(&bundle.join("rootfs")) {
        failures.push(format!("{e:#}"));
    }
    if let Some(cg) = &cgroup
        && let Err(e) = cg.remove()
    {
        failures.push(format!("{e:#}"));
    }
    let _ = std::fs::remove_file(bundle.join(PID_FILE));
    if !failures.is_empty() {
        anyhow::bail!("clean up task {}: {}", flags.id, failures.join("; "));
    }
    // The shim that knew the real status is gone and the child was killed
    // here (or earlier): report it as killed, as containerd's runc shim does.
    let response = DeleteResponse {
        pid: pid.unwrap_or_default() as u32,
        exit_status: executor::exit::LOST as u32,
        exited_at: Some(timestamp(SystemTime::now())).into(),
        ..Default::default()
    };
    std::io::Write::write_all(&mut std::io::stdout(), &response.write_to_bytes()?)?;
    Ok(())
}

/// Whether `pid` is still the child recorded at Create, not a process that
/// reused its pid: a pid and a start time name one process for good. (The
/// command line would not do: a native container's child has exec'd its
/// program and no longer shows the shim's.)
fn is_our_child(pid: i32, started: u64) -> bool {
    executor::process_start_time(pid) == Some(started)
}

/// Waits until no process is left in `cg` (killed ones leave it once
/// reaped, by init now that their shim is gone).
fn wait_empty(cg: &crate::cgroup::Cgroup, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit && cg.procs().is_ok_and(|procs| !procs.is_empty()) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the process is gone or a zombie (its parent died with the
/// shim, so init reaps it).
fn wait_gone(pid: i32, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if matches!(state, None | Some('Z') | Some('X')) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
