//! The one state machine every Task RPC goes through:
//!
//! ```text
//! Creating ─▶ Created ─▶ Running ⇄ Paused
//!               │           │        │
//!               └───────────┴────────┴─▶ Stopped ─▶ Deleting ─▶ (gone)
//! ```
//!
//! An exec's process is started without the table's lock held (a helper
//! that a container stops must not stall the shim), so an exec goes
//! Created ─▶ Starting ─▶ Running, and back to Created if its start fails.
//!
//! A task is in the table from the moment its Create begins until its
//! Delete has released everything, so an id is taken and the shim is busy
//! exactly while the table holds an entry. The exit status lives here and
//! nowhere else. An illegal move is an error that names the task and what
//! it is doing, never a panic.

use std::time::SystemTime;

use crate::errors::Fail;

/// How a task's process ended: its status and when it was seen to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: u32,
    pub at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Create is under way: mounts, cgroup and child are being made.
    Creating,
    /// The child is ready and waits for Start.
    Created,
    /// An exec's process is being started, outside the table's lock.
    Starting,
    Running,
    /// Frozen by the cgroup freezer.
    Paused,
    Stopped(Exit),
    /// Delete is releasing the task's resources.
    Deleting(Exit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Create finished: the child is ready.
    Created,
    /// An exec's start begins; `Start` ends it, `Unlaunch` undoes it.
    Launch,
    Unlaunch,
    Start,
    Pause,
    Resume,
    /// The child ended; only the first exit counts.
    Exit(Exit),
    /// A signal is to be delivered to the child.
    Signal,
    /// Resources are to be changed or read (Update, Stats).
    Resources,
    /// The task's resources are to be released; allowed once it stopped.
    Delete,
}

impl Status {
    /// The exit, once the task has stopped.
    pub fn exit(self) -> Option<Exit> {
        match self {
            Status::Stopped(exit) | Status::Deleting(exit) => Some(exit),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Status::Creating => "is still being created",
            Status::Created => "was created but has not started",
            Status::Starting => "is starting",
            Status::Running => "is running",
            Status::Paused => "is paused",
            Status::Stopped(_) => "has already exited",
            Status::Deleting(_) => "is being deleted",
        }
    }
}

/// The status after `event`, or why `event` is not allowed now.
pub fn next(id: &str, status: Status, event: Event) -> Result<Status, Fail> {
    use Status::*;
    let refuse =
        |what: &str| Fail::precondition(format!("task {id} {}: cannot {what}", status.describe()));
    match (status, event) {
        (Creating, Event::Created) => Ok(Created),
        (_, Event::Created) => Err(refuse("finish creating it")),

        (Created, Event::Launch) => Ok(Starting),
        (_, Event::Launch) => Err(refuse("start it")),
        (Starting, Event::Unlaunch) => Ok(Created),
        (_, Event::Unlaunch) => Err(refuse("undo its start")),
        (Created | Starting, Event::Start) => Ok(Running),
        (_, Event::Start) => Err(refuse("start it")),

        (Running, Event::Pause) => Ok(Paused),
        (_, Event::Pause) => Err(refuse("pause it")),
        (Paused, Event::Resume) => Ok(Running),
        (_, Event::Resume) => Err(refuse("resume it")),

        (Created | Running | Paused, Event::Exit(exit)) => Ok(Stopped(exit)),
        (Stopped(_) | Deleting(_), Event::Exit(_)) => Ok(status),
        (Creating | Starting, Event::Exit(_)) => Err(refuse("record an exit")),

        (Created | Running | Paused, Event::Signal) => Ok(status),
        // containerd treats NotFound from Kill as "already gone".
        (Stopped(_) | Deleting(_), Event::Signal) => Err(Fail::not_found(format!(
            "task {id}: process already finished"
        ))),
        (Creating | Starting, Event::Signal) => Err(refuse("signal it")),

        (Created | Running | Paused | Stopped(_), Event::Resources) => Ok(status),
        (_, Event::Resources) => Err(refuse("reach its cgroup")),

        (Stopped(exit), Event::Delete) => Ok(Deleting(exit)),
        (Running | Paused, Event::Delete) => Err(Fail::precondition(format!(
            "task {id} {}: kill it before deleting it",
            status.describe()
        ))),
        (_, Event::Delete) => Err(refuse("delete it")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::ttrpc::Code;

    const EXIT: Exit = Exit {
        code: 3,
        at: SystemTime::UNIX_EPOCH,
    };

    fn run(events: &[Event]) -> Result<Status, Fail> {
        let mut status = Status::Creating;
        for event in events {
            status = next("t", status, *event)?;
        }
        Ok(status)
    }

    #[test]
    fn happy_path_with_a_pause() {
        use Event::*;
        let s = run(&[Created, Start, Pause, Signal, Resume, Exit(EXIT)]).unwrap();
        assert_eq!(s, Status::Stopped(EXIT));
        assert_eq!(next("t", s, Delete).unwrap(), Status::Deleting(EXIT));
        assert_eq!(s.exit(), Some(EXIT));
        assert_eq!(Status::Running.exit(), None);
    }

    #[test]
    fn first_exit_wins_and_any_live_state_can_exit() {
        let later = Exit {
            code: 0,
            at: SystemTime::now(),
        };
        for live in [Status::Created, Status::Running, Status::Paused] {
            let s = next("t", live, Event::Exit(EXIT)).unwrap();
            assert_eq!(s, Status::Stopped(EXIT));
            assert_eq!(next("t", s, Event::Exit(later)).unwrap(), s);
        }
        let deleting = Status::Deleting(EXIT);
        assert_eq!(next("t", deleting, Event::Exit(later)).unwrap(), deleting);
    }

    #[test]
    fn illegal_moves_are_errors_with_the_right_code() {
        use Code::{FAILED_PRECONDITION as PRE, NOT_FOUND};
        let stopped = Status::Stopped(EXIT);
        let cases = [
            (
                Status::Running,
                Event::Start,
                PRE,
                "is running: cannot start",
            ),
            (stopped, Event::Start, PRE, "already exited: cannot start"),
            (
                Status::Created,
                Event::Pause,
                PRE,
                "not started: cannot pause",
            ),
            (Status::Paused, Event::Pause, PRE, "paused: cannot pause"),
            (
                Status::Running,
                Event::Resume,
                PRE,
                "running: cannot resume",
            ),
            (stopped, Event::Signal, NOT_FOUND, "already finished"),
            (Status::Deleting(EXIT), Event::Signal, NOT_FOUND, "finished"),
            (Status::Creating, Event::Signal, PRE, "being created"),
            (Status::Creating, Event::Exit(EXIT), PRE, "being created"),
            (Status::Running, Event::Delete, PRE, "kill it before"),
            (Status::Paused, Event::Delete, PRE, "kill it before"),
            (Status::Created, Event::Delete, PRE, "cannot delete"),
            (Status::Creating, Event::Delete, PRE, "cannot delete"),
            (Status::Deleting(EXIT), Event::Delete, PRE, "being deleted"),
            (Status::Deleting(EXIT), Event::Resources, PRE, "cgroup"),
            (Status::Created, Event::Created, PRE, "finish creating"),
        ];
        for (status, event, code, text) in cases {
            let fail = next("t1", status, event).unwrap_err();
            assert_eq!(fail.code, code, "{status:?} {event:?}");
            assert!(
                fail.message.contains("task t1") && fail.message.contains(text),
                "{status:?} {event:?}: {}",
                fail.message
            );
        }
    }

    #[test]
    fn resources_are_reachable_until_delete() {
        for status in [
            Status::Created,
            Status::Running,
            Status::Paused,
            Status::Stopped(EXIT),
        ] {
            assert_eq!(next("t", status, Event::Resources).unwrap(), status);
        }
    }
}
