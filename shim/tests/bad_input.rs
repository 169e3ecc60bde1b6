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
    ctrd.wait_log(&format!("{expected:?} for {id}"), |l| {
        l.contains(id) && expected.iter().all(|t| l.contains(t))
    });
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

/// A directory holding the hello module, the root of `--config` runs.
fn hello_rootfs(ctrd: &Containerd) -> std::path::PathBuf {
    let root = ctrd.dir().join("hello-rootfs");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.wasm"), test_images::HELLO_WASM).unwrap();
    root
}

/// Runs ctr's default spec changed by `change` and expects Create to fail
/// with every one of `expected`, in ctr's output and the containerd log,
/// and nothing left behind.
fn assert_spec_refused(
    ctrd: &Containerd,
    id: &str,
    change: impl Fn(&mut serde_json::Value),
    expected: &[&str],
) {
    let rootfs = hello_rootfs(ctrd);
    let mut spec = ctrd.default_spec(&rootfs, id, &["/hello.wasm"]);
    change(&mut spec);
    let run = ctrd.run_config(common::RUNTIME, id, &spec);
    assert_ne!(run.code, 0, "{id}: {run:?}");
    for text in expected {
        assert!(
            run.stderr.contains(text),
            "{id}: ctr's error lacks {text:?}: {}",
            run.stderr
        );
        ctrd.wait_log(&format!("{id}: {text:?}"), |l| l.contains(text));
    }
    ctrd.assert_clean(id);
    let _ = ctrd.ctr(&["container", "delete", id]);
}

#[test]
fn bad_specs_are_refused_by_field() {
    let Some(ctrd) = containerd() else { return };
    assert_spec_refused(
        &ctrd,
        "bad-ns",
        |s| s["linux"]["namespaces"][0]["type"] = "nosuchns".into(),
        &["config.json", "nosuchns"],
    );
    assert_spec_refused(
        &ctrd,
        "bad-device",
        |s| {
            s["linux"]["resources"]["devices"] = serde_json::json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwx"}
            ])
        },
        &[
            "linux.resources.devices[1]",
            "rwx",
            "is not a combination of r, w and m",
        ],
    );
    assert_spec_refused(
        &ctrd,
        "bad-mount",
        |s| {
            s["mounts"].as_array_mut().unwrap().push(
                serde_json::json!({"destination": "data", "type": "tmpfs", "source": "tmpfs"}),
            )
        },
        &["mounts[7]", "destination data is not an absolute path"],
    );
    assert_spec_refused(
        &ctrd,
        "bad-proc",
        |s| {
            s["mounts"].as_array_mut().unwrap().push(
                serde_json::json!({"destination": "/proc/sys", "type": "bind", "source": "/tmp", "options": ["rbind"]}),
            )
        },
        &[
            "mounts[7]",
            "cannot mount on /proc/sys: /proc belongs to procfs",
        ],
    );
    assert_spec_refused(
        &ctrd,
        "bad-cgroup",
        |s| s["linux"]["cgroupsPath"] = "/e2e/../../escape".into(),
        &["linux.cgroupsPath", "'..'"],
    );
    wait_for(
        "the shims of refused tasks to exit",
        Duration::from_secs(10),
        || common::shim_pids(ctrd.dir()).is_empty(),
    );
}

/// runc skips a syscall name libseccomp does not know; so does this shim:
/// the same profile runs the same native program under both.
#[test]
fn an_unknown_syscall_in_a_seccomp_profile_is_skipped_as_runc_skips_it() {
    let Some(ctrd) = containerd() else { return };
    let rootfs = ctrd.probe_rootfs("seccomp-rootfs");
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_syscall_at_all", "kexec_load"], "action": "SCMP_ACT_ERRNO"}]
    });
    for (runtime, id) in [
        (common::RUNTIME, "seccomp-unknown-ours"),
        ("io.containerd.runc.v2", "seccomp-unknown-runc"),
    ] {
        let mut spec = ctrd.default_spec(&rootfs, id, &["/probe"]);
        spec["linux"]["seccomp"] = profile.clone();
        let run = ctrd.run_config(runtime, id, &spec);
        assert_eq!(run.code, 0, "{runtime}: {run:?}");
        assert!(run.stdout.contains("Seccomp: 2"), "{runtime}: {run:?}");
        ctrd.assert_clean(id);
    }
}

/// A module path that leads out of the rootfs, or to a file the
/// container's user may not read, is refused by name, and no host file is
/// ever read for it: a symlink to a host-only module, `..` above the root,
/// a root-only module run as another user.
#[test]
fn module_paths_stay_in_the_rootfs_and_the_users_rights() {
    let Some(ctrd) = containerd() else { return };
    use std::os::unix::fs::{PermissionsExt, symlink};
    // A valid module that only the host has: run, it would print hello.
    let host = ctrd.dir().join("host-only.wasm");
    std::fs::write(&host, test_images::HELLO_WASM).unwrap();
    let rootfs = hello_rootfs(&ctrd);
    symlink(&host, rootfs.join("link.wasm")).unwrap();
    let secret = rootfs.join("secret.wasm");
    std::fs::write(&secret, test_images::HELLO_WASM).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let up = format!("/../../../../..{}", host.display());
    let cases: [(&str, &str, u32, &[&str]); 3] = [
        ("bad-link", "/link.wasm", 0, &["/link.wasm", "No such file"]),
        ("bad-up", up.as_str(), 0, &[up.as_str(), "No such file"]),
        (
            "bad-secret",
            "/secret.wasm",
            1000,
            &["/secret.wasm", "Permission denied"],
        ),
    ];
    for (id, path, uid, expected) in cases {
        let mut spec = ctrd.default_spec(&rootfs, id, &[path]);
        spec["process"]["user"]["uid"] = uid.into();
        spec["process"]["user"]["gid"] = uid.into();
        let run = ctrd.run_config(common::RUNTIME, id, &spec);
        assert_ne!(run.code, 0, "{id}: {run:?}");
        assert!(!run.stdout.contains("hello"), "{id} ran a module: {run:?}");
        for text in expected {
            assert!(
                run.stderr.contains(text),
                "{id}: {text:?} in {}",
                run.stderr
            );
        }
        ctrd.assert_clean(id);
        let _ = ctrd.ctr(&["container", "delete", id]);
    }
    // The same root-only module runs for root in the container.
    let mut spec = ctrd.default_spec(&rootfs, "secret-root", &["/secret.wasm"]);
    spec["process"]["user"]["uid"] = 0.into();
    let run = ctrd.run_config(common::RUNTIME, "secret-root", &spec);
    assert_eq!(run.code, 0, "{run:?}");
    ctrd.assert_clean("secret-root");
}
