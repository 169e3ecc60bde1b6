//! End-to-end tests through the CRI: a private containerd with its CRI
//! plugin, driven as kubelet drives it (RunPodSandbox under the `wasmtime`
//! handler, CreateContainer, StartContainer, ContainerStatus, ExecSync,
//! Exec, stats, updates, StopPodSandbox, RemovePodSandbox). Each test
//! starts its own containerd and checks that its pods leave nothing
//! behind: no shim process, no cgroup.

mod common;

use std::time::{Duration, Instant};

use common::cri::api::{
    self, ContainerConfig, ContainerState, LinuxContainerResources, NamespaceMode,
};
use common::cri::{Cri, Pod, container_log, cri, log_lines};
use common::{children_of, shim_pids, wait_for};

/// Runs `config` in `pod` and waits until it has exited.
fn run_to_exit(cri: &Cri, pod: &Pod, config: ContainerConfig) -> api::ContainerStatus {
    let id = cri.run(pod, config);
    cri.wait_state(&id, ContainerState::ContainerExited)
}

/// Runs `config` in `pod` and waits until it runs.
fn run_running(cri: &Cri, pod: &Pod, config: ContainerConfig) -> String {
    let id = cri.run(pod, config);
    cri.wait_state(&id, ContainerState::ContainerRunning);
    id
}

/// A Wasm container that sleeps and a native busybox sidecar that sleeps
/// in `pod`, both running: (Wasm, sidecar).
fn wasm_and_sidecar(cri: &Cri, pod: &Pod) -> (String, String) {
    let wasm = run_running(cri, pod, pod.container("wasm", "sleep", &[]));
    let sleep = ["/bin/busybox", "sleep", "1000"];
    let sidecar = with_command(pod.container("sidecar", "busybox", &[]), &sleep);
    (wasm, run_running(cri, pod, sidecar))
}

/// Removes `pod` as kubelet does and checks that nothing of it is left.
fn finish(cri: &Cri, pod: &Pod) {
    cri.remove_pod(pod);
    cri.assert_clean();
}

/// `config` with `resources` as its Linux resources.
fn with_resources(
    mut config: ContainerConfig,
    resources: LinuxContainerResources,
) -> ContainerConfig {
    config.linux.get_or_insert_default().resources = Some(resources);
    config
}

/// `config` running `command` instead of the image's entrypoint.
fn with_command(mut config: ContainerConfig, command: &[&str]) -> ContainerConfig {
    config.command = command.iter().map(|s| s.to_string()).collect();
    config
}

#[test]
fn wasm_pods_on_the_host_network_and_their_own_complete_with_cri_logs() {
    let Some(cri) = cri() else { return };
    cri.import(&["hello"]);
    // The host's network, or one of the pod's own with an address from CNI.
    for (name, network, ip) in [
        ("host-net", NamespaceMode::Node, ""),
        ("pod-net", NamespaceMode::Pod, "198.18.0."),
    ] {
        let pod = cri.new_pod(name, network);
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: false,
        };
        let status = cri.ok("PodSandboxStatus", cri.runtime().pod_sandbox_status(req));
        let pod_ip = status.status.and_then(|s| s.network).map(|n| n.ip);
        assert!(
            pod_ip
                .as_deref()
                .is_some_and(|a| a.starts_with(ip) && (ip.is_empty() == a.is_empty())),
            "{name}: {pod_ip:?}"
        );
        let status = run_to_exit(&cri, &pod, pod.container("hello", "hello", &[]));
        assert_eq!(
            (status.exit_code, status.reason.as_str()),
            (0, "Completed"),
            "{status:?}"
        );
        // containerd stamps started_at when Start has returned, and a
        // hello whose code is cached can exit before that: only the order
        // against creation holds.
        assert!(
            status.started_at > 0 && status.finished_at >= status.created_at,
            "{status:?}"
        );
        let log = container_log(&pod, "hello");
        assert_eq!(log_lines(&log, "stdout"), ["hello from wasm"], "{log}");
        finish(&cri, &pod);
    }
}

#[test]
fn a_wasm_exit_code_is_the_container_exit_code() {
    let Some(cri) = cri() else { return };
    cri.import(&["exit"]);
    let pod = cri.new_pod("exit", NamespaceMode::Node);
    let status = run_to_exit(&cri, &pod, pod.container("exit", "exit", &["42"]));
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (42, "Error"),
        "{status:?}"
    );
    finish(&cri, &pod);
}

#[test]
fn a_native_sidecar_and_a_wasm_container_take_exec() {
    let Some(cri) = cri() else { return };
    cri.import(&["sleep", "busybox"]);
    let pod = cri.new_pod("sidecar", NamespaceMode::Pod);
    let (wasm, sidecar) = wasm_and_sidecar(&cri, &pod);

    let script = ["/bin/busybox", "sh", "-c", "echo hi; echo oops >&2; exit 3"];
    let out = cri
        .exec_sync(&sidecar, &script)
        .unwrap_or_else(|e| panic!("ExecSync: {e:?}\n{}", cri.log_tail()));
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"hi\n"[..], &b"oops\n"[..], 3)
    );
    // The exec joins the sidecar's namespaces: the pod's UTS namespace and
    // the sidecar's own PID namespace, whose PID 1 is its sleep.
    let exec_out = |cmd: &[&str]| cri.exec_sync(&sidecar, cmd).unwrap().stdout;
    assert_eq!(exec_out(&["/bin/busybox", "hostname"]), b"sidecar\n");
    assert_eq!(
        exec_out(&["/bin/busybox", "cat", "/proc/1/cmdline"]),
        b"/bin/busybox\x00sleep\x001000\x00"
    );

    // An exec of a module of the Wasm container's root runs it as a new
    // instance in the container's sandbox; a program it lacks is named.
    let module = cri.exec_sync(&wasm, &["/sleep.wasm", "0"]).unwrap();
    assert_eq!(
        (module.stdout.as_slice(), module.exit_code),
        (&b"sleeping\nawake\n"[..], 0)
    );
    let missing = cri.exec_sync(&wasm, &["sh", "-c", "true"]);
    let said = match missing {
        Ok(out) => format!(
            "{}: {}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(status) => status.message().to_string(),
    };
    assert!(said.contains("sh: executable file not found"), "{said}");

    // The streaming Exec, driven as `kubectl exec` drives it.
    let streamed = common::cri::stream_exec(&cri.exec_url(&sidecar, &script));
    assert_eq!(
        (streamed.stdout.as_str(), streamed.stderr.as_str()),
        ("hi\n", "oops\n"),
        "{streamed:?}"
    );
    assert_eq!(
        common::cri::streamed_exit_code(&streamed.status),
        Some(3),
        "{streamed:?}"
    );
    let streamed = common::cri::stream_exec(&cri.exec_url(&wasm, &["/sleep.wasm", "0"]));
    assert_eq!(streamed.stdout, "sleeping\nawake\n", "{streamed:?}");
    assert_eq!(common::cri::streamed_exit_code(&streamed.status), Some(0));
    finish(&cri, &pod);
}

#[test]
fn twenty_wasm_containers_of_a_pod_share_one_shim() {
    let Some(cri) = cri() else { return };
    cri.import(&["sleep"]);
    let pod = cri.new_pod("dense", NamespaceMode::Node);
    let run = |i: usize| cri.run(&pod, pod.container(&format!("sleep-{i}"), "sleep", &[]));
    run_running(&cri, &pod, pod.container("sleep-0", "sleep", &[]));
    let shim = one_shim(&cri);
    let one = common::cri::pss_kib(&shim_and_children(shim));

    let start = Instant::now();
    let ids: Vec<String> = (1..20).map(run).collect();
    for id in &ids {
        cri.wait_state(id, ContainerState::ContainerRunning);
    }
    let started = start.elapsed();
    assert_eq!(one_shim(&cri), shim);
    let children = children_of(shim);
    let wasm = children
        .iter()
        .filter(|pid| common::is_wasm_child(**pid))
        .count();
    assert_eq!(
        (children.len(), wasm),
        (21, 20),
        "the shim's children: 20 Wasm and the pause container"
    );
    let twenty = common::cri::pss_kib(&shim_and_children(shim));
    eprintln!(
        "PSS of the pod's shim and children: {:.1} MB with 1 Wasm container, {:.1} MB with 20 \
         ({:.2} MB per additional container); 19 more started in {started:?}",
        one as f64 / 1024.0,
        twenty as f64 / 1024.0,
        (twenty - one) as f64 / 1024.0 / 19.0,
    );
    finish(&cri, &pod);
}

/// The one shim of this containerd.
fn one_shim(cri: &Cri) -> i32 {
    let shims = shim_pids(cri.dir());
    assert_eq!(shims.len(), 1, "shims: {shims:?}");
    shims[0]
}

fn shim_and_children(shim: i32) -> Vec<i32> {
    let mut pids = children_of(shim);
    pids.push(shim);
    pids
}

#[test]
fn a_native_container_past_its_memory_limit_is_oom_killed() {
    let Some(cri) = cri() else { return };
    cri.import(&["probe"]);
    let pod = cri.new_pod("oom", NamespaceMode::Node);
    let limit = LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    };
    let alloc = with_resources(pod.container("alloc", "probe", &["alloc", "512"]), limit);
    let id = cri.run(&pod, alloc);
    cri.wait_state(&id, ContainerState::ContainerExited);
    // The reason comes with the OOM event, which may trail the exit.
    let mut status = None;
    wait_for("the reason OOMKilled", Duration::from_secs(5), || {
        let now = cri.status(&id);
        let done = now.reason == "OOMKilled";
        status = Some(now);
        done
    });
    assert_eq!(status.unwrap().exit_code, 137);
    finish(&cri, &pod);
}

#[test]
fn stop_container_ends_a_sleeping_wasm_guest_at_once() {
    let Some(cri) = cri() else { return };
    cri.import(&["sleep"]);
    let pod = cri.new_pod("stop", NamespaceMode::Node);
    let id = run_running(&cri, &pod, pod.container("sleep", "sleep", &[]));
    let start = Instant::now();
    cri.stop(&id, 10);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "StopContainer took {took:?}");
    let status = cri.status(&id);
    assert_eq!(
        (status.state, status.exit_code, status.reason.as_str()),
        (ContainerState::ContainerExited as i32, 143, "Error"),
        "{status:?}"
    );
    finish(&cri, &pod);
}

#[test]
fn stats_of_a_running_wasm_container_and_an_update_of_its_resources() {
    let Some(cri) = cri() else { return };
    cri.import(&["sleep"]);
    let pod = cri.new_pod("stats", NamespaceMode::Node);
    let limit = LinuxContainerResources {
        memory_limit_in_bytes: 256 << 20,
        ..Default::default()
    };
    let id = run_running(
        &cri,
        &pod,
        with_resources(pod.container("sleep", "sleep", &[]), limit),
    );

    let req = api::ContainerStatsRequest {
        container_id: id.clone(),
    };
    let stats = cri.ok("ContainerStats", cri.runtime().container_stats(req));
    assert_used(&stats.stats.expect("stats"));
    let req = api::ListContainerStatsRequest {
        filter: Some(api::ContainerStatsFilter {
            pod_sandbox_id: pod.id.clone(),
            ..Default::default()
        }),
    };
    let list = cri.ok(
        "ListContainerStats",
        cri.runtime().list_container_stats(req),
    );
    let listed = list
        .stats
        .iter()
        .find(|s| s.attributes.as_ref().is_some_and(|a| a.id == id))
        .unwrap_or_else(|| panic!("{id} not in {list:?}"));
    assert_used(listed);

    let req = api::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            cpu_shares: 512,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    };
    cri.ok(
        "UpdateContainerResources",
        cri.runtime().update_container_resources(req),
    );
    let read = |controller: &str, file: &str| {
        let path = cri.cgroup(controller, &id).join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    };
    match common::cri::cgroup_v2() {
        false => assert_eq!(
            [
                read("memory", "memory.limit_in_bytes"),
                read("cpu", "cpu.shares"),
                read("cpu", "cpu.cfs_quota_us"),
            ],
            ["134217728", "512", "50000"]
        ),
        // runc's conversion of 512 shares to a weight gives 20.
        true => assert_eq!(
            [
                read("", "memory.max"),
                read("", "cpu.weight"),
                read("", "cpu.max"),
            ],
            ["134217728", "20", "50000 100000"]
        ),
    }
    assert_eq!(
        cri.status(&id).state,
        ContainerState::ContainerRunning as i32
    );
    finish(&cri, &pod);
}

/// Stats with CPU time used and memory in its working set.
fn assert_used(stats: &api::ContainerStats) {
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map_or(0, |v| v.value);
    let memory = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value);
    assert!(cpu > 0 && memory > 0, "{stats:?}");
}

/// A pod that shares its process namespace (`shareProcessNamespace`):
/// every container enters the pause container's PID namespace by the path
/// the CRI names, Wasm and native alike, and each process shows there by
/// its program's name (what `ps` in a sidecar lists).
#[test]
fn containers_of_a_pod_that_shares_its_pid_namespace_see_each_other() {
    let Some(cri) = cri() else { return };
    cri.import(&["sleep", "busybox"]);
    let pod = cri.shared_pid_pod("shared-pid");
    let (_wasm, sidecar) = wasm_and_sidecar(&cri, &pod);
    let list = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done";
    let out = cri
        .exec_sync(&sidecar, &["/bin/busybox", "sh", "-c", list])
        .unwrap_or_else(|e| panic!("ExecSync: {e:?}\n{}", cri.log_tail()));
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    let init = cri.exec_sync(&sidecar, &["/bin/busybox", "cat", "/proc/1/cmdline"]);
    assert_eq!(init.unwrap().stdout, b"/pause\0", "{seen}");
    // The Wasm container's process is named after its program, as the
    // native one is: its command line is its args, its comm the module's.
    assert!(
        seen.lines().any(|l| l.trim_end() == "/sleep.wasm"),
        "{seen}"
    );
    assert!(!seen.contains("__child"), "{seen}");
    assert!(seen.contains("sleep 1000"), "{seen}");
    let comms = cri
        .exec_sync(
            &sidecar,
            &["/bin/busybox", "sh", "-c", "cat /proc/[0-9]*/comm"],
        )
        .unwrap();
    let comms = String::from_utf8_lossy(&comms.stdout).into_owned();
    assert!(comms.lines().any(|l| l == "sleep.wasm"), "{comms}");
    finish(&cri, &pod);
}

/// A container without a PID namespace of its own (its pod's, shared by
/// its containers, or the host's) whose first process exits leaves no
/// process behind: the rest of its cgroup is killed, as runc's shim does.
/// Else a child that outlives it keeps its stdio open and kubelet waits on
/// it forever (a pod stuck in Terminating).
#[test]
fn processes_left_by_a_container_without_its_own_pid_namespace_are_killed() {
    let Some(cri) = cri() else { return };
    cri.import(&["busybox"]);
    let shared = cri.shared_pid_pod("outlived-pod");
    let mut config = cri.pod_config("outlived-host", NamespaceMode::Node);
    let options = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut());
    let options = options.and_then(|s| s.namespace_options.as_mut()).unwrap();
    options.pid = NamespaceMode::Node.into();
    let host = cri.run_pod(config);
    let script = "/bin/busybox sleep 1000 & exec /bin/busybox sleep 1";
    for pod in [&shared, &host] {
        let command = ["/bin/busybox", "sh", "-c", script];
        let id = cri.run(
            pod,
            with_command(pod.container("left", "busybox", &[]), &command),
        );
        let status = cri.wait_state(&id, ContainerState::ContainerExited);
        assert_eq!(status.exit_code, 0, "{status:?}");
        let cgroup = cri.cgroup("pids", &id).join("cgroup.procs");
        wait_for(
            "the container's cgroup to empty",
            Duration::from_secs(10),
            || {
                std::fs::read_to_string(&cgroup)
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
            },
        );
        cri.stop(&id, 10);
        cri.remove_pod(pod);
    }
    cri.assert_clean();
}

/// A mount that a privileged container makes under a Bidirectional
/// volume reaches the host, under the shim as under runc: the volume's
/// mount stays shared through pivot_root (`shared:N` in the container's
/// mountinfo, not `master:N`).
#[test]
fn a_bidirectional_volume_carries_mounts_to_the_host_as_under_runc() {
    let Some(cri) = cri() else { return };
    cri.import(&["busybox"]);
    let shared = common::Tmpfs::shared(cri.dir().join("bidirectional"));
    for handler in ["runc", common::cri::HANDLER] {
        std::fs::create_dir_all(shared.0.join(handler)).unwrap();
        let mut config = cri.pod_config(&format!("bidi-{handler}"), NamespaceMode::Node);
        let linux = config.linux.get_or_insert_default();
        linux.security_context.get_or_insert_default().privileged = true;
        let pod = cri.run_pod_under(config, handler);
        let script = format!(
            "grep ' /vol ' /proc/self/mountinfo; mount -t tmpfs tmpfs /vol/{handler} && \
             echo from-container > /vol/{handler}/f"
        );
        let mut container = with_command(
            pod.container("mounter", "busybox", &[]),
            &["/bin/busybox", "sh", "-c", &script],
        );
        container.mounts = vec![api::Mount {
            container_path: "/vol".into(),
            host_path: shared.0.to_string_lossy().into_owned(),
            propagation: api::MountPropagation::PropagationBidirectional as i32,
            ..Default::default()
        }];
        let context = container.linux.get_or_insert_default();
        context.security_context.get_or_insert_default().privileged = true;
        let status = run_to_exit(&cri, &pod, container);
        let log = container_log(&pod, "mounter");
        assert_eq!(status.exit_code, 0, "{handler}: {status:?}\n{log}");
        let carried = std::fs::read_to_string(shared.0.join(handler).join("f"));
        assert_eq!(
            carried.ok().as_deref(),
            Some("from-container\n"),
            "{handler}: the mount did not reach the host; the volume in the container:\n{log}"
        );
        cri.remove_pod(&pod);
    }
    drop(shared);
    cri.assert_clean();
}

/// The node installer, run on this containerd's own default config, gives
/// a config on which this containerd runs a Wasm pod. Only what makes a
/// node config fit this test machine is changed after: the node's paths
/// become the fixture's, and oom_score_adj is restricted (root here may
/// not lower it).
#[test]
fn the_installer_makes_the_default_config_run_a_wasm_pod() {
    if !common::can_run() {
        return;
    }
    let node = tempfile::tempdir().unwrap();
    let config = node.path().join("etc/containerd/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let default = std::process::Command::new(common::containerd_bin("containerd"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(default.status.success());
    std::fs::write(&config, &default.stdout).unwrap();
    let installer = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/installer/install.sh"
    );
    let installed = std::process::Command::new(installer)
        .arg("install")
        .env("HOST_ROOT", node.path())
        .env("SHIM_SOURCE", common::Containerd::built_shim())
        .env("RESTART", "none")
        .env("VERIFY", "no")
        .output()
        .unwrap();
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    assert!(
        node.path()
            .join("usr/local/bin/containerd-shim-wasmtime-v1")
            .exists()
    );
    let patched = std::fs::read_to_string(&config).unwrap();
    let sandbox_image = patched
        .lines()
        .map(str::trim)
        .find_map(|l| {
            let value = l
                .strip_prefix("sandbox_image = ")
                .or_else(|| l.strip_prefix("sandbox = "))?;
            Some(value.trim_matches(|c| c == '"' || c == '\'').to_string())
        })
        .expect("the default config names a sandbox image");

    let ctrd = common::Containerd::start_on_config("cri-installed", |dir| {
        common::cri::fit_to_fixture(&patched, dir)
    });
    let cri = Cri::on(ctrd);
    cri.import(&["pause", "hello"]);
    let pause = common::image("pause");
    let tagged = cri.ctrd().ctr_in(
        common::cri::K8S_NAMESPACE,
        &["images", "tag", &pause, &sandbox_image],
    );
    assert!(tagged.status.success(), "{tagged:?}");
    let pod = cri.new_pod("installed", NamespaceMode::Node);
    let status = run_to_exit(&cri, &pod, pod.container("hello", "hello", &[]));
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert_eq!(
        log_lines(&container_log(&pod, "hello"), "stdout"),
        ["hello from wasm"]
    );
    finish(&cri, &pod);
}
