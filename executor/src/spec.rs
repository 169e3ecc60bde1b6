//! Translation of a bundle's OCI spec into what the shim and the child
//! need, checked once so that the rest of the code works on plain values.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxDevice, LinuxNamespaceType, LinuxSeccomp, PosixRlimit, Spec};

use crate::console::{Size, Terminal};
use crate::error::{Error, Result};
use crate::sandbox::mount_spec::{self, MountSpec};

/// The namespaces of kinds the container does not share with the host
/// (the spec lists them, new or joined by path): what decides which
/// sysctls and names it may set, as under runc.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnNamespaces {
    pub network: bool,
    pub ipc: bool,
    pub uts: bool,
}

/// What the child needs from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildConfig {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub rootfs: PathBuf,
    pub readonly_root: bool,
    pub hostname: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub no_new_privileges: bool,
    pub capabilities: crate::sandbox::caps::CapSets,
    /// Namespaces to join by path, before the root is switched.
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// Whether the spec asks for a new cgroup namespace. The child unshares
    /// it itself: made at clone time, its root would be the shim's cgroup,
    /// since the child only enters the container's cgroup after the clone.
    pub new_cgroup_namespace: bool,
    /// Whether the container has a network namespace of its own (new or
    /// joined), which `net.*` sysctls need.
    pub own: OwnNamespaces,
    pub mounts: Vec<MountSpec>,
    /// `linux.rootfsPropagation`, else runc's rslave.
    pub propagation: MsFlags,
    /// `linux.devices`: nodes made in /dev besides the default ones.
    pub devices: Vec<LinuxDevice>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub domainname: Option<String>,
    /// `linux.sysctl`, sorted by key.
    pub sysctl: Vec<(String, String)>,
    pub rlimits: Vec<PosixRlimit>,
    pub umask: Option<u32>,
    pub oom_score_adj: Option<i32>,
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
    /// `linux.mountLabel`, the SELinux context of the container's mounts.
    pub mount_label: Option<String>,
    pub seccomp: Option<LinuxSeccomp>,
    /// `linux.resources.memory.limit`, which also bounds a Wasm guest.
    pub memory_limit: Option<u64>,
    /// `linux.resources.cpu` quota over period, in CPUs (rounded up), which
    /// bounds the threads that compile the module.
    pub cpu_limit: Option<usize>,
    /// `process.terminal` (with `consoleSize`): the process's stdio is a
    /// new terminal whose master the shim relays.
    pub terminal: Option<Terminal>,
}

pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|source| Error::Spec { path, source })
}

/// The namespace flags the child is cloned with, as runc makes them: a
/// new namespace of each kind the spec lists without a path; a kind it
/// lists with a path is joined, one it does not list is the host's. The
/// container's root needs a mount namespace of its own.
pub fn clone_flags(spec: &Spec) -> Result<CloneFlags> {
    if !namespaces(spec).any(|ns| ns.typ() == LinuxNamespaceType::Mount) {
        return Err(Error::InvalidSpec(
            "linux.namespaces has no mount namespace: the container's root needs one of its own"
                .into(),
        ));
    }
    let mut flags = CloneFlags::empty();
    for ns in namespaces(spec) {
        match (ns.typ(), ns.path()) {
            (LinuxNamespaceType::Mount, None) => flags |= CloneFlags::CLONE_NEWNS,
            (LinuxNamespaceType::Pid, None) => flags |= CloneFlags::CLONE_NEWPID,
            (LinuxNamespaceType::Ipc, None) => flags |= CloneFlags::CLONE_NEWIPC,
            (LinuxNamespaceType::Uts, None) => flags |= CloneFlags::CLONE_NEWUTS,
            (LinuxNamespaceType::Network, None) => flags |= CloneFlags::CLONE_NEWNET,
            // A new cgroup namespace is made by the child itself, once it
            // is in its cgroup (see ChildConfig::new_cgroup_namespace).
            (LinuxNamespaceType::User, _) => {
                return Err(Error::InvalidSpec(
                    "linux.namespaces: user namespaces are not supported".into(),
                ));
            }
            (LinuxNamespaceType::Time, _) => {
                return Err(Error::InvalidSpec(
                    "linux.namespaces: time namespaces are not supported".into(),
                ));
            }
            (LinuxNamespaceType::Mount, Some(path)) => {
                return Err(Error::InvalidSpec(format!(
                    "linux.namespaces: joining the mount namespace {} is not supported",
                    path.display()
                )));
            }
            // A PID namespace by path is entered by a fork of the child
            // (a pod that shares its process namespace: fork.rs); the
            // others by the child itself.
            _ => {}
        }
    }
    Ok(flags)
}

/// Whether the container gets a PID namespace of its own. Without one (the
/// host's, or a pod's named by path) its processes can outlive its first
/// one, and are killed when it exits, as runc's shim does.
pub fn own_pid_namespace(spec: &Spec) -> bool {
    namespaces(spec).any(|ns| ns.typ() == LinuxNamespaceType::Pid && ns.path().is_none())
}

/// The PID namespace the spec names by path, which the child joins.
pub fn pid_namespace_path(spec: &Spec) -> Option<PathBuf> {
    namespaces(spec)
        .find(|ns| ns.typ() == LinuxNamespaceType::Pid)
        .and_then(|ns| ns.path().clone())
}

/// The spec's `linux.cgroupsPath`, if it names one.
pub fn cgroups_path(spec: &Spec) -> Option<String> {
    let path = spec.linux().as_ref()?.cgroups_path().as_ref()?;
    Some(path.to_string_lossy().into_owned()).filter(|p| !p.is_empty())
}

/// The annotations that group the containers of one pod into one shim.
pub fn group(spec: &Spec) -> Option<String> {
    let annotations = spec.annotations().as_ref()?;
    [
        "io.containerd.runc.v2.group",
        "io.kubernetes.cri.sandbox-id",
    ]
    .iter()
    .find_map(|key| annotations.get(*key).filter(|v| !v.is_empty()).cloned())
}

/// Whether the spec's process asks for a terminal.
pub fn wants_terminal(spec: &Spec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
}

/// `process.terminal` and `process.consoleSize`: the terminal to make, if
/// any. As runc, a size applies when both its numbers are set.
pub fn terminal(process: &oci_spec::runtime::Process) -> Result<Option<Terminal>> {
    if process.terminal() != Some(true) {
        return Ok(None);
    }
    let Some(size) = process.console_size() else {
        return Ok(Some(Terminal { size: None }));
    };
    let field = |name: &str, value: u64| {
        u16::try_from(value).map_err(|_| {
            Error::InvalidSpec(format!(
                "process.consoleSize.{name} {value} is larger than a terminal can be (65535)"
            ))
        })
    };
    let (rows, cols) = (
        field("height", size.height())?,
        field("width", size.width())?,
    );
    let size = (rows != 0 && cols != 0).then_some(Size { rows, cols });
    Ok(Some(Terminal { size }))
}

pub fn child_config(spec: &Spec, bundle: &Path) -> Result<ChildConfig> {
    crate::unsupported::check(spec)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("process is missing".into()))?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::InvalidSpec(
            "process.args is empty: it must name the module to run".into(),
        ));
    }
    let env = process
        .env()
        .iter()
        .flatten()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (entry.clone(), String::new()),
        })
        .collect();
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("root is missing".into()))?;
    let rootfs = bundle.join(root.path());
    let user = process.user();
    let join = namespaces(spec)
        .filter_map(|ns| {
            let flag = match ns.typ() {
                LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
                LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
                LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
                LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
                _ => return None,
            };
            ns.path().clone().map(|path| (flag, path))
        })
        .collect();
    let cwd = process.cwd().clone();
    if !cwd.is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "process.cwd {} is not an absolute path",
            cwd.display()
        )));
    }
    let linux = spec.linux().clone().unwrap_or_default();
    let mount_label = linux.mount_label().clone().filter(|l| !l.is_empty());
    let mounts = spec
        .mounts()
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| mount_spec::parse(i, mount_label.as_deref(), m))
        .collect::<Result<Vec<_>>>()?;
    let mut sysctl: Vec<(String, String)> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    sysctl.sort();
    let listed = |typ| namespaces(spec).any(|ns| ns.typ() == typ);
    let own = OwnNamespaces {
        network: listed(LinuxNamespaceType::Network),
        ipc: listed(LinuxNamespaceType::Ipc),
        uts: listed(LinuxNamespaceType::Uts),
    };
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    let domainname = spec.domainname().clone().filter(|d| !d.is_empty());
    // As runc: the host's names are not the container's to set.
    for (field, value) in [("hostname", &hostname), ("domainname", &domainname)] {
        if let (Some(value), false) = (value, own.uts) {
            return Err(Error::InvalidSpec(format!(
                "{field} {value:?} needs a UTS namespace of the container's own (linux.namespaces has no uts)"
            )));
        }
    }
    Ok(ChildConfig {
        args,
        env,
        cwd,
        rootfs,
        readonly_root: root.readonly().unwrap_or(false),
        hostname,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        capabilities: crate::sandbox::caps::from_spec(process.capabilities().as_ref())?,
        join,
        new_cgroup_namespace: namespaces(spec)
            .any(|ns| ns.typ() == LinuxNamespaceType::Cgroup && ns.path().is_none()),
        own,
        mounts,
        propagation: propagation(linux.rootfs_propagation().as_deref())?,
        devices: linux.devices().clone().unwrap_or_default(),
        masked_paths: paths(linux.masked_paths()),
        readonly_paths: paths(linux.readonly_paths()),
        domainname,
        sysctl,
        rlimits: process.rlimits().clone().unwrap_or_default(),
        umask: user.umask(),
        oom_score_adj: process.oom_score_adj(),
        apparmor_profile: process.apparmor_profile().clone().filter(|p| !p.is_empty()),
        selinux_label: process.selinux_label().clone().filter(|l| !l.is_empty()),
        mount_label: mount_label.clone(),
        seccomp: linux.seccomp().clone(),
        memory_limit: linux
            .resources()
            .as_ref()
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .filter(|l| *l > 0)
            .map(|l| l as u64),
        cpu_limit: cpu_limit(linux.resources().as_ref()),
        terminal: terminal(process)?,
    })
}

/// The CPUs a CFS quota allows, rounded up; none without a quota.
fn cpu_limit(resources: Option<&oci_spec::runtime::LinuxResources>) -> Option<usize> {
    let cpu = resources?.cpu().as_ref()?;
    let quota = u64::try_from(cpu.quota()?).ok().filter(|q| *q > 0)?;
    let period = cpu.period().filter(|p| *p > 0).unwrap_or(100_000);
    Some(quota.div_ceil(period).max(1) as usize)
}

fn paths(list: &Option<Vec<String>>) -> Vec<PathBuf> {
    list.iter().flatten().map(PathBuf::from).collect()
}

/// `linux.rootfsPropagation` as mount flags; runc's default is rslave,
/// so that host mounts still reach the container but not the reverse.
fn propagation(value: Option<&str>) -> Result<MsFlags> {
    Ok(match value.unwrap_or("") {
        "" | "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        other => {
            return Err(Error::InvalidSpec(format!(
                "linux.rootfsPropagation {other:?} is not a propagation mode"
            )));
        }
    })
}

fn namespaces(spec: &Spec) -> impl Iterator<Item = &oci_spec::runtime::LinuxNamespace> {
    spec.linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().as_ref())
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    const BASE: &str = r#"{
        "ociVersion": "1.0.2",
        "process": {"args": ["/app.wasm", "x"], "env": ["A=1", "B=x=y", "C"], "cwd": "/work",
                    "user": {"uid": 1000, "gid": 100, "additionalGids": [5]}, "noNewPrivileges": true},
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "box",
        "annotations": {"io.kubernetes.cri.sandbox-id": "pod1"},
        "linux": {"cgroupsPath": "/default/c1",
                  "namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"},
                                 {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
    }"#;

    /// The namespaces BASE asks to be made.
    const FRESH: CloneFlags = CloneFlags::CLONE_NEWNS
        .union(CloneFlags::CLONE_NEWPID)
        .union(CloneFlags::CLONE_NEWIPC)
        .union(CloneFlags::CLONE_NEWUTS);

    #[test]
    fn translates_process_root_and_namespaces() {
        let s = spec(BASE);
        let c = child_config(&s, Path::new("/b")).unwrap();
        assert_eq!(c.args, ["/app.wasm", "x"]);
        assert_eq!(
            c.env,
            [
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("C".into(), "".into())
            ]
        );
        assert_eq!(c.cwd, Path::new("/work"));
        assert_eq!(c.rootfs, Path::new("/b/rootfs"));
        assert!(c.readonly_root && c.no_new_privileges);
        assert_eq!(
            (c.uid, c.gid, c.additional_gids.clone()),
            (1000, 100, vec![5])
        );
        assert_eq!(c.hostname.as_deref(), Some("box"));
        assert_eq!(
            c.join,
            [(CloneFlags::CLONE_NEWNET, PathBuf::from("/proc/1/ns/net"))]
        );
        assert_eq!(clone_flags(&s).unwrap(), FRESH);
        assert_eq!(cgroups_path(&s).as_deref(), Some("/default/c1"));
        assert_eq!(group(&s).as_deref(), Some("pod1"));
        assert!(!wants_terminal(&s));
        assert_eq!(c.terminal, None);
    }

    #[test]
    fn terminal_and_its_size() {
        let process = |json: &str| -> oci_spec::runtime::Process {
            serde_json::from_str(&format!(
                r#"{{"cwd": "/", "user": {{"uid": 0, "gid": 0}}{json}}}"#
            ))
            .unwrap()
        };
        assert_eq!(terminal(&process("")).unwrap(), None);
        let plain = Some(Terminal { size: None });
        assert_eq!(terminal(&process(r#", "terminal": true"#)).unwrap(), plain);
        let sized = r#", "terminal": true, "consoleSize": {"height": 24, "width": 80}"#;
        let size = Some(Size { rows: 24, cols: 80 });
        assert_eq!(terminal(&process(sized)).unwrap(), Some(Terminal { size }));
        let half = r#", "terminal": true, "consoleSize": {"height": 24}"#;
        assert_eq!(terminal(&process(half)).unwrap(), plain);
        let huge = r#", "terminal": true, "consoleSize": {"height": 70000, "width": 80}"#;
        let err = terminal(&process(huge)).unwrap_err().to_string();
        assert!(err.contains("process.consoleSize.height 70000"), "{err}");
    }

    #[test]
    fn new_network_namespace_when_asked() {
        let s = spec(&BASE.replace(r#", "path": "/proc/1/ns/net""#, ""));
        assert!(clone_flags(&s).unwrap().contains(CloneFlags::CLONE_NEWNET));
        assert!(child_config(&s, Path::new("/b")).unwrap().join.is_empty());
    }

    #[test]
    fn new_cgroup_namespace_is_left_to_the_child() {
        let c = child_config(&spec(BASE), Path::new("/b")).unwrap();
        assert!(!c.new_cgroup_namespace);
        let s = spec(&BASE.replace(
            r#"{"type": "ipc"}"#,
            r#"{"type": "ipc"}, {"type": "cgroup"}"#,
        ));
        assert_eq!(clone_flags(&s).unwrap(), FRESH);
        let c = child_config(&s, Path::new("/b")).unwrap();
        assert!(c.new_cgroup_namespace);
        assert!(
            c.join
                .iter()
                .all(|(flag, _)| *flag != CloneFlags::CLONE_NEWCGROUP)
        );
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let s = spec(&BASE.replace(r#"{"type": "pid"}"#, r#"{"type": "user"}"#));
        assert!(
            clone_flags(&s)
                .unwrap_err()
                .to_string()
                .contains("user namespaces")
        );
        let s = spec(&BASE.replace(r#"{"type": "pid"}"#, r#"{"type": "mount", "path": "/m"}"#));
        assert!(
            clone_flags(&s)
                .unwrap_err()
                .to_string()
                .contains("mount namespace /m")
        );
        // Kinds not listed are the host's; the names then are not ours.
        let s = spec(&BASE.replace(r#"{"type": "ipc"}, {"type": "uts"}, "#, ""));
        let host = clone_flags(&s).unwrap();
        assert!(!host.intersects(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS));
        let s = spec(&BASE.replace(r#"{"type": "uts"}, "#, ""));
        let err = child_config(&s, Path::new("/b")).unwrap_err().to_string();
        assert!(err.contains("hostname") && err.contains("UTS"), "{err}");
        let s = spec(&BASE.replace(r#", {"type": "mount"}"#, ""));
        assert!(
            clone_flags(&s)
                .unwrap_err()
                .to_string()
                .contains("mount namespace")
        );
        // A PID namespace by path is entered by a fork, not made anew.
        let s = spec(&BASE.replace(r#"{"type": "pid"}"#, r#"{"type": "pid", "path": "/p"}"#));
        assert!(!clone_flags(&s).unwrap().contains(CloneFlags::CLONE_NEWPID));
        assert_eq!(pid_namespace_path(&s), Some(PathBuf::from("/p")));
        let s = spec(&BASE.replace(r#""/app.wasm", "x""#, ""));
        assert!(
            child_config(&s, Path::new("/b"))
                .unwrap_err()
                .to_string()
                .contains("args")
        );
        let s = spec(&BASE.replace(r#""cwd": "/work""#, r#""cwd": "work""#));
        assert!(
            child_config(&s, Path::new("/b"))
                .unwrap_err()
                .to_string()
                .contains("cwd")
        );
    }

    #[test]
    fn group_prefers_the_runc_annotation() {
        let s = spec(&BASE.replace(
            r#""annotations": {"#,
            r#""annotations": {"io.containerd.runc.v2.group": "g", "#,
        ));
        assert_eq!(group(&s).as_deref(), Some("g"));
        let s = spec(&BASE.replace(r#""io.kubernetes.cri.sandbox-id": "pod1""#, ""));
        assert_eq!(group(&s), None);
    }
}
