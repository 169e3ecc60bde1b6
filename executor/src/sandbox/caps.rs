//! Linux capabilities of the child, from `process.capabilities`, applied
//! as runc does: the bounding set is cut first, the permitted, effective
//! and inheritable sets are set after the switch to the container's user,
//! and the ambient set last. A spec without capabilities gets none.

use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::error::{Error, Result};

/// Capability names in kernel order: the index is the capability number.
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The five capability sets as bit masks (bit n = capability n).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

pub fn number(name: &str) -> Option<u32> {
    let name = name.strip_prefix("CAP_").unwrap_or(name);
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

fn mask(set: &Option<Capabilities>) -> Result<u64> {
    let mut bits = 0u64;
    for cap in set.iter().flatten() {
        let name = cap.to_string();
        let n = number(&name).ok_or_else(|| {
            Error::InvalidSpec(format!("process.capabilities: unknown capability {name}"))
        })?;
        bits |= 1 << n;
    }
    Ok(bits)
}

pub fn from_spec(caps: Option<&LinuxCapabilities>) -> Result<CapSets> {
    let Some(caps) = caps else {
        return Ok(CapSets::default());
    };
    Ok(CapSets {
        bounding: mask(caps.bounding())?,
        effective: mask(caps.effective())?,
        permitted: mask(caps.permitted())?,
        inheritable: mask(caps.inheritable())?,
        ambient: mask(caps.ambient())?,
    })
}

/// The sets a process holds after execve of a file without file
/// capabilities, as the kernel computes them. A Wasm guest runs in the
/// child without an execve, so the child takes these sets itself: then a
/// non-root user keeps only what its ambient set gives it, as under runc.
pub fn after_execve(sets: CapSets, uid: u32) -> CapSets {
    if uid == 0 {
        // Root's files count as fully capable: everything in the bounding
        // or inheritable set becomes permitted and effective; ambient is
        // cleared, as for any privileged execution.
        let permitted = sets.inheritable | sets.bounding;
        return CapSets {
            permitted,
            effective: permitted,
            ambient: 0,
            ..sets
        };
    }
    // Ambient capabilities survive only if still permitted and inheritable.
    let ambient = sets.ambient & sets.permitted & sets.inheritable;
    CapSets {
        permitted: ambient,
        effective: ambient,
        ambient,
        ..sets
    }
}

/// Drops every capability outside the bounding set. Must run while the
/// process still has CAP_SETPCAP, before the user switch.
pub fn drop_bounding(sets: &CapSets) -> Result<()> {
    for cap in 0..64u32 {
        if sets.bounding & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only; no memory is passed.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if ret != 0 {
            let err = std::io::Error::last_os_error();
            // EINVAL: past the last capability this kernel knows.
            if err.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(Error::Io {
                what: format!("drop capability {cap} from the bounding set"),
                source: err,
            });
        }
    }
    Ok(())
}

/// Keeps the permitted set across setuid to a non-root user, so that
/// [`apply`] can still set it; cleared again by `keep_across_setuid(false)`.
pub fn keep_across_setuid(keep: bool) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, keep as libc::c_ulong, 0, 0, 0) };
    if ret != 0 {
        return Err(Error::Io {
            what: "set PR_SET_KEEPCAPS".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the effective set to `mask` within the permitted set, which stays
/// as it is (so a later call can raise the effective set again).
pub fn set_effective(mask: u64) -> Result<()> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes one header's worth of two data structs
    // (version 3) into memory of ours, alive for the call.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &raw const header, data.as_mut_ptr()) };
    if ret != 0 {
        return Err(Error::Io {
            what: "read this process's capabilities".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    data[0].effective = data[0].permitted & mask as u32;
    data[1].effective = data[1].permitted & (mask >> 32) as u32;
    // SAFETY: capset reads one header and two data structs (version 3),
    // both laid out as the kernel's and alive for the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) };
    if ret != 0 {
        return Err(Error::Io {
            what: "set the effective capabilities".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets, then the ambient set.
pub fn apply(sets: &CapSets) -> Result<()> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |bits: u64| [bits as u32, (bits >> 32) as u32];
    let (e, p, i) = (
        split(sets.effective),
        split(sets.permitted),
        split(sets.inheritable),
    );
    let data = [
        CapData {
            effective: e[0],
            permitted: p[0],
            inheritable: i[0],
        },
        CapData {
            effective: e[1],
            permitted: p[1],
            inheritable: i[1],
        },
    ];
    // SAFETY: capset reads one header and two data structs (version 3),
    // both laid out as the kernel's and alive for the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) };
    if ret != 0 {
        return Err(Error::Io {
            what: "set process.capabilities".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    for cap in (0..64u32).filter(|c| sets.ambient & (1 << c) != 0) {
        let raise = libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong;
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, raise, cap as libc::c_ulong, 0, 0) } != 0 {
            return Err(Error::Io {
                what: format!(
                    "raise ambient capability {}",
                    NAMES.get(cap as usize).unwrap_or(&"?")
                ),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_kernel_numbers() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("NET_BIND_SERVICE"), Some(10));
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
    }

    #[test]
    fn execve_leaves_a_non_root_user_only_its_ambient_set() {
        let all = CapSets {
            bounding: 0b1111,
            effective: 0b0111,
            permitted: 0b0111,
            inheritable: 0b0011,
            ambient: 0b0101,
        };
        let user = after_execve(all, 1000);
        assert_eq!(
            (user.permitted, user.effective, user.ambient),
            (0b0001, 0b0001, 0b0001)
        );
        assert_eq!((user.bounding, user.inheritable), (0b1111, 0b0011));
        let root = after_execve(all, 0);
        assert_eq!(
            (root.permitted, root.effective, root.ambient),
            (0b1111, 0b1111, 0)
        );
    }

    #[test]
    fn spec_sets_become_masks() {
        let caps: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"],
                "permitted": ["CAP_KILL"], "inheritable": [], "ambient": []}"#,
        )
        .unwrap();
        let sets = from_spec(Some(&caps)).unwrap();
        assert_eq!(sets.bounding, 1 | 1 << 5);
        assert_eq!((sets.effective, sets.permitted), (1 << 5, 1 << 5));
        assert_eq!((sets.inheritable, sets.ambient), (0, 0));
        assert_eq!(from_spec(None).unwrap(), CapSets::default());
    }
}
