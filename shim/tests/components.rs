//! End-to-end tests of WASI 0.2 command components through containerd:
//! exit statuses, `#func`, traps and termination signals, as the design's
//! exit rules say for modules.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Containerd, containerd};

/// Far beyond a correct reaction to a signal; only a hang reaches it.
const HANG: Duration = Duration::from_secs(10);

/// Runs `args` of the component image detached from ctr's point of view,
/// sends `signal` once it runs and returns ctr's exit status.
fn kill_running(ctrd: &Containerd, id: &str, args: &[&str], signal: &str) -> i32 {
    let mut ctr = ctrd.spawn_run("component", id, args, Stdio::null());
    ctrd.wait_status(id, "RUNNING");
    ctrd.kill_and_wait(&mut ctr, id, signal, HANG)
}

#[test]
fn a_command_component_exits_with_its_code() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("component");
    // wasi:cli/run calls exit-with-code(42).
    let run = ctrd.run("component", "component-run", &[]);
    assert_eq!(run.code, 42, "{run:?}");
    ctrd.assert_clean("component-run");
    let run = ctrd.run("component", "component-hello", &["/component.wasm#hello"]);
    assert_eq!(run.code, 0, "{run:?}");
    ctrd.assert_clean("component-hello");
}

#[test]
fn a_trap_in_a_component_is_134_with_its_backtrace() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("component");
    let run = ctrd.run("component", "component-boom", &["/component.wasm#boom"]);
    assert_eq!(run.code, 134, "{run:?}");
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    assert!(run.stderr.contains("wasm backtrace"), "{}", run.stderr);
    ctrd.assert_clean("component-boom");
}

#[test]
fn signals_stop_a_spinning_component() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("component");
    let spin = ["/component.wasm#spin"];
    assert_eq!(kill_running(&ctrd, "component-term", &spin, "SIGTERM"), 143);
    ctrd.assert_clean("component-term");
    assert_eq!(kill_running(&ctrd, "component-kill", &spin, "SIGKILL"), 137);
    ctrd.assert_clean("component-kill");
}

#[test]
fn a_missing_function_fails_create_by_name() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("component");
    let run = ctrd.run("component", "component-nope", &["/component.wasm#nope"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("/component.wasm: it exports no function `nope`"),
        "{}",
        run.stderr
    );
    ctrd.assert_clean("component-nope");
}

/// The Python command component (componentize-py, 18 MB) and the C
/// program (zig cc, WASI preview 1) from `make programs`.
mod programs {
    use super::*;

    fn ready() -> Option<Containerd> {
        if !common::programs_built() {
            return None;
        }
        let ctrd = containerd()?;
        ctrd.import("python-cli");
        ctrd.import("c-hello");
        Some(ctrd)
    }

    #[test]
    fn a_python_component_runs_with_its_exit_statuses_and_stops_on_sigterm() {
        let Some(ctrd) = ready() else { return };
        let run = ctrd.run("python-cli", "py-hello", &[]);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, "hello from python\n"),
            "{run:?}"
        );
        ctrd.assert_clean("py-hello");
        let run = ctrd.run_with(
            "python-cli",
            "py-args",
            &["--env", "GREETING=hi"],
            &["/python-cli.wasm", "env", "GREETING"],
        );
        assert_eq!((run.code, run.stdout.as_str()), (0, "hi\n"), "{run:?}");
        // run returning its error case is 1; an uncaught exception traps.
        let run = ctrd.run("python-cli", "py-exit", &["/python-cli.wasm", "exit", "1"]);
        assert_eq!(run.code, 1, "{run:?}");
        let run = ctrd.run("python-cli", "py-raise", &["/python-cli.wasm", "raise"]);
        assert_eq!(run.code, 134, "{run:?}");
        assert!(run.stderr.contains("Traceback"), "{}", run.stderr);
        for id in ["py-args", "py-exit", "py-raise"] {
            ctrd.assert_clean(id);
        }
        // One containerd for all: only the first start compiles the 18 MB
        // component, the others load it from the cache.
        let args = ["/python-cli.wasm", "sleep", "600"];
        let mut ctr = ctrd.spawn_run("python-cli", "py-sleep", &args, Stdio::null());
        ctrd.wait_status("py-sleep", "RUNNING");
        let status = ctrd.kill_and_wait(&mut ctr, "py-sleep", "SIGTERM", HANG);
        assert_eq!(status, 143);
        ctrd.assert_clean("py-sleep");
    }

    /// `ctr run -d` ends as soon as the task has started, and with it the
    /// only client reading the stdio fifos. The component writes to both
    /// after that; it runs to its own end and its own exit status, as
    /// under runc (the shim holds the fifos' read ends).
    #[test]
    fn a_detached_component_writes_after_its_client_is_gone() {
        let Some(ctrd) = ready() else { return };
        let id = "py-detached";
        let image = common::image("python-cli");
        let args = ["/python-cli.wasm", "late", "2"];
        let mut run = vec!["run", "-d", "--runtime", common::RUNTIME, &image, id];
        run.extend_from_slice(&args);
        let out = ctrd.ctr(&run);
        assert!(out.status.success(), "{out:?}");
        ctrd.wait_status_within(id, "STOPPED", Duration::from_secs(60));
        let deleted = ctrd.ctr(&["task", "delete", id]);
        assert_eq!(deleted.status.code(), Some(0), "{deleted:?}");
        assert!(ctrd.ctr(&["container", "delete", id]).status.success());
        ctrd.assert_clean(id);
    }

    #[test]
    fn a_c_program_built_by_zig_runs() {
        let Some(ctrd) = ready() else { return };
        let run = ctrd.run("c-hello", "c-hello", &[]);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, "hello from c\n"),
            "{run:?}"
        );
        let run = ctrd.run("c-hello", "c-exit", &["/hello-c.wasm", "exit", "42"]);
        assert_eq!(run.code, 42, "{run:?}");
        let run = ctrd.run("c-hello", "c-args", &["/hello-c.wasm", "args", "two words"]);
        assert_eq!(run.stdout, "/hello-c.wasm\nargs\ntwo words\n", "{run:?}");
        for id in ["c-hello", "c-exit", "c-args"] {
            ctrd.assert_clean(id);
        }
    }
}
