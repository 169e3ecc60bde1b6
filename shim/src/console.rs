//! The shim's side of a process's terminal (`process.terminal`), as
//! containerd's runc shim keeps it: the process makes the terminal in its
//! container's devpts and sends the master here (executor's console.rs);
//! the shim copies the stdin fifo to the master and the master to the
//! stdout fifo, sets its size (ResizePty) and, when stdin ends (the
//! client closed it, CloseIO), types the terminal's end-of-file character.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use anyhow::{Context, bail};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::unistd::pipe2;

pub use executor::console::Size;

/// A terminal on its way: the shim's end of the socket the process sends
/// its master on, and the stdio fifos' ends the relay will copy.
pub struct Pending {
    socket: UnixStream,
    input: OwnedFd,
    output: OwnedFd,
}

/// Splits a process's opened stdio for a terminal: the stdin reader and
/// the stdout writer go to the relay (a terminal has no separate stderr,
/// as under runc), and the process gets /dev/null until it makes its
/// terminal, plus the socket's other end for [`executor::protocol::CONSOLE_FD`].
pub fn pending(fds: [OwnedFd; 3]) -> anyhow::Result<(Pending, [OwnedFd; 3], OwnedFd)> {
    let (socket, theirs) = UnixStream::pair().context("create the terminal's socket")?;
    let [input, output, _stderr] = fds;
    let null = || -> anyhow::Result<OwnedFd> {
        let file = File::options().read(true).write(true).open("/dev/null");
        Ok(file.context("open /dev/null")?.into())
    };
    let stdio = [null()?, null()?, null()?];
    let pending = Pending {
        socket,
        input,
        output,
    };
    Ok((pending, stdio, theirs.into()))
}

impl Pending {
    /// Takes the master the process sent before it reported ready, and
    /// starts relaying.
    pub fn start(self, what: &str) -> anyhow::Result<Console> {
        let master = receive(&self.socket).with_context(|| format!("{what}: its terminal"))?;
        Console::relay(master, self.input, self.output, what)
    }
}

/// Reads the one message the process sent: a byte with the master.
fn receive(socket: &UnixStream) -> anyhow::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("the process sent no terminal")?;
    for cmsg in message.cmsgs().context("read the terminal's message")? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let [fd] = fds[..]
        {
            // SAFETY: the kernel just installed this descriptor for us.
            return Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
        }
    }
    bail!("the process's message carried no terminal")
}

/// A terminal being relayed. Dropping it stops the input at once and the
/// output after a last read of what the terminal holds.
pub struct Console {
    master: std::sync::Arc<File>,
    /// Closed (by drop) to stop both threads.
    _stop: OwnedFd,
}

impl Console {
    fn relay(master: OwnedFd, input: OwnedFd, output: OwnedFd, what: &str) -> anyhow::Result<Self> {
        let (stop_r, stop_w) = pipe2(OFlag::O_CLOEXEC).context("create a pipe")?;
        // Nonblocking, so the last read before the relay stops never waits.
        fcntl(&master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .context("set the master nonblocking")?;
        let master = std::sync::Arc::new(File::from(master));
        let stop_r = std::sync::Arc::new(stop_r);
        let (out_master, out_stop) = (master.clone(), stop_r.clone());
        spawn(what, "tty-out", move || {
            copy_output(&out_master, File::from(output), &out_stop)
        })?;
        let in_master = master.clone();
        spawn(what, "tty-in", move || {
            copy_input(File::from(input), &in_master, &stop_r)
        })?;
        Ok(Console {
            master,
            _stop: stop_w,
        })
    }

    /// ResizePty.
    pub fn resize(&self, size: Size) -> anyhow::Result<()> {
        executor::console::resize(self.master.as_raw_fd(), size)
            .map_err(|e| anyhow::anyhow!(e.chain()))
    }
}

fn spawn(what: &str, name: &str, body: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(64 << 10)
        .spawn(body)
        .map(|_| ())
        .with_context(|| format!("{what}: start the terminal's {name} thread"))
}

/// Waits until `fd` is readable or `stop` is closed (or written); true
/// when `fd` is ready and `stop` is not.
pub fn wait_readable(fd: &impl AsFd, stop: &impl AsFd) -> bool {
    let mut fds = [
        PollFd::new(fd.as_fd(), PollFlags::POLLIN),
        PollFd::new(stop.as_fd(), PollFlags::POLLIN),
    ];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    let stopped = fds[1].revents().is_some_and(|r| !r.is_empty());
    let ready = fds[0].revents().is_some_and(|r| !r.is_empty());
    ready && !stopped
}

/// Master → stdout until the terminal has no slave left (EIO) or the
/// relay stops; then what the terminal still holds is copied, and the
/// writer is closed, which ends the client's copy.
fn copy_output(master: &File, mut output: File, stop: &OwnedFd) {
    let mut buffer = vec![0u8; 32 << 10];
    loop {
        let running = wait_readable(&master, stop);
        if !drain(master, &mut output, &mut buffer) || !running {
            break;
        }
    }
}

/// Copies what can be read from `master` now; false once it is finished
/// (no slave left, or the output is gone).
fn drain(mut master: &File, output: &mut File, buffer: &mut [u8]) -> bool {
    loop {
        match master.read(buffer) {
            Ok(0) => return false,
            Ok(n) => {
                if output.write_all(&buffer[..n]).is_err() {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: every slave is closed.
            Err(_) => return false,
        }
    }
}

/// Stdin → master. At end of input the terminal's end-of-file character
/// is typed, which a reader in canonical mode sees as end-of-file.
fn copy_input(mut input: File, mut master: &File, stop: &OwnedFd) {
    let mut buffer = vec![0u8; 8 << 10];
    loop {
        if !wait_readable(&input, stop) {
            return;
        }
        match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if write_all(master, &buffer[..n], stop).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
    if let Ok(termios) = nix::sys::termios::tcgetattr(master.as_fd()) {
        let eof = termios.control_chars[nix::sys::termios::SpecialCharacterIndices::VEOF as usize];
        let _ = write_all(master, &[eof], stop);
    }
    let _ = master.flush();
}

/// Writes to the nonblocking master, waiting while the terminal's input
/// queue is full, until the relay stops.
fn write_all(mut master: &File, mut bytes: &[u8], stop: &OwnedFd) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match master.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = [
                    PollFd::new(master.as_fd(), PollFlags::POLLOUT),
                    PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                ];
                let _ = poll(&mut fds, PollTimeout::NONE);
                if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::pty::{grantpt, posix_openpt, unlockpt};

    /// A terminal made as the executor makes it, without a container.
    fn terminal() -> (OwnedFd, File) {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        // SAFETY: TIOCGPTPEER returns a new descriptor.
        let fd = unsafe {
            libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY,
            )
        };
        assert!(fd >= 0);
        // SAFETY: just returned by the kernel.
        let slave = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        (master.into(), slave)
    }

    /// Output written to the slave reaches the stdout pipe and ends with
    /// the slave; input reaches the slave; end of input types ^D; the
    /// size set through the console is the slave's.
    #[test]
    fn relays_both_ways_and_ends_with_the_slave() {
        let (master, mut slave) = terminal();
        let (stdin_r, stdin_w) = nix::unistd::pipe().unwrap();
        let (stdout_r, stdout_w) = nix::unistd::pipe().unwrap();
        let console = Console::relay(master, stdin_r, stdout_w, "test").unwrap();
        console
            .resize(Size {
                rows: 33,
                cols: 101,
            })
            .unwrap();
        // SAFETY: winsize is plain integers, for which zero is valid.
        let mut winsize: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize.
        assert_eq!(
            unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &raw mut winsize) },
            0
        );
        assert_eq!((winsize.ws_row, winsize.ws_col), (33, 101));

        let mut stdin_w = File::from(stdin_w);
        stdin_w.write_all(b"typed\n").unwrap();
        drop(stdin_w);
        let mut line = vec![0u8; 6];
        slave.read_exact(&mut line).unwrap();
        assert_eq!(line, b"typed\n");
        // Canonical mode: ^D at a line's start reads as end-of-file.
        assert_eq!(slave.read(&mut line).unwrap(), 0);

        slave.write_all(b"out\n").unwrap();
        drop(slave);
        let mut got = String::new();
        File::from(stdout_r).read_to_string(&mut got).unwrap();
        // The terminal echoes what was typed and maps NL to CR NL.
        assert!(got.ends_with("out\r\n"), "{got:?}");
        drop(console);
    }
}
