//! OOM notifications for the `/tasks/oom` event: on cgroup v1 an eventfd
//! registered on `memory.oom_control` through `cgroup.event_control`, on
//! v2 an inotify watch of `memory.events` whose `oom_kill` count grows.
//! A watch blocks in a read; the caller gives it a small thread of its own
//! (registering these descriptors with the async runtime takes `unsafe`,
//! which the shim does not use).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::Context;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::Cgroup;

enum Source {
    V1 {
        events: EventFd,
        /// Keeps the registration alive: it ends when this is closed.
        _oom_control: File,
    },
    V2 {
        events: Inotify,
    },
}

/// Watches one cgroup for OOM kills until the cgroup is removed.
pub struct OomWatch {
    source: Source,
    cgroup: Cgroup,
    /// The `oom_kill` count already reported.
    seen: u64,
}

/// A watch of `cg`'s OOM kills, or None without a memory controller.
pub fn watch(cg: &Cgroup) -> anyhow::Result<Option<OomWatch>> {
    let Some(dir) = cg.dir("memory") else {
        return Ok(None);
    };
    let source = if cg.v2() {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).context("inotify for memory.events")?;
        inotify
            .add_watch(&dir.join("memory.events"), AddWatchFlags::IN_MODIFY)
            .with_context(|| format!("watch {}", dir.join("memory.events").display()))?;
        Source::V2 { events: inotify }
    } else {
        let efd =
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC).context("eventfd for OOM notifications")?;
        let control = File::open(dir.join("memory.oom_control"))
            .with_context(|| format!("open {}", dir.join("memory.oom_control").display()))?;
        let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
        std::fs::write(dir.join("cgroup.event_control"), line)
            .context("register for OOM notifications")?;
        Source::V1 {
            events: efd,
            _oom_control: control,
        }
    };
    Ok(Some(OomWatch {
        seen: oom_kills(cg),
        source,
        cgroup: cg.clone(),
    }))
}

/// The number of OOM kills the cgroup has recorded.
fn oom_kills(cg: &Cgroup) -> u64 {
    let file = if cg.v2() {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    parse_oom_kills(&cg.read("memory", file).unwrap_or_default())
}

fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl OomWatch {
    fn alive(&self) -> bool {
        self.cgroup.dir("memory").is_some_and(|dir| dir.exists())
    }

    /// Waits (blocking) for the next OOM kill. None once the cgroup is
    /// gone or the watch failed. Removing a v1 cgroup signals its eventfd,
    /// but removing a v2 one sends no inotify event (kernfs), so the wait
    /// also looks every second whether the cgroup is still there.
    pub fn next(&mut self) -> Option<()> {
        loop {
            let fd = match &self.source {
                Source::V1 { events, .. } => events.as_fd(),
                Source::V2 { events } => events.as_fd(),
            };
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let ready = match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(n) => n > 0,
                Err(nix::errno::Errno::EINTR) => false,
                Err(_) => return None,
            };
            if ready {
                let woke = match &self.source {
                    Source::V1 { events, .. } => events.read().map(drop),
                    Source::V2 { events } => events.read_events().map(drop),
                };
                if woke.is_err() {
                    return None;
                }
                // Counted before the cgroup is looked for: a kill just
                // before the removal is still reported.
                let kills = oom_kills(&self.cgroup);
                // v1 also notifies when the cgroup is merely under OOM;
                // with a kernel that counts kills, only a new kill counts.
                if kills > self.seen || (!self.cgroup.v2() && kills == 0 && self.alive()) {
                    self.seen = kills;
                    return Some(());
                }
            }
            if !self.alive() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_kills_in_both_formats() {
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"),
            4
        );
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 1\noom 2\noom_kill 2\n"),
            2
        );
        assert_eq!(parse_oom_kills(""), 0);
    }

    #[test]
    fn v2_watch_reports_a_new_kill_and_ends_with_the_cgroup() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c1");
        std::fs::create_dir(&dir).unwrap();
        let events = dir.join("memory.events");
        std::fs::write(&events, "oom 0\noom_kill 0\n").unwrap();
        let cg = Cgroup::at(vec![(dir.clone(), vec![])], false);
        let mut watch = watch(&cg).unwrap().unwrap();
        std::fs::write(&events, "oom 1\noom_kill 1\n").unwrap();
        assert_eq!(watch.next(), Some(()));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(watch.next(), None);
    }
}
