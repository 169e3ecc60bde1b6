//! The per-process and per-namespace settings of the spec, in runc's
//! words: hostname and domainname, sysctl, rlimits, oom_score_adj, umask
//! and the AppArmor profile.

use std::path::PathBuf;

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::stat::{Mode, umask};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

use crate::error::{Error, Result};
use crate::spec::{ChildConfig, OwnNamespaces};

/// Hostname and domainname of the container's UTS namespace.
pub fn set_names(config: &ChildConfig) -> Result<()> {
    if let Some(hostname) = &config.hostname {
        nix::unistd::sethostname(hostname)
            .map_err(Error::sys(format!("set hostname {hostname}")))?;
    }
    if let Some(domain) = &config.domainname {
        super::paths::write_proc("/proc/sys/kernel/domainname", domain)
            .map_err(Error::io(format!("set domainname {domain}")))?;
    }
    Ok(())
}

/// The file under /proc/sys of a sysctl key, refusing keys that are not
/// in a namespace of the container's own: runc refuses them too, since
/// writing them would change the host.
pub fn sysctl_path(key: &str, own: OwnNamespaces) -> Result<PathBuf> {
    let ipc = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
    ];
    let ipc_prefixes = ["kernel.shm", "fs.mqueue."];
    let kind = if key.starts_with("net.") {
        Some(("network", own.network))
    } else if ipc.contains(&key) || ipc_prefixes.iter().any(|p| key.starts_with(p)) {
        Some(("IPC", own.ipc))
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(("UTS", own.uts))
    } else {
        None
    };
    match kind {
        Some((_, true)) => {}
        Some((kind, false)) => {
            return Err(Error::InvalidSpec(format!(
                "linux.sysctl {key} needs a {kind} namespace of the container's own"
            )));
        }
        None => {
            return Err(Error::InvalidSpec(format!(
                "linux.sysctl {key} is not in a namespace of the container: it would change the host"
            )));
        }
    }
    if key.contains("..") || key.contains('/') {
        return Err(Error::InvalidSpec(format!(
            "linux.sysctl {key} is not a key"
        )));
    }
    Ok(PathBuf::from("/proc/sys").join(key.replace('.', "/")))
}

pub fn apply_sysctl(config: &ChildConfig) -> Result<()> {
    for (key, value) in &config.sysctl {
        let path = sysctl_path(key, config.own)?;
        super::paths::write_proc(&path.to_string_lossy(), value)
            .map_err(Error::io(format!("linux.sysctl {key}={value}")))?;
    }
    Ok(())
}

fn resource(typ: PosixRlimitType) -> Resource {
    use PosixRlimitType::*;
    match typ {
        RlimitCpu => Resource::RLIMIT_CPU,
        RlimitFsize => Resource::RLIMIT_FSIZE,
        RlimitData => Resource::RLIMIT_DATA,
        RlimitStack => Resource::RLIMIT_STACK,
        RlimitCore => Resource::RLIMIT_CORE,
        RlimitRss => Resource::RLIMIT_RSS,
        RlimitNproc => Resource::RLIMIT_NPROC,
        RlimitNofile => Resource::RLIMIT_NOFILE,
        RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        RlimitAs => Resource::RLIMIT_AS,
        RlimitLocks => Resource::RLIMIT_LOCKS,
        RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        RlimitNice => Resource::RLIMIT_NICE,
        RlimitRtprio => Resource::RLIMIT_RTPRIO,
        RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Sets `process.rlimits` while still privileged (raising a hard limit
/// needs CAP_SYS_RESOURCE).
pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for limit in rlimits {
        if limit.soft() > limit.hard() {
            return Err(Error::InvalidSpec(format!(
                "process.rlimits {:?}: soft limit {} is above the hard limit {}",
                limit.typ(),
                limit.soft(),
                limit.hard()
            )));
        }
        setrlimit(resource(limit.typ()), limit.soft(), limit.hard())
            .map_err(Error::sys(format!("set process.rlimits {:?}", limit.typ())))?;
    }
    Ok(())
}

pub fn set_oom_score_adj(score: Option<i32>) -> Result<()> {
    let Some(score) = score else { return Ok(()) };
    std::fs::write("/proc/self/oom_score_adj", score.to_string()).map_err(Error::io(format!(
        "set process.oomScoreAdj {score} (lowering it needs CAP_SYS_RESOURCE on the host)"
    )))
}

/// `process.user.umask`, else runc's 0022.
pub fn set_umask(value: Option<u32>) {
    umask(Mode::from_bits_truncate(value.unwrap_or(0o022)));
}

/// Applies `process.apparmorProfile` (checked at Create to need AppArmor
/// on the host): on exec for a native program, at once for a Wasm guest,
/// which runs in this very process.
pub fn apply_apparmor(profile: Option<&str>, on_exec: bool) -> Result<()> {
    let Some(profile) = profile else {
        return Ok(());
    };
    let (file, command) = match on_exec {
        true => ("exec", "exec"),
        false => ("current", "changeprofile"),
    };
    let modern = format!("/proc/self/attr/apparmor/{file}");
    let path = match std::path::Path::new(&modern).exists() {
        true => modern,
        false => format!("/proc/self/attr/{file}"),
    };
    super::paths::write_proc(&path, &format!("{command} {profile}")).map_err(Error::io(format!(
        "apply process.apparmorProfile {profile}"
    )))
}

/// Applies `process.selinuxLabel` (checked at Create to need SELinux on
/// the host): as the exec label for a native program, as runc does, or
/// at once for a Wasm guest, which runs in this very process.
pub fn apply_selinux(label: Option<&str>, on_exec: bool) -> Result<()> {
    let Some(label) = label else {
        return Ok(());
    };
    let file = match on_exec {
        true => "/proc/self/attr/exec",
        false => "/proc/self/attr/current",
    };
    super::paths::write_proc(file, label)
        .map_err(Error::io(format!("apply process.selinuxLabel {label}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_must_be_namespaced() {
        let all = OwnNamespaces {
            network: true,
            ipc: true,
            uts: true,
        };
        let none = OwnNamespaces::default();
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward", all).unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert!(sysctl_path("kernel.shmmax", all).is_ok());
        assert!(sysctl_path("fs.mqueue.msg_max", all).is_ok());
        let host_net = sysctl_path("net.ipv4.ip_forward", none).unwrap_err();
        assert!(host_net.to_string().contains("network namespace"));
        let host_ipc = sysctl_path("kernel.shmmax", none).unwrap_err();
        assert!(host_ipc.to_string().contains("IPC namespace"));
        let global = sysctl_path("vm.swappiness", all).unwrap_err();
        assert!(global.to_string().contains("vm.swappiness"));
    }

    #[test]
    fn soft_above_hard_is_refused_by_name() {
        let limit: PosixRlimit =
            serde_json::from_str(r#"{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}"#).unwrap();
        let err = set_rlimits(&[limit]).unwrap_err().to_string();
        assert!(
            err.contains("process.rlimits") && err.contains("soft limit 10"),
            "{err}"
        );
    }
}
