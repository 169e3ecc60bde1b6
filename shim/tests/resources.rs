//! Resources through the Task API: metrics, pause and resume with their
//! events, Update of a running task seen in the cgroup files, an Update
//! below the current usage refused, and the `/tasks/oom` event (also for
//! ten containers OOM-killed at once).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Containerd, containerd, wait_for};
use containerd_shim::api::UpdateTaskRequest;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::shim_sync::{Client, TaskClient};
use containerd_shim::protos::ttrpc::context;

/// A ttrpc client of the shim that serves task `id`, at the address its
/// bundle records, as containerd itself would call it.
fn task_client(ctrd: &Containerd, id: &str) -> TaskClient {
    let bundle = ctrd.dir().join(format!(
        "state/io.containerd.runtime.v2.task/{}/{id}",
        common::NAMESPACE
    ));
    let address = std::fs::read_to_string(bundle.join("address")).unwrap();
    TaskClient::new(Client::connect(&address).unwrap())
}

fn update(client: &TaskClient, id: &str, resources: serde_json::Value) -> Result<(), String> {
    let req = UpdateTaskRequest {
        id: id.to_string(),
        resources: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: resources.to_string().into_bytes(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    client
        .update(context::with_timeout(10_000_000_000), &req)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn cgroup_file(controller: &str, id: &str, file: &str) -> String {
    let path = PathBuf::from("/sys/fs/cgroup")
        .join(controller)
        .join(common::NAMESPACE)
        .join(id)
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The number of lines the count guest has written to its log so far.
fn counted(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn metrics_pause_resume_and_update_of_a_running_wasm_task() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("count");
    let events = ctrd.events();
    let id = "res-1";
    let log = ctrd.dir().join("count.log");
    let uri = format!("file://{}", log.display());
    ctrd.start_detached(
        "count",
        id,
        &["--log-uri", &uri, "--memory-limit", "268435456"],
    );
    assert_eq!(
        cgroup_file("memory", id, "memory.limit_in_bytes"),
        "268435456"
    );

    let metrics = ctrd.ctr(&["task", "metrics", id]);
    let table = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.status.success(), "{metrics:?}");
    for row in [
        "memory.usage_in_bytes",
        "memory.limit_in_bytes",
        "pids.current",
    ] {
        assert!(table.contains(row), "no {row} in:\n{table}");
    }

    wait_for("the guest to count", Duration::from_secs(10), || {
        counted(&log) > 2
    });
    assert!(ctrd.ctr(&["task", "pause", id]).status.success());
    ctrd.wait_status(id, "PAUSED");
    events.wait_for("/tasks/paused", id);
    let frozen = counted(&log);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(counted(&log), frozen, "a paused guest went on counting");
    assert!(ctrd.ctr(&["task", "resume", id]).status.success());
    ctrd.wait_status(id, "RUNNING");
    events.wait_for("/tasks/resumed", id);
    wait_for("the guest to count again", Duration::from_secs(10), || {
        counted(&log) > frozen + 2
    });

    let client = task_client(&ctrd, id);
    let new = serde_json::json!({"memory": {"limit": 134217728},
                                 "cpu": {"quota": 50000, "period": 100000}});
    update(&client, id, new).unwrap();
    assert_eq!(
        cgroup_file("memory", id, "memory.limit_in_bytes"),
        "134217728"
    );
    assert_eq!(cgroup_file("cpu", id, "cpu.cfs_quota_us"), "50000");
    assert_eq!(cgroup_file("cpu", id, "cpu.cfs_period_us"), "100000");

    let too_low = update(&client, id, serde_json::json!({"memory": {"limit": 4096}})).unwrap_err();
    assert!(
        too_low.contains("below the container's current memory usage"),
        "{too_low}"
    );
    assert_eq!(
        cgroup_file("memory", id, "memory.limit_in_bytes"),
        "134217728"
    );
    assert_eq!(ctrd.task_status(id).as_deref(), Some("RUNNING"));
    ctrd.stop_and_remove(id, "SIGKILL");
}

#[test]
fn a_kernel_oom_kill_is_an_oom_event() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("probe");
    let events = ctrd.events();
    let run = ctrd.run_with(
        "probe",
        "oom-1",
        &["--memory-limit", "67108864"],
        &["/probe", "alloc", "512"],
    );
    assert_eq!(run.code, 137, "{run:?}");
    events.wait_for("/tasks/oom", "oom-1");
    ctrd.assert_clean("oom-1");
}

/// Ten containers OOM-killed at once: each ends with 137 and its own
/// `/tasks/oom` event, and nothing of any is left.
#[test]
fn ten_oom_kills_at_once_each_end_with_their_status_and_event() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("probe");
    let events = ctrd.events();
    let ids: Vec<String> = (0..10).map(|n| format!("oom-many-{n}")).collect();
    let runs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| {
                let ctrd = &ctrd;
                s.spawn(move || {
                    ctrd.run_with(
                        "probe",
                        id,
                        &["--memory-limit", "67108864"],
                        &["/probe", "alloc", "512"],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (id, run) in ids.iter().zip(&runs) {
        assert_eq!(run.code, 137, "{id}: {run:?}");
    }
    for id in &ids {
        events.wait_for("/tasks/oom", id);
        ctrd.assert_clean(id);
    }
}

/// A spec without `linux.cgroupsPath` still gets a cgroup, as runc gives
/// it one (the container's id under the cgroup of the process that
/// creates it): its memory limit holds under both runtimes, and the
/// cgroup is gone with the container.
#[test]
fn a_spec_without_a_cgroups_path_still_gets_a_cgroup() {
    let Some(ctrd) = containerd() else { return };
    let rootfs = ctrd.probe_rootfs("no-cgroups-path-rootfs");
    for (runtime, id) in [
        (common::RUNTIME, "no-cgroups-path-ours"),
        ("io.containerd.runc.v2", "no-cgroups-path-runc"),
    ] {
        let spec_for = |args: &[&str]| {
            let mut spec = ctrd.default_spec(&rootfs, id, args);
            spec["linux"].as_object_mut().unwrap().remove("cgroupsPath");
            spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": 64 << 20});
            spec
        };
        let report = ctrd.run_config(runtime, id, &spec_for(&["/probe"]));
        assert_eq!(report.code, 0, "{runtime}: {report:?}");
        // The memory hierarchy (v1), else the unified one (v2).
        let lines: Vec<&str> = report
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("cgroup: "))
            .collect();
        let line = (lines.iter().find(|l| l.contains(":memory:")))
            .or_else(|| lines.iter().find(|l| l.starts_with("0::")))
            .unwrap_or_else(|| panic!("{runtime}: no cgroup line: {report:?}"));
        let path = line.splitn(3, ':').nth(2).unwrap();
        assert!(
            path.ends_with(&format!("/{id}")),
            "{runtime}: the container's cgroup is {path}, not one named by its id"
        );
        let root = match line.starts_with("0::") {
            true => "/sys/fs/cgroup",
            false => "/sys/fs/cgroup/memory",
        };
        let dir = std::path::Path::new(root).join(path.trim_start_matches('/'));
        assert!(!dir.exists(), "{runtime}: {} is left", dir.display());
        let oom = ctrd.run_config(runtime, id, &spec_for(&["/probe", "alloc", "512"]));
        assert_eq!(oom.code, 137, "{runtime}: the limit did not hold: {oom:?}");
        assert!(!dir.exists(), "{runtime}: {} is left", dir.display());
    }
}

/// A systemd-form `linux.cgroupsPath` (`slice:prefix:name`, what
/// containerd 1.6 and 1.7 make from critest's pods) on a host without
/// systemd: runc's cgroupfs driver takes it as a path below its own
/// cgroup, and so does this shim; the limit holds and the cgroup goes.
#[test]
fn a_systemd_form_cgroups_path_without_systemd_is_a_path_as_under_runc() {
    let Some(ctrd) = containerd() else { return };
    if std::path::Path::new("/run/systemd/system").exists() {
        eprintln!("skipping: systemd runs this host, which takes the path as its unit's");
        return;
    }
    let rootfs = ctrd.probe_rootfs("systemd-form-rootfs");
    let mut seen = Vec::new();
    for (runtime, id) in [
        ("io.containerd.runc.v2", "systemd-form-runc"),
        (common::RUNTIME, "systemd-form-ours"),
    ] {
        let spec_for = |args: &[&str]| {
            let mut spec = ctrd.default_spec(&rootfs, id, args);
            spec["linux"]["cgroupsPath"] = format!("e2e-test.slice:cri-containerd:{id}").into();
            spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": 64 << 20});
            spec
        };
        let report = ctrd.run_config(runtime, id, &spec_for(&["/probe"]));
        assert_eq!(report.code, 0, "{runtime}: {report:?}");
        let cgroups: Vec<String> = report
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("cgroup: "))
            .map(|l| l.replace(id, "<id>"))
            .collect();
        assert!(
            cgroups
                .iter()
                .any(|l| l.ends_with("/e2e-test.slice:cri-containerd:<id>")),
            "{runtime}: {cgroups:?}"
        );
        let oom = ctrd.run_config(runtime, id, &spec_for(&["/probe", "alloc", "512"]));
        assert_eq!(oom.code, 137, "{runtime}: the limit did not hold: {oom:?}");
        ctrd.assert_clean(id);
        for line in &cgroups {
            let mut fields = line.splitn(3, ':');
            let (controllers, path) = (fields.nth(1).unwrap_or(""), fields.next().unwrap_or(""));
            let unified = std::path::Path::new("/sys/fs/cgroup/unified").exists();
            let dir = match controllers {
                "" if unified => "/sys/fs/cgroup/unified".to_string(),
                "" => "/sys/fs/cgroup".to_string(),
                c => format!("/sys/fs/cgroup/{}", c.trim_start_matches("name=")),
            };
            let dir = format!("{dir}{}", path.replace("<id>", id));
            assert!(
                !std::path::Path::new(&dir).exists(),
                "{runtime}: {dir} is left"
            );
        }
        seen.push(cgroups);
    }
    assert_eq!(seen[0], seen[1], "runc's cgroups, then this shim's");
}
