//! A pause at named steps of Create and Delete, for the fault tests: with
//! `CONTAINERD_SHIM_WASMTIME_STOP_AT=<container id>:<step>[,…]` in the shim's
//! environment (containerd passes its own on), the shim logs the step and
//! stops itself (SIGSTOP) when it reaches that step for that container, so
//! that a test can kill it exactly there. The steps are Create's `rootfs`,
//! `stdio`, `cgroup`, `clone`, `pid-file` and `ready`, and Delete's
//! `delete`, `release` and `deleted`. Unset, a step costs one lookup of
//! the environment.

use nix::sys::signal::{Signal, raise};

pub const STOP_AT: &str = "CONTAINERD_SHIM_WASMTIME_STOP_AT";

/// Stops the shim here if the environment asks for `step` of task `id`.
pub fn reached(id: &str, step: &str) {
    if matches(std::env::var(STOP_AT).ok().as_deref(), id, step) {
        log::warn!("task {id}: stopping at step {step} ({STOP_AT})");
        let _ = raise(Signal::SIGSTOP);
    }
}

fn matches(wanted: Option<&str>, id: &str, step: &str) -> bool {
    wanted.is_some_and(|w| w.split(',').any(|w| w.split_once(':') == Some((id, step))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_step_of_the_named_task_stops() {
        assert!(matches(Some("c1:clone"), "c1", "clone"));
        assert!(!matches(Some("c1:clone"), "c2", "clone"));
        assert!(!matches(Some("c1:clone"), "c1", "ready"));
        assert!(!matches(Some("c1"), "c1", "clone"));
        assert!(!matches(None, "c1", "clone"));
        assert!(matches(Some("c0:ready,c1:clone"), "c1", "clone"));
    }
}
