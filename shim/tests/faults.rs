//! Faults at every step: the shim SIGKILLed at each named step of Create
//! and of Delete (the shim stops itself there when its environment names
//! the step, `src/steps.rs`), for a Wasm module and a native container;
//! containerd killed and restarted in the middle of a Create; the child,
//! or the shim's compiler working for it, killed during a compile. Each
//! case ends in a clear state (the run fails with a message, or the task
//! is reported stopped with a status), containerd's clean-up (the shim's
//! `delete` action) leaves nothing of the container (process, mount,
//! cgroup, cache temp file), and the next container runs.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Containerd, can_run, child_pids, shim_pids, wait_for};

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

/// `ctr run --rm` of case `id`, its shim SIGKILLed where it stopped
/// itself; the run's output once it has ended.
fn run_with_shim_killed(
    ctrd: &Containerd,
    id: &str,
    (image, args, ..): (&str, &[&str], i32, &str),
) -> std::process::Output {
    let run = ctrd.spawn_run(image, id, args, Stdio::null());
    let shim = stopped_shim(ctrd, id);
    sigkill(shim);
    ctrd.finish(run, Duration::from_secs(60), id)
}

#[test]
fn a_shim_killed_at_each_step_of_create_fails_the_run_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let ctrd = containerd_stopping_at(&CREATE_STEPS);
    for step in CREATE_STEPS {
        for kind in KINDS {
            let id = case_id(step, kind.0);
            let out = run_with_shim_killed(&ctrd, &id, kind);
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
            let id = case_id(step, kind.0);
            // `ctr run --rm` deletes the task once it exits, which stops
            // the shim at the step.
            run_with_shim_killed(&ctrd, &id, kind);
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

fn sigcont(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
}

/// containerd killed and started again while a shim is in the middle of a
/// Create: the client's run fails, the new containerd finds the task the
/// shim made, and deleting it leaves nothing.
#[test]
fn containerd_restarted_during_create_finds_a_task_that_deletes_cleanly() {
    if !can_run() {
        return;
    }
    let id = case_id("restart", "hello");
    let mut ctrd = Containerd::start_with_env(&[(STOP_AT, &format!("{id}:clone"))]);
    ctrd.import("hello");
    let run = ctrd.spawn_run("hello", &id, &[], Stdio::null());
    let shim = stopped_shim(&ctrd, &id);
    ctrd.restart();
    sigcont(shim);
    let out = ctrd.finish(run, Duration::from_secs(60), &id);
    assert!(
        !out.status.success(),
        "{id}: the run outlived its containerd: {out:?}"
    );
    // The new containerd loads the shim's task (created, or ended), never
    // a running one it cannot see.
    wait_for(
        &format!("the restarted containerd to report task {id}"),
        Duration::from_secs(30),
        || ctrd.task_status(&id).is_some() || !shim_pids(ctrd.dir()).contains(&shim),
    );
    clean_and_run_next(&ctrd, &id, KINDS[0]);
}

/// The child, or the shim's compiler working for it, SIGKILLed while a
/// slow module compiles on a cache miss: the run ends (a status or a
/// failed Create with a message), no cache temp file is left, and the next
/// run of the module works.
#[test]
fn a_child_or_compiler_killed_during_a_compile_ends_clearly_and_leaves_nothing() {
    let Some(ctrd) = common::containerd() else {
        return;
    };
    ctrd.import("big");
    for victim in ["child", "compiler"] {
        let id = format!("compile-kill-{victim}");
        let run = ctrd.spawn_run("big", &id, &[], Stdio::null());
        let target = wait_for_compile(&ctrd, &id, victim);
        sigkill(target);
        let out = ctrd.finish(run, Duration::from_secs(180), &id);
        let said = String::from_utf8_lossy(&out.stderr);
        println!("{id}: {:?} {}", out.status.code(), said.trim());
        assert!(
            out.status.success() || !said.trim().is_empty() || out.status.code() == Some(137),
            "{id}: ended without a status or a reason: {out:?}"
        );
        ctrd.assert_clean(&id);
        assert_eq!(ctrd.cache_temp_files(), Vec::<String>::new(), "{id}");
    }
    let next = ctrd.run("big", "compile-kill-next", &[]);
    assert_eq!(next.code, 0, "{next:?}");
    ctrd.assert_clean("compile-kill-next");
}

/// Once the shim's compiler runs for container `id` (in its cgroup), the
/// pid of `victim`: that compiler, or the container's child.
fn wait_for_compile(ctrd: &Containerd, id: &str, victim: &str) -> i32 {
    let is_compiler = |pid: &i32| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        cmdline.split(|&b| b == 0).nth(1) == Some(b"__compile".as_slice())
    };
    let start = Instant::now();
    loop {
        let pids = child_pids(id);
        if let Some(compiler) = pids.iter().find(|pid| is_compiler(pid)) {
            match victim {
                "compiler" => return *compiler,
                _ => {
                    if let Some(child) = pids.iter().find(|pid| !is_compiler(pid)) {
                        return *child;
                    }
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no compile for {id} began\n{}",
            ctrd.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
