//! Faults at every step: the shim SIGKILLed at each named step of Create
//! and of Delete (the shim stops itself there when its environment names
//! the step, `src/steps.rs`), for a Wasm module and a native container.
//! Each case ends in a clear state (the run fails with a message, or the
//! task is reported stopped), containerd's clean-up (the shim's `delete`
//! action) leaves nothing of the container (process, mount, cgroup), and
//! the next container runs.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Containerd, can_run, shim_pids, wait_for};

const STOP_AT: &str = "CONTAINERD_SHIM_WASMTIME_STOP_AT";
const CREATE_STEPS: [&str; 6] = ["rootfs", "stdio", "cgroup", "clone", "pid-file", "ready"];
const DELETE_STEPS: [&str; 3] = ["delete", "release", "deleted"];
/// Image, arguments, exit status and stdout of a run that works.
const KINDS: [(&str, &[&str], i32, &str); 2] = [
    ("hello", &[], 0, "hello from wasm\n"),
    ("busybox", &["sh", "-c", "echo native"], 0, "native\n"),
];

fn case_id(step: &str, image: &str) -> String {
    format!("fault-{step}-{image}")
}

/// A containerd whose shims stop at each step of `steps` for the
/// containers of [`case_id`].
fn containerd_stopping_at(steps: &[&str]) -> Containerd {
    let stops: Vec<String> = steps
        .iter()
        .flat_map(|step| {
            KINDS
                .iter()
                .map(move |(image, ..)| format!("{}:{step}", case_id(step, image)))
        })
        .collect();
    let ctrd = Containerd::start_with_env(&[(STOP_AT, &stops.join(","))]);
    for (image, ..) in KINDS {
        ctrd.import(image);
    }
    ctrd
}

/// The shim of `ctrd` that has stopped itself, once one has.
fn stopped_shim(ctrd: &Containerd, what: &str) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = shim_pids(ctrd.dir()).into_iter().find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        }) {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no shim stopped at {what}\n{}",
            ctrd.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Removes what containerd still lists of `id` (as a user would after a
/// failed run), then checks nothing of it is left and that a new
/// container of the same image runs.
fn clean_and_run_next(ctrd: &Containerd, id: &str, kind: (&str, &[&str], i32, &str)) {
    let _ = ctrd.ctr(&["tasks", "delete", "--force", id]);
    let _ = ctrd.ctr(&["containers", "delete", id]);
    ctrd.assert_clean(id);
    let listed = ctrd.ctr(&["containers", "ls", "-q"]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(id),
        "{id} still listed"
    );
    let (image, args, code, stdout) = kind;
    let next = format!("{id}-next");
    let run = ctrd.run(image, &next, args);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (code, stdout),
        "the next container after {id}: {run:?}"
    );
    ctrd.assert_clean(&next);
}

#[test]
fn a_shim_killed_at_each_step_of_create_fails_the_run_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let ctrd = containerd_stopping_at(&CREATE_STEPS);
    for step in CREATE_STEPS {
        for kind in KINDS {
            let (image, args, ..) = kind;
            let id = case_id(step, image);
            let run = ctrd.spawn_run(image, &id, args, Stdio::null());
            let shim = stopped_shim(&ctrd, &id);
            sigkill(shim);
            let out = ctrd.finish(run, Duration::from_secs(60), &id);
            assert!(
                !out.status.success(),
                "{id}: the run succeeded though its shim died during Create: {out:?}"
            );
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(!said.trim().is_empty(), "{id}: the run failed silently");
            println!("{id}: {}", said.trim());
            clean_and_run_next(&ctrd, &id, kind);
        }
    }
}

#[test]
fn a_shim_killed_at_each_step_of_delete_leaves_a_stopped_task_and_nothing_else() {
    if !can_run() {
        return;
    }
    let ctrd = containerd_stopping_at(&DELETE_STEPS);
    for step in DELETE_STEPS {
        for kind in KINDS {
            let (image, args, ..) = kind;
            let id = case_id(step, image);
            // `ctr run --rm` deletes the task once it exits, which stops
            // the shim at the step.
            let run = ctrd.spawn_run(image, &id, args, Stdio::null());
            let shim = stopped_shim(&ctrd, &id);
            sigkill(shim);
            let _ = ctrd.finish(run, Duration::from_secs(60), &id);
            // The task is gone or stopped: never running.
            wait_for(
                &format!("task {id} to be gone or stopped"),
                Duration::from_secs(30),
                || {
                    !matches!(
                        ctrd.task_status(&id).as_deref(),
                        Some("RUNNING" | "CREATED")
                    )
                },
            );
            clean_and_run_next(&ctrd, &id, kind);
        }
    }
}
