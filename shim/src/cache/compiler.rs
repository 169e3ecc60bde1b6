//! The shim's side of its compiler (`executor::compiler`): on a miss the
//! shim, not the container, compiles the module whose bytes it hashed.
//! The compiler is cloned in the shim's PID namespace with namespaces of
//! its own, put into the asking container's cgroup before it may exec,
//! and writes straight into the entry's temp file; the shim reads its
//! report and reaps it. A compile ends early when the child hangs up or
//! the wait limit passes: the compiler is killed and nothing is stored.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use executor::cache::Compile;
use executor::compiler::{COMPILE_SUBCOMMAND, args, decode_report};
use nix::poll::{PollFd, PollFlags, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use crate::cgroup::Cgroup;
use crate::reaper::Reaper;

/// One compile: the module's sealed memfd, how to compile it, where the
/// code goes and how large it may be, and when to give up.
pub struct Job<'a> {
    pub module: &'a File,
    pub how: Compile,
    pub out: &'a File,
    pub max_bytes: u64,
    /// Hung up means the child is gone: the compile is for nobody.
    pub socket: &'a UnixStream,
    pub deadline: Instant,
}

/// What compiles a module for the cache: the real compiler process, or a
/// stand-in in unit tests. Returns the engine part of the key of the code
/// it wrote.
pub trait Compiles: Send + Sync {
    fn compile(&self, job: &Job) -> Result<String>;
}

/// The compiler of one container's modules.
pub struct Compiler {
    pub exe: PathBuf,
    pub reaper: Arc<Reaper>,
    /// The container's cgroup, which the compile is charged to.
    pub cgroup: Option<Cgroup>,
}

/// The namespaces the compiler gets of its own: it sees no process, no
/// mount, no network of anyone.
const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNS
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWNET)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS);

impl Compiles for Compiler {
    fn compile(&self, job: &Job) -> Result<String> {
        let stdin = OwnedFd::from(
            job.module
                .try_clone()
                .context("duplicate the module's memfd")?,
        );
        let stdout = OwnedFd::from(job.out.try_clone().context("duplicate the entry's file")?);
        let stderr = OwnedFd::from(File::open("/dev/null").context("open /dev/null")?);
        let mut argv = vec![COMPILE_SUBCOMMAND.to_string()];
        argv.extend(args(job.how, job.max_bytes));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (child, pid, exit) = self.reaper.spawn(|| {
            let child = executor::spawn::spawn_child(
                &self.exe,
                &argv,
                [&stdin, &stdout, &stderr],
                &[],
                NAMESPACES,
            )
            .map_err(|e| anyhow!(e.chain()))?;
            Ok((child.pid, child))
        })?;
        drop((stdin, stdout, stderr));
        let executor::spawn::Child {
            status,
            mut control,
            ..
        } = child;
        let report = (|| {
            if let Some(cg) = &self.cgroup {
                cg.add(pid.as_raw())?;
            }
            executor::protocol::release(&mut control).context("let the compiler exec")?;
            await_report(status, job)
        })();
        if !matches!(report, Ok(Some(_))) {
            let _ = self.reaper.signal(pid, Signal::SIGKILL);
        }
        let code = exit.blocking_recv().unwrap_or(-1);
        match report? {
            None => bail!("the compile was given up: the child hung up or the wait limit passed"),
            Some(_) if code != 0 => bail!(
                "the compiler {pid} ended with status {code}{}",
                if code == 128 + libc::SIGXFSZ {
                    format!(
                        ": its code is over the entry bound of {} bytes",
                        job.max_bytes
                    )
                } else {
                    String::new()
                }
            ),
            Some(report) => decode_report(&report).map_err(|message| anyhow!(message)),
        }
    }
}

/// The compiler's whole report, or `None` if the child hung up or the
/// deadline passed first.
fn await_report(mut status: File, job: &Job) -> Result<Option<Vec<u8>>> {
    let mut report = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if Instant::now() >= job.deadline {
            return Ok(None);
        }
        let mut fds = [
            PollFd::new(status.as_fd(), PollFlags::POLLIN),
            PollFd::new(job.socket.as_fd(), PollFlags::empty()),
        ];
        match poll(&mut fds, super::HANGUP_POLL_MS) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("wait for the compiler"),
        }
        let hung_up = fds[1].revents().is_some_and(|r| !r.is_empty());
        let readable = fds[0].revents().is_some_and(|r| !r.is_empty());
        if readable {
            match status
                .read(&mut chunk)
                .context("read the compiler's report")?
            {
                0 => return Ok(Some(report)),
                n if report.len() < 64 << 10 => report.extend_from_slice(&chunk[..n]),
                _ => bail!("the compiler's report is too long"),
            }
        } else if hung_up {
            return Ok(None);
        }
    }
}
