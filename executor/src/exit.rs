//! The exit status rules: what the child exits with for each way a guest
//! can end. They match `wasmtime run`, so a user can reproduce a status on
//! a laptop.

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
#[cfg(feature = "runtime")]
use wasmtime::Trap;
#[cfg(feature = "runtime")]
use wasmtime_wasi::I32Exit;

/// The status of a process ended by `signal`, as shells, `wasmtime run`
/// and containerd report it.
pub const fn signaled(signal: i32) -> i32 {
    128 + signal
}

/// Exit status of a guest that trapped: 128 + SIGABRT, as `wasmtime run`.
pub const TRAP: i32 = signaled(libc::SIGABRT);
/// Exit status of a guest that failed in any other way (a host error), and
/// of a child that could not prepare its container or was deleted before
/// Start.
pub const FAILURE: i32 = 1;
/// Exit status of a child that could not exec (the shim binary or, for a
/// native container, the program), as a shell reports a command it
/// cannot run.
pub const EXEC_FAILED: i32 = 127;
/// Exit status reported when the real one is lost: the reaper dropped the
/// child, or the shim that knew it died and the `delete` action killed
/// what was left. containerd's runc shim reports the same.
pub const LOST: i32 = signaled(libc::SIGKILL);

/// The pid and exit status of a process that ended, from `waitpid`.
pub fn of_wait(status: WaitStatus) -> Option<(Pid, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid, code)),
        WaitStatus::Signaled(pid, signal, _) => Some((pid, signaled(signal as i32))),
        _ => None,
    }
}

/// How the guest ended: its exit status and, when the guest failed, the
/// message that belongs on the container's stderr.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: i32,
    pub message: Option<String>,
}

/// Maps the result of calling the guest's entry point to an exit status.
/// `signal` is the termination signal the child received while the guest
/// ran, if any: the guest was interrupted because of it, so 128 + signal.
#[cfg(feature = "runtime")]
pub fn outcome(result: wasmtime::Result<()>, signal: Option<i32>) -> Outcome {
    let error = match result {
        Ok(()) => {
            return Outcome {
                status: 0,
                message: None,
            };
        }
        Err(error) => error,
    };
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        // proc_exit(0) is a success that travels as an error; never report it.
        return Outcome {
            status: exit.0,
            message: None,
        };
    }
    if let Some(signal) = signal {
        return Outcome {
            status: signaled(signal),
            message: None,
        };
    }
    let status = if error.downcast_ref::<Trap>().is_some() {
        TRAP
    } else {
        FAILURE
    };
    Outcome {
        status,
        message: Some(format!("Error: {error:?}")),
    }
}

#[cfg(all(test, feature = "runtime"))]
mod tests {
    use super::*;

    #[test]
    fn normal_return_is_zero() {
        assert_eq!(
            outcome(Ok(()), None),
            Outcome {
                status: 0,
                message: None
            }
        );
    }

    #[test]
    fn proc_exit_gives_its_code_and_zero_is_success() {
        for code in [0, 1, 42, 125] {
            let got = outcome(Err(wasmtime::Error::new(I32Exit(code))), None);
            assert_eq!(
                got,
                Outcome {
                    status: code,
                    message: None
                }
            );
        }
    }

    #[test]
    fn trap_is_134_with_message() {
        let got = outcome(
            Err(wasmtime::Error::new(Trap::UnreachableCodeReached)),
            None,
        );
        assert_eq!(got.status, 134);
        assert!(got.message.unwrap().contains("unreachable"));
    }

    #[test]
    fn interrupted_by_signal_is_128_plus_signal() {
        let got = outcome(
            Err(wasmtime::Error::new(Trap::Interrupt)),
            Some(libc::SIGTERM),
        );
        assert_eq!(
            got,
            Outcome {
                status: 143,
                message: None
            }
        );
    }

    #[test]
    fn exit_wins_over_a_late_signal() {
        let got = outcome(Err(wasmtime::Error::new(I32Exit(3))), Some(libc::SIGTERM));
        assert_eq!(got.status, 3);
    }

    #[test]
    fn wait_statuses_map_to_codes() {
        let pid = Pid::from_raw(9);
        assert_eq!(of_wait(WaitStatus::Exited(pid, 3)), Some((pid, 3)));
        let killed = WaitStatus::Signaled(pid, nix::sys::signal::Signal::SIGKILL, false);
        assert_eq!(of_wait(killed), Some((pid, 137)));
        assert_eq!(of_wait(WaitStatus::StillAlive), None);
        assert_eq!((TRAP, LOST, signaled(libc::SIGTERM)), (134, 137, 143));
    }

    #[test]
    fn host_error_is_one() {
        let got = outcome(Err(wasmtime::Error::msg("host failed")), None);
        assert_eq!(got.status, 1);
        assert!(got.message.unwrap().contains("host failed"));
    }
}
