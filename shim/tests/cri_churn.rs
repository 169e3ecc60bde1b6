//! Concurrent pod lifecycles through the CRI, as kubelet drives them: four
//! at a time, each pod runs its pause container and one container (a Wasm
//! module, a component or a native busybox) under this shim on the pod
//! network, waits for its exit, reads its status and log, then stops and
//! removes the pod. Every container must end with its own status and
//! output; afterwards nothing may be left (pod, container, shim, cgroup),
//! and containerd's memory must be back near where it was after a warm-up.
//! And one pod's shim serving container after container: its memory does
//! not grow with the number of containers it has served.
//!
//! `CRI_CHURN_PODS` sets the number of pods (`make test` runs 500, about
//! 40 s; `make soak` 2,000), `CRI_CHURN_CONTAINERS` that of containers in
//! one pod (600; `make soak` 1,500).

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::cri::api::{self, ContainerState, NamespaceMode};
use common::cri::{Cri, container_log, log_lines};

const DEFAULT_PODS: usize = 500;
/// Containers one pod's shim serves, one after another in fours.
const CONTAINERS_IN_ONE_POD: usize = 600;
/// The shim may hold this much more anonymous memory after serving the
/// second half of them than after the first. Measured here, from 150 to
/// 300 containers it grew by up to 3 MB and from 300 to 600 by up to 2.2
/// MB on a loaded machine (malloc's arenas settling), from 600 to 1,200 by
/// 0.1 MB: not a cost per container. A leak of 14 kB per container
/// crosses it at 600 containers, one of 6 kB at `make soak`'s 1,500.
const SHIM_ANON_SLACK_KB: u64 = 4 * 1024;
/// The two tests take turns: the other's load would move the measure.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const CONCURRENCY: usize = 4;
/// Pods run before containerd's memory is first measured, so that its
/// caches and pools are warm.
const WARM_UP: usize = 12;
/// containerd may hold this much more after the churn than after the
/// warm-up (Go's heap is returned to the system lazily); a leak of a few
/// kilobytes per pod crosses it at `make soak`'s size.
const RSS_SLACK_KB: u64 = 24 * 1024;

/// One kind of container: image, arguments, exit status, stdout lines.
type Kind = (
    &'static str,
    &'static [&'static str],
    i32,
    &'static [&'static str],
);

const KINDS: [Kind; 3] = [
    ("hello", &[], 0, &["hello from wasm"]),
    ("component", &[], 42, &[]),
    ("busybox", &["-c", "echo native; exit 7"], 7, &["native"]),
];

fn pods() -> usize {
    std::env::var("CRI_CHURN_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PODS)
}

/// Runs container `n` of `KINDS` in `pod` to its end and removes it.
fn container_in(cri: &Cri, pod: &common::cri::Pod, n: usize) -> Result<(), String> {
    let (image, args, code, stdout) = KINDS[n % KINDS.len()];
    let name = format!("c{n}");
    let id = cri.run(pod, pod.container(&name, image, args));
    let status = cri.wait_state(&id, ContainerState::ContainerExited);
    let said = log_lines(&container_log(pod, &name), "stdout");
    cri.ok(
        "RemoveContainer",
        cri.runtime().remove_container(api::RemoveContainerRequest {
            container_id: id.clone(),
        }),
    );
    if status.exit_code != code || said != stdout {
        return Err(format!(
            "container {n} ({image}): exit {} (want {code}), stdout {said:?} (want {stdout:?})",
            status.exit_code
        ));
    }
    Ok(())
}

/// One pod's whole life; `Err` says what went wrong.
fn lifecycle(cri: &Cri, n: usize) -> Result<(), String> {
    let (image, args, code, stdout) = KINDS[n % KINDS.len()];
    let pod = cri.new_pod(&format!("churn-{n}"), NamespaceMode::Pod);
    let id = cri.run(&pod, pod.container("c", image, args));
    let status = cri.wait_state(&id, ContainerState::ContainerExited);
    let log = container_log(&pod, "c");
    let said = log_lines(&log, "stdout");
    cri.remove_pod(&pod);
    if status.exit_code != code || said != stdout {
        return Err(format!(
            "pod {n} ({image}): exit {} (want {code}), stdout {said:?} (want {stdout:?})",
            status.exit_code
        ));
    }
    Ok(())
}

/// Runs pods `from..to`, `CONCURRENCY` at a time, collecting failures.
fn churn(cri: &Cri, from: usize, to: usize, failures: &Mutex<Vec<String>>) {
    in_fours(from, to, failures, |n| lifecycle(cri, n));
}

/// Runs `work(n)` for `n` in `from..to`, `CONCURRENCY` at a time,
/// collecting failures.
fn in_fours(
    from: usize,
    to: usize,
    failures: &Mutex<Vec<String>>,
    work: impl Fn(usize) -> Result<(), String> + Sync,
) {
    let next = AtomicUsize::new(from);
    std::thread::scope(|s| {
        for _ in 0..CONCURRENCY {
            s.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= to {
                        break;
                    }
                    if let Err(e) = work(n) {
                        failures.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
}

fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// A number (in kB for sizes) of /proc/<pid>/status.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} of {pid}"))
}

#[test]
fn concurrent_pod_lifecycles_end_with_their_own_status_and_leave_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cri) = common::cri::cri() else {
        return;
    };
    cri.import(&KINDS.map(|(image, ..)| image));
    let total = pods().max(WARM_UP);
    let failures = Mutex::new(Vec::new());
    churn(&cri, 0, WARM_UP, &failures);
    let warm = rss_kb(cri.ctrd().pid());
    churn(&cri, WARM_UP, total, &failures);
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {total} pods failed: {failures:#?}\n{}",
        failures.len(),
        cri.log_tail()
    );

    cri.assert_clean();
    let listed = cri.ok(
        "ListPodSandbox",
        cri.runtime()
            .list_pod_sandbox(api::ListPodSandboxRequest::default()),
    );
    assert!(listed.items.is_empty(), "pods left: {:?}", listed.items);
    let containers = cri.ok(
        "ListContainers",
        cri.runtime()
            .list_containers(api::ListContainersRequest::default()),
    );
    assert!(
        containers.containers.is_empty(),
        "containers left: {:?}",
        containers.containers
    );
    // Go returns freed heap to the system in the background: give it time.
    let mut after = rss_kb(cri.ctrd().pid());
    for _ in 0..20 {
        if after <= warm + RSS_SLACK_KB {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        after = rss_kb(cri.ctrd().pid());
    }
    println!("containerd RSS: {warm} kB after {WARM_UP} pods, {after} kB after {total}");
    assert!(
        after <= warm + RSS_SLACK_KB,
        "containerd grew from {warm} kB after {WARM_UP} pods to {after} kB after {total}"
    );
}

#[test]
fn a_pods_shim_does_not_grow_with_the_containers_it_served() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cri) = common::cri::cri() else {
        return;
    };
    cri.import(&KINDS.map(|(image, ..)| image));
    let pod = cri.new_pod("many", NamespaceMode::Pod);
    let shims = common::shim_pids(cri.dir());
    assert_eq!(shims.len(), 1, "one shim serves the pod: {shims:?}");
    let shim = shims[0] as u32;
    let idle_threads = status_kb(shim, "Threads:");
    let total = std::env::var("CRI_CHURN_CONTAINERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CONTAINERS_IN_ONE_POD);
    let half = total / 2;
    let failures = Mutex::new(Vec::new());
    // The first half warms the shim up (its allocator's arenas, its thread
    // pools); the second must then add nothing that stays.
    in_fours(0, half, &failures, |n| container_in(&cri, &pod, n));
    let warm = anon_kb(shim, idle_threads);
    in_fours(half, total, &failures, |n| container_in(&cri, &pod, n));
    let after = anon_kb(shim, idle_threads);
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:#?}\n{}", cri.log_tail());
    println!(
        "the pod's shim: {warm} kB anonymous memory after {half} containers, {after} kB after {total}"
    );
    assert!(
        after <= warm + SHIM_ANON_SLACK_KB,
        "the pod's shim grew from {warm} kB to {after} kB over {} containers",
        total - half
    );
    cri.remove_pod(&pod);
    cri.assert_clean();
}

/// The process's anonymous resident memory (its heap and stacks, not the
/// binary's pages it happened to touch) once it is idle again: its worker
/// threads down to `idle_threads` (tokio ends idle blocking threads after
/// 10 s), then the least of a few readings over a second.
fn anon_kb(pid: u32, idle_threads: u64) -> u64 {
    common::wait_for(
        "the shim's threads to wind down",
        Duration::from_secs(60),
        || status_kb(pid, "Threads:") <= idle_threads,
    );
    (0..5)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(250));
            }
            status_kb(pid, "RssAnon:")
        })
        .min()
        .unwrap()
}
