//! End-to-end tests: a real containerd, `ctr`, this shim and the test
//! images. Each test starts its own private containerd.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use common::{Containerd, containerd, wait_for};

/// Upper bound on a guest's reaction to a signal before a test calls it a
/// hang. A correct shim reacts in milliseconds; `make bench` measures it.
const HANG: Duration = Duration::from_secs(10);

#[test]
fn hello_prints_and_exits_zero() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("hello");
    let run = ctrd.run("hello", "hello-1", &[]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "hello from wasm\n"),
        "{run:?}"
    );
    ctrd.assert_clean("hello-1");
    // A working directory missing from the image is created, as runc does.
    let run = ctrd.run_with("hello", "hello-cwd", &["--cwd", "/made/for/it"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    ctrd.assert_clean("hello-cwd");
}

#[test]
fn proc_exit_codes_are_the_task_status() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("exit");
    for code in ["0", "1", "42", "125"] {
        let id = format!("exit-{code}");
        let run = ctrd.run("exit", &id, &["/exit.wasm", code]);
        assert_eq!(run.code.to_string(), code, "{run:?}");
        ctrd.assert_clean(&id);
    }
}

#[test]
fn trap_is_134_with_message_and_backtrace() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("trap");
    let run = ctrd.run("trap", "trap-1", &[]);
    assert_eq!(run.code, 134, "{run:?}");
    assert_eq!(run.stdout, "about to trap\n");
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    assert!(
        run.stderr.contains("wasm backtrace") && run.stderr.contains("explode"),
        "{}",
        run.stderr
    );
    ctrd.assert_clean("trap-1");
}

/// Starts `name`, waits for its first line of output, sends `signal`
/// with `ctr task kill` and returns ctr's exit status.
fn kill_running(ctrd: &Containerd, name: &str, id: &str, signal: &str, first_line: &str) -> i32 {
    let mut ctr = ctrd.spawn_run(name, id, &[], Stdio::null());
    let mut stdout = BufReader::new(ctr.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, first_line);
    ctrd.wait_status(id, "RUNNING");
    ctrd.kill_and_wait(&mut ctr, id, signal, HANG)
}

#[test]
fn sigterm_stops_a_looping_guest_with_143() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("loop");
    assert_eq!(
        kill_running(&ctrd, "loop", "loop-term", "SIGTERM", "looping\n"),
        143
    );
    ctrd.assert_clean("loop-term");
}

#[test]
fn sigterm_stops_a_sleeping_guest_with_143() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("sleep");
    assert_eq!(
        kill_running(&ctrd, "sleep", "sleep-term", "SIGTERM", "sleeping\n"),
        143
    );
    ctrd.assert_clean("sleep-term");
}

#[test]
fn sigkill_is_137() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("loop");
    assert_eq!(
        kill_running(&ctrd, "loop", "loop-kill", "SIGKILL", "looping\n"),
        137
    );
    ctrd.assert_clean("loop-kill");
}

#[test]
fn args_and_env_reach_the_guest() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("args");
    let run = ctrd.run_with(
        "args",
        "args-1",
        &["--env", "GREETING=hi there"],
        &["/args.wasm", "one", "two words"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        &lines[..3],
        ["arg[0]=/args.wasm", "arg[1]=one", "arg[2]=two words"]
    );
    assert!(lines.contains(&"env=GREETING=hi there"), "{lines:?}");
    assert!(
        lines.contains(&"env=PATH=/"),
        "image env is kept: {lines:?}"
    );
    ctrd.assert_clean("args-1");
}

#[test]
fn stdin_is_copied_to_stdout() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("cat");
    // As `producer | ctr run …`: the input ends while the task starts.
    let mut ctr = ctrd.spawn_run("cat", "cat-1", &[], Stdio::piped());
    let text = "line one\nline two\n".repeat(1000);
    ctr.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = ctrd.finish(ctr, HANG, "ctr run of cat after its input ended");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), text);
    ctrd.assert_clean("cat-1");
}

#[test]
fn guest_writes_and_reads_a_file_in_its_root() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("file");
    let run = ctrd.run("file", "file-1", &[]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "written by wasm\n"),
        "{run:?}"
    );
    ctrd.assert_clean("file-1");
}

#[test]
fn events_come_in_lifecycle_order() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("hello");
    let mut events = ctrd
        .ctr_command(&["events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the subscription settle before the container starts.
    std::thread::sleep(Duration::from_millis(500));
    let run = ctrd.run("hello", "events-1", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let stdout = BufReader::new(events.stdout.take().unwrap());
    let mut topics = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        if !line.contains("events-1") {
            continue;
        }
        if let Some(topic) = line.split_whitespace().find(|w| w.starts_with("/tasks/")) {
            topics.push(topic.to_string());
        }
        if topics.last().map(String::as_str) == Some("/tasks/delete") {
            break;
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    ctrd.assert_clean("events-1");
}

#[test]
fn one_child_per_container_and_one_shim_each() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("sleep");
    let ids = ["ps-1", "ps-2"];
    for id in ids {
        ctrd.start_detached("sleep", id, &[]);
    }
    for id in ids {
        let children = common::child_pids(id);
        assert_eq!(children.len(), 1, "children of {id}");
        // ctr's default capabilities, the same set runc would give.
        let status = std::fs::read_to_string(format!("/proc/{}/status", children[0])).unwrap();
        for set in ["CapBnd", "CapEff", "CapPrm"] {
            let line = status.lines().find(|l| l.starts_with(set)).unwrap();
            assert!(line.ends_with("00000000a80425fb"), "{id}: {line}");
        }
    }
    assert_eq!(
        common::shim_pids(ctrd.dir()).len(),
        2,
        "one shim per ungrouped container"
    );
    ctrd.remove_all_and_await_shims(&ids, "SIGKILL");
}

#[test]
fn a_dead_shims_container_is_cleaned_up() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("loop");
    let id = "orphan-1";
    ctrd.start_detached("loop", id, &[]);
    let shims = common::shim_pids(ctrd.dir());
    assert_eq!(shims.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // containerd notices the shim's death and runs `shim delete`, which
    // must kill the child, unmount the rootfs and remove the cgroup.
    ctrd.assert_clean(id);
    let _ = ctrd.ctr(&["task", "delete", id]);
    assert!(ctrd.ctr(&["container", "delete", id]).status.success());
}

#[test]
fn version_names_wasmtime_and_revision() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_containerd-shim-wasmtime-v1"))
        .arg("-v")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("Version: 0.")
            && text.contains("Wasmtime: 48.")
            && text.contains("Revision: "),
        "{text}"
    );
}

#[test]
fn grouped_containers_share_one_shim() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("sleep");
    let ids = ["group-1", "group-2"];
    // Both at once: only one of the two `start` actions may launch a shim.
    std::thread::scope(|scope| {
        for id in ids {
            let ctrd = &ctrd;
            let group = ["--annotation", "io.containerd.runc.v2.group=pod-a"];
            scope.spawn(move || ctrd.start_detached("sleep", id, &group));
        }
    });
    assert_eq!(
        common::shim_pids(ctrd.dir()).len(),
        1,
        "one shim for the group"
    );
    for id in ids {
        assert_eq!(common::child_pids(id).len(), 1, "children of {id}");
    }
    // The shim outlives the first deletion: it still serves the second task.
    for (n, id) in ids.iter().enumerate() {
        ctrd.stop_and_remove(id, "SIGTERM");
        if n == 0 {
            assert_eq!(common::shim_pids(ctrd.dir()).len(), 1);
            assert_eq!(ctrd.task_status(ids[1]).as_deref(), Some("RUNNING"));
        }
    }
    wait_for("the group's shim to exit", Duration::from_secs(10), || {
        common::shim_pids(ctrd.dir()).is_empty()
    });
}

/// The namespace of `kind` a process is in, as the kernel names it.
fn namespace(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn namespaces_are_fresh_or_joined_as_the_spec_says() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("sleep");
    let me = std::process::id().to_string();
    let fresh = ctrd.start_detached("sleep", "ns-fresh", &[]);
    for kind in ["mnt", "pid", "ipc", "uts", "net"] {
        assert_ne!(
            namespace(&fresh, kind),
            namespace(&me, kind),
            "{kind} namespace is not new"
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{fresh}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.ends_with("\t1"),
        "the child is PID 1 of its namespace: {nspid}"
    );

    let with_ns = format!("network:/proc/{me}/ns/net");
    let joined = ctrd.start_detached("sleep", "ns-joined", &["--with-ns", &with_ns]);
    assert_eq!(
        namespace(&joined, "net"),
        namespace(&me, "net"),
        "network namespace by path"
    );
    assert_ne!(namespace(&joined, "mnt"), namespace(&me, "mnt"));

    let host = ctrd.start_detached("sleep", "ns-host", &["--net-host"]);
    assert_eq!(
        namespace(&host, "net"),
        namespace(&me, "net"),
        "no network namespace asked"
    );

    for id in ["ns-fresh", "ns-joined", "ns-host"] {
        ctrd.stop_and_remove(id, "SIGKILL");
    }
}

/// A Create that outlasts its caller (kubelet gives up after two minutes,
/// here ctr after two seconds while a large module compiles) is undone by
/// the shim when it ends: no task is left that nobody would delete, no
/// process, mount or cgroup, and the shim exits.
#[test]
fn a_create_abandoned_by_its_caller_is_undone() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("big");
    let image = common::image("big");
    let id = "big-late";
    let args = ["--timeout", "2s", "run", "--rm", "--runtime"];
    let run = common::Run::from(ctrd.ctr(&[&args[..], &[common::RUNTIME, &image, id]].concat()));
    assert_ne!(
        run.code, 0,
        "the module compiled within ctr's timeout: {run:?}"
    );
    assert!(run.stderr.contains("deadline exceeded"), "{run:?}");
    // Still compiling: containerd has given up on it (and stopped reading
    // its log), but the shim finishes the Create and then undoes it.
    // The child, waiting for the shim's compile of its module.
    assert!(
        !common::child_pids(id).is_empty(),
        "the create is under way"
    );
    wait_for(
        "the shim to undo the create and exit",
        Duration::from_secs(120),
        || common::shim_pids(ctrd.dir()).is_empty(),
    );
    ctrd.assert_clean(id);
}

/// An upgrade that replaces the shim binary on disk does not reach a
/// running shim: it starts its next container's child from the very file
/// it runs, so a shim and its children always speak the same protocol.
#[test]
fn a_running_shim_keeps_its_own_binary_after_an_upgrade() {
    let Some(ctrd) = common::containerd_with_copied_shim() else {
        return;
    };
    ctrd.import("sleep");
    let group = ["--annotation", "io.containerd.runc.v2.group=pod-up"];
    ctrd.start_detached("sleep", "up-1", &group);
    // The new binary still does `start` (and finds the running shim), but
    // would fail as a child.
    let upgraded = format!(
        "#!/bin/sh\n[ \"$1\" = __child ] && exit 3\nexec {} \"$@\"\n",
        common::Containerd::built_shim()
    );
    let shim = ctrd.shim();
    std::fs::remove_file(&shim).unwrap();
    std::fs::write(&shim, upgraded).unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ctrd.start_detached("sleep", "up-2", &group);
    assert_eq!(
        common::shim_pids(ctrd.dir()).len(),
        1,
        "one shim for the group"
    );
    ctrd.remove_all_and_await_shims(&["up-1", "up-2"], "SIGKILL");
}

/// A new cgroup namespace, asked for in the spec, has the container's own
/// cgroup as its root, as under runc: the child sees itself at `/` in
/// every hierarchy. (ctr asks for none by default; CRI does on cgroup v2.)
#[test]
fn a_new_cgroup_namespace_is_rooted_at_the_containers_cgroup() {
    let Some(ctrd) = containerd() else { return };
    let id = "cgns-1";
    let rootfs = ctrd.dir().join("cgns-rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("sleep.wasm"), test_images::SLEEP_WASM).unwrap();
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/sleep.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": rootfs},
        "linux": {
            "cgroupsPath": format!("/{}/{id}", common::NAMESPACE),
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                           {"type": "mount"}, {"type": "cgroup"}]
        }
    });
    let config = ctrd.dir().join("cgns.json");
    std::fs::write(&config, spec.to_string()).unwrap();
    let config = config.to_string_lossy().into_owned();
    let out = ctrd.ctr(&[
        "run",
        "-d",
        "--runtime",
        common::RUNTIME,
        "--config",
        &config,
        id,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ctrd.wait_status(id, "RUNNING");
    let pid = common::child_pids(id)[0].to_string();
    let me = std::process::id().to_string();
    assert_ne!(namespace(&pid, "cgroup"), namespace(&me, "cgroup"));
    let seen = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-C", "cat", &format!("/proc/{pid}/cgroup")])
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&seen.stdout);
    assert!(!seen.is_empty());
    for line in seen.lines() {
        assert!(line.ends_with(":/"), "seen from inside: {seen}");
    }
    ctrd.stop_and_remove(id, "SIGKILL");
}

/// Whatever umask containerd runs with, the shim's socket and its
/// directory are root's alone: whoever can connect can send a Create.
#[test]
fn the_shim_socket_is_private_under_any_umask() {
    use std::os::unix::fs::PermissionsExt;
    let Some(ctrd) = common::containerd_with_umask(0) else {
        return;
    };
    ctrd.import("sleep");
    ctrd.start_detached("sleep", "umask-1", &[]);
    let bundle = ctrd.dir().join(format!(
        "state/io.containerd.runtime.v2.task/{}/umask-1",
        common::NAMESPACE
    ));
    let address = std::fs::read_to_string(bundle.join("address")).unwrap();
    let socket = std::path::PathBuf::from(address.trim_start_matches("unix://"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket) & 0o077, 0, "socket {}", socket.display());
    assert_eq!(mode(socket.parent().unwrap()), 0o700, "socket directory");
    ctrd.stop_and_remove("umask-1", "SIGKILL");
}

/// containerd 2.3 and later start a shim with `BootstrapParams` on stdin
/// and read a `BootstrapResult`: the shim listens in the socket directory
/// it was given and serves the Task API there.
#[test]
fn start_speaks_the_bootstrap_protocol_of_containerd_2_3() {
    use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
    use containerd_shim_protos::protobuf::Message;
    use containerd_shim_protos::{api, shim_sync};

    let Some(ctrd) = containerd() else { return };
    let bundle = tempfile::tempdir().unwrap();
    let spec = ctrd.default_spec(&bundle.path().join("rootfs"), "boot-1", &["/hello.wasm"]);
    std::fs::write(bundle.path().join("config.json"), spec.to_string()).unwrap();
    // containerd makes the shim's log a fifo in the bundle, and reads it.
    let log = bundle.path().join("log");
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let log_reader = std::thread::spawn(move || std::fs::read_to_string(log).unwrap_or_default());
    let sockets = tempfile::tempdir().unwrap();
    let grpc = ctrd
        .dir()
        .join("containerd.sock")
        .to_string_lossy()
        .into_owned();
    let params = BootstrapParams {
        instance_id: "boot-1".into(),
        namespace: common::NAMESPACE.into(),
        containerd_grpc_address: grpc.clone(),
        containerd_ttrpc_address: format!("{grpc}.ttrpc"),
        socket_dir: Some(sockets.path().to_string_lossy().into_owned()),
        ..Default::default()
    };
    let mut start = std::process::Command::new(Containerd::built_shim())
        .args([
            "-namespace",
            common::NAMESPACE,
            "-id",
            "boot-1",
            "-address",
            &grpc,
            "start",
        ])
        .current_dir(bundle.path())
        .env_remove("TTRPC_ADDRESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    start
        .stdin
        .take()
        .unwrap()
        .write_all(&params.write_to_bytes().unwrap())
        .unwrap();
    let out = start.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = BootstrapResult::parse_from_bytes(&out.stdout).expect("a BootstrapResult");
    assert_eq!(result.protocol, "ttrpc");
    assert_eq!(result.version, containerd_shim_protos::TASK_API_VERSION);
    let prefix = format!("unix://{}/", sockets.path().display());
    assert!(result.address.starts_with(&prefix), "{}", result.address);

    // It serves the Task API there, and leaves when told it has no task.
    let client = shim_sync::Client::connect(&result.address).unwrap();
    let task = shim_sync::TaskClient::new(client);
    let context = containerd_shim_protos::ttrpc::context::with_timeout(5_000_000_000);
    let connected = task
        .connect(context.clone(), &api::ConnectRequest::default())
        .unwrap();
    assert!(connected.shim_pid > 0);
    task.shutdown(context, &api::ShutdownRequest::default())
        .unwrap();
    wait_for("the shim to exit", Duration::from_secs(10), || {
        common::shim_pids(ctrd.dir()).is_empty()
    });
    let said = log_reader.join().unwrap();
    assert!(said.contains("no tasks left"), "shim log: {said}");
}
