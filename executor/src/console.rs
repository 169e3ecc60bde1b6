//! A process's terminal (`process.terminal`), made as runc makes it: a
//! new pseudo-terminal in the container's own devpts instance (the child
//! has entered the container's root, so `/dev/ptmx` is the container's),
//! its size from `process.consoleSize`, bound on `/dev/console` for a
//! container's first process, the master sent to the shim over
//! [`CONSOLE_FD`] for it to relay and resize, the slave made the
//! process's stdio and, in a session of its own, its controlling terminal.

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::pty::{PtyMaster, grantpt, posix_openpt, unlockpt};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::error::{Error, Result};
use crate::protocol::CONSOLE_FD;

/// `process.consoleSize`: rows and columns, applied when both are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub rows: u16,
    pub cols: u16,
}

/// What the process's terminal is to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    pub size: Option<Size>,
}

/// Where the terminal is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum For {
    /// A container's first process: the slave is also `/dev/console`.
    Container,
    /// A process exec'd into a running container.
    Exec,
}

/// Makes the terminal and hands its master to the shim; from here on the
/// process's stdio is the terminal. Runs in the container's root.
pub fn setup(terminal: &Terminal, what: For) -> Result<()> {
    // SAFETY: the shim hands this descriptor to a process whose spec asks
    // for a terminal (protocol.rs), and nothing else here owns it.
    let socket = unsafe { UnixStream::from_raw_fd(CONSOLE_FD) };
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(Error::sys("open /dev/ptmx in the container's devpts"))?;
    grantpt(&master).map_err(Error::sys("grantpt"))?;
    unlockpt(&master).map_err(Error::sys("unlockpt"))?;
    let slave = open_peer(&master)?;
    if let Some(size) = terminal.size {
        resize(master.as_raw_fd(), size)?;
    }
    if what == For::Container {
        bind_console(&slave)?;
    }
    send_master(&socket, &master)?;
    drop(master);
    drop(socket);
    make_stdio(slave)
}

/// Sets the window size of the terminal whose master or slave is `fd`.
pub fn resize(fd: RawFd, size: Size) -> Result<()> {
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &raw const winsize) };
    match rc {
        0 => Ok(()),
        _ => Err(Error::sys("set the terminal's size")(
            nix::errno::Errno::last(),
        )),
    }
}

/// Opens the slave of `master` by the master itself (TIOCGPTPEER), not by
/// its path under /dev/pts, which the container's processes could replace.
fn open_peer(master: &PtyMaster) -> Result<File> {
    let flags = libc::O_RDWR | libc::O_NOCTTY;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(Error::sys("open the terminal's slave")(
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: the ioctl just returned this descriptor and nothing owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Binds the slave on `/dev/console`, made as an empty file if missing.
fn bind_console(slave: &File) -> Result<()> {
    let console = std::path::Path::new("/dev/console");
    if let Err(e) = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(console)
        && !console.exists()
    {
        return Err(Error::io("create /dev/console")(e));
    }
    let source = format!("/proc/self/fd/{}", slave.as_raw_fd());
    mount(
        Some(source.as_str()),
        console,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(Error::sys("bind the terminal on /dev/console"))
}

fn send_master(socket: &UnixStream, master: &PtyMaster) -> Result<()> {
    let fds = [master.as_raw_fd()];
    let control = [ControlMessage::ScmRights(&fds)];
    let byte = [b't'];
    let iov = [IoSlice::new(&byte)];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &control, MsgFlags::empty(), None)
        .map_err(Error::sys("send the terminal to the shim"))?;
    Ok(())
}

/// The slave becomes stdin, stdout and stderr, and the controlling
/// terminal of a new session, as runc's init and exec make it.
fn make_stdio(slave: File) -> Result<()> {
    let slave = OwnedFd::from(slave);
    for target in 0..3 {
        // SAFETY: dup2 of a descriptor this function owns onto stdio.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(Error::sys("make the terminal stdio")(
                nix::errno::Errno::last(),
            ));
        }
    }
    drop(slave);
    nix::unistd::setsid().map_err(Error::sys("start a session"))?;
    // SAFETY: TIOCSCTTY on stdin, the slave, with no steal.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(Error::sys("make the terminal the controlling one")(
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}
