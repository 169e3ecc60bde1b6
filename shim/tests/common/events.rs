//! A running `ctr events`, whose lines the tests wait for.

use std::process::Child;
use std::time::Duration;

use super::wait_for;

/// A running `ctr events`.
pub struct Events {
    pub(super) child: Child,
    pub(super) lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Events {
    /// Waits until an event of `topic` for container `id` was seen.
    pub fn wait_for(&self, topic: &str, id: &str) {
        wait_for(
            &format!("event {topic} of {id}"),
            Duration::from_secs(30),
            || {
                self.lines
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains(topic) && l.contains(id))
            },
        );
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
