//! Confinement equal to runc's: the static native probe reports what a
//! process can see of its sandbox (capabilities, seccomp, ids,
//! namespaces, mounts, masked and read-only paths, rlimits, cgroups,
//! names, umask, oom_score_adj, fds, /dev), under runc and under this
//! shim with the same spec in the same test; the reports must be equal.
//! Then the same confinement seen from Wasm guests.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Containerd, Run, containerd};

const RUNC: &str = "io.containerd.runc.v2";

/// Report lines allowed to differ, each with the reason.
const ALLOWED: &[(&str, &str)] = &[(
    "mount: /sys/fs/cgroup tmpfs ",
    "a cgroup mount with `ro` on cgroup v1: runc 1.1 leaves the tmpfs that holds \
     the hierarchies writable; this shim makes it read-only as the mount asks \
     (the hierarchies themselves are read-only under both)",
)];

/// The report with what differs between any two containers made the
/// same: namespace inodes become `host` or `own`, the container's id
/// (in its cgroup paths) becomes `<id>`.
fn normalise(report: &str, id: &str) -> BTreeSet<String> {
    report
        .lines()
        .map(|line| {
            if let Some((name, link)) = line
                .strip_prefix("ns.")
                .and_then(|rest| rest.split_once(": "))
            {
                let host = std::fs::read_link(format!("/proc/self/ns/{name}"))
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let whose = if host == link { "host" } else { "own" };
                return format!("ns.{name}: {whose}");
            }
            // In the host's PID namespace the numbers are any host pids.
            if let Some((key @ ("pid" | "ppid"), value)) = line.split_once(": ")
                && !["0", "1"].contains(&value)
            {
                return format!("{key}: <host pid>");
            }
            line.replace(id, "<id>")
        })
        .collect()
}

/// Runs the probe under both runtimes and compares the reports.
fn compare(case: &str, run: impl Fn(&str, &str) -> Run) {
    let (theirs_id, ours_id) = (format!("{case}-runc"), format!("{case}-wasmtime"));
    let theirs = run(RUNC, &theirs_id);
    let ours = run(common::RUNTIME, &ours_id);
    assert_eq!(theirs.code, 0, "{case} under runc: {theirs:?}");
    assert_eq!(ours.code, 0, "{case} under this shim: {ours:?}");
    let (t, o) = (
        normalise(&theirs.stdout, &theirs_id),
        normalise(&ours.stdout, &ours_id),
    );
    assert!(t.len() > 40, "{case}: a short report from runc: {t:?}");
    let allowed = |line: &String| ALLOWED.iter().any(|(prefix, _)| line.starts_with(prefix));
    let only_runc: Vec<_> = t.difference(&o).filter(|l| !allowed(l)).collect();
    let only_ours: Vec<_> = o.difference(&t).filter(|l| !allowed(l)).collect();
    assert!(
        only_runc.is_empty() && only_ours.is_empty(),
        "{case}: the reports differ\nonly under runc: {only_runc:#?}\nonly under this shim: {only_ours:#?}"
    );
}

/// A directory with the probe's files, the root of `--config` runs.
fn probe_rootfs(ctrd: &Containerd) -> PathBuf {
    let root = ctrd.dir().join("probe-rootfs");
    write_file(&root.join("probe"), test_images::PROBE_ELF, 0o755);
    write_file(&root.join("secret"), test_images::SECRET_CONTENT, 0o600);
    write_file(&root.join("open.wasm"), test_images::OPEN_WASM, 0o644);
    for (dir, mode) in [("tmp", 0o1777), ("data", 0o755)] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        set_mode(&root.join(dir), mode);
    }
    root
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    set_mode(path, mode);
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

#[test]
fn probe_reports_match_runc_for_nine_specs() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("probe");
    let ctrd = &ctrd;
    let image = |flags: &'static [&'static str]| {
        move |runtime: &str, id: &str| ctrd.run_under(runtime, "probe", id, flags, &[])
    };
    compare("default", image(&[]));
    compare("seccomp", image(&["--seccomp"]));
    compare("readonly", image(&["--read-only"]));

    let volume = ctrd.dir().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    let bind = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        volume.display()
    );
    let tmpfs = "type=tmpfs,src=tmpfs,dst=/scratch,options=size=16m:nosuid:nodev";
    // rro makes a volume read-only with every mount below it.
    let nested = common::Tmpfs::mount(ctrd.dir().join("nested"));
    let _below = common::Tmpfs::mount(nested.0.join("below"));
    let recursive = format!(
        "type=bind,src={},dst=/nested,options=rbind:rro:rnosuid",
        nested.0.display()
    );
    compare("mounts", |runtime: &str, id: &str| {
        let mounts = ["--mount", &bind, "--mount", tmpfs, "--mount", &recursive];
        ctrd.run_under(runtime, "probe", id, &mounts, &[])
    });

    let rootfs = probe_rootfs(ctrd);
    compare("nonroot", |runtime: &str, id: &str| {
        let mut spec = ctrd.default_spec(&rootfs, id, &["/probe"]);
        spec["process"]["user"] =
            serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [1000, 27]});
        ctrd.run_config(runtime, id, &spec)
    });
    // The cgroup mount the CRI adds to every container, without and with
    // a cgroup namespace of the container's own.
    let cgroup_mount = serde_json::json!({"destination": "/sys/fs/cgroup", "type": "cgroup",
        "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]});
    for (case, cgroupns) in [("cgmount", false), ("cgns", true)] {
        compare(case, |runtime: &str, id: &str| {
            let mut spec = ctrd.default_spec(&rootfs, id, &["/probe"]);
            spec["mounts"]
                .as_array_mut()
                .unwrap()
                .push(cgroup_mount.clone());
            if cgroupns {
                let ns = spec["linux"]["namespaces"].as_array_mut().unwrap();
                ns.push(serde_json::json!({"type": "cgroup"}));
            }
            ctrd.run_config(runtime, id, &spec)
        });
    }
    // The process and namespace settings: hostname, umask, oomScoreAdj
    // (raised: lowering it is not allowed on these VMs), more rlimits,
    // additional groups and a namespaced sysctl.
    compare("process", |runtime: &str, id: &str| {
        let mut spec = ctrd.default_spec(&rootfs, id, &["/probe"]);
        spec["hostname"] = "probe-host".into();
        spec["process"]["user"] =
            serde_json::json!({"uid": 0, "gid": 0, "umask": 23, "additionalGids": [10, 20]});
        spec["process"]["oomScoreAdj"] = 500.into();
        spec["process"]["rlimits"] = serde_json::json!([
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
            {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]);
        spec["linux"]["sysctl"] = serde_json::json!({"kernel.shmmax": "65536"});
        let run = ctrd.run_config(runtime, id, &spec);
        for seen in ["hostname: probe-host", "oom_score_adj: 500", "umask: 0027"] {
            assert!(
                run.stdout.contains(seen),
                "{runtime}: no {seen:?} in {run:?}"
            );
        }
        run
    });
    // The host's PID, IPC and UTS namespaces, as a hostPID, hostIPC and
    // host-network pod has them: kinds the spec does not list are shared.
    compare("hostns", |runtime: &str, id: &str| {
        let mut spec = ctrd.default_spec(&rootfs, id, &["/probe"]);
        let ns = spec["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| !["pid", "ipc", "uts"].contains(&n["type"].as_str().unwrap_or("")));
        ctrd.run_config(runtime, id, &spec)
    });
    let cases = [
        "default", "seccomp", "readonly", "mounts", "nonroot", "cgmount", "cgns", "process",
        "hostns",
    ];
    for case in cases {
        ctrd.assert_clean(&format!("{case}-wasmtime"));
    }
}

/// The lines `open.wasm` printed, as a map from argument to result.
fn results(run: &Run) -> std::collections::HashMap<String, String> {
    run.stdout
        .lines()
        .filter_map(|l| l.rsplit_once(": "))
        .map(|(path, result)| (path.to_string(), result.to_string()))
        .collect()
}

#[test]
fn wasm_guests_are_confined_like_runc_processes() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("open");
    let args = [
        "/open.wasm",
        "/blk",
        "/chr",
        "/secret",
        "/secret/",
        "/abs-link",
        "/escape",
        "/../../../etc/passwd",
    ];
    let run = ctrd.run("open", "open-root", &args);
    assert_eq!(run.code, 0, "{run:?}");
    let got = results(&run);
    // The devices cgroup refuses nodes an image brings, as under runc.
    for node in ["/blk", "/chr"] {
        assert!(got[node].starts_with("errno"), "{node}: {run:?}");
    }
    assert_eq!(got["/secret"], "ok", "root reads its file: {run:?}");
    for escape in ["/secret/", "/abs-link", "/escape", "/../../../etc/passwd"] {
        assert!(got[escape].starts_with("errno"), "{escape}: {run:?}");
    }
    ctrd.assert_clean("open-root");

    // A non-root user keeps no capability: the root-only file is closed.
    let rootfs = probe_rootfs(&ctrd);
    let mut spec = ctrd.default_spec(&rootfs, "open-user", &["/open.wasm", "/secret"]);
    spec["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    let run = ctrd.run_config(common::RUNTIME, "open-user", &spec);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(results(&run)["/secret"].starts_with("errno"), "{run:?}");
    ctrd.assert_clean("open-user");

    // A read-only bind volume stays read-only.
    let volume = ctrd.dir().join("ro-volume");
    std::fs::create_dir_all(&volume).unwrap();
    let bind = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        volume.display()
    );
    let run = ctrd.run_with(
        "open",
        "open-ro",
        &["--mount", &bind],
        &["/open.wasm", "write:/data/x"],
    );
    assert!(
        results(&run)["write:/data/x"].starts_with("errno"),
        "{run:?}"
    );
    assert!(!volume.join("x").exists());
    ctrd.assert_clean("open-ro");
}

#[test]
fn memory_grow_fails_at_the_containers_memory_limit() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("memgrow");
    let limit = "67108864";
    let run = ctrd.run_with("memgrow", "grow-1", &["--memory-limit", limit], &[]);
    assert_eq!(run.code, 12, "{run:?}");
    assert!(run.stdout.contains("memory.grow failed at"), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("memory limit of {limit} bytes")),
        "{run:?}"
    );
    ctrd.assert_clean("grow-1");
    // Without a limit the same guest reaches its goal.
    let run = ctrd.run("memgrow", "grow-2", &[]);
    assert_eq!(run.code, 0, "{run:?}");
}
