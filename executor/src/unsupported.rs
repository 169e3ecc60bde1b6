//! The parts of config.json this shim does not apply, refused by name at
//! Create. Everything else in the spec is applied as runc applies it; a
//! container is never started with part of its spec silently dropped.

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

fn refuse(field: &str, why: &str) -> Error {
    Error::InvalidSpec(format!("{field} {why}"))
}

const NOT_SUPPORTED: &str = "is not supported by the wasmtime shim";

pub fn check(spec: &Spec) -> Result<()> {
    if spec.solaris().is_some() || spec.windows().is_some() || spec.zos().is_some() {
        return Err(refuse(
            "solaris/windows/zos",
            "sections are for other platforms",
        ));
    }
    if spec.vm().is_some() {
        return Err(refuse("vm", NOT_SUPPORTED));
    }
    if let Some(process) = spec.process() {
        if process.command_line().is_some() {
            return Err(refuse("process.commandLine", "is for Windows"));
        }
        if process.io_priority().is_some() {
            return Err(refuse("process.ioPriority", NOT_SUPPORTED));
        }
        if process.scheduler().is_some() {
            return Err(refuse("process.scheduler", NOT_SUPPORTED));
        }
        if process.exec_cpu_affinity().is_some() {
            return Err(refuse("process.execCPUAffinity", NOT_SUPPORTED));
        }
        if process
            .selinux_label()
            .as_ref()
            .is_some_and(|l| !l.is_empty())
        {
            selinux("process.selinuxLabel")?;
        }
        if let Some(profile) = process
            .apparmor_profile()
            .as_ref()
            .filter(|p| !p.is_empty())
            && !apparmor_enabled()
        {
            return Err(refuse(
                &format!("process.apparmorProfile {profile}"),
                "is set but AppArmor is not enabled on this host",
            ));
        }
    }
    if let Some(linux) = spec.linux() {
        let set = [
            ("linux.uidMappings", linux.uid_mappings().is_some()),
            ("linux.gidMappings", linux.gid_mappings().is_some()),
            ("linux.intelRdt", linux.intel_rdt().is_some()),
            ("linux.memoryPolicy", linux.memory_policy().is_some()),
            ("linux.personality", linux.personality().is_some()),
            ("linux.timeOffsets", linux.time_offsets().is_some()),
            ("linux.netDevices", linux.net_devices().is_some()),
        ];
        if let Some((field, _)) = set.iter().find(|(_, set)| *set) {
            return Err(refuse(field, NOT_SUPPORTED));
        }
        if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
            selinux("linux.mountLabel")?;
        }
        if let Some(seccomp) = linux.seccomp() {
            crate::sandbox::seccomp::check(seccomp)?;
        }
    }
    Ok(())
}

/// SELinux labels are refused where SELinux is off, as runc refuses a
/// process label there (and a mount label makes its mounts fail).
fn selinux(field: &str) -> Result<()> {
    match selinux_enabled() {
        true => Ok(()),
        false => Err(refuse(
            field,
            "is set but SELinux is not enabled on this host",
        )),
    }
}

pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn names_each_refused_field() {
        let base = r#""ociVersion": "1.0.2", "root": {"path": "rootfs"}"#;
        for (extra, field) in [
            (r#""linux": {"intelRdt": {}}"#, "linux.intelRdt"),
            (
                r#""linux": {"personality": {"domain": "LINUX32"}}"#,
                "linux.personality",
            ),
            (
                r#""process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0}}"#,
                "process.ioPriority",
            ),
            (
                r#""process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "selinuxLabel": "x"}"#,
                "process.selinuxLabel",
            ),
        ] {
            let s = spec(&format!("{{{base}, {extra}}}"));
            let err = check(&s).unwrap_err().to_string();
            assert!(err.contains(field), "{extra}: {err}");
        }
        let hooks = r#""hooks": {"prestart": [{"path": "/bin/true"}]}"#;
        assert!(check(&spec(&format!("{{{base}, {hooks}}}"))).is_ok());
    }
}
