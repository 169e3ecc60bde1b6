//! Kill with `all`: a signal to every process of the container's cgroup,
//! as the runc shim sends it, without signalling a pid that may have been
//! reused.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Cgroup;

impl Cgroup {
    /// Sends `signal` to every process of the cgroup but `except` (the
    /// container's own process, which the caller signals through the
    /// reaper). SIGKILL in v2 goes through `cgroup.kill`, which reaches
    /// every process at once, forks included. Otherwise, as runc does, the
    /// cgroup is frozen first, so that no process can exit and leave its
    /// pid to another while the pids are read and signalled, and thawed
    /// afterwards unless it was `paused` before.
    pub fn signal_all(&self, signal: Signal, except: Pid, paused: bool) -> anyhow::Result<()> {
        if signal == Signal::SIGKILL && self.v2() && self.write("pids", "cgroup.kill", "1").is_ok()
        {
            return Ok(());
        }
        let frozen = self.freeze(true).is_ok();
        let result = self.signal_each(signal, except);
        if frozen && !paused {
            self.freeze(false)?;
        }
        result
    }

    fn signal_each(&self, signal: Signal, except: Pid) -> anyhow::Result<()> {
        for pid in self.procs()? {
            if pid != except.as_raw() {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
        Ok(())
    }

    /// The processes in the cgroup.
    pub fn procs(&self) -> anyhow::Result<Vec<i32>> {
        let procs = self.read("pids", "cgroup.procs").or_else(|_| {
            // Every hierarchy lists the same processes.
            let dir = self
                .dirs
                .first()
                .ok_or_else(|| anyhow::anyhow!("no cgroup"))?;
            Ok::<_, anyhow::Error>(std::fs::read_to_string(dir.join("cgroup.procs"))?)
        })?;
        Ok(procs
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigkill_in_v2_goes_through_cgroup_kill() {
        let dir = tempfile::tempdir().unwrap();
        let cg = Cgroup::at(vec![(dir.path().to_path_buf(), vec![])], false);
        cg.signal_all(Signal::SIGKILL, Pid::from_raw(1), false)
            .unwrap();
        let written = std::fs::read_to_string(dir.path().join("cgroup.kill")).unwrap();
        assert_eq!(written, "1");
    }
}
