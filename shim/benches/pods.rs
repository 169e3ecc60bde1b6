//! `make bench`'s pod rows: a pod driven through containerd's CRI API the
//! way kubelet drives it, under this shim (handler `wasmtime`: a Wasm
//! container beside the natively run pause) and under runc (a static
//! native container), in the same run on the same private containerd.
//!
//!   cargo bench -p containerd-shim-wasmtime --bench pods -- [RUNS]
//!
//! Prints table rows: min / median / p99 in ms over RUNS (default 10) of
//! pod start (RunPodSandbox until StartContainer has returned: the
//! container runs) and of the whole pod lifecycle (RunPodSandbox, a hello
//! container to its exit, StopPodSandbox, RemovePodSandbox); and the PSS
//! of a pod's shim and processes with one idle container, and what each
//! of 9 more idle containers in that pod adds. Pods use the host network,
//! so that CNI's share of the time stays out of both.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::cri::api::{ContainerState, NamespaceMode};
use common::cri::{Cri, Pod};

/// One runtime's side of the table.
struct Peer {
    handler: &'static str,
    idle_image: &'static str,
    hello_image: &'static str,
}

const PEERS: [Peer; 2] = [
    Peer {
        handler: "wasmtime",
        idle_image: "sleep",
        hello_image: "hello",
    },
    Peer {
        handler: "runc",
        idle_image: "native-sleep",
        hello_image: "native-hello",
    },
];

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let Some(cri) = common::cri::cri() else {
        eprintln!("pods bench: cannot run here (see above)");
        std::process::exit(1);
    };
    cri.import(&["sleep", "hello", "native-sleep", "native-hello"]);
    let mut rows = Vec::new();
    for peer in &PEERS {
        // One untimed pod of each kind warms caches and snapshots.
        pod_start(&cri, peer, "warm");
        pod_lifecycle(&cri, peer, "warm");
        let mut start = Vec::new();
        let mut life = Vec::new();
        for i in 0..runs {
            start.push(pod_start(&cri, peer, &i.to_string()));
            life.push(pod_lifecycle(&cri, peer, &i.to_string()));
        }
        rows.push((summary(start), summary(life), pod_pss(&cri, peer)));
    }
    println!(
        "| pod start (RunPodSandbox → running), min / median / p99 (ms) | {} | {} |",
        rows[0].0, rows[1].0
    );
    println!(
        "| pod lifecycle (run, hello to exit, stop, remove), min / median / p99 (ms) | {} | {} |",
        rows[0].1, rows[1].1
    );
    let mb = |kib: f64| format!("{:.1}", kib / 1024.0);
    println!(
        "| PSS, pod with 1 idle container: shim + pause + container (MB) | {} | {} |",
        mb(rows[0].2.0),
        mb(rows[1].2.0)
    );
    println!(
        "| PSS per extra container in the pod, 10 running (MB) | {} | {} |",
        mb(rows[0].2.1),
        mb(rows[1].2.1)
    );
}

/// The PSS (KiB) of a pod's shim and all its children with one idle
/// container, and what each of 9 more adds.
fn pod_pss(cri: &Cri, peer: &Peer) -> (f64, f64) {
    let pod = new_pod(cri, peer, &format!("pss-{}", peer.handler));
    let run = |i: usize| {
        cri.run(
            &pod,
            pod.container(&format!("idle-{i}"), peer.idle_image, &[]),
        )
    };
    run(0);
    let procs = cri.cgroup("memory", &pod.id).join("cgroup.procs");
    let pause: i32 = std::fs::read_to_string(&procs)
        .ok()
        .and_then(|t| t.lines().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no process in {}", procs.display()));
    let shim = parent_of(pause);
    let measure = || {
        std::thread::sleep(Duration::from_secs(1));
        let mut pids = common::children_of(shim);
        pids.push(shim);
        common::cri::pss_kib(&pids) as f64
    };
    let one = measure();
    for i in 1..10 {
        run(i);
    }
    let ten = measure();
    cri.remove_pod(&pod);
    (one, (ten - one) / 9.0)
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    rest.split(' ').nth(1).unwrap().parse().unwrap()
}

fn new_pod(cri: &Cri, peer: &Peer, name: &str) -> Pod {
    let config = cri.pod_config(name, NamespaceMode::Node);
    cri.run_pod_under(config, peer.handler)
}

/// RunPodSandbox, CreateContainer and StartContainer of an idle container;
/// the pod is then removed, untimed.
fn pod_start(cri: &Cri, peer: &Peer, tag: &str) -> Duration {
    let begin = Instant::now();
    let pod = new_pod(cri, peer, &format!("start-{}-{tag}", peer.handler));
    cri.run(&pod, pod.container("idle", peer.idle_image, &[]));
    let took = begin.elapsed();
    cri.remove_pod(&pod);
    took
}

/// A pod from RunPodSandbox to RemovePodSandbox, with a hello container
/// run to its exit (ContainerStatus polled every 5 ms).
fn pod_lifecycle(cri: &Cri, peer: &Peer, tag: &str) -> Duration {
    let begin = Instant::now();
    let pod = new_pod(cri, peer, &format!("life-{}-{tag}", peer.handler));
    let id = cri.run(&pod, pod.container("hello", peer.hello_image, &[]));
    while cri.status(&id).state != ContainerState::ContainerExited as i32 {
        assert!(
            begin.elapsed() < Duration::from_secs(60),
            "hello did not exit"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    cri.remove_pod(&pod);
    begin.elapsed()
}

/// "min / median / p99" in ms.
fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = times.len();
    let median = match n % 2 {
        1 => ms(times[n / 2]),
        _ => (ms(times[n / 2 - 1]) + ms(times[n / 2])) / 2.0,
    };
    let p99 = times[((n * 99).div_ceil(100)).clamp(1, n) - 1];
    format!("{:.1} / {median:.1} / {:.1}", ms(times[0]), ms(p99))
}
