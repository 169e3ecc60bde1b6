//! The child's end of the conversation with the shim's cache, and the
//! path through which wasmtime maps an entry it was handed.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{SockType, UnixAddr, getsockname, getsockopt, sockopt};

use super::wire::{quote, recv_reply, send_request};
use super::{Compile, ENGINE_HEX, Reply, Request, is_hex};
use crate::error::{Error, Result};
use crate::protocol::CACHE_FD;

/// The path wasmtime's `deserialize_file` opens for a descriptor. Opening
/// it opens the file again, read-only, with the child's own permissions.
/// In the container, `/proc` is whatever the spec and the image make it:
/// the path is given only when `/proc` is procfs and the path leads to the
/// descriptor's own file, so that bytes from the image are never taken for
/// the entry.
pub fn fd_path(file: &File) -> std::io::Result<PathBuf> {
    fd_path_in(Path::new("/proc"), file)
}

pub(super) fn fd_path_in(proc: &Path, file: &File) -> std::io::Result<PathBuf> {
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

/// The child's end of the conversation with the shim's cache.
#[derive(Debug)]
pub struct CacheLink {
    socket: UnixStream,
    /// The one lookup of the conversation was asked.
    asked: bool,
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
            asked: false,
        }
    }

    /// Asks for the entry of `module` (its bytes) compiled for the engine
    /// whose key part is `engine` as `compile` says: the shim answers with
    /// the entry it has, or compiles the module in its own compiler and
    /// answers with the new entry. `Ok(None)` when it has no entry to give
    /// (no cache, or no compile): the child then compiles alone.
    pub fn lookup(
        &mut self,
        module: &[u8],
        engine: &str,
        compile: Compile,
    ) -> Result<Option<File>> {
        if std::mem::replace(&mut self.asked, true) {
            return Err(Error::Cache("one lookup per conversation".into()));
        }
        if !is_hex(engine, ENGINE_HEX) {
            return Err(Error::Cache(format!(
                "invalid engine hash {}",
                quote(engine.as_bytes())
            )));
        }
        let sealed = crate::readonly::sealed(c"module", &mut &module[..], "the module")?;
        let request = Request::Lookup {
            engine: engine.to_string(),
            compile,
        };
        send_request(&self.socket, &request, &sealed)?;
        drop(sealed);
        match recv_reply(&self.socket)? {
            (Reply::Hit | Reply::Stored, Some(fd)) => entry_file(fd).map(Some),
            (Reply::Off, None) => Ok(None),
            (Reply::Error(message), None) => Err(Error::Cache(format!(
                "lookup: the shim answered: {message}"
            ))),
            (reply, fd) => {
                let with = if fd.is_some() { "with" } else { "without" };
                Err(Error::Cache(format!(
                    "lookup: unexpected reply {reply:?} {with} a descriptor"
                )))
            }
        }
    }
}

/// True when `fd` is an open unix-domain socket.
pub(super) fn is_unix_socket(fd: RawFd) -> bool {
    getsockname::<UnixAddr>(fd).is_ok()
}

/// A descriptor the shim sent must be a regular file to be an entry.
fn entry_file(fd: OwnedFd) -> Result<File> {
    let stat = nix::sys::stat::fstat(&fd).map_err(Error::sys("stat the cache entry"))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::Cache("the cache entry is not a regular file".into()));
    }
    Ok(File::from(fd))
}
