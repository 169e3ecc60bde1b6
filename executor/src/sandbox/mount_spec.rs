//! The spec's `mounts` turned into what mount(2) takes: flags to set,
//! propagation changes and the filesystem's data string, with the option
//! names runc accepts. An option that cannot be honoured is refused by
//! name rather than dropped.

use std::path::PathBuf;

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;

use crate::error::{Error, Result};

/// One mount of the spec, ready to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Absolute path inside the container.
    pub destination: PathBuf,
    pub fstype: String,
    /// A host path for bind mounts, else the device name (`proc`, `tmpfs`…).
    pub source: String,
    pub flags: MsFlags,
    /// Propagation changes, applied one by one after the mount.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options, comma-joined (`mode=755,size=65536k`).
    pub data: String,
    /// `MOUNT_ATTR_*` bits set and cleared on the mount and every mount
    /// below it (`rro`, `rnosuid`…), by mount_setattr(2) as runc does.
    pub recursive_set: u64,
    pub recursive_clear: u64,
}

impl MountSpec {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

/// (name, set?, flag) for every flag option runc knows.
pub const FLAGS: [(&str, bool, MsFlags); 24] = [
    ("async", false, MsFlags::MS_SYNCHRONOUS),
    ("atime", false, MsFlags::MS_NOATIME),
    ("bind", true, MsFlags::MS_BIND),
    ("defaults", true, MsFlags::empty()),
    ("dev", false, MsFlags::MS_NODEV),
    ("diratime", false, MsFlags::MS_NODIRATIME),
    ("dirsync", true, MsFlags::MS_DIRSYNC),
    ("exec", false, MsFlags::MS_NOEXEC),
    ("mand", true, MsFlags::MS_MANDLOCK),
    ("noatime", true, MsFlags::MS_NOATIME),
    ("nodev", true, MsFlags::MS_NODEV),
    ("nodiratime", true, MsFlags::MS_NODIRATIME),
    ("noexec", true, MsFlags::MS_NOEXEC),
    ("nomand", false, MsFlags::MS_MANDLOCK),
    ("norelatime", false, MsFlags::MS_RELATIME),
    ("nostrictatime", false, MsFlags::MS_STRICTATIME),
    ("nosuid", true, MsFlags::MS_NOSUID),
    ("rbind", true, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", true, MsFlags::MS_RELATIME),
    ("ro", true, MsFlags::MS_RDONLY),
    ("rw", false, MsFlags::MS_RDONLY),
    ("strictatime", true, MsFlags::MS_STRICTATIME),
    ("suid", false, MsFlags::MS_NOSUID),
    ("sync", true, MsFlags::MS_SYNCHRONOUS),
];

pub const PROPAGATION: [(&str, MsFlags); 8] = [
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// The recursive mount attributes runc applies with mount_setattr(2):
/// name, set (else cleared), `MOUNT_ATTR_*` bit.
pub const RECURSIVE: [(&str, bool, u64); 8] = [
    ("rro", true, libc::MOUNT_ATTR_RDONLY),
    ("rrw", false, libc::MOUNT_ATTR_RDONLY),
    ("rnosuid", true, libc::MOUNT_ATTR_NOSUID),
    ("rsuid", false, libc::MOUNT_ATTR_NOSUID),
    ("rnodev", true, libc::MOUNT_ATTR_NODEV),
    ("rdev", false, libc::MOUNT_ATTR_NODEV),
    ("rnoexec", true, libc::MOUNT_ATTR_NOEXEC),
    ("rexec", false, libc::MOUNT_ATTR_NOEXEC),
];

/// Options runc knows but this shim does not apply; refused by name.
const REFUSED: [&str; 4] = ["tmpcopyup", "idmap", "ridmap", "remount"];

/// Parses mount number `index` of the spec. `label` is the spec's SELinux
/// `linux.mountLabel`, given to every filesystem that takes a context
/// (not proc, sysfs, mqueue or bind mounts), as runc gives it.
pub fn parse(index: usize, label: Option<&str>, mount: &Mount) -> Result<MountSpec> {
    let field = format!("mounts[{index}]");
    let destination = mount.destination().clone();
    if !destination.is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "{field}: destination {} is not an absolute path",
            destination.display()
        )));
    }
    if destination
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(Error::InvalidSpec(format!(
            "{field}: destination {} must not contain '..'",
            destination.display()
        )));
    }
    if mount.uid_mappings().is_some() || mount.gid_mappings().is_some() {
        return Err(Error::InvalidSpec(format!(
            "{field}: id-mapped mounts are not supported"
        )));
    }
    let mut flags = MsFlags::empty();
    let mut propagation = Vec::new();
    let mut data = Vec::new();
    let (mut recursive_set, mut recursive_clear) = (0, 0);
    for option in mount.options().iter().flatten() {
        if let Some((_, set, flag)) = FLAGS.iter().find(|(name, ..)| name == option) {
            match set {
                true => flags |= *flag,
                false => flags &= !*flag,
            }
        } else if let Some((_, set, bit)) = RECURSIVE.iter().find(|(name, ..)| name == option) {
            match set {
                true => {
                    (recursive_set, recursive_clear) = (recursive_set | bit, recursive_clear & !bit)
                }
                false => {
                    (recursive_set, recursive_clear) = (recursive_set & !bit, recursive_clear | bit)
                }
            }
        } else if let Some((_, flag)) = PROPAGATION.iter().find(|(name, _)| name == option) {
            propagation.push(*flag);
        } else if REFUSED.contains(&option.as_str()) {
            return Err(Error::InvalidSpec(format!(
                "{field} ({}): option {option} is not supported",
                destination.display()
            )));
        } else {
            data.push(option.clone());
        }
    }
    let fstype = mount.typ().clone().unwrap_or_default();
    if fstype == "bind" {
        flags |= MsFlags::MS_BIND;
    }
    let source = mount
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if flags.contains(MsFlags::MS_BIND) && !source.starts_with('/') {
        return Err(Error::InvalidSpec(format!(
            "{field}: bind source {source:?} is not an absolute path"
        )));
    }
    if fstype.is_empty() && !flags.contains(MsFlags::MS_BIND) {
        return Err(Error::InvalidSpec(format!(
            "{field} ({}): no type and not a bind mount",
            destination.display()
        )));
    }
    let labelled = !flags.contains(MsFlags::MS_BIND)
        && !matches!(
            fstype.as_str(),
            "proc" | "sysfs" | "mqueue" | "cgroup" | "cgroup2"
        );
    if let (Some(label), true) = (label, labelled) {
        data.push(format!("context=\"{label}\""));
    }
    Ok(MountSpec {
        destination,
        fstype,
        source,
        flags,
        propagation,
        data: data.join(","),
        recursive_set,
        recursive_clear,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(json: &str) -> Mount {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn splits_flags_propagation_and_data() {
        let m = parse(
            0,
            None,
            &mount(
                r#"{"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                    "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k", "rprivate"]}"#,
            ),
        )
        .unwrap();
        assert_eq!(
            m.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV
        );
        assert_eq!(m.data, "mode=1777,size=65536k");
        assert_eq!(m.propagation, [MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert!(!m.is_bind());
    }

    #[test]
    fn bind_volumes_with_ro_and_rbind() {
        let m = parse(
            1,
            Some("system_u:object_r:container_file_t:s0"),
            &mount(r#"{"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind", "ro", "nosuid"]}"#),
        )
        .unwrap();
        assert!(m.is_bind());
        assert_eq!(
            m.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        );
        let rw = parse(
            2,
            None,
            &mount(r#"{"destination": "/d", "source": "/s", "options": ["bind", "ro", "rw"]}"#),
        )
        .unwrap();
        assert_eq!(rw.flags, MsFlags::MS_BIND);
        assert!(m.data.is_empty(), "a bind mount takes no context");
    }

    #[test]
    fn the_mount_label_goes_to_filesystems_that_take_a_context() {
        let label = Some("system_u:object_r:container_file_t:s0:c1,c2");
        let tmpfs = mount(r#"{"destination": "/run", "type": "tmpfs", "options": ["mode=755"]}"#);
        let data = parse(0, label, &tmpfs).unwrap().data;
        assert_eq!(
            data,
            "mode=755,context=\"system_u:object_r:container_file_t:s0:c1,c2\""
        );
        let proc = mount(r#"{"destination": "/proc", "type": "proc"}"#);
        assert!(parse(0, label, &proc).unwrap().data.is_empty());
    }

    #[test]
    fn recursive_options_set_and_clear_attributes_in_order() {
        let json = r#"{"destination": "/d", "type": "bind", "source": "/s",
            "options": ["rbind", "rro", "rnosuid", "rexec", "rnoexec", "rrw"]}"#;
        let m = parse(0, None, &mount(json)).unwrap();
        let set = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC;
        assert_eq!(
            (m.recursive_set, m.recursive_clear),
            (set, libc::MOUNT_ATTR_RDONLY)
        );
        assert!(!m.flags.contains(MsFlags::MS_RDONLY), "rro is not ro");
    }

    #[test]
    fn refuses_what_it_cannot_mount_by_index() {
        for (json, text) in [
            (
                r#"{"destination": "data", "type": "tmpfs"}"#,
                "not an absolute path",
            ),
            (r#"{"destination": "/a/../b", "type": "tmpfs"}"#, "'..'"),
            (
                r#"{"destination": "/d", "type": "bind", "source": "rel"}"#,
                "bind source",
            ),
            (
                r#"{"destination": "/d", "type": "tmpfs", "options": ["tmpcopyup"]}"#,
                "tmpcopyup",
            ),
            (
                r#"{"destination": "/d", "type": "bind", "source": "/s", "options": ["idmap"]}"#,
                "idmap",
            ),
            (r#"{"destination": "/d", "source": "x"}"#, "no type"),
        ] {
            let err = parse(3, None, &mount(json)).unwrap_err().to_string();
            assert!(
                err.contains("mounts[3]") && err.contains(text),
                "{json}: {err}"
            );
        }
    }
}
