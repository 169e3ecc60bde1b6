//! End-to-end tests of the compiled-code cache: an entry is written by the
//! first start and loaded by the next, a damaged entry is recompiled
//! instead of run, concurrent first starts compile once in the shim's
//! confined compiler, the runtime options move or turn off the cache, and
//! a cache on a full disk stores nothing while its containers run.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Containerd, containerd};

/// The cache of the fixture's containerd when no option names one.
fn default_dir(ctrd: &Containerd) -> PathBuf {
    ctrd.dir().join("state/io.containerd.wasmtime.v1/cache")
}

/// The cache's entries (compiled code), sorted.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| p.extension().is_some_and(|e| e == "cwasm"));
    found.sort();
    found
}

/// The shim's cache log lines for task `id`.
fn cache_lines(ctrd: &Containerd, id: &str) -> Vec<String> {
    let prefix = format!("task {id}: compiled-code cache");
    ctrd.wait_log(&prefix, |l| l.contains(&prefix))
        .lines()
        .filter(|l| l.contains(&prefix))
        .map(str::to_string)
        .collect()
}

fn run_hello(ctrd: &Containerd, id: &str) {
    let run = ctrd.run("hello", id, &[]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "hello from wasm\n"),
        "{run:?}"
    );
    ctrd.assert_clean(id);
}

#[test]
fn the_second_start_loads_what_the_first_stored() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("hello");
    run_hello(&ctrd, "cache-first");
    let dir = default_dir(&ctrd);
    let stored = entries(&dir);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let lines = cache_lines(&ctrd, "cache-first");
    assert!(lines.iter().any(|l| l.contains("stored")), "{lines:?}");
    // Only root may write the cache: it holds code the shim will run.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&stored[0]).unwrap());

    run_hello(&ctrd, "cache-second");
    let lines = cache_lines(&ctrd, "cache-second");
    assert!(lines.iter().any(|l| l.contains("hit")), "{lines:?}");
    let again = entries(&dir);
    assert_eq!(again, stored);
    let same = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&again[0]).unwrap());
    assert_eq!(same, inode, "a hit must not rewrite the entry");
}

#[test]
fn a_truncated_or_altered_entry_is_recompiled_not_run() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("hello");
    run_hello(&ctrd, "damage-0");
    let dir = default_dir(&ctrd);
    let entry = entries(&dir).pop().expect("an entry after the first start");
    let good = std::fs::read(&entry).unwrap();

    // Truncated: half of it.
    std::fs::write(&entry, &good[..good.len() / 2]).unwrap();
    run_hello(&ctrd, "damage-1");
    let lines = cache_lines(&ctrd, "damage-1");
    assert!(
        lines.iter().any(|l| l.contains("stored")),
        "recompiled: {lines:?}"
    );
    assert_eq!(std::fs::read(&entry).unwrap().len(), good.len());
    let name = entry.display().to_string();
    ctrd.wait_log("the damage logged by name", |l| l.contains(&name));

    // Altered: one byte of code flipped, same size.
    let mut altered = std::fs::read(&entry).unwrap();
    let middle = altered.len() / 2;
    altered[middle] ^= 0xff;
    std::fs::write(&entry, &altered).unwrap();
    run_hello(&ctrd, "damage-2");
    let lines = cache_lines(&ctrd, "damage-2");
    assert!(
        lines.iter().any(|l| l.contains("stored")),
        "recompiled: {lines:?}"
    );
    assert_ne!(std::fs::read(&entry).unwrap()[middle], altered[middle]);

    // And the repaired entry is used again.
    run_hello(&ctrd, "damage-3");
    let lines = cache_lines(&ctrd, "damage-3");
    assert!(lines.iter().any(|l| l.contains("hit")), "{lines:?}");
}

/// What the host sees of one of the shim's compilers once it has
/// confined itself (no_new_privs is its last step).
#[derive(Debug)]
struct Compiler {
    uid: String,
    cap_eff: String,
    cgroup: String,
    root: Vec<String>,
    own_pid_namespace: bool,
}

/// Watches for the shim's compilers (`__compile`) until `stop`.
fn watch_compilers(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Compiler>> {
    std::thread::spawn(move || {
        let ours = std::fs::read_link("/proc/self/ns/pid").unwrap();
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            for pid in common::all_pids() {
                let proc = PathBuf::from(format!("/proc/{pid}"));
                let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
                if cmdline.split(|&b| b == 0).nth(1) != Some(b"__compile") {
                    continue;
                }
                let status = std::fs::read_to_string(proc.join("status")).unwrap_or_default();
                let field = |name: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or("")
                        .trim()
                        .to_string()
                };
                if field("NoNewPrivs:") != "1" {
                    continue;
                }
                let root = std::fs::read_dir(proc.join("root"))
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_else(|e| vec![format!("unreadable: {e}")]);
                seen.push(Compiler {
                    uid: field("Uid:"),
                    cap_eff: field("CapEff:"),
                    cgroup: std::fs::read_to_string(proc.join("cgroup")).unwrap_or_default(),
                    root,
                    own_pid_namespace: std::fs::read_link(proc.join("ns/pid")).ok().as_ref()
                        != Some(&ours),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        seen
    })
}

/// Three first starts of a slow module at once: one compile, in the
/// shim's compiler, confined (user nobody, no capabilities, an empty
/// root, a PID namespace of its own, the container's cgroup), and the
/// others wait for its entry.
#[test]
fn concurrent_first_starts_compile_once() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("big");
    let ids = ["big-a", "big-b", "big-c"];
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_compilers(stop.clone());
    let runs: Vec<_> = ids
        .iter()
        .map(|id| ctrd.spawn_run("big", id, &[], std::process::Stdio::null()))
        .collect();
    for (id, ctr) in ids.iter().zip(runs) {
        let out = ctr.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ctrd.assert_clean(id);
    }
    stop.store(true, Ordering::SeqCst);
    let compilers: Vec<Compiler> = watcher
        .join()
        .unwrap()
        .into_iter()
        .filter(|c| ids.iter().any(|id| c.cgroup.contains(id)))
        .collect();
    assert!(
        !compilers.is_empty(),
        "the compile ran in a container's cgroup"
    );
    for compiler in &compilers {
        assert!(
            compiler.uid.split_whitespace().all(|id| id == "65534"),
            "{compiler:?}"
        );
        assert_eq!(compiler.cap_eff, "0000000000000000", "{compiler:?}");
        assert!(compiler.root.is_empty(), "{compiler:?}");
        assert!(compiler.own_pid_namespace, "{compiler:?}");
    }
    assert_eq!(entries(&default_dir(&ctrd)).len(), 1);
    let lines: Vec<String> = ids.iter().flat_map(|id| cache_lines(&ctrd, id)).collect();
    let stored = lines.iter().filter(|l| l.contains("stored")).count();
    let hits = lines.iter().filter(|l| l.contains("hit")).count();
    assert_eq!(
        (stored, hits),
        (1, 2),
        "one compiles, the others wait for it: {lines:?}"
    );
}

#[test]
fn runtime_options_move_or_turn_off_the_cache() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("hello");
    let custom = ctrd.dir().join("custom-cache");
    let options = ctrd.dir().join("options.toml");
    std::fs::write(&options, format!("CacheDir = \"{}\"\n", custom.display())).unwrap();
    let flag = format!("--runtime-config-path={}", options.display());
    let run = ctrd.run_with("hello", "moved", &[&flag], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(entries(&custom).len(), 1);
    assert!(entries(&default_dir(&ctrd)).is_empty());

    let off = ctrd.dir().join("off.toml");
    std::fs::write(&off, "CacheMaxBytes = 0\n").unwrap();
    let flag = format!("--runtime-config-path={}", off.display());
    let run = ctrd.run_with("hello", "uncached", &[&flag], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(entries(&default_dir(&ctrd)).is_empty());

    let typo = ctrd.dir().join("typo.toml");
    std::fs::write(&typo, "CacheDri = \"/x\"\n").unwrap();
    let flag = format!("--runtime-config-path={}", typo.display());
    let run = ctrd.run_with("hello", "typo", &[&flag], &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("CacheDri"), "{}", run.stderr);
    ctrd.assert_clean("typo");
}

/// The cache on a disk with no room for the entry (a 1 MiB tmpfs): the
/// store is refused, the container runs as it would, and neither an entry
/// nor a temp file is left; the next run also works.
#[test]
fn a_full_disk_refuses_the_store_and_the_container_runs() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("big");
    let dir = ctrd.dir().join("full-cache");
    let _tmpfs = common::Tmpfs::with_options(dir.clone(), Some("size=1m,mode=0700"));
    let options = ctrd.dir().join("full.toml");
    std::fs::write(&options, format!("CacheDir = \"{}\"\n", dir.display())).unwrap();
    let flag = format!("--runtime-config-path={}", options.display());
    for id in ["full-1", "full-2"] {
        let run = ctrd.run_with("big", id, &[&flag], &[]);
        assert_eq!(run.code, 0, "{run:?}");
        ctrd.assert_clean(id);
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
        assert_eq!(common::temp_files(&dir), Vec::<String>::new());
    }
}
