//! What the `-info` action reports of the runtime: the OCI runtime spec's
//! `features` document (what `runc features` prints), as containerd 2.x
//! reads it from `RuntimeInfo.features`. Its CRI plugin tells kubelet that
//! a handler supports recursive read-only mounts only when `rro` is among
//! the mount options listed here. Every list comes from the tables the
//! executor applies, so that nothing is listed that is not applied.

use executor::sandbox::{caps, mount_spec};
use serde_json::{Value, json};

/// The type URL containerd registers for `specs-go/features.Features`
/// (runtime-spec major version 1); the value is its JSON.
pub const TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// The features document, as JSON.
pub fn document() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": mount_options(),
        "linux": {
            // No user or time namespace (Create names them and fails).
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": caps::NAMES.iter().map(|n| format!("CAP_{n}")).collect::<Vec<_>>(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false,
                       "rdma": false},
            "seccomp": {
                "enabled": true,
                // SCMP_ACT_NOTIFY is refused at Create.
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                            "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                            "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                              "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_PPC64LE",
                          "SCMP_ARCH_RISCV64", "SCMP_ARCH_S390X", "SCMP_ARCH_X32",
                          "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"],
            },
            "apparmor": {"enabled": apparmor_enabled()},
            "selinux": {"enabled": std::path::Path::new("/sys/fs/selinux/enforce").exists()},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}},
        },
    })
}

/// Every mount option the executor applies: flags, propagation and the
/// recursive attributes, plus the bind types, sorted as runc sorts them.
fn mount_options() -> Vec<&'static str> {
    let mut options: Vec<&str> = mount_spec::FLAGS
        .iter()
        .map(|(name, ..)| *name)
        .chain(mount_spec::PROPAGATION.iter().map(|(name, _)| *name))
        .chain(mount_spec::RECURSIVE.iter().map(|(name, ..)| *name))
        .chain(["bind"])
        .collect();
    options.sort_unstable();
    options.dedup();
    options
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rro_and_the_tables_are_listed_and_refused_options_are_not() {
        let doc = document();
        let options: Vec<&str> = doc["mountOptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for listed in ["rro", "rnosuid", "rbind", "bind", "ro", "rshared", "nosuid"] {
            assert!(options.contains(&listed), "{listed}: {options:?}");
        }
        for refused in ["tmpcopyup", "idmap", "remount"] {
            assert!(!options.contains(&refused), "{refused}");
        }
        let caps = doc["linux"]["capabilities"].as_array().unwrap();
        assert!(caps.contains(&json!("CAP_SYS_ADMIN")));
        assert!(
            !doc["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&json!("user"))
        );
    }
}
