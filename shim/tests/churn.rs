//! Concurrent churn through ctr: create, start, wait and delete cycles of
//! Wasm modules, components and native containers, eight at a time, each
//! with its own shim. Every cycle must end with its own status and output,
//! and afterwards nothing may be left: no task, container, shim, child,
//! mount, cgroup, bundle, cache temp file or zombie.
//!
//! `CHURN_CYCLES` sets the number of cycles (`make soak` runs 2,000; `make
//! test` the default below, to fit CI's time beside the version matrix).

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Containerd, containerd, shim_pids, wait_for};

const DEFAULT_CYCLES: usize = 400;
const CONCURRENCY: usize = 8;
/// The shim's log lines about one container's whole life, at most.
const LOG_LINES_PER_CONTAINER: usize = 12;

/// One kind of cycle: image, arguments, exit status, stdout.
type Kind = (&'static str, &'static [&'static str], i32, &'static str);

const KINDS: [Kind; 3] = [
    ("hello", &[], 0, "hello from wasm\n"),
    ("component", &[], 42, ""),
    (
        "busybox",
        &["sh", "-c", "echo native; exit 7"],
        7,
        "native\n",
    ),
];

fn cycles() -> usize {
    std::env::var("CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CYCLES)
}

/// The lines of `ctr <what> ls -q`.
fn listed(ctrd: &Containerd, what: &str) -> Vec<String> {
    let out = ctrd.ctr(&[what, "ls", "-q"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The zombies among this process's children (ctr runs it started).
fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid …; comm may hold spaces: split after ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn concurrent_cycles_end_with_their_own_status_and_leave_nothing() {
    let Some(ctrd) = containerd() else { return };
    for (image, ..) in KINDS {
        ctrd.import(image);
    }
    let total = cycles();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..CONCURRENCY {
            s.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= total {
                        break;
                    }
                    let (image, args, code, stdout) = KINDS[n % KINDS.len()];
                    let id = format!("churn-{n}");
                    let run = ctrd.run(image, &id, args);
                    if (run.code, run.stdout.as_str()) != (code, stdout) {
                        failures.lock().unwrap().push(format!("{id}: {run:?}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {total} cycles failed: {failures:#?}",
        failures.len()
    );

    wait_for("every shim to exit", Duration::from_secs(30), || {
        shim_pids(ctrd.dir()).is_empty()
    });
    assert_eq!(listed(&ctrd, "tasks"), Vec::<String>::new());
    assert_eq!(listed(&ctrd, "containers"), Vec::<String>::new());
    for n in 0..total {
        ctrd.assert_clean(&format!("churn-{n}"));
    }
    // The shim's log lines are bounded per container: a few for its life,
    // none per byte of output or per poll.
    let log = ctrd.log();
    let most = (0..total)
        .map(|n| {
            let tag = format!("task churn-{n}:");
            log.lines().filter(|l| l.contains(&tag)).count()
        })
        .max()
        .unwrap_or(0);
    println!("at most {most} shim log lines for one container");
    assert!(
        most <= LOG_LINES_PER_CONTAINER,
        "a container has {most} shim log lines"
    );
    let bundles = ctrd
        .dir()
        .join("state/io.containerd.runtime.v2.task")
        .join(common::NAMESPACE);
    let left: Vec<_> = std::fs::read_dir(&bundles)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "bundles left: {left:?}");
    assert_eq!(ctrd.cache_temp_files(), Vec::<String>::new());
    assert_eq!(zombie_children(), Vec::<i32>::new());
}
