//! Native containers under this shim: busybox, the pod's pause program and
//! a dynamically linked program, each the container's PID 1 after the
//! same sandbox a Wasm guest gets.

mod common;

use common::{Run, containerd};

#[test]
fn busybox_sh_prints_and_exits_with_its_code() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("busybox");
    let run = ctrd.run("busybox", "bb-1", &["sh", "-c", "echo hi; exit 3"]);
    assert_eq!((run.code, run.stdout.as_str()), (3, "hi\n"), "{run:?}");
    ctrd.assert_clean("bb-1");
    // It is PID 1 and sees the container's /proc.
    let run = ctrd.run(
        "busybox",
        "bb-2",
        &["sh", "-c", "echo $$; cat /proc/1/cmdline"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("1\n"), "{run:?}");
    ctrd.assert_clean("bb-2");
}

#[test]
fn a_missing_program_is_refused_at_create() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("busybox");
    let run = ctrd.run("busybox", "bb-missing", &["no-such-program"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("not found in $PATH"), "{run:?}");
    ctrd.assert_clean("bb-missing");
}

#[test]
fn pause_runs_until_it_is_stopped() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("pause");
    ctrd.start_detached("pause", "pause-1", &[]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(ctrd.task_status("pause-1").as_deref(), Some("RUNNING"));
    // pause exits 0 on SIGTERM, as the Kubernetes one does.
    assert!(
        ctrd.ctr(&["task", "kill", "--signal", "SIGTERM", "pause-1"])
            .status
            .success()
    );
    ctrd.wait_status("pause-1", "STOPPED");
    assert!(ctrd.ctr(&["task", "delete", "pause-1"]).status.success());
    assert!(
        ctrd.ctr(&["container", "delete", "pause-1"])
            .status
            .success()
    );
    ctrd.assert_clean("pause-1");
}

#[test]
fn a_dynamic_program_runs_with_its_libraries() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("dynamic");
    let run = ctrd.run("dynamic", "dyn-1", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.as_bytes(),
        test_images::DYNHELLO_MESSAGE,
        "{run:?}"
    );
    ctrd.assert_clean("dyn-1");
}

/// `ctr task exec` into a running native container: the process runs in
/// the container's namespaces and cgroup, as the container's user, and
/// its exit status comes back; a Wasm container refuses exec by name.
#[test]
fn exec_joins_a_native_container_and_runs_a_module_in_a_wasm_one() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("busybox");
    ctrd.import("sleep");
    let image = common::image("busybox");
    let detached = ctrd.ctr(&[
        "run",
        "-d",
        "--runtime",
        common::RUNTIME,
        &image,
        "bb-exec",
        "sleep",
        "1000",
    ]);
    assert!(detached.status.success(), "{detached:?}");
    ctrd.wait_status("bb-exec", "RUNNING");
    let init = common::child_pids("bb-exec")[0];
    let script =
        "echo hi; cat /proc/self/cgroup | grep -c bb-exec; ls /proc | grep -c '^[0-9]'; exit 3";
    let run = Run::from(ctrd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "bb-exec",
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]));
    assert_eq!(run.code, 3, "{run:?}\n{}", ctrd.log());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "hi", "{run:?}");
    assert_ne!(
        lines[1], "0",
        "the exec'd process is in the container's cgroup: {run:?}"
    );
    // Its own PID namespace: the container's sleep, the shell, ls, grep.
    assert!(lines[2].parse::<u32>().unwrap() <= 5, "{run:?}");
    // Same mount namespace as the container's process.
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_ne!(ns(init), ns(std::process::id() as i32));
    // A missing program fails the exec with a sentence naming it.
    let missing = Run::from(ctrd.ctr(&["task", "exec", "--exec-id", "e2", "bb-exec", "nope"]));
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("nope"), "{missing:?}");

    // A Wasm container takes an exec of a module of its root, run as a new
    // instance in its sandbox; a native program it lacks is named.
    ctrd.start_detached("sleep", "wasm-exec", &[]);
    let exec = |exec_id: &str, args: &[&str]| {
        let mut all = vec!["task", "exec", "--exec-id", exec_id, "wasm-exec"];
        all.extend_from_slice(args);
        Run::from(ctrd.ctr(&all))
    };
    let module = exec("e3", &["/sleep.wasm", "0"]);
    assert_eq!(
        (module.code, module.stdout.as_str()),
        (0, "sleeping\nawake\n"),
        "{module:?}"
    );
    let missing = exec("e4", &["/x"]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("/x"), "{missing:?}");
    ctrd.remove_all_and_await_shims(&["bb-exec", "wasm-exec"], "SIGKILL");
    ctrd.assert_clean("bb-exec");
}

/// The pids on this host whose command line is `words`.
fn processes_running(words: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for dirent in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = dirent.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").trim() == words {
            found.push(pid);
        }
    }
    found
}

/// In the host's PID namespace a container's other processes outlive its
/// process; `ctr task kill --all` signals them too, through its cgroup.
#[test]
fn kill_all_reaches_every_process_of_the_container() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("busybox");
    let id = "bb-kill-all";
    let image = common::image("busybox");
    let script = "sleep 7771 & exec sleep 7772";
    // This process is in the host's PID namespace (PID 1 may not be
    // readable in a sandbox).
    let host_pid_ns = format!("pid:/proc/{}/ns/pid", std::process::id());
    let out = ctrd.ctr(&[
        "run",
        "-d",
        "--runtime",
        common::RUNTIME,
        "--with-ns",
        &host_pid_ns,
        &image,
        id,
        "sh",
        "-c",
        script,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ctrd.wait_status(id, "RUNNING");
    common::wait_for("both sleeps", std::time::Duration::from_secs(10), || {
        !processes_running("sleep 7771").is_empty() && !processes_running("sleep 7772").is_empty()
    });
    let kill = ctrd.ctr(&["task", "kill", "--all", "--signal", "SIGKILL", id]);
    assert!(
        kill.status.success(),
        "{}",
        String::from_utf8_lossy(&kill.stderr)
    );
    ctrd.wait_status(id, "STOPPED");
    common::wait_for(
        "the background sleep to die",
        std::time::Duration::from_secs(10),
        || processes_running("sleep 7771").is_empty(),
    );
    assert!(ctrd.ctr(&["task", "delete", id]).status.success());
    assert!(ctrd.ctr(&["container", "delete", id]).status.success());
    ctrd.assert_clean(id);
}
