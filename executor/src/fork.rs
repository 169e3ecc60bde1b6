//! The last step of entering a PID namespace that already exists (a pod's
//! shared one, or a running container's for an exec): a process cannot
//! move itself into a PID namespace, only its children are born there.
//!
//! The process that calls [`fork_into`] was cloned by the shim in the
//! shim's own PID namespace and has joined every other namespace it
//! needs. Only its fork appears in the target namespace, non-dumpable
//! from birth (main.rs made its parent so before anything else, and fork
//! keeps it): nothing of ours is ever visible there while dumpable, which
//! the window between an exec and main's first call would otherwise be.
//!
//! The fork's pid goes to the shim on the status pipe (`forked <pid>`),
//! the shim registers its exit with its reaper and answers
//! [`crate::protocol::ADOPTED`], and only then the parent exits: the fork
//! becomes the shim's child (the shim is a subreaper) and its exit cannot
//! be missed.

use std::fs::File;

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, pipe2};

use crate::error::{Error, Result};
use crate::exit::FAILURE;
use crate::protocol;

/// Forks into the PID namespace `pid_ns`. Returns in the fork, once the
/// shim has adopted it and the parent is gone; the parent exits here.
/// The caller must be single-threaded, so that the fork may run any code.
pub fn fork_into(pid_ns: File, status: &mut File, control: &mut File) -> Result<()> {
    nix::sched::setns(pid_ns, CloneFlags::CLONE_NEWPID)
        .map_err(Error::sys("join the container's PID namespace"))?;
    // The fork waits for its parent's end: the gate's write end closes then.
    let (gate, gate_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("create a pipe"))?;
    // SAFETY: the caller is single-threaded (no thread is started before
    // this point on the paths that call it), so the fork is a full copy
    // that may run any code.
    match unsafe { nix::unistd::fork() }.map_err(Error::sys("fork into the PID namespace"))? {
        ForkResult::Child => {
            drop(gate_w);
            let mut byte = [0u8];
            // End of file once the parent has exited.
            let _ = std::io::Read::read(&mut File::from(gate), &mut byte);
            Ok(())
        }
        ForkResult::Parent { child } => {
            let adopted = protocol::report_fork(status, child.as_raw()).is_ok()
                && protocol::await_adopted(control);
            if !adopted {
                // The shim is gone or refused: the fork must not run alone.
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                std::process::exit(FAILURE);
            }
            drop(gate_w);
            std::process::exit(0)
        }
    }
}
