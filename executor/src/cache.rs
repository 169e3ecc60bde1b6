//! The compiled-code cache as a container's child sees it, and the wire
//! format the child and the shim speak about it.
//!
//! The shim keeps the cache (its `cache.rs`): a directory only root can
//! write, which the pivot_rooted child cannot even see. The child talks to
//! it over a unix stream socket at [`CACHE_FD`], one request at a time,
//! each request one line and each reply one line:
//!
//! - `lookup <key>` is answered `hit` with the entry's descriptor attached,
//!   `miss` (the shim now holds the key's lock for this child, which must
//!   store or hang up) or `off` (no cache: compile and keep the code).
//! - `store <key> <len>` followed by exactly `len` bytes of compiled code is
//!   answered `stored` with the new entry's descriptor attached.
//! - Any request may be answered `error <message>`, after which the shim
//!   ends the conversation.
//!
//! A key is `<sha256 of the module, 64 hex>-<engine compatibility, 16 hex>`,
//! lowercase: nothing else is accepted, so a key never names a path outside
//! the cache directory.

use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockType, UnixAddr, getsockname, getsockopt,
    recvmsg, send, sendmsg, sockopt,
};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::protocol::CACHE_FD;

/// The largest compiled module the shim accepts, far above any real one.
pub const MAX_ENTRY_BYTES: u64 = 4 << 30;
/// The longest line either side sends; longer means a broken peer.
const MAX_LINE: usize = 4096;
const DIGEST_HEX: usize = 64;
const ENGINE_HEX: usize = 16;
/// The length of a key: both hex parts and the dash between them.
pub const KEY_LEN: usize = DIGEST_HEX + 1 + ENGINE_HEX;

/// What the child asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Lookup { key: String },
    Store { key: String, len: u64 },
}

/// What the shim answers. `Hit` and `Stored` travel with a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Hit,
    Miss,
    Off,
    Stored,
    Error(String),
}

/// The cache key of a module's bytes for this engine: the module's sha256
/// and a hash of everything that makes compiled code fit an engine.
pub fn key(wasm: &[u8], engine: &wasmtime::Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{}-{:016x}", hex(&Sha256::digest(wasm)), hasher.finish())
}

/// Lowercase hex of `bytes`, the form of keys and of recorded digests.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    text
}

/// True for lowercase hex of exactly `len` digits.
pub fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// True when `key` has exactly the shape [`key`] produces, so it can be
/// used as a file name in the cache directory.
pub fn valid_key(key: &str) -> bool {
    key.len() == KEY_LEN
        && key.as_bytes()[DIGEST_HEX] == b'-'
        && is_hex(&key[..DIGEST_HEX], DIGEST_HEX)
        && is_hex(&key[DIGEST_HEX + 1..], ENGINE_HEX)
}

/// The path wasmtime's `deserialize_file` opens for a descriptor. Opening
/// it opens the file again, read-only, with the child's own permissions.
/// In the container, `/proc` is whatever the spec and the image make it:
/// the path is given only when `/proc` is procfs and the path leads to the
/// descriptor's own file, so that bytes from the image are never taken for
/// the entry.
pub fn fd_path(file: &File) -> std::io::Result<PathBuf> {
    fd_path_in(Path::new("/proc"), file)
}

fn fd_path_in(proc: &Path, file: &File) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let fs = nix::sys::statfs::statfs(proc)?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(std::io::Error::other(format!(
            "{} is not procfs",
            proc.display()
        )));
    }
    let path = proc.join(format!("self/fd/{}", file.as_raw_fd()));
    let (found, held) = (std::fs::metadata(&path)?, file.metadata()?);
    if (found.dev(), found.ino()) != (held.dev(), held.ino()) {
        return Err(std::io::Error::other(format!(
            "{} is not the cache entry's descriptor",
            path.display()
        )));
    }
    Ok(path)
}

// The wire format.

pub fn encode_request(request: &Request) -> Vec<u8> {
    match request {
        Request::Lookup { key } => format!("lookup {key}\n"),
        Request::Store { key, len } => format!("store {key} {len}\n"),
    }
    .into_bytes()
}

/// Reads a request line (without its newline). The key must be valid and
/// a length plain decimal no larger than [`MAX_ENTRY_BYTES`].
pub fn decode_request(line: &[u8]) -> Result<Request> {
    let malformed = || Error::Cache(format!("malformed request {}", quote(line)));
    let text = std::str::from_utf8(line).map_err(|_| malformed())?;
    let words: Vec<&str> = text.split(' ').collect();
    let key = match words.get(1) {
        Some(key) if valid_key(key) => key.to_string(),
        Some(key) => {
            return Err(Error::Cache(format!(
                "invalid key {}",
                quote(key.as_bytes())
            )));
        }
        None => return Err(malformed()),
    };
    match words.as_slice() {
        ["lookup", _] => Ok(Request::Lookup { key }),
        ["store", _, len] => {
            let len = parse_len(len).ok_or_else(malformed)?;
            if len > MAX_ENTRY_BYTES {
                return Err(Error::Cache(format!(
                    "store {key}: {len} bytes is over the limit of {MAX_ENTRY_BYTES}"
                )));
            }
            Ok(Request::Store { key, len })
        }
        _ => Err(malformed()),
    }
}

pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Hit => "hit\n".to_string(),
        Reply::Miss => "miss\n".to_string(),
        Reply::Off => "off\n".to_string(),
        Reply::Stored => "stored\n".to_string(),
        Reply::Error(message) => format!("error {}\n", one_line(message)),
    }
    .into_bytes()
}

/// Reads a reply line (without its newline).
pub fn decode_reply(line: &[u8]) -> Result<Reply> {
    match line {
        b"hit" => Ok(Reply::Hit),
        b"miss" => Ok(Reply::Miss),
        b"off" => Ok(Reply::Off),
        b"stored" => Ok(Reply::Stored),
        _ => match line.strip_prefix(b"error ") {
            Some(message) => Ok(Reply::Error(String::from_utf8_lossy(message).into_owned())),
            None => Err(Error::Cache(format!("malformed reply {}", quote(line)))),
        },
    }
}

/// Plain decimal digits only: no sign, no spaces, at most 20 of them.
fn parse_len(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
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
fn quote(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes).chars().take(100).collect();
    format!("{:?}", text)
}

// The shim's side of the wire.

/// Reads the child's next request. `Ok(None)` when the child closed its end
/// (or the socket was shut down) between requests.
pub fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(Error::io("read a request from the cache socket"))?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(Error::Cache(if line.len() >= MAX_LINE {
            format!("request longer than {MAX_LINE} bytes")
        } else {
            format!("request {} ended before its newline", quote(&line))
        }));
    }
    decode_request(&line).map(Some)
}

/// Sends one reply, with `entry` attached as SCM_RIGHTS when given.
pub fn send_reply(socket: &UnixStream, reply: &Reply, entry: Option<&File>) -> Result<()> {
    let bytes = encode_reply(reply);
    let fds: Vec<RawFd> = entry.iter().map(|file| file.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            result => break result.map_err(Error::sys("send a reply on the cache socket"))?,
        }
    };
    // A stream socket may take a short line in two pieces; the descriptor
    // went with the first.
    send_all(socket, &bytes[sent..])
}

// The child's side of the wire.

/// The child's end of the conversation with the shim's cache.
#[derive(Debug)]
pub struct CacheLink {
    socket: UnixStream,
    /// The shim answered `off`: nothing more is asked.
    off: bool,
    /// The key whose miss awaits a store; the shim holds its lock for us.
    missed: Option<String>,
}

/// Set once fd [`CACHE_FD`] has been taken, so it is never owned twice.
static INHERITED: AtomicBool = AtomicBool::new(false);

impl CacheLink {
    /// Takes fd [`CACHE_FD`] if it is an open unix stream socket (the shim
    /// offers a cache); `None` otherwise, and on any later call.
    pub fn inherit() -> Option<CacheLink> {
        if !is_unix_socket(CACHE_FD) || INHERITED.swap(true, Ordering::SeqCst) {
            return None;
        }
        // SAFETY: CACHE_FD is open (getsockname just succeeded on it) and,
        // by the convention between the shim and the child, nothing else in
        // this process owns it; INHERITED makes this the only taking.
        let fd = unsafe { OwnedFd::from_raw_fd(CACHE_FD) };
        if getsockopt(&fd, sockopt::SockType).ok() != Some(SockType::Stream) {
            return None;
        }
        // The guest or a program exec'd later must not keep the socket.
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .ok()?;
        Some(CacheLink::from_stream(UnixStream::from(fd)))
    }

    pub fn from_stream(socket: UnixStream) -> CacheLink {
        CacheLink {
            socket,
            off: false,
            missed: None,
        }
    }

    /// Records that the store after the last miss was made by another
    /// process on this same socket (the child's forked compiler), so the
    /// next lookup may be asked.
    pub fn stored_by_fork(&mut self) {
        self.missed = None;
    }

    /// `Ok(Some(entry))` on a hit; `Ok(None)` on a miss, after which the
    /// link must [`store`](Self::store) the compiled code or be dropped;
    /// also `Ok(None)` when the shim has no cache, after which `store` does
    /// nothing.
    pub fn lookup(&mut self, key: &str) -> Result<Option<File>> {
        if self.off {
            return Ok(None);
        }
        if !valid_key(key) {
            return Err(Error::Cache(format!(
                "invalid key {}",
                quote(key.as_bytes())
            )));
        }
        if let Some(missed) = &self.missed {
            return Err(Error::Cache(format!(
                "lookup {key} while the miss of {missed} awaits its store"
            )));
        }
        let request = Request::Lookup {
            key: key.to_string(),
        };
        send_all(&self.socket, &encode_request(&request))?;
        match recv_reply(&self.socket)? {
            (Reply::Hit, Some(fd)) => entry_file(fd, key).map(Some),
            (Reply::Miss, None) => {
                self.missed = Some(key.to_string());
                Ok(None)
            }
            (Reply::Off, None) => {
                self.off = true;
                Ok(None)
            }
            (Reply::Error(message), None) => Err(Error::Cache(format!(
                "lookup {key}: the shim answered: {message}"
            ))),
            (reply, fd) => Err(unexpected("lookup", key, &reply, fd.is_some())),
        }
    }

    /// Sends the compiled code of `key` after its miss. `Ok(Some(entry))`
    /// is the entry the shim wrote, to load the code from; `Ok(None)` when
    /// the shim has no cache.
    pub fn store(&mut self, key: &str, compiled: &[u8]) -> Result<Option<File>> {
        if self.off {
            return Ok(None);
        }
        if self.missed.take().as_deref() != Some(key) {
            return Err(Error::Cache(format!("store {key} without a miss for it")));
        }
        let request = Request::Store {
            key: key.to_string(),
            len: compiled.len() as u64,
        };
        let sent = send_all(&self.socket, &encode_request(&request))
            .and_then(|()| send_all(&self.socket, compiled));
        // A shim that refused the store stops reading and answers why: that
        // answer explains a failed send better than the send's own error.
        match (sent, recv_reply(&self.socket)) {
            (Ok(()), Ok((Reply::Stored, Some(fd)))) => entry_file(fd, key).map(Some),
            (_, Ok((Reply::Error(message), None))) => Err(Error::Cache(format!(
                "store {key}: the shim answered: {message}"
            ))),
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok((reply, fd))) => Err(unexpected("store", key, &reply, fd.is_some())),
        }
    }
}

fn unexpected(request: &str, key: &str, reply: &Reply, with_fd: bool) -> Error {
    let fd = if with_fd { "with" } else { "without" };
    Error::Cache(format!(
        "{request} {key}: unexpected reply {reply:?} {fd} a descriptor"
    ))
}

/// True when `fd` is an open unix-domain socket.
fn is_unix_socket(fd: RawFd) -> bool {
    getsockname::<UnixAddr>(fd).is_ok()
}

/// A descriptor the shim sent must be a regular file to be an entry.
fn entry_file(fd: OwnedFd, key: &str) -> Result<File> {
    let stat =
        nix::sys::stat::fstat(&fd).map_err(Error::sys(format!("stat the entry of {key}")))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::Cache(format!(
            "the entry of {key} is not a regular file"
        )));
    }
    Ok(File::from(fd))
}

/// Writes all of `bytes`, without SIGPIPE if the shim is gone.
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

/// Receives one reply line and the descriptor that came with it, if any.
/// Descriptors are taken close-on-exec, and more than one is an error.
fn recv_reply(socket: &UnixStream) -> Result<(Reply, Option<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut chunk)];
        let message = match recvmsg::<()>(
            socket.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            result => result.map_err(Error::sys("read a reply from the cache socket"))?,
        };
        let cmsgs = message
            .cmsgs()
            .map_err(Error::sys("read a reply from the cache socket"))?;
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
            return Err(Error::Cache("the shim sent too many descriptors".into()));
        }
        if bytes == 0 {
            return Err(Error::Cache("the shim closed the cache socket".into()));
        }
        line.extend_from_slice(&chunk[..bytes]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            if end + 1 != line.len() {
                return Err(Error::Cache(format!(
                    "the shim sent more than one reply: {}",
                    quote(&line)
                )));
            }
            line.truncate(end);
            break;
        }
        if line.len() > MAX_LINE {
            return Err(Error::Cache(format!("reply longer than {MAX_LINE} bytes")));
        }
    }
    if fds.len() > 1 {
        return Err(Error::Cache(format!(
            "{} descriptors with one reply",
            fds.len()
        )));
    }
    Ok((decode_reply(&line)?, fds.pop()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Seek, Write};
    use std::os::unix::fs::MetadataExt;
    use std::thread;

    const KEY: &str =
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-0011223344556677";

    fn temp_file(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file.rewind().unwrap();
        file
    }

    #[test]
    fn key_has_its_shape_and_follows_module_and_engine() {
        let engine = wasmtime::Engine::default();
        let a = key(b"\0asm\x01\0\0\0", &engine);
        assert!(valid_key(&a), "{a}");
        assert_eq!(a, key(b"\0asm\x01\0\0\0", &engine));
        assert_ne!(a, key(b"\0asm\x01\0\0\0 ", &engine));
        assert!(a.starts_with("93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476-"));
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let other = wasmtime::Engine::new(&config).unwrap();
        assert_eq!(
            a[..DIGEST_HEX],
            key(b"\0asm\x01\0\0\0", &other)[..DIGEST_HEX]
        );
        assert_ne!(a, key(b"\0asm\x01\0\0\0", &other));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        assert!(valid_key(KEY));
        for bad in [
            "../x",
            "",
            &KEY.to_uppercase(),
            &KEY[1..],
            &format!("{KEY}0"),
            &KEY.replace('-', "0"),
            &format!("../{}", &KEY[3..]),
            &KEY.replacen('0', "/", 1),
            &KEY.replacen('a', "g", 1),
        ] {
            assert!(!valid_key(bad), "{bad}");
            let line = format!("lookup {bad}");
            assert!(decode_request(line.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        for request in [
            Request::Lookup { key: KEY.into() },
            Request::Store {
                key: KEY.into(),
                len: 12345,
            },
        ] {
            let bytes = encode_request(&request);
            let mut reader = BufReader::new(&bytes[..]);
            assert_eq!(read_request(&mut reader).unwrap(), Some(request));
            assert_eq!(read_request(&mut reader).unwrap(), None);
        }
        for reply in [
            Reply::Hit,
            Reply::Miss,
            Reply::Off,
            Reply::Stored,
            Reply::Error("x y".into()),
        ] {
            let bytes = encode_reply(&reply);
            assert_eq!(decode_reply(&bytes[..bytes.len() - 1]).unwrap(), reply);
        }
        let multi = encode_reply(&Reply::Error("a\nb".into()));
        assert_eq!(multi, b"error a b\n");
    }

    #[test]
    fn malformed_requests_are_rejected() {
        for line in [
            format!("lookup {KEY} extra"),
            format!("store {KEY}"),
            format!("store {KEY} +5"),
            format!("store {KEY} -5"),
            format!("store {KEY} 5 5"),
            format!("store {KEY} {}", MAX_ENTRY_BYTES + 1),
            format!("fetch {KEY}"),
            format!("lookup  {KEY}"),
            "lookup".to_string(),
        ] {
            assert!(decode_request(line.as_bytes()).is_err(), "{line}");
        }
        assert!(decode_request(format!("store {KEY} {MAX_ENTRY_BYTES}").as_bytes()).is_ok());
        let unfinished = format!("lookup {KEY}");
        assert!(read_request(&mut BufReader::new(unfinished.as_bytes())).is_err());
        let long = vec![b'a'; MAX_LINE * 2];
        assert!(read_request(&mut BufReader::new(&long[..])).is_err());
    }

    #[test]
    fn fd_path_names_the_descriptor() {
        let file = temp_file(b"abc");
        let path = fd_path(&file).unwrap();
        assert_eq!(
            path,
            PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
        );
        assert_eq!(std::fs::read(path).unwrap(), b"abc");
    }

    #[test]
    fn fd_path_refuses_a_proc_that_is_not_procfs() {
        // An image could ship proc/self/fd/<n> with bytes of its own.
        let file = temp_file(b"compiled");
        let fake = std::env::temp_dir().join(format!("fake-proc-{}", std::process::id()));
        let fds = fake.join("self/fd");
        std::fs::create_dir_all(&fds).unwrap();
        std::fs::write(fds.join(file.as_raw_fd().to_string()), b"from the image").unwrap();
        let refused = fd_path_in(&fake, &file).unwrap_err();
        std::fs::remove_dir_all(&fake).unwrap();
        assert!(refused.to_string().contains("is not procfs"), "{refused}");
    }

    #[test]
    fn only_unix_sockets_are_inherited() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(is_unix_socket(a.as_raw_fd()));
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(!is_unix_socket(r.as_raw_fd()));
    }

    /// A scripted shim: reads each request and answers from `replies`.
    fn fake_shim(
        socket: UnixStream,
        replies: Vec<(Reply, Option<File>)>,
    ) -> thread::JoinHandle<Vec<(Request, Vec<u8>)>> {
        thread::spawn(move || {
            let mut reader = BufReader::new(&socket);
            let mut seen = Vec::new();
            for (reply, file) in replies {
                let Some(request) = read_request(&mut reader).unwrap() else {
                    break;
                };
                let mut payload = Vec::new();
                if let Request::Store { len, .. } = &request {
                    (&mut reader).take(*len).read_to_end(&mut payload).unwrap();
                }
                seen.push((request, payload));
                send_reply(&socket, &reply, file.as_ref()).unwrap();
            }
            seen
        })
    }

    #[test]
    fn miss_then_store_then_hit() {
        let (child, shim) = UnixStream::pair().unwrap();
        let stored = temp_file(b"compiled");
        let inode = stored.metadata().unwrap().ino();
        let server = fake_shim(
            shim,
            vec![
                (Reply::Miss, None),
                (Reply::Stored, Some(stored)),
                (Reply::Hit, Some(temp_file(b"compiled"))),
            ],
        );
        let mut link = CacheLink::from_stream(child);
        assert!(link.lookup(KEY).unwrap().is_none());
        assert!(
            link.lookup(KEY).is_err(),
            "a second lookup before the store"
        );
        let entry = link.store(KEY, b"compiled").unwrap().unwrap();
        assert_eq!(entry.metadata().unwrap().ino(), inode);
        let hit = link.lookup(KEY).unwrap().unwrap();
        assert_eq!(std::fs::read(fd_path(&hit).unwrap()).unwrap(), b"compiled");
        let flags = nix::fcntl::fcntl(&hit, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "received close-on-exec");
        drop(link);
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen[1].0,
            Request::Store {
                key: KEY.into(),
                len: 8
            }
        );
        assert_eq!(seen[1].1, b"compiled");
    }

    #[test]
    fn off_makes_store_a_no_op() {
        let (child, shim) = UnixStream::pair().unwrap();
        let server = fake_shim(shim, vec![(Reply::Off, None)]);
        let mut link = CacheLink::from_stream(child);
        assert!(link.lookup(KEY).unwrap().is_none());
        assert!(link.store(KEY, b"compiled").unwrap().is_none());
        assert!(link.lookup(KEY).unwrap().is_none());
        drop(link);
        assert_eq!(server.join().unwrap().len(), 1);
    }

    #[test]
    fn errors_and_broken_replies_are_errors() {
        let (child, shim) = UnixStream::pair().unwrap();
        let server = fake_shim(shim, vec![(Reply::Error("no space".into()), None)]);
        let mut link = CacheLink::from_stream(child);
        let error = link.lookup(KEY).unwrap_err().to_string();
        assert!(error.contains("no space") && error.contains(KEY), "{error}");
        server.join().unwrap();
        // The shim is gone now: end of file.
        assert!(link.lookup(KEY).is_err());

        let (child, shim) = UnixStream::pair().unwrap();
        let server = fake_shim(shim, vec![(Reply::Hit, None)]);
        let mut link = CacheLink::from_stream(child);
        assert!(link.lookup(KEY).is_err(), "a hit without a descriptor");
        server.join().unwrap();

        let (child, _shim) = UnixStream::pair().unwrap();
        let mut link = CacheLink::from_stream(child);
        assert!(link.store(KEY, b"x").is_err(), "a store without a miss");
        assert!(link.lookup("../x").is_err());
    }
}
