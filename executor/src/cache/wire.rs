//! The wire format of the cache conversation: one line per request and
//! per reply, a descriptor (the module's memfd, the entry) as SCM_RIGHTS
//! with the line it belongs to; both sides' reading and writing of it.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, send, sendmsg};

use super::{Compile, ENGINE_HEX, MAX_LINE, MAX_THREADS, Reply, Request, is_hex};
use crate::error::{Error, Result};

pub fn encode_request(request: &Request) -> Vec<u8> {
    let Request::Lookup { engine, compile } = request;
    let shape = if compile.component {
        "component"
    } else {
        "module"
    };
    let flavor = if compile.http { "http" } else { "command" };
    format!("lookup {engine} {shape} {flavor} {}\n", compile.threads).into_bytes()
}

/// Reads a request line (without its newline): the engine part must be
/// 16 lowercase hex digits, the words those of [`encode_request`], the
/// threads plain decimal from 1 to [`MAX_THREADS`].
pub fn decode_request(line: &[u8]) -> Result<Request> {
    let malformed = || Error::Cache(format!("malformed request {}", quote(line)));
    let text = std::str::from_utf8(line).map_err(|_| malformed())?;
    let words: Vec<&str> = text.split(' ').collect();
    let ["lookup", engine, shape, flavor, threads] = words.as_slice() else {
        return Err(malformed());
    };
    if !is_hex(engine, ENGINE_HEX) {
        return Err(Error::Cache(format!(
            "invalid engine hash {}",
            quote(engine.as_bytes())
        )));
    }
    let component = match *shape {
        "module" => false,
        "component" => true,
        _ => return Err(malformed()),
    };
    let http = match *flavor {
        "command" => false,
        "http" => true,
        _ => return Err(malformed()),
    };
    let threads = parse_threads(threads).ok_or_else(malformed)?;
    Ok(Request::Lookup {
        engine: engine.to_string(),
        compile: Compile {
            component,
            http,
            threads,
        },
    })
}

pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Hit => "hit\n".to_string(),
        Reply::Stored => "stored\n".to_string(),
        Reply::Off => "off\n".to_string(),
        Reply::Error(message) => format!("error {}\n", one_line(message)),
    }
    .into_bytes()
}

/// Reads a reply line (without its newline).
pub fn decode_reply(line: &[u8]) -> Result<Reply> {
    match line {
        b"hit" => Ok(Reply::Hit),
        b"stored" => Ok(Reply::Stored),
        b"off" => Ok(Reply::Off),
        _ => match line.strip_prefix(b"error ") {
            Some(message) => Ok(Reply::Error(String::from_utf8_lossy(message).into_owned())),
            None => Err(Error::Cache(format!("malformed reply {}", quote(line)))),
        },
    }
}

/// Plain decimal digits only, no sign, from 1 to [`MAX_THREADS`].
fn parse_threads(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| (1..=MAX_THREADS).contains(n))
}

/// A message made fit for one line of the protocol: no newline, bounded.
fn one_line(message: &str) -> String {
    let mut line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut end = line.len().min(MAX_LINE - 16);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
    line
}

/// A peer's bytes for an error message: escaped, and cut short.
pub(super) fn quote(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes).chars().take(100).collect();
    format!("{:?}", text)
}

// The shim's side.

/// Receives the child's request and the module's descriptor that came
/// with it. `Ok(None)` when the child closed its end (or the socket was
/// shut down) without asking.
pub fn recv_request(socket: &UnixStream) -> Result<Option<(Request, Option<OwnedFd>)>> {
    match recv_line(socket, "request")? {
        None => Ok(None),
        Some((line, fd)) => Ok(Some((decode_request(&line)?, fd))),
    }
}

/// Sends one reply, with `entry` attached as SCM_RIGHTS when given.
pub fn send_reply(socket: &UnixStream, reply: &Reply, entry: Option<&File>) -> Result<()> {
    let fd = entry.map(|file| file.as_raw_fd());
    send_line(socket, &encode_reply(reply), fd, "reply")
}

// The child's side.

/// Sends the request with the module's memfd attached.
pub(super) fn send_request(socket: &UnixStream, request: &Request, module: &OwnedFd) -> Result<()> {
    let fd = Some(module.as_raw_fd());
    send_line(socket, &encode_request(request), fd, "request")
}

/// Receives one reply and the descriptor that came with it, if any.
pub(super) fn recv_reply(socket: &UnixStream) -> Result<(Reply, Option<OwnedFd>)> {
    match recv_line(socket, "reply")? {
        None => Err(Error::Cache("the shim closed the cache socket".into())),
        Some((line, fd)) => Ok((decode_reply(&line)?, fd)),
    }
}

// Both sides.

/// Sends `bytes` (one line), with `fd` attached to its first piece.
fn send_line(socket: &UnixStream, bytes: &[u8], fd: Option<RawFd>, what: &str) -> Result<()> {
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[std::io::IoSlice::new(bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            result => {
                break result.map_err(Error::sys(format!("send a {what} on the cache socket")))?;
            }
        }
    };
    // A stream socket may take a short line in two pieces; the descriptor
    // went with the first.
    send_all(socket, &bytes[sent..])
}

/// Writes all of `bytes`, without SIGPIPE if the peer is gone.
fn send_all(socket: &UnixStream, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        match send(socket.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("write to the cache socket")(e)),
        }
    }
    Ok(())
}

/// Receives one line (without its newline) and the descriptor that came
/// with it, if any; `None` at end of file before the first byte. The
/// descriptor is taken close-on-exec; more than one, a second line or a
/// line over [`MAX_LINE`] is an error.
fn recv_line(socket: &UnixStream, what: &str) -> Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
    let mut line = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [std::io::IoSliceMut::new(&mut chunk)];
        let message = match recvmsg::<()>(
            socket.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            result => result.map_err(Error::sys(format!("read a {what} from the cache socket")))?,
        };
        let cmsgs = message
            .cmsgs()
            .map_err(Error::sys(format!("read a {what} from the cache socket")))?;
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for raw in received {
                    // SAFETY: the kernel just installed `raw` in our table
                    // for this message; nothing else knows of it yet.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        let (bytes, truncated) = (message.bytes, message.flags.contains(MsgFlags::MSG_CTRUNC));
        if truncated {
            return Err(Error::Cache(format!(
                "too many descriptors with the {what}"
            )));
        }
        if bytes == 0 {
            if line.is_empty() && fds.is_empty() {
                return Ok(None);
            }
            return Err(Error::Cache(format!(
                "{what} {} ended before its newline",
                quote(&line)
            )));
        }
        line.extend_from_slice(&chunk[..bytes]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            if end + 1 != line.len() {
                return Err(Error::Cache(format!(
                    "more than one {what}: {}",
                    quote(&line)
                )));
            }
            line.truncate(end);
            break;
        }
        if line.len() > MAX_LINE {
            return Err(Error::Cache(format!("{what} longer than {MAX_LINE} bytes")));
        }
    }
    if fds.len() > 1 {
        return Err(Error::Cache(format!(
            "{} descriptors with one {what}",
            fds.len()
        )));
    }
    Ok(Some((line, fds.pop())))
}
