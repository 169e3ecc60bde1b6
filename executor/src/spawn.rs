//! Creation of a container's child from the multithreaded shim.
//!
//! A process cannot move itself into a new PID namespace, so the child is
//! created by `clone` with the namespace flags and exec's the shim binary's
//! hidden sub-command at once. Between clone and exec the child is a copy
//! of one thread of a multithreaded process: only async-signal-safe calls
//! (read, dup2, execve, _exit) happen there, on memory prepared before the
//! clone. Nothing is allocated and no lock is taken in that window.

use std::ffi::{CString, c_char, c_int, c_void};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sched::CloneFlags;
use nix::unistd::{Pid, pipe2};

use crate::error::{Error, Result};
use crate::exit::EXEC_FAILED;
use crate::protocol::{CONTROL_FD, GO_EXEC};

// The raw clone call below passes the flags first and no stack, which is
// the argument order of x86_64 and aarch64 (s390x, for one, differs).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("spawn.rs: the raw clone(2) call is only written for x86_64 and aarch64");

/// The lowest descriptor the fds handed to the child are moved to, above
/// every target of the dup2 calls in the child, so none overwrites another.
const HIGH_FD: RawFd = 10;

/// A child between clone and the end of its life.
#[derive(Debug)]
pub struct Child {
    pub pid: Pid,
    /// Read end of the child's readiness report.
    pub status: File,
    /// Write end of the go-ahead bytes.
    pub control: File,
}

/// The binary children exec: a read-only view of the one this process
/// runs (`readonly::self_exe`), made once, before the first clone. No
/// child's `/proc/<pid>/exe` can be opened for writing (CVE-2019-5736).
static EXE: OnceLock<OwnedFd> = OnceLock::new();

fn exe() -> Result<RawFd> {
    if let Some(fd) = EXE.get() {
        return Ok(fd.as_raw_fd());
    }
    // Above every target of the dup2 calls in the child, like the others.
    let view = crate::readonly::self_exe()?;
    let high = fcntl(&view, FcntlArg::F_DUPFD_CLOEXEC(HIGH_FD))
        .map_err(Error::sys("duplicate the binary's view"))?;
    // SAFETY: fcntl just returned this descriptor and nothing else owns it.
    let high = unsafe { OwnedFd::from_raw_fd(high) };
    Ok(EXE.get_or_init(|| high).as_raw_fd())
}

/// Clones a child with `flags` (plus SIGCHLD), gives it `stdio` as fds
/// 0-2, the protocol pipes as fds 3 and 4 and `extra` from fd 5 on (a
/// `None` leaves its number closed), and lets it exec this binary as
/// `argv0 args…` with an empty environment once it receives [`GO_EXEC`].
pub fn spawn_child(
    argv0: &Path,
    args: &[&str],
    stdio: [&OwnedFd; 3],
    extra: &[Option<&OwnedFd>],
    flags: CloneFlags,
) -> Result<Child> {
    let (status_r, status_w) = pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("create status pipe"))?;
    let (control_r, control_w) =
        pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("create control pipe"))?;
    let mut sources = vec![
        Some(stdio[0]),
        Some(stdio[1]),
        Some(stdio[2]),
        Some(&status_w),
        Some(&control_r),
    ];
    sources.extend_from_slice(extra);
    let mut high = Vec::with_capacity(sources.len());
    for fd in sources {
        let Some(fd) = fd else {
            high.push(None);
            continue;
        };
        let moved = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(HIGH_FD))
            .map_err(Error::sys("duplicate a descriptor for the child"))?;
        // SAFETY: fcntl just returned this descriptor and nothing else owns it.
        high.push(Some(unsafe { OwnedFd::from_raw_fd(moved) }));
    }
    // -1 marks a number the child leaves closed.
    let fds: Vec<RawFd> = high
        .iter()
        .map(|fd| fd.as_ref().map_or(-1, |fd| fd.as_raw_fd()))
        .collect();

    let exe = exe()?;
    let argv0_c = CString::new(argv0.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidSpec(format!("shim path {} has a NUL", argv0.display())))?;
    let mut argv_c = vec![argv0_c];
    for arg in args {
        argv_c.push(
            CString::new(*arg).map_err(|_| {
                Error::InvalidSpec(format!("child argument {arg:?} has a NUL byte"))
            })?,
        );
    }
    let mut argv: Vec<*const c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const c_char; 1] = [std::ptr::null()];
    // Blocked in the child before it execs (the mask survives execve), so
    // a SIGTERM sent while the new program starts stays pending until the
    // child's signal thread takes it, instead of being dropped: the kernel
    // discards signals to a PID 1 that has no handler.
    let blocked = crate::signals::set();
    // The highest descriptor number the child may hold, for closing them
    // where close_range is missing (no call to find it is safe after clone).
    let max_fd = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.min(1 << 20) as c_int)
        .unwrap_or(1 << 16);

    let clone_flags = (flags.bits() | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a clone without CLONE_VM and without a new stack behaves like
    // fork: the child continues on a copy of this thread's stack. The child
    // branch only calls async-signal-safe functions on memory prepared above
    // (fds, exe, argv, envp) and never returns.
    let ret =
        unsafe { libc::syscall(libc::SYS_clone, clone_flags, 0usize, 0usize, 0usize, 0usize) };
    if ret == 0 {
        // SAFETY: we are the freshly cloned child; see after_clone.
        unsafe {
            after_clone(
                &fds,
                max_fd,
                blocked.as_ref(),
                exe,
                argv.as_ptr(),
                envp.as_ptr(),
            )
        }
    }
    if ret < 0 {
        return Err(Error::Io {
            what: "clone the container's child".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    drop(high);
    Ok(Child {
        pid: Pid::from_raw(ret as i32),
        status: File::from(status_r),
        control: File::from(control_w),
    })
}

/// The child's side between clone and exec.
///
/// # Safety
/// Must run only in a child created by clone without CLONE_VM, with `fds`,
/// `exe`, `argv` and `envp` valid for the whole call.
unsafe fn after_clone(
    fds: &[RawFd],
    max_fd: c_int,
    blocked: &libc::sigset_t,
    exe: RawFd,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> ! {
    // SAFETY: sigprocmask on a sigset prepared before clone; async-signal-safe.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, blocked, std::ptr::null_mut()) };
    for (target, fd) in fds.iter().enumerate() {
        if *fd < 0 {
            // SAFETY: close is async-signal-safe; EBADF on a free slot is fine.
            unsafe { libc::close(target as c_int) };
            continue;
        }
        // SAFETY: dup2 of a descriptor we own onto a low slot; the sources
        // are all >= HIGH_FD so no source is overwritten. dup2 clears
        // close-on-exec on the target.
        if unsafe { libc::dup2(*fd, target as c_int) } < 0 {
            // SAFETY: _exit is async-signal-safe and runs no destructors.
            unsafe { libc::_exit(EXEC_FAILED) };
        }
    }
    // The binary's view goes right above them, closed on exec.
    let exe_slot = fds.len() as c_int;
    // SAFETY: dup3 of a descriptor we own onto the free slot above the
    // others; async-signal-safe.
    if unsafe { libc::dup3(exe, exe_slot, libc::O_CLOEXEC) } < 0 {
        // SAFETY: _exit is async-signal-safe and runs no destructors.
        unsafe { libc::_exit(EXEC_FAILED) };
    }
    // Every other descriptor goes now, before the wait below: among them
    // is this child's copy of its own control pipe's write end (and those
    // of children cloned beside it), which would keep the wait from ever
    // seeing end-of-file if the shim died.
    let first_closed = exe_slot + 1;
    // SAFETY: close_range on this process's descriptors; async-signal-safe.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, first_closed, u32::MAX, 0) };
    if closed != 0 {
        // Kernels before 5.9 have no close_range: close one by one, up to
        // the descriptor limit read before the clone.
        for fd in first_closed..max_fd {
            // SAFETY: close is async-signal-safe; EBADF on a free slot is fine.
            unsafe { libc::close(fd) };
        }
    }
    let mut byte = 0u8;
    loop {
        // SAFETY: read into a valid one-byte buffer; async-signal-safe.
        let n = unsafe { libc::read(CONTROL_FD, (&raw mut byte).cast::<c_void>(), 1) };
        if n == 1 && byte == GO_EXEC {
            break;
        }
        // SAFETY: errno is thread-local and readable at any time.
        if n == -1 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        }
        // The shim went away or refused: leave without running anything.
        // SAFETY: _exit is async-signal-safe and runs no destructors.
        unsafe { libc::_exit(EXEC_FAILED) };
    }
    // SAFETY: argv and envp are NUL-terminated arrays prepared before
    // clone; the path is the empty string, so the descriptor is executed.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe_slot,
            c"".as_ptr(),
            argv,
            envp,
            libc::AT_EMPTY_PATH,
        );
        libc::_exit(EXEC_FAILED)
    }
}
