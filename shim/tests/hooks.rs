//! OCI hooks, as nerdctl uses them for networking: every stage runs, in
//! runc's order, with the container's state on stdin; a failing hook
//! fails its step.

mod common;

use common::containerd;

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    let Some(ctrd) = containerd() else { return };
    let rootfs = ctrd.dir().join("hooks-rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::write(rootfs.join("hello.wasm"), test_images::HELLO_WASM).unwrap();
    // startContainer runs inside the container: it needs a shell there.
    std::fs::copy("/bin/busybox", rootfs.join("bin/sh")).unwrap();
    let log = ctrd.dir().join("hooks.log");
    let host = |stage: &str| {
        serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c",
            format!("echo {stage} >> {0}; cat >> {0}; echo >> {0}", log.display())]})
    };
    let id = "hooks-1";
    let mut spec = ctrd.default_spec(&rootfs, id, &["/hello.wasm"]);
    spec["hooks"] = serde_json::json!({
        "createRuntime": [host("createRuntime")],
        "createContainer": [host("createContainer")],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer > /tmp/started"]}],
        "poststart": [host("poststart")],
        "poststop": [host("poststop")],
    });
    let run = ctrd.run_config(common::RUNTIME, id, &spec);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "hello from wasm\n"),
        "{run:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let stages: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('{') && !l.is_empty())
        .collect();
    assert_eq!(
        stages,
        ["createRuntime", "createContainer", "poststart", "poststop"],
        "{text}"
    );
    for status in ["creating", "running", "stopped"] {
        assert!(text.contains(&format!(r#""status":"{status}""#)), "{text}");
    }
    assert!(text.contains(r#""id":"hooks-1""#), "{text}");
    let started = std::fs::read_to_string(rootfs.join("tmp/started")).unwrap();
    assert_eq!(started, "startContainer\n");
    ctrd.assert_clean(id);

    // A failing createRuntime hook fails Create, by name, leaving nothing.
    let id = "hooks-2";
    let mut spec = ctrd.default_spec(&rootfs, id, &["/hello.wasm"]);
    spec["hooks"] = serde_json::json!({"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", "echo no network >&2; exit 1"]}]});
    let run = ctrd.run_config(common::RUNTIME, id, &spec);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("hooks.createRuntime[0]") && run.stderr.contains("no network"),
        "{run:?}"
    );
    ctrd.assert_clean(id);
}
