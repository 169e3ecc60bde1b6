//! The one state machine every Task RPC goes through:
//! Created → Running → Stopped → (deleted). An illegal move is an error
//! that names the task and what it is doing, never a panic.

use std::time::SystemTime;

use crate::errors::Fail;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped { code: u32, at: SystemTime },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Start,
    Exit {
        code: u32,
        at: SystemTime,
    },
    /// A signal is to be delivered.
    Kill,
    /// The task is to be removed; allowed once it has stopped.
    Delete,
}

/// The status after `event`, or why `event` is not allowed now.
pub fn next(id: &str, status: Status, event: Event) -> Result<Status, Fail> {
    use Status::*;
    match (status, event) {
        (Created, Event::Start) => Ok(Running),
        (Running, Event::Start) => Err(Fail::precondition(format!("task {id} is already running"))),
        (Stopped { .. }, Event::Start) => {
            Err(Fail::precondition(format!("task {id} has already exited")))
        }
        (Created | Running, Event::Exit { code, at }) => Ok(Stopped { code, at }),
        // The first exit is the one that counts.
        (Stopped { .. }, Event::Exit { .. }) => Ok(status),
        (Created | Running, Event::Kill) => Ok(status),
        (Stopped { .. }, Event::Kill) => Err(Fail::not_found(format!(
            "task {id}: process already finished"
        ))),
        (Stopped { .. }, Event::Delete) => Ok(status),
        (Created, Event::Delete) => Err(Fail::precondition(format!(
            "task {id} was created but has not stopped"
        ))),
        (Running, Event::Delete) => Err(Fail::precondition(format!(
            "task {id} is running: kill it before deleting it"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::ttrpc::Code;

    fn stopped() -> Status {
        Status::Stopped {
            code: 3,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn happy_path() {
        let s = next("t", Status::Created, Event::Start).unwrap();
        assert_eq!(s, Status::Running);
        let exit = Event::Exit {
            code: 3,
            at: SystemTime::UNIX_EPOCH,
        };
        let s = next("t", s, exit).unwrap();
        assert_eq!(s, stopped());
        assert_eq!(next("t", s, Event::Delete).unwrap(), stopped());
    }

    #[test]
    fn illegal_moves_are_errors_with_the_right_code() {
        let cases = [
            (
                Status::Running,
                Event::Start,
                Code::FAILED_PRECONDITION,
                "already running",
            ),
            (
                stopped(),
                Event::Start,
                Code::FAILED_PRECONDITION,
                "already exited",
            ),
            (stopped(), Event::Kill, Code::NOT_FOUND, "already finished"),
            (
                Status::Running,
                Event::Delete,
                Code::FAILED_PRECONDITION,
                "is running",
            ),
            (
                Status::Created,
                Event::Delete,
                Code::FAILED_PRECONDITION,
                "not stopped",
            ),
        ];
        for (status, event, code, text) in cases {
            let fail = next("t1", status, event).unwrap_err();
            assert_eq!(fail.code, code, "{status:?} {event:?}");
            assert!(
                fail.message.contains("t1") && fail.message.contains(text),
                "{}",
                fail.message
            );
        }
    }

    #[test]
    fn first_exit_wins_and_created_can_exit() {
        let at = SystemTime::UNIX_EPOCH;
        let s = next("t", Status::Created, Event::Exit { code: 137, at }).unwrap();
        assert_eq!(s, Status::Stopped { code: 137, at });
        assert_eq!(next("t", s, Event::Exit { code: 0, at }).unwrap(), s);
        assert_eq!(
            next("t", Status::Running, Event::Kill).unwrap(),
            Status::Running
        );
    }
}
