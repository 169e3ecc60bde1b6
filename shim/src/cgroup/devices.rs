//! Device access rules from `linux.resources.devices`, followed by the
//! devices runc allows every container (so that the /dev it builds works):
//! written to the v1 devices controller in order, the last matching rule
//! winning, as the kernel evaluates them; on v2, compiled into an eBPF
//! filter with the same meaning (executor's `device_filter`).

use anyhow::{Context, bail};
use executor::sandbox::device_filter::{self, DeviceRule};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::Cgroup;

/// (type, major, minor, access) of the devices every container may use,
/// the list runc 1.1 appends to the spec's rules: mknod of anything, the
/// nodes it creates in /dev (null, random, full, tty, zero, urandom), the
/// console, the pseudo-terminals, ptmx and tun.
const ALWAYS_ALLOWED: [(&str, &str, &str, &str); 12] = [
    ("c", "*", "*", "m"),
    ("b", "*", "*", "m"),
    ("c", "1", "3", "rwm"),
    ("c", "1", "8", "rwm"),
    ("c", "1", "7", "rwm"),
    ("c", "5", "0", "rwm"),
    ("c", "1", "5", "rwm"),
    ("c", "1", "9", "rwm"),
    ("c", "5", "1", "rwm"),
    ("c", "136", "*", "rwm"),
    ("c", "5", "2", "rwm"),
    ("c", "10", "200", "rwm"),
];

impl Cgroup {
    pub fn apply_devices(&self, rules: &[LinuxDeviceCgroup]) -> anyhow::Result<()> {
        let lines = device_lines(rules)?;
        if self.v2() {
            let dir = self.dir("devices").context("no cgroup v2 directory")?;
            let rules: Vec<DeviceRule> =
                lines.iter().map(|(allow, l)| to_rule(*allow, l)).collect();
            return device_filter::attach(&rules, dir)
                .with_context(|| format!("attach the device filter to {}", dir.display()));
        }
        for (allow, line) in lines {
            let file = if allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            self.write("devices", file, &line)?;
        }
        Ok(())
    }
}

/// Each rule as (allow, "type major:minor access"): all devices denied,
/// then the spec's rules, then the always-allowed ones. runc starts from
/// the same allow-list whatever the spec says, so a spec without device
/// rules gets only the default devices, not the host's.
pub fn device_lines(rules: &[LinuxDeviceCgroup]) -> anyhow::Result<Vec<(bool, String)>> {
    let mut lines = vec![(false, "a *:* rwm".to_string())];
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("linux.resources.devices[{i}]");
        let typ = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => "a",
            LinuxDeviceType::C | LinuxDeviceType::U => "c",
            LinuxDeviceType::B => "b",
            LinuxDeviceType::P => bail!("{field}: type p (fifo) has no device rule"),
        };
        let number = |n: Option<i64>, what: &str| -> anyhow::Result<String> {
            match n {
                None | Some(-1) => Ok("*".into()),
                Some(n) if (0..=u32::MAX as i64).contains(&n) => Ok(n.to_string()),
                Some(n) if n > u32::MAX as i64 => bail!("{field}: {what} {n} is out of range"),
                Some(n) => bail!("{field}: {what} {n} is negative"),
            }
        };
        let major = number(rule.major(), "major")?;
        let minor = number(rule.minor(), "minor")?;
        let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
        let valid = !access.is_empty()
            && access.chars().all(|c| "rwm".contains(c))
            && access.chars().count()
                == access
                    .chars()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
        if !valid {
            bail!("{field}: access {access:?} is not a combination of r, w and m");
        }
        lines.push((rule.allow(), format!("{typ} {major}:{minor} {access}")));
    }
    for (typ, major, minor, access) in ALWAYS_ALLOWED {
        lines.push((true, format!("{typ} {major}:{minor} {access}")));
    }
    Ok(lines)
}

/// A rule line ("c 1:3 rwm", checked by [`device_lines`]) as a filter rule.
fn to_rule(allow: bool, line: &str) -> DeviceRule {
    let mut parts = line.split([' ', ':']);
    let kind = parts.next().and_then(|k| k.chars().next()).unwrap_or('a');
    let number = |n: Option<&str>| n.and_then(|n| n.parse().ok());
    let (major, minor) = (number(parts.next()), number(parts.next()));
    DeviceRule {
        allow,
        kind,
        major,
        minor,
        access: device_filter::access_bits(parts.next().unwrap_or("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn spec_rules_then_the_defaults() {
        let lines = device_lines(&rules(
            r#"[{"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}]"#,
        ))
        .unwrap();
        assert_eq!(lines[0], (false, "a *:* rwm".to_string()));
        assert_eq!(lines[1], (false, "a *:* rwm".to_string()));
        assert_eq!(lines[2], (true, "c 10:229 rw".to_string()));
        assert_eq!(lines[3], (true, "c *:* m".to_string()));
        assert_eq!(lines.len(), 3 + ALWAYS_ALLOWED.len());
        let none = device_lines(&[]).unwrap();
        assert_eq!(
            none[0],
            (false, "a *:* rwm".to_string()),
            "deny first, always"
        );
    }

    #[test]
    fn malformed_rules_name_their_index() {
        for (json, text) in [
            (r#"[{"allow": true, "access": "rwx"}]"#, "access \"rwx\""),
            (r#"[{"allow": true, "access": "rr"}]"#, "access \"rr\""),
            (r#"[{"allow": true, "access": ""}]"#, "access \"\""),
            (r#"[{"allow": true, "type": "c", "major": -5}]"#, "major -5"),
            (r#"[{"allow": true, "type": "p"}]"#, "fifo"),
        ] {
            let err = device_lines(&rules(json)).unwrap_err().to_string();
            assert!(
                err.contains("linux.resources.devices[0]") && err.contains(text),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn v1_rules_are_written_to_the_devices_controller() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = Cgroup::at(vec![(dir.path().to_path_buf(), vec!["devices"])], true);
        v1.apply_devices(&rules(r#"[{"allow": false, "access": "rwm"}]"#))
            .unwrap();
        let allow = std::fs::read_to_string(dir.path().join("devices.allow")).unwrap();
        assert_eq!(
            allow, "c 10:200 rwm",
            "the last write stays in a plain file"
        );
    }

    #[test]
    fn lines_become_filter_rules() {
        let rule = to_rule(true, "c 136:* rw");
        assert_eq!(
            (rule.kind, rule.major, rule.minor, rule.access),
            ('c', Some(136), None, 6)
        );
        let all = to_rule(false, "a *:* rwm");
        assert_eq!(
            (all.allow, all.kind, all.major, all.access),
            (false, 'a', None, 7)
        );
    }
}
