//! The `delete` action: containerd runs it when a shim died, to clean up
//! what that shim left of a container: its child, rootfs mount and cgroup.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use containerd_shim::DeleteResponse;
use containerd_shim::Flags;
use containerd_shim::protos::protobuf::Message;
use executor::protocol::CHILD_SUBCOMMAND;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::container::{PID_FILE, unmount};
use crate::service::timestamp;

pub fn run(flags: &Flags) -> anyhow::Result<()> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().context("current directory (the bundle)")?
    } else {
        flags.bundle.clone().into()
    };
    let pid = std::fs::read_to_string(bundle.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(pid) = pid
        && is_our_child(pid, &flags.id)
    {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        wait_gone(pid, Duration::from_secs(5));
    }
    // Every step is tried, and any failure then fails the action, which is
    // how containerd learns of it (it logs the action's stderr).
    let mut failures = Vec::new();
    if let Err(e) = unmount(&bundle.join("rootfs")) {
        failures.push(format!("{e:#}"));
    }
    if let Ok(spec) = executor::spec::load(&bundle)
        && let Some(path) = executor::spec::cgroups_path(&spec)
        && let Err(e) = crate::cgroup::locate(&path).and_then(|cg| cg.remove())
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
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(timestamp(SystemTime::now())).into(),
        ..Default::default()
    };
    std::io::Write::write_all(&mut std::io::stdout(), &response.write_to_bytes()?)?;
    Ok(())
}

/// Whether `pid` is the child of container `id`, not a recycled pid.
fn is_our_child(pid: i32, id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.get(1) == Some(&CHILD_SUBCOMMAND.as_bytes()) && args.get(2) == Some(&id.as_bytes())
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
