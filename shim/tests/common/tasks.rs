//! Tasks driven through `ctr task`: their status, signals, detached runs
//! and their removal with nothing left behind.

use std::process::Child;
use std::time::Duration;

use super::{
    Containerd, RUNTIME, child_pids, exit_status_within, image, leftovers, shim_pids, wait_for,
};

impl Containerd {
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr(&["task", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&id))
            .and_then(|cols| cols.get(2).map(|s| s.to_string()))
    }

    pub fn wait_status(&self, id: &str, status: &str) {
        self.wait_status_within(id, status, Duration::from_secs(30));
    }

    /// Sends `signal` to task `id` with `ctr task kill`.
    pub fn kill(&self, id: &str, signal: &str) {
        let out = self.ctr(&["task", "kill", "--signal", signal, id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends `signal` to the running task `id`, whose `ctr run` is `ctr`,
    /// and returns ctr's exit status; fails if it does not end within
    /// `limit`.
    pub fn kill_and_wait(&self, ctr: &mut Child, id: &str, signal: &str, limit: Duration) -> i32 {
        self.kill(id, signal);
        exit_status_within(ctr, &format!("{id} after {signal}"), limit)
    }

    /// As [`Self::wait_status`], for a Create that compiles a large module.
    pub fn wait_status_within(&self, id: &str, status: &str, limit: Duration) {
        wait_for(&format!("task {id} to be {status}"), limit, || {
            self.task_status(id).as_deref() == Some(status)
        });
    }

    /// `ctr run -d` of a test image with extra flags; waits until it runs
    /// and returns the pid of its one child.
    pub fn start_detached(&self, name: &str, id: &str, flags: &[&str]) -> String {
        let image = image(name);
        let mut args = vec!["run", "-d", "--runtime", RUNTIME];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&image, id]);
        let out = self.ctr(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_status(id, "RUNNING");
        let children = child_pids(id);
        assert_eq!(children.len(), 1, "children of {id}");
        children[0].to_string()
    }

    /// Stops a detached container with `signal`, deletes its task and the
    /// container, and asserts that nothing of it is left.
    pub fn stop_and_remove(&self, id: &str, signal: &str) {
        assert!(
            self.ctr(&["task", "kill", "--signal", signal, id])
                .status
                .success()
        );
        self.wait_status(id, "STOPPED");
        assert!(self.ctr(&["task", "delete", id]).status.success());
        assert!(self.ctr(&["container", "delete", id]).status.success());
        self.assert_clean(id);
    }

    /// Stops and removes every container of `ids` with `signal`, then waits
    /// for their shims to exit, as they must once they serve no task.
    pub fn remove_all_and_await_shims(&self, ids: &[&str], signal: &str) {
        for id in ids {
            self.stop_and_remove(id, signal);
        }
        wait_for("the shims to exit", Duration::from_secs(10), || {
            shim_pids(self.dir()).is_empty()
        });
    }

    /// Asserts that nothing of container `id` is left: no child process,
    /// no mount and no cgroup directory.
    pub fn assert_clean(&self, id: &str) {
        wait_for(
            &format!("container {id} to leave nothing behind"),
            Duration::from_secs(10),
            || leftovers(self.dir(), id).is_empty(),
        );
    }
}
