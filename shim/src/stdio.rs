//! Opening a task's stdio as containerd passes it: fifo paths (what ctr
//! and CRI use), `file://` URIs, or nothing (/dev/null).
//!
//! The shim holds ends of the fifos itself for the process's life, as
//! containerd's runc shim does: a read end of each output fifo, so that a
//! client that goes away (`ctr run -d` exits at once) never makes the
//! process's writes fail with EPIPE (output without a reader waits in the
//! fifo's buffer, and a write blocks once it is full, as under runc), and
//! a write end of a stdin fifo (see [`StdinHold`]).

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::unistd::pipe2;

use crate::console::Console;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// The child reads it (stdin).
    In,
    /// The child writes it (stdout, stderr).
    Out,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Null,
    Path(PathBuf),
}

fn parse(uri: &str) -> anyhow::Result<Target> {
    if uri.is_empty() {
        return Ok(Target::Null);
    }
    if let Some(path) = uri.strip_prefix("file://") {
        return Ok(Target::Path(PathBuf::from(path)));
    }
    if uri.starts_with("binary://") {
        bail!("stdio {uri}: binary:// logging is not supported by the wasmtime shim");
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        bail!("stdio {uri}: unknown scheme {scheme}://");
    }
    Ok(Target::Path(PathBuf::from(uri)))
}

/// The child's stdio, and the shim's own ends of its fifos.
pub struct Opened {
    pub fds: [OwnedFd; 3],
    pub hold: Option<StdioHold>,
}

/// The shim's own ends of a process's stdio fifos, kept until it exits,
/// and the relay of its terminal if it has one.
pub struct StdioHold {
    /// First, so that it stops before the fifos' other ends go.
    console: Option<Console>,
    stdin: Option<StdinHold>,
    /// Read ends of the output fifos, never read.
    _outputs: Vec<File>,
}

impl StdioHold {
    /// Lets go of the stdin fifo's writer (CloseIO): the process reads
    /// end-of-file once the client's end is closed too (on a terminal,
    /// the relay then types end-of-file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// ResizePty: sets the terminal's size; without a terminal there is
    /// nothing to resize, as under runc.
    pub fn resize(&self, size: crate::console::Size) -> anyhow::Result<()> {
        match &self.console {
            Some(console) => console.resize(size),
            None => Ok(()),
        }
    }

    /// Adds a process's terminal relay to its stdio's hold.
    pub fn with_console(hold: Option<StdioHold>, console: Console) -> StdioHold {
        let mut hold = hold.unwrap_or(StdioHold {
            console: None,
            stdin: None,
            _outputs: Vec::new(),
        });
        hold.console = Some(console);
        hold
    }
}

/// The shim's own writer of a stdin fifo. Without it the child would read
/// end-of-file whenever no client happens to hold the fifo open, for
/// instance before the client has opened its end at all. It is let go
/// when a client's writer closes (the client's input has ended), on
/// CloseIO, or when the hold is dropped with the task.
struct StdinHold {
    /// Shared with the watching thread, which may take it first.
    _writer: Arc<Mutex<Option<File>>>,
    /// Closing it (by dropping the hold) ends the watching thread.
    _stop_watch: OwnedFd,
}

/// Starts watching a stdin fifo for a writer's close. It must be called
/// before the shim opens the fifo's read end: a client's open for writing
/// only completes once a reader exists, so no client can write and close
/// before the watch is in place (a client with little input does so
/// within microseconds of its open).
fn watch_closes(path: &Path) -> anyhow::Result<Inotify> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).context("create an inotify instance")?;
    inotify
        .add_watch(path, AddWatchFlags::IN_CLOSE_WRITE)
        .with_context(|| format!("watch stdin fifo {}", path.display()))?;
    Ok(inotify)
}

/// Waits for a writer's close on `inotify` and then lets the shim's
/// writer go, so that the child sees end-of-file as it would under runc.
/// A small thread waits on the inotify descriptor and on a pipe that the
/// hold closes when it is dropped.
fn hold(inotify: Inotify, writer: File) -> anyhow::Result<StdinHold> {
    let (stop_r, stop_w) = pipe2(OFlag::O_CLOEXEC).context("create a pipe")?;
    let writer = Arc::new(Mutex::new(Some(writer)));
    let held = Arc::downgrade(&writer);
    std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let closed = crate::console::wait_readable(&inotify, &stop_r);
            if let (true, Some(writer)) = (closed, held.upgrade()) {
                writer.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
        })
        .context("start the stdin watcher")?;
    Ok(StdinHold {
        _writer: writer,
        _stop_watch: stop_w,
    })
}

/// Opens stdin, stdout and stderr for the child. None of it waits for the
/// client: the shim's own ends make every open complete at once.
pub fn open(stdin: &str, stdout: &str, stderr: &str) -> anyhow::Result<Opened> {
    let stdin = match open_stdin(stdin)? {
        (fd, Some((inotify, writer))) => (fd, Some(hold(inotify, writer)?)),
        (fd, None) => (fd, None),
    };
    let mut outputs = Vec::new();
    let stdout = open_output(stdout, &mut outputs)?;
    let stderr = open_output(stderr, &mut outputs)?;
    let hold = match (stdin.1, outputs.is_empty()) {
        (None, true) => None,
        (stdin, _) => Some(StdioHold {
            console: None,
            stdin,
            _outputs: outputs,
        }),
    };
    Ok(Opened {
        fds: [stdin.0, stdout, stderr],
        hold,
    })
}

/// A stdin fifo is opened at once, without waiting for the client: the
/// client may never open its end. (ctr with an empty stdin closes its end
/// before Create, unseen, and sends no CloseIO either, so the guest's
/// input does not end; runc's shim behaves the same.)
fn open_stdin(uri: &str) -> anyhow::Result<(OwnedFd, Option<(Inotify, File)>)> {
    let Target::Path(path) = parse(uri)? else {
        return Ok((open_null()?, None));
    };
    if !is_fifo(&path) {
        return Ok((open_file(&path, Direction::In)?.into(), None));
    }
    let inotify = watch_closes(&path)?;
    let context = || format!("open stdin fifo {}", path.display());
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .with_context(context)?;
    // Succeeds without blocking now that a reader exists.
    let writer = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .with_context(context)?;
    // The child does ordinary blocking reads.
    nix::fcntl::fcntl(
        &reader,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .with_context(context)?;
    Ok((reader.into(), Some((inotify, writer))))
}

fn open_null() -> anyhow::Result<OwnedFd> {
    let null = OpenOptions::new().read(true).write(true).open("/dev/null");
    Ok(null.context("open /dev/null")?.into())
}

fn is_fifo(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false)
}

/// Opens an output for the child to write. A fifo's read end is opened
/// first, without blocking, and pushed to `holds`; the write end's open
/// then completes at once, whether or not the client has opened its end.
fn open_output(uri: &str, holds: &mut Vec<File>) -> anyhow::Result<OwnedFd> {
    let path = match parse(uri)? {
        Target::Null => return open_null(),
        Target::Path(path) => path,
    };
    if !is_fifo(&path) {
        return open_file(&path, Direction::Out).map(Into::into);
    }
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .with_context(|| format!("open stdio fifo {} for reading", path.display()))?;
    let writer = open_file(&path, Direction::Out)?;
    holds.push(reader);
    Ok(writer.into())
}

fn open_file(path: &Path, direction: Direction) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    match direction {
        Direction::In => options.read(true),
        Direction::Out => options.write(true).append(true).create(true),
    };
    options
        .open(path)
        .with_context(|| format!("open stdio {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_uris() {
        assert_eq!(parse("").unwrap(), Target::Null);
        assert_eq!(
            parse("/run/x/stdout").unwrap(),
            Target::Path("/run/x/stdout".into())
        );
        assert_eq!(
            parse("file:///var/log/a").unwrap(),
            Target::Path("/var/log/a".into())
        );
        assert!(
            parse("binary:///bin/logger")
                .unwrap_err()
                .to_string()
                .contains("binary://")
        );
        assert!(
            parse("tcp://x")
                .unwrap_err()
                .to_string()
                .contains("unknown scheme tcp://")
        );
    }

    /// The output opens before any client has opened the fifo, what is
    /// written waits for the client, and a write after the client went
    /// away neither fails nor raises SIGPIPE while the hold lasts.
    #[test]
    fn an_output_fifo_outlives_its_client() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut holds = Vec::new();
        let mut out = File::from(open_output(fifo.to_str().unwrap(), &mut holds).unwrap());
        assert_eq!(holds.len(), 1);
        std::io::Write::write_all(&mut out, b"early\n").unwrap();
        let client = File::open(&fifo).unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&client), &mut line).unwrap();
        assert_eq!(line, "early\n");
        drop(client);
        std::io::Write::write_all(&mut out, b"late\n").unwrap();
        drop(holds);
        let err = std::io::Write::write_all(&mut out, b"gone\n").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE), "the control");
    }

    #[test]
    fn stdin_fifo_ends_when_the_shim_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("in");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (reader, held) = open_stdin(fifo.to_str().unwrap()).unwrap();
        let (_, writer) = held.unwrap();
        let mut client = OpenOptions::new().write(true).open(&fifo).unwrap();
        std::io::Write::write_all(&mut client, b"data").unwrap();
        drop(client);
        drop(writer);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut File::from(reader), &mut got).unwrap();
        assert_eq!(got, "data");
    }

    #[tokio::test]
    async fn hold_lets_go_when_the_client_closes() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("in");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let opened = open(fifo.to_str().unwrap(), "", "").unwrap();
        let mut client = OpenOptions::new().write(true).open(&fifo).unwrap();
        std::io::Write::write_all(&mut client, b"abc").unwrap();
        drop(client);
        assert_eq!(read_stdin(opened).await.as_deref(), Some("abc"));
    }

    /// What the child would read from `opened`'s stdin up to end-of-file,
    /// or None when no end-of-file comes within ten seconds.
    async fn read_stdin(opened: Opened) -> Option<String> {
        let [reader, _, _] = opened.fds;
        let got = tokio::task::spawn_blocking(move || {
            let mut got = String::new();
            std::io::Read::read_to_string(&mut File::from(reader), &mut got).map(|_| got)
        });
        let got = tokio::time::timeout(Duration::from_secs(10), got).await;
        // Letting go unblocks the reader when the test is about to fail.
        drop(opened.hold);
        Some(got.ok()?.unwrap().unwrap())
    }

    /// As ctr does with little input: the client waits in its open for
    /// writing, and writes and closes the moment the shim opens the read
    /// end. Its close must still let the shim's writer go.
    #[tokio::test]
    async fn hold_sees_a_client_that_closes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("in");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for round in 0..50 {
            let client = std::thread::spawn({
                let fifo = fifo.clone();
                move || {
                    let mut client = OpenOptions::new().write(true).open(&fifo).unwrap();
                    std::io::Write::write_all(&mut client, b"abc").unwrap();
                }
            });
            let opened = open(fifo.to_str().unwrap(), "", "").unwrap();
            client.join().unwrap();
            let got = read_stdin(opened).await;
            assert_eq!(got.as_deref(), Some("abc"), "round {round}");
        }
    }

    #[test]
    fn file_uri_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let uri = format!("file://{}", path.display());
        for _ in 0..2 {
            let fd = open_output(&uri, &mut Vec::new()).unwrap();
            std::io::Write::write_all(&mut File::from(fd), b"x").unwrap();
        }
        assert_eq!(std::fs::read_to_string(path).unwrap(), "xx");
    }
}
