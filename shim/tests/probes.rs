//! Exec probes into Wasm containers, as kubelet's prober runs them: an
//! ExecSync with the probe's timeout, Ready on exit status 0. The probe is
//! a module of the container's own image, run as a new instance in the
//! container's sandbox (no peer shim runs exec into a Wasm container).

mod common;

use common::cri::api::{ContainerState, NamespaceMode};
use common::cri::{Cri, cri};

/// One probe as kubelet's prober judges it: success is exit status 0 of
/// an ExecSync that ended within its timeout; an error is a failure.
fn probe(cri: &Cri, id: &str, cmd: &[&str], timeout: i64) -> Result<(), String> {
    match cri.exec_sync_within(id, cmd, timeout) {
        Ok(out) if out.exit_code == 0 => Ok(()),
        Ok(out) => Err(format!(
            "exit status {}: {}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(status) => Err(status.message().to_string()),
    }
}

/// The pids in container `id`'s cgroup.
fn processes(cri: &Cri, id: &str) -> Vec<i32> {
    let dir = cri.cgroup("pids", id);
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    procs.lines().filter_map(|l| l.parse().ok()).collect()
}

#[test]
fn a_wasm_exec_probe_makes_a_wasm_container_ready() {
    let Some(cri) = cri() else { return };
    cri.import(&["sleep"]);
    let pod = cri.new_pod("probed", NamespaceMode::Pod);
    let wasm = cri.run(&pod, pod.container("wasm", "sleep", &[]));
    cri.wait_state(&wasm, ContainerState::ContainerRunning);
    let before = processes(&cri, &wasm);
    assert_eq!(before.len(), 1, "{before:?}");

    // The readiness probe: a module that exits 0 makes the pod Ready.
    probe(&cri, &wasm, &["/sleep.wasm", "0"], 5).expect("the probe passes");
    // A probe whose function does not exist fails, with the reason.
    let failed = probe(&cri, &wasm, &["/sleep.wasm#nope"], 5).unwrap_err();
    assert!(failed.contains("nope"), "{failed}");
    // A probe past its timeout fails, and its process is killed.
    let late = probe(&cri, &wasm, &["/sleep.wasm", "600"], 1).unwrap_err();
    assert!(late.contains("timeout"), "{late}");
    common::wait_for(
        "the timed-out probe's process to be gone",
        std::time::Duration::from_secs(10),
        || processes(&cri, &wasm) == before,
    );
    // The container itself runs on, and the next probe passes.
    let status = cri.status(&wasm);
    assert_eq!(status.state, ContainerState::ContainerRunning as i32);
    probe(&cri, &wasm, &["/sleep.wasm", "0"], 5).expect("the probe passes again");
    cri.remove_pod(&pod);
    cri.assert_clean();
}
