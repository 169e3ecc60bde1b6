//! The compiled-code cache: its directory, entries and locks (here), how
//! entries are written (`store.rs`) and evicted (`evict.rs`), the shim's
//! own compiler (`compiler.rs`), and the server of one child's
//! conversation about it (`server.rs`; the wire format is in
//! `executor::cache`).
//!
//! Only the shim writes the directory, which must be 0700 and the shim's
//! own. Per key it holds `<key>.cwasm`, the entry (0444: the child opens it
//! again through /proc/self/fd with its own, unprivileged, user),
//! `<key>.sha256`, the digest of the bytes the shim wrote, and `<key>.lock`,
//! the empty file whose flock guards the key: shared while an entry is
//! verified and handed out, exclusive from a miss until the shim's
//! compile is stored or given up, so that a module is compiled once while
//! the others wait for its entry, across shim processes too. Entries are written as
//! `<key>.tmp.<pid>.<n>` and renamed into place, and are evicted least
//! recently used first (a hit refreshes the entry's mtime) when the
//! directory's entries exceed the byte bound.
//!
//! Every file is reached through the directory's descriptor, opened and
//! checked once, so renaming the directory away cannot redirect the shim.

mod compiler;
mod evict;
mod server;
mod store;
#[cfg(test)]
mod tests;

pub use compiler::Compiler;
pub use server::{Summary, serve_child};

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use executor::cache as wire;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag, openat};
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::stat::{FileStat, Mode, UtimensatFlags, fchmod, fstat, fstatat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, geteuid, unlinkat};
use sha2::{Digest, Sha256};

/// How often a lookup waiting for a key's lock checks that its child and
/// socket are still there.
const HANGUP_POLL_MS: u16 = 100;
/// How long a child waits for another's compile of the same module before
/// it compiles the module itself, without the cache.
const WAIT_LIMIT: Duration = Duration::from_secs(180);
/// Free space left on the cache's filesystem after an entry is written:
/// an entry that would leave less is not stored.
const FREE_RESERVE: u64 = 256 << 20;

/// The cache directory and its byte bound.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    /// The directory itself, checked at open; every file is reached from it.
    fd: OwnedFd,
    /// A read-only view of the directory (`executor::readonly`): entries
    /// are handed out only through it, so that no holder of an entry's
    /// descriptor or mapping can reopen it for writing or truncate it.
    view: OwnedFd,
    max_bytes: u64,
    /// [`WAIT_LIMIT`] and [`FREE_RESERVE`], smaller in tests.
    wait_limit: Duration,
    free_reserve: u64,
}

/// A key's lock, shared or exclusive; dropping it releases it.
#[derive(Debug)]
pub struct KeyLock {
    _file: Flock<File>,
}

/// How to wait for a key's lock that another holds.
#[derive(Clone, Copy)]
enum Wait<'a> {
    // The shim waits only in conversations, where a hang-up must end the
    // wait; blocking outright is for tests and tools (`Cache::lock`).
    #[cfg_attr(not(test), allow(dead_code))]
    Block,
    Never,
    /// Until the lock is free, the socket hangs up (the child is gone or
    /// the shim shut the conversation down), or the deadline passes.
    UntilHangup(&'a UnixStream, Instant),
}

impl Cache {
    /// Opens the cache at `dir`, creating it 0700 if it is missing. A
    /// directory that anyone but the shim's user owns, or whose mode is not
    /// 0700, is refused: whoever can write it could have the shim hand out
    /// code to run.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Cache> {
        let existed = dir.symlink_metadata().is_ok();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create cache directory {}", dir.display()))?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(dir, flags, Mode::empty()).with_context(|| {
            format!(
                "open cache directory {} (it must not be a symlink)",
                dir.display()
            )
        })?;
        if !existed {
            // The umask may have taken bits from a directory we just made.
            fchmod(&fd, Mode::from_bits_truncate(0o700))
                .with_context(|| format!("chmod cache directory {}", dir.display()))?;
        }
        let stat = fstat(&fd).with_context(|| format!("stat cache directory {}", dir.display()))?;
        let euid = geteuid().as_raw();
        if stat.st_uid != euid {
            bail!(
                "cache directory {} is owned by uid {}, not by the shim's uid {euid}: refusing to use it",
                dir.display(),
                stat.st_uid
            );
        }
        let mode = stat.st_mode & 0o7777;
        if mode != 0o700 {
            bail!(
                "cache directory {} has mode {mode:04o}, not 0700: refusing to use it",
                dir.display()
            );
        }
        let view = executor::readonly::view(&fd, c"").map_err(|e| {
            anyhow!(
                "cache directory {}: {} (entries are handed out only read-only)",
                dir.display(),
                e.chain()
            )
        })?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            fd,
            view,
            max_bytes,
            wait_limit: WAIT_LIMIT,
            free_reserve: FREE_RESERVE,
        })
    }

    /// The verified entry of `key`, its mtime refreshed; `None` when there
    /// is none or it was corrupt (then it is gone). Blocks while the key is
    /// being written. (Children are served by [`serve_child`], whose waits
    /// end when the child goes; this and [`lock`](Self::lock) are for
    /// tests and tools.)
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn lookup(&self, key: &str) -> Result<Option<File>> {
        check_key(key)?;
        let _shared = self.acquire(key, false, Wait::Block)?;
        self.lookup_locked(key)
    }

    /// The key's exclusive lock, which [`store`](Self::store) requires;
    /// blocks until every other holder lets go.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn lock(&self, key: &str) -> Result<KeyLock> {
        check_key(key)?;
        self.acquire(key, true, Wait::Block)?
            .ok_or_else(|| anyhow!("lock of cache key {key} not taken"))
    }

    /// The bytes of every entry, as eviction counts them.
    pub fn size(&self) -> u64 {
        match self.list() {
            Ok(listing) => listing.entries.iter().map(|e| e.size).sum(),
            Err(e) => {
                log::warn!("{e:#}");
                0
            }
        }
    }

    /// The entry of `key` if it matches its recorded digest; a corrupt one
    /// is removed. The caller holds the key's lock, shared or exclusive.
    fn lookup_locked(&self, key: &str) -> Result<Option<File>> {
        let Some(entry) = self.open_entry(key)? else {
            return Ok(None);
        };
        let path = self.path(&entry_name(key));
        if let Some(problem) = self.problem(key, &entry)? {
            log::warn!(
                "cache entry {} is corrupt ({problem}): removing it, the module will be compiled again",
                path.display()
            );
            self.remove(&entry_name(key));
            self.remove(&digest_name(key));
            return Ok(None);
        }
        // Least recently used is least recently handed out. Through the
        // writable directory: the entry itself is open on the view.
        let now = &TimeSpec::UTIME_NOW;
        let flag = UtimensatFlags::NoFollowSymlink;
        if let Err(e) = utimensat(&self.fd, entry_name(key).as_str(), now, now, flag) {
            log::debug!("touch {}: {e}", path.display());
        }
        Ok(Some(entry))
    }

    /// Why `entry` must not be handed out, if it must not.
    fn problem(&self, key: &str, entry: &File) -> Result<Option<String>> {
        let path = self.path(&entry_name(key));
        let stat = fstat(entry).with_context(|| format!("stat {}", path.display()))?;
        if !is_regular(&stat) {
            return Ok(Some("not a regular file".into()));
        }
        let Some(recorded) = self.recorded_digest(key)? else {
            return Ok(Some(format!(
                "its digest {} is missing or malformed",
                self.path(&digest_name(key)).display()
            )));
        };
        let actual = digest_of(entry).with_context(|| format!("read {}", path.display()))?;
        if actual != recorded {
            return Ok(Some(format!(
                "its sha256 is {actual}, the recorded one {recorded}"
            )));
        }
        Ok(None)
    }

    /// The digest recorded for `key`: 64 lowercase hex digits and a newline,
    /// else `None`.
    fn recorded_digest(&self, key: &str) -> Result<Option<String>> {
        let name = digest_name(key);
        let file = match self.open_at(&name, OFlag::O_RDONLY, 0) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("open {}", self.path(&name).display()));
            }
        };
        let mut text = String::new();
        // Anything longer than a digest and its newline is not one.
        let read = file.take(66).read_to_string(&mut text);
        if read.is_err() {
            return Ok(None);
        }
        Ok(text
            .strip_suffix('\n')
            .filter(|digest| wire::is_hex(digest, 64))
            .map(str::to_string))
    }

    /// Opens `<key>.cwasm` through the read-only view; `None` when there
    /// is none.
    fn open_entry(&self, key: &str) -> Result<Option<File>> {
        let name = entry_name(key);
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        match openat(&self.view, name.as_str(), flags, Mode::empty()) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("open {}", self.path(&name).display())),
        }
    }

    /// Takes the lock of `key`. `None` when `wait` gave up: the lock is held
    /// elsewhere (`Never`) or the socket hung up (`UntilHangup`).
    fn acquire(&self, key: &str, exclusive: bool, wait: Wait) -> Result<Option<KeyLock>> {
        let name = lock_name(key);
        let arg = match (exclusive, wait) {
            (true, Wait::Block) => FlockArg::LockExclusive,
            (true, _) => FlockArg::LockExclusiveNonblock,
            (false, Wait::Block) => FlockArg::LockShared,
            (false, _) => FlockArg::LockSharedNonblock,
        };
        loop {
            let file = self
                .open_at(&name, OFlag::O_RDWR | OFlag::O_CREAT, 0o600)
                .map(File::from)
                .with_context(|| format!("open {}", self.path(&name).display()))?;
            let locked = match Flock::lock(file, arg) {
                Ok(locked) => locked,
                Err((_, Errno::EINTR)) => continue,
                Err((_, Errno::EWOULDBLOCK)) => match wait {
                    Wait::UntilHangup(socket, deadline)
                        if Instant::now() < deadline && !hung_up(socket) =>
                    {
                        continue;
                    }
                    _ => return Ok(None),
                },
                Err((_, e)) => {
                    return Err(e).with_context(|| format!("flock {}", self.path(&name).display()));
                }
            };
            // Eviction unlinks a key's lock file under its lock; a lock on a
            // file that is no longer the key's guards nothing, so take the
            // new one.
            if self.still_linked(&name, &locked)? {
                return Ok(Some(KeyLock { _file: locked }));
            }
        }
    }

    fn still_linked(&self, name: &str, file: &File) -> Result<bool> {
        let held = fstat(file).with_context(|| format!("stat {}", self.path(name).display()))?;
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(now) => Ok(now.st_dev == held.st_dev && now.st_ino == held.st_ino),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("stat {}", self.path(name).display())),
        }
    }

    /// Unlinks `name`; true if it was there. A failure is logged: the file
    /// is left for the next eviction.
    fn remove(&self, name: &str) -> bool {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => true,
            Err(Errno::ENOENT) => false,
            Err(e) => {
                log::warn!("remove {}: {e}", self.path(name).display());
                false
            }
        }
    }

    fn open_at(&self, name: &str, flags: OFlag, mode: u32) -> nix::Result<OwnedFd> {
        let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        openat(&self.fd, name, flags, Mode::from_bits_truncate(mode))
    }

    /// The path of `name`, for messages.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn entry_name(key: &str) -> String {
    format!("{key}.cwasm")
}

fn digest_name(key: &str) -> String {
    format!("{key}.sha256")
}

fn lock_name(key: &str) -> String {
    format!("{key}.lock")
}

fn is_temp(key: &str, name: &str) -> bool {
    name.strip_prefix(key)
        .is_some_and(|rest| rest.starts_with(".tmp."))
}

fn check_key(key: &str) -> Result<()> {
    if !wire::valid_key(key) {
        bail!("invalid cache key {key:?}");
    }
    Ok(())
}

fn is_regular(stat: &FileStat) -> bool {
    stat.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// The sha256 of a whole file, hex, read without moving its offset.
fn digest_of(file: &File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0;
    loop {
        match file.read_at(&mut buffer, offset) {
            Ok(0) => return Ok(wire::hex(&hasher.finalize())),
            Ok(n) => {
                hasher.update(&buffer[..n]);
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits up to [`HANGUP_POLL_MS`] for the socket to hang up: the child
/// closed its end, or the shim shut the conversation down.
fn hung_up(socket: &UnixStream) -> bool {
    // No events asked for: only POLLHUP, POLLERR and POLLNVAL end the wait.
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, HANGUP_POLL_MS), Ok(n) if n > 0)
}
