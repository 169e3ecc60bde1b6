//! End-to-end tests of bad input: every refused task fails Create with a
//! message that names the file and the reason, in ctr's output and in the
//! shim log, and leaves nothing behind.

mod common;

use std::time::Duration;

use common::{Containerd, containerd, wait_for};

/// Runs the `bad` image with `args`, expects create to fail with a
/// message holding every one of `expected`, in ctr's output and in the
/// shim log, and nothing left behind.
fn assert_refused(ctrd: &Containerd, id: &str, args: &[&str], expected: &[&str]) {
    let run = ctrd.run("bad", id, args);
    assert_ne!(run.code, 0, "{run:?}");
    for text in expected {
        assert!(
            run.stderr.contains(text),
            "ctr's error lacks {text:?}: {}",
            run.stderr
        );
    }
    let log = ctrd.log();
    let logged = log
        .lines()
        .any(|l| l.contains(id) && expected.iter().all(|t| l.contains(t)));
    assert!(logged, "the shim log lacks {expected:?} for {id}");
    ctrd.assert_clean(id);
    let _ = ctrd.ctr(&["container", "delete", id]);
}

#[test]
fn bad_modules_are_refused_by_name() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("bad");
    let not_wasm = test_images::NOT_WASM_PATH;
    assert_refused(
        &ctrd,
        "bad-text",
        &[not_wasm],
        &[not_wasm, "not a WebAssembly module"],
    );
    let empty = test_images::EMPTY_WASM_PATH;
    assert_refused(&ctrd, "bad-empty", &[empty], &[empty, "the file is empty"]);
    let nostart = test_images::NOSTART_WASM_PATH;
    assert_refused(
        &ctrd,
        "bad-nostart",
        &[nostart],
        &[nostart, "exports no function `_start`"],
    );
    let component = test_images::COMPONENT_WASM_PATH;
    assert_refused(
        &ctrd,
        "bad-component",
        &[component],
        &[component, "component"],
    );
    assert_refused(
        &ctrd,
        "bad-missing",
        &["/missing.wasm"],
        &["/missing.wasm", "No such file"],
    );
    wait_for(
        "the shims of refused tasks to exit",
        Duration::from_secs(10),
        || common::shim_pids(ctrd.dir()).is_empty(),
    );
}

#[test]
fn terminal_is_refused() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("hello");
    // ctr wants a real console for -t: give it one with script(1).
    let command = format!(
        "ctr --address {} --namespace {} run --rm -t --runtime {} {} tty-1",
        ctrd.dir().join("containerd.sock").display(),
        common::NAMESPACE,
        common::RUNTIME,
        common::image("hello"),
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("terminal: true is not supported"), "{text}");
    assert!(ctrd.log().contains("terminal: true is not supported"));
    ctrd.assert_clean("tty-1");
}
