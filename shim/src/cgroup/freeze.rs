//! Pause and Resume: the v1 freezer (`freezer.state`) or v2's
//! `cgroup.freeze`, waited on until the kernel reports the new state.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::Cgroup;

/// How long the kernel may take to freeze every task of the cgroup.
const SETTLE: Duration = Duration::from_secs(5);

impl Cgroup {
    /// Freezes (true) or thaws (false) every process of the cgroup.
    pub fn freeze(&self, frozen: bool) -> anyhow::Result<()> {
        let (file, value) = match (self.v2(), frozen) {
            (false, true) => ("freezer.state", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED"),
            (true, true) => ("cgroup.freeze", "1"),
            (true, false) => ("cgroup.freeze", "0"),
        };
        let start = Instant::now();
        loop {
            // v1 may stop half way (FREEZING) when a task resists; writing
            // again retries the tasks that were left.
            self.write("freezer", file, value)?;
            let settled = match self.v2() {
                false => v1_state(self) == value,
                true => v2_frozen(self) == Some(frozen),
            };
            if settled {
                return Ok(());
            }
            if start.elapsed() > SETTLE {
                // As runc: a freeze that does not settle is undone, so the
                // task is not left half frozen while it counts as running.
                if frozen {
                    let _ = self.write("freezer", file, if self.v2() { "0" } else { "THAWED" });
                }
                bail!("the cgroup did not reach {value} within {SETTLE:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn v1_state(cg: &Cgroup) -> String {
    cg.read("freezer", "freezer.state").unwrap_or_default()
}

/// The `frozen` line of v2's `cgroup.events`.
fn v2_frozen(cg: &Cgroup) -> Option<bool> {
    let events = cg.read("freezer", "cgroup.events").ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("frozen "))
        .map(|v| v.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A made-up v2 cgroup whose kernel answers at once.
    #[test]
    fn v2_writes_cgroup_freeze_and_reads_events() {
        let dir = tempfile::tempdir().unwrap();
        let cg = Cgroup::at(vec![(dir.path().to_path_buf(), vec![])], false);
        std::fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        cg.freeze(true).unwrap();
        let read = || std::fs::read_to_string(dir.path().join("cgroup.freeze")).unwrap();
        assert_eq!(read(), "1");
        std::fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        cg.freeze(false).unwrap();
        assert_eq!(read(), "0");
    }

    #[test]
    fn v1_writes_the_freezer_state() {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().to_path_buf();
        let cg = Cgroup::at(vec![(path.clone(), vec!["freezer"])], true);
        // A plain file reads back what was written, as a settled kernel does.
        cg.freeze(true).unwrap();
        assert_eq!(
            std::fs::read_to_string(path.join("freezer.state")).unwrap(),
            "FROZEN"
        );
        cg.freeze(false).unwrap();
        assert_eq!(
            std::fs::read_to_string(path.join("freezer.state")).unwrap(),
            "THAWED"
        );
    }
}
