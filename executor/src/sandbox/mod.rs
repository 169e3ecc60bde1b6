//! The sandbox the child builds around itself, in the order runc's init
//! builds it (ARCHITECTURE.md lists the steps). [`join`] and [`enter`]
//! do what needs root: namespaces, the root filesystem, names, sysctl,
//! path masks, rlimits. [`drop_privileges`] then sets no_new_privs,
//! seccomp, the user and the capabilities, the last step before the
//! workload runs.

pub mod caps;
mod cgroup_mount;
mod dev;
pub mod device_filter;
pub mod identity;
pub mod mount_spec;
mod paths;
mod process;
mod rootfs;
pub mod seccomp;

use std::fs::File;

use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{Gid, Uid, chdir, setgid, setgroups, setuid};

use crate::error::{Error, Result};
use crate::spec::ChildConfig;

/// How the workload starts, which decides the capabilities it ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// A native program: the child execve's it, and the kernel computes
    /// its capabilities from the sets applied here.
    Native,
    /// A Wasm guest running in the child itself: no execve follows, so the
    /// child takes the sets an execve would have left it.
    Wasm,
}

/// The first step: the namespaces the spec names by path (but the PID
/// namespace, which only a fork can enter: `crate::fork`) and a new
/// cgroup namespace if the spec asks for one.
pub fn join(config: &ChildConfig) -> Result<()> {
    join_namespaces(config)?;
    // The shim put the child into its cgroup before letting it exec, so
    // the namespace's root is the container's cgroup, as under runc.
    if config.new_cgroup_namespace {
        unshare(CloneFlags::CLONE_NEWCGROUP).map_err(Error::sys("unshare the cgroup namespace"))?;
    }
    Ok(())
}

/// Everything else that needs root, up to the switch to the container's
/// root, in the container's PID namespace. `before_pivot` runs in the
/// container's namespaces, its mounts made, just before pivot_root: the
/// createContainer hooks' moment.
pub fn enter(config: &ChildConfig, before_pivot: &dyn Fn() -> Result<()>) -> Result<()> {
    process::set_oom_score_adj(config.oom_score_adj)?;
    rootfs::enter(config, before_pivot)?;
    process::set_umask(config.umask);
    process::set_names(config)?;
    process::apply_sysctl(config)?;
    paths::make_readonly(&config.readonly_paths)?;
    paths::mask(&config.masked_paths, config.mount_label.as_deref())?;
    process::set_rlimits(&config.rlimits)
}

/// The container's init process, named by pid and start time so that a
/// recycled pid is never mistaken for it.
pub struct Init {
    pub pid: i32,
    pub started: u64,
}

/// The namespaces a process exec'd into a container joins, by their names
/// under `/proc/<pid>/ns`, the mount namespace last: joining it moves the
/// process to the container's root. The PID namespace is not among them,
/// since only children enter it: the shim clones the process into it.
const EXEC_NAMESPACES: [(CloneFlags, &str); 5] = [
    (CloneFlags::CLONE_NEWIPC, "ipc"),
    (CloneFlags::CLONE_NEWUTS, "uts"),
    (CloneFlags::CLONE_NEWNET, "net"),
    (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
    (CloneFlags::CLONE_NEWNS, "mnt"),
];

/// Moves a process exec'd into a running container into its namespaces
/// but the PID namespace, in runc's nsexec order (ipc, uts, net, cgroup,
/// then mnt, which also enters the container's root), and applies the
/// process's own settings that precede the privilege drop: oom_score_adj,
/// umask and rlimits. Every namespace of the init process is joined, so a
/// namespace the container shares with the host is joined as the same
/// one. Returns the PID namespace, which only a fork can enter: the
/// caller forks into it last, so that nothing of ours appears there
/// before it is inside the container.
pub fn join_container(config: &ChildConfig, init: &Init) -> Result<File> {
    let gone = || Error::InvalidSpec("the container's process has exited".into());
    let mut files = Vec::with_capacity(EXEC_NAMESPACES.len());
    for (flag, name) in EXEC_NAMESPACES {
        let path = format!("/proc/{}/ns/{name}", init.pid);
        files.push((flag, File::open(&path).map_err(|_| gone())?));
    }
    let pid_ns = File::open(format!("/proc/{}/ns/pid", init.pid)).map_err(|_| gone())?;
    // Opened above while the pid still named the container's process: it
    // cannot have been reused while that process lives.
    if crate::process_start_time(init.pid) != Some(init.started) {
        return Err(gone());
    }
    for (flag, file) in files {
        setns(file, flag).map_err(Error::sys(format!(
            "join the container's {flag:?} namespace"
        )))?;
    }
    process::set_oom_score_adj(config.oom_score_adj)?;
    process::set_umask(config.umask);
    process::set_rlimits(&config.rlimits)?;
    Ok(pid_ns)
}

fn join_namespaces(config: &ChildConfig) -> Result<()> {
    for (flag, path) in &config.join {
        let file =
            File::open(path).map_err(Error::io(format!("open namespace {}", path.display())))?;
        setns(file, *flag).map_err(Error::sys(format!("join namespace {}", path.display())))?;
    }
    Ok(())
}

/// no_new_privs, seccomp, user and capabilities in runc's order: seccomp
/// goes first while still privileged when no_new_privs is off (loading a
/// filter then needs CAP_SYS_ADMIN), else last of all.
pub fn drop_privileges(config: &ChildConfig, workload: Workload) -> Result<()> {
    let on_exec = workload == Workload::Native;
    process::apply_apparmor(config.apparmor_profile.as_deref(), on_exec)?;
    process::apply_selinux(config.selinux_label.as_deref(), on_exec)?;
    if config.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(Error::sys("set no_new_privs"))?;
    }
    if !config.no_new_privileges
        && let Some(profile) = &config.seccomp
    {
        seccomp::load(profile)?;
    }
    let sets = match workload {
        Workload::Native => config.capabilities,
        Workload::Wasm => caps::after_execve(config.capabilities, config.uid),
    };
    // As runc: into the working directory as root first (the user may
    // not be able to reach it), and again as the user if that failed.
    let entered = chdir(&config.cwd).is_ok();
    caps::drop_bounding(&sets)?;
    caps::keep_across_setuid(true)?;
    switch_user(config)?;
    caps::keep_across_setuid(false)?;
    caps::apply(&sets)?;
    // A change of user resets dumpability to fs.suid_dumpable, which a
    // host may set to 1: a Wasm child stays non-dumpable for life (a
    // native program's execve decides for itself, as under runc).
    if workload == Workload::Wasm {
        crate::readonly::make_non_dumpable()?;
    }
    if !entered {
        chdir(&config.cwd).map_err(Error::sys(format!(
            "process.cwd {} inside the rootfs",
            config.cwd.display()
        )))?;
    }
    if config.no_new_privileges
        && let Some(profile) = &config.seccomp
    {
        seccomp::load(profile)?;
    }
    Ok(())
}

fn switch_user(config: &ChildConfig) -> Result<()> {
    let groups: Vec<Gid> = config
        .additional_gids
        .iter()
        .copied()
        .map(Gid::from_raw)
        .collect();
    setgroups(&groups).map_err(Error::sys("set process.user.additionalGids"))?;
    setgid(Gid::from_raw(config.gid))
        .map_err(Error::sys(format!("set process.user.gid {}", config.gid)))?;
    setuid(Uid::from_raw(config.uid))
        .map_err(Error::sys(format!("set process.user.uid {}", config.uid)))
}
