//! Native containers under this shim: busybox, the pod's pause program and
//! a dynamically linked program, each the container's PID 1 after the
//! same sandbox a Wasm guest gets.

mod common;

use common::containerd;

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
