//! Processes as the tests look for them: by parent, cgroup, command line.

use std::path::Path;

use super::NAMESPACE;

/// What is left of container `id`, described, or nothing.
pub fn leftovers(dir: &Path, id: &str) -> Vec<String> {
    let mut found: Vec<String> = child_pids(id)
        .iter()
        .map(|pid| format!("process {pid}"))
        .collect();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let rootfs = format!(
        "{}/state/io.containerd.runtime.v2.task/{NAMESPACE}/{id}/rootfs",
        dir.display()
    );
    for line in mounts.lines().filter(|l| l.contains(&rootfs)) {
        found.push(format!("mount {line}"));
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let cgroup = hierarchy.path().join(NAMESPACE).join(id);
        if cgroup.exists() {
            found.push(format!("cgroup {}", cgroup.display()));
        }
    }
    found
}

/// The pids of the processes whose command line (NUL-separated) matches.
fn pids_where(matches: impl Fn(&[u8]) -> bool) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if matches(&cmdline) {
            pids.push(pid);
        }
    }
    pids
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// The processes whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

/// The shim processes serving containers of this containerd.
pub fn shim_pids(dir: &Path) -> Vec<i32> {
    let address = dir.join("containerd.sock").to_string_lossy().into_owned();
    pids_where(|cmdline| {
        let text = String::from_utf8_lossy(cmdline).replace('\0', " ");
        text.contains("containerd-shim-wasmtime-v1 -namespace") && text.contains(&address)
    })
}

/// The processes of container `id`: those in its cgroup (`/e2e/<id>`),
/// whether a `__child` running Wasm or the native program it became.
pub fn child_pids(id: &str) -> Vec<i32> {
    cgroup_pids(&format!("/{NAMESPACE}/{id}"))
}

/// The processes in cgroup `path` (in any hierarchy).
pub fn cgroup_pids(path: &str) -> Vec<i32> {
    let suffix = format!(":{path}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse() else {
            continue;
        };
        let cgroups = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cgroups.lines().any(|l| l.ends_with(&suffix)) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `pid` is a container's child running a Wasm guest: named after
/// its module (`/x.wasm` or `/x.wasm#func`, as every Wasm test image's
/// args[0] is), or still the shim's `__child` while it prepares.
pub fn is_wasm_child(pid: i32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut args = cmdline.split(|b| *b == 0);
    let first = String::from_utf8_lossy(args.next().unwrap_or_default()).into_owned();
    let module = first.split('#').next().unwrap_or_default();
    module.ends_with(".wasm") || cmdline.split(|b| *b == 0).any(|arg| arg == b"__child")
}
