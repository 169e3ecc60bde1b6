//! The compiled-code cache: its directory, and the server of one child's
//! conversation about it (the wire format is in `executor::cache`).
//!
//! Only the shim writes the directory, which must be 0700 and the shim's
//! own. Per key it holds `<key>.cwasm`, the entry (0444: the child opens it
//! again through /proc/self/fd with its own, unprivileged, user),
//! `<key>.sha256`, the digest of the bytes the shim wrote, and `<key>.lock`,
//! the empty file whose flock guards the key: shared while an entry is
//! verified and handed out, exclusive from a miss until the child's store
//! or hang-up, so that one container compiles a module while the others
//! wait for its entry, across shim processes too. Entries are written as
//! `<key>.tmp.<pid>.<n>` and renamed into place, and are evicted least
//! recently used first (a hit refreshes the entry's mtime) when the
//! directory's entries exceed the byte bound.
//!
//! Every file is reached through the directory's descriptor, opened and
//! checked once, so renaming the directory away cannot redirect the shim.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use executor::cache::{self as wire, Reply, Request};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag, openat, renameat};
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::stat::{FileStat, Mode, UtimensatFlags, fchmod, fstat, fstatat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, fsync, geteuid, unlinkat};
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

/// What a child's lookup found.
enum Found {
    Hit(File),
    /// No valid entry; the key's exclusive lock is held for the child.
    Miss(KeyLock),
    /// The socket hung up while the lookup waited for the key's lock.
    HungUp,
    /// Another compile of the module held the key's lock past the limit.
    WaitedTooLong,
}

/// A file being written, removed unless it is renamed into place.
struct Temp<'a> {
    cache: &'a Cache,
    name: String,
    file: File,
    renamed: bool,
}

/// The directory's files, by what they are.
#[derive(Default)]
struct Listing {
    entries: Vec<Listed>,
    /// Every other file of the cache (digests, locks, temps), by key.
    others: BTreeMap<String, Vec<String>>,
}

struct Listed {
    key: String,
    size: u64,
    mtime: (i64, i64),
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

    /// Writes exactly `len` bytes from `bytes` as the entry of `key` and
    /// returns it open read-only, then evicts other entries over the bound.
    /// The caller holds the key's [`lock`](Self::lock). On failure nothing
    /// of the attempt is left in the directory.
    pub fn store(&self, key: &str, bytes: impl Read, len: u64) -> Result<File> {
        check_key(key)?;
        if len > wire::MAX_ENTRY_BYTES.min(self.max_bytes) {
            bail!(
                "cache entry {key}: {len} bytes is over the limit of {}",
                wire::MAX_ENTRY_BYTES.min(self.max_bytes)
            );
        }
        self.check_held(key)?;
        self.check_space(len)?;
        // Room first, so the directory stays within its bound while the
        // entry is written.
        self.evict(key, len);
        let entry = self.temp(key, "", 0o444)?;
        let digest = copy_exactly(bytes, &entry.file, len)
            .with_context(|| format!("write {}", self.path(&entry.name).display()))?;
        entry
            .file
            .sync_all()
            .with_context(|| format!("fsync {}", self.path(&entry.name).display()))?;
        let mut record = self.temp(key, ".sha256", 0o400)?;
        record
            .file
            .write_all(format!("{digest}\n").as_bytes())
            .and_then(|()| record.file.sync_all())
            .with_context(|| format!("write {}", self.path(&record.name).display()))?;
        // The digest goes first: an entry is never in place without the
        // digest of its own bytes, and a crash between the two leaves a
        // digest that the old entry, if any, fails.
        record.rename_to(&digest_name(key))?;
        entry.rename_to(&entry_name(key))?;
        fsync(&self.fd).with_context(|| format!("fsync {}", self.dir.display()))?;
        let stored = self.open_entry(key)?.ok_or_else(|| {
            anyhow!(
                "{} vanished after its rename",
                self.path(&entry_name(key)).display()
            )
        })?;
        // Other shims may have stored meanwhile.
        self.evict(key, 0);
        Ok(stored)
    }

    /// Refuses an entry of `len` bytes that would leave the filesystem
    /// with less than [`FREE_RESERVE`] free: a full disk must never leave
    /// half an entry, and the cache must not take what others need.
    fn check_space(&self, len: u64) -> Result<()> {
        let stat = nix::sys::statvfs::fstatvfs(&self.fd)
            .with_context(|| format!("statvfs {}", self.dir.display()))?;
        let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        if free < len.saturating_add(self.free_reserve) {
            bail!(
                "{} has {free} bytes free: not enough for an entry of {len} bytes and {} to spare",
                self.dir.display(),
                self.free_reserve
            );
        }
        Ok(())
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

    /// A child's lookup: verified under the shared lock, so containers that
    /// start the same module read its entry at once; on a miss, again under
    /// the exclusive lock, which the child then keeps until it stores.
    fn lookup_for(&self, key: &str, socket: &UnixStream) -> Result<Found> {
        check_key(key)?;
        let deadline = Instant::now() + self.wait_limit;
        let wait = Wait::UntilHangup(socket, deadline);
        let gave_up = || match Instant::now() >= deadline {
            true => Found::WaitedTooLong,
            false => Found::HungUp,
        };
        let Some(shared) = self.acquire(key, false, wait)? else {
            return Ok(gave_up());
        };
        if let Some(entry) = self.lookup_locked(key)? {
            return Ok(Found::Hit(entry));
        }
        drop(shared);
        let Some(exclusive) = self.acquire(key, true, wait)? else {
            return Ok(gave_up());
        };
        // Another child may have stored the entry while this one waited.
        Ok(match self.lookup_locked(key)? {
            Some(entry) => Found::Hit(entry),
            None => Found::Miss(exclusive),
        })
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

    /// Refuses a store by a caller that does not hold the key's exclusive
    /// lock: without it two writers could interleave digest and entry.
    fn check_held(&self, key: &str) -> Result<()> {
        let name = lock_name(key);
        let not_held = || anyhow!("store of cache key {key} without its lock");
        let file = match self.open_at(&name, OFlag::O_RDONLY, 0) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Err(not_held()),
            Err(e) => {
                return Err(e).with_context(|| format!("open {}", self.path(&name).display()));
            }
        };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => Err(not_held()),
            Err((_, Errno::EWOULDBLOCK)) => Ok(()),
            Err((_, e)) => Err(e).with_context(|| format!("flock {}", self.path(&name).display())),
        }
    }

    /// Creates `<key>.tmp.<pid>.<n><suffix>` for writing, with `mode`.
    fn temp(&self, key: &str, suffix: &str, mode: u32) -> Result<Temp<'_>> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{key}.tmp.{}.{n}{suffix}", std::process::id());
            let fd = match self.open_at(&name, flags, 0o600) {
                Ok(fd) => fd,
                // A leftover of an earlier process with our pid.
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("create {}", self.path(&name).display()));
                }
            };
            let temp = Temp {
                cache: self,
                name,
                file: File::from(fd),
                renamed: false,
            };
            // Set after creation: the shim's umask must not narrow it.
            fchmod(&temp.file, Mode::from_bits_truncate(mode))
                .with_context(|| format!("chmod {}", self.path(&temp.name).display()))?;
            return Ok(temp);
        }
    }

    /// Evicts the least recently used entries until the entries and
    /// `incoming` more bytes fit the bound, never `keep` nor an entry whose
    /// lock someone holds, and removes the leftovers of crashed writers
    /// and abandoned misses.
    fn evict(&self, keep: &str, incoming: u64) {
        let listing = match self.list() {
            Ok(listing) => listing,
            Err(e) => {
                log::warn!("{e:#}");
                return;
            }
        };
        let with_entry: BTreeSet<&str> = listing.entries.iter().map(|e| e.key.as_str()).collect();
        for (key, names) in &listing.others {
            let stale_temp = names.iter().any(|name| is_temp(key, name));
            if key == keep || (with_entry.contains(key.as_str()) && !stale_temp) {
                continue;
            }
            // Only a writer holding the key's lock has temp files, and only
            // a miss in progress needs a lock file without an entry.
            if let Ok(Some(_lock)) = self.acquire(key, true, Wait::Never) {
                for name in names.iter().filter(|name| is_temp(key, name)) {
                    self.remove(name);
                }
                if !with_entry.contains(key.as_str())
                    && self.open_entry(key).ok().flatten().is_none()
                {
                    self.remove(&digest_name(key));
                    self.remove(&lock_name(key));
                }
            }
        }
        let mut total: u64 = listing.entries.iter().map(|e| e.size).sum::<u64>() + incoming;
        if total <= self.max_bytes {
            return;
        }
        let mut entries = listing.entries;
        entries.sort_by_key(|e| e.mtime);
        let (mut evicted, mut freed) = (0, 0);
        for listed in entries {
            if total <= self.max_bytes {
                break;
            }
            if listed.key == keep {
                continue;
            }
            match self.acquire(&listed.key, true, Wait::Never) {
                Ok(Some(_lock)) => {
                    if self.remove(&entry_name(&listed.key)) {
                        total -= listed.size;
                        freed += listed.size;
                        evicted += 1;
                    }
                    self.remove(&digest_name(&listed.key));
                    self.remove(&lock_name(&listed.key));
                }
                // In use right now: hardly the least recently used.
                Ok(None) => {}
                Err(e) => log::warn!("evict cache entry {}: {e:#}", listed.key),
            }
        }
        log::debug!(
            "cache {}: evicted {evicted} entries ({freed} bytes), {total} bytes left of {}",
            self.dir.display(),
            self.max_bytes
        );
    }

    /// The cache's files; names that are not of a valid key are ignored.
    fn list(&self) -> Result<Listing> {
        // Through the descriptor, the directory this cache checked at open.
        let path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        let context = || format!("list cache directory {}", self.dir.display());
        let mut listing = Listing::default();
        for dirent in std::fs::read_dir(&path).with_context(context)? {
            let dirent = dirent.with_context(context)?;
            let Some(name) = dirent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(key) = name.get(..wire::KEY_LEN).filter(|key| wire::valid_key(key)) else {
                continue;
            };
            let key = key.to_string();
            if &name[wire::KEY_LEN..] != ".cwasm" {
                listing.others.entry(key).or_default().push(name);
                continue;
            }
            match fstatat(&self.fd, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) if is_regular(&stat) => listing.entries.push(Listed {
                    key,
                    size: stat.st_size as u64,
                    mtime: (stat.st_mtime, stat.st_mtime_nsec),
                }),
                Ok(_) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("stat {}", self.path(&name).display()));
                }
            }
        }
        Ok(listing)
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

impl Temp<'_> {
    fn rename_to(mut self, name: &str) -> Result<()> {
        let cache = self.cache;
        renameat(&cache.fd, self.name.as_str(), &cache.fd, name).with_context(|| {
            format!(
                "rename {} to {}",
                cache.path(&self.name).display(),
                cache.path(name).display()
            )
        })?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            self.cache.remove(&self.name);
        }
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

/// Copies exactly `len` bytes into `file` and returns their sha256, hex.
fn copy_exactly(mut from: impl Read, mut file: &File, len: u64) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match from.read(&mut buffer[..want]) {
            Ok(0) => bail!("the input ended after {} of {len} bytes", len - left),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("read the compiled code"),
        };
        hasher.update(&buffer[..n]);
        file.write_all(&buffer[..n])?;
        left -= n as u64;
    }
    Ok(wire::hex(&hasher.finalize()))
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

// The server.

/// How a conversation ended, for its one debug line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The child hung up without asking anything.
    Silent,
    /// No cache: the child was told so.
    Off,
    Hit,
    Stored {
        bytes: u64,
        millis: u128,
    },
    /// The child missed and never stored (its compile failed, or it died).
    MissAbandoned,
    /// The socket hung up while the lookup waited for the key's lock.
    Interrupted,
    /// Another compile held the key's lock past the limit: the child was
    /// told to compile without the cache.
    WaitedTooLong,
}

/// What happened in one child's conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub key: Option<String>,
    pub outcome: Outcome,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key.as_deref().unwrap_or("-");
        match &self.outcome {
            Outcome::Silent => write!(f, "no request"),
            Outcome::Off => write!(f, "off"),
            Outcome::Hit => write!(f, "hit {key}"),
            Outcome::Stored { bytes, millis } => {
                write!(f, "stored {key} ({bytes} bytes in {millis} ms)")
            }
            Outcome::MissAbandoned => write!(f, "miss {key}, nothing stored"),
            Outcome::Interrupted => write!(f, "lookup {key} ended while waiting for its lock"),
            Outcome::WaitedTooLong => write!(
                f,
                "lookup {key} waited {WAIT_LIMIT:?} (or its test limit) for another compile of the module: compiled without the cache"
            ),
        }
    }
}

/// Serves one child's conversation until it closes its end or the socket
/// is shut down (blocking: run it on a blocking thread). `what` names the
/// task in logs. The outcome is logged here, at info, or the failure at
/// warn; the result is for tests. The socket is shut down on return, so a
/// child still talking sees the end even if the caller keeps a clone.
pub fn serve_child(cache: Option<&Cache>, socket: UnixStream, what: &str) -> Result<Summary> {
    let result = converse(cache, &socket);
    let _ = socket.shutdown(Shutdown::Both);
    match &result {
        Ok(
            summary @ Summary {
                outcome: Outcome::Stored { .. },
                ..
            },
        ) => {
            let size = cache.map_or(0, Cache::size);
            log::info!("{what}: compiled-code cache: {summary}, {size} bytes in the cache");
        }
        Ok(summary) => log::info!("{what}: compiled-code cache: {summary}"),
        Err(e) => log::warn!("{what}: compiled-code cache: {e:#}"),
    }
    result
}

fn converse(cache: Option<&Cache>, socket: &UnixStream) -> Result<Summary> {
    let mut reader = BufReader::new(socket);
    let mut summary = Summary {
        key: None,
        outcome: Outcome::Silent,
    };
    // The key that missed and its exclusive lock, held until the store.
    let mut missed: Option<(String, KeyLock)> = None;
    loop {
        let request = match wire::read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(e) => return refuse(socket, anyhow::Error::from(e)),
        };
        let key = match &request {
            Request::Lookup { key } | Request::Store { key, .. } => key,
        };
        // A conversation is about the one module its child loads: a child
        // that names another key is refused, so it can store for no other.
        if let Some(first) = summary.key.as_ref().filter(|first| *first != key) {
            return refuse(
                socket,
                anyhow!("{key} after {first}: one module per conversation"),
            );
        }
        match request {
            Request::Lookup { key } => {
                summary.key = Some(key.clone());
                if let Some((pending, _)) = &missed {
                    return refuse(
                        socket,
                        anyhow!("lookup {key} while the miss of {pending} awaits its store"),
                    );
                }
                let Some(cache) = cache else {
                    reply(socket, &Reply::Off, None)?;
                    summary.outcome = Outcome::Off;
                    continue;
                };
                match cache.lookup_for(&key, socket) {
                    Ok(Found::Hit(entry)) => {
                        // A child whose forked compiler just stored the
                        // entry looks it up again: that start compiled.
                        if !matches!(summary.outcome, Outcome::Stored { .. }) {
                            summary.outcome = Outcome::Hit;
                        }
                        reply(socket, &Reply::Hit, Some(&entry))?;
                    }
                    Ok(Found::Miss(lock)) => {
                        missed = Some((key, lock));
                        summary.outcome = Outcome::MissAbandoned;
                        reply(socket, &Reply::Miss, None)?;
                    }
                    Ok(Found::HungUp) => {
                        summary.outcome = Outcome::Interrupted;
                        break;
                    }
                    Ok(Found::WaitedTooLong) => {
                        summary.outcome = Outcome::WaitedTooLong;
                        reply(socket, &Reply::Off, None)?;
                    }
                    Err(e) => return refuse(socket, e.context(format!("lookup {key}"))),
                }
            }
            Request::Store { key, len } => {
                summary.key = Some(key.clone());
                let (Some(cache), Some((pending, lock))) = (cache, missed.take()) else {
                    return refuse(socket, anyhow!("store {key} without a miss for it"));
                };
                if pending != key {
                    return refuse(socket, anyhow!("store {key} after the miss of {pending}"));
                }
                let started = Instant::now();
                let entry = match cache.store(&key, (&mut reader).take(len), len) {
                    Ok(entry) => entry,
                    Err(e) => {
                        return refuse(socket, e.context(format!("store {key} from the child")));
                    }
                };
                drop(lock);
                summary.outcome = Outcome::Stored {
                    bytes: len,
                    millis: started.elapsed().as_millis(),
                };
                reply(socket, &Reply::Stored, Some(&entry))?;
            }
        }
    }
    Ok(summary)
}

fn reply(socket: &UnixStream, reply: &Reply, entry: Option<&File>) -> Result<()> {
    wire::send_reply(socket, reply, entry).context("answer the child")
}

/// Tells the child why its conversation ends, if it is still there.
fn refuse(socket: &UnixStream, error: anyhow::Error) -> Result<Summary> {
    let _ = wire::send_reply(socket, &Reply::Error(format!("{error:#}")), None);
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor::cache::{CacheLink, fd_path};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Barrier;
    use std::thread;
    use std::time::{Duration, SystemTime};

    /// What a test does to an entry, named for its messages.
    type Corruption<'a> = (&'a str, Box<dyn Fn() + 'a>);

    fn key(n: u8) -> String {
        format!("{n:064x}-{:016x}", 0xfeed_u64)
    }

    fn new_cache(max_bytes: u64) -> (tempfile::TempDir, Cache) {
        let temp = tempfile::tempdir().unwrap();
        let cache = Cache::open(&temp.path().join("cache"), max_bytes).unwrap();
        (temp, cache)
    }

    fn read(file: &File) -> Vec<u8> {
        std::fs::read(fd_path(file).unwrap()).unwrap()
    }

    fn names(cache: &Cache) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&cache.dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// The files of one stored key, in the order `names` lists them.
    fn files_of(key: &str) -> [String; 3] {
        [entry_name(key), lock_name(key), digest_name(key)]
    }

    fn temps(cache: &Cache) -> Vec<String> {
        names(cache)
            .into_iter()
            .filter(|n| n.contains(".tmp."))
            .collect()
    }

    /// Runs `child` on a link to a server thread; returns both results.
    fn converse_with<T>(
        cache: Option<&Cache>,
        child: impl FnOnce(&mut CacheLink) -> T,
    ) -> (T, Result<Summary>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        thread::scope(|s| {
            let server = s.spawn(move || serve_child(cache, theirs, "task test"));
            let mut link = CacheLink::from_stream(ours);
            let got = child(&mut link);
            drop(link);
            (got, server.join().unwrap())
        })
    }

    fn store_direct(cache: &Cache, key: &str, bytes: &[u8]) -> File {
        let _lock = cache.lock(key).unwrap();
        cache.store(key, bytes, bytes.len() as u64).unwrap()
    }

    fn set_mtime(cache: &Cache, key: &str, ago: u64) {
        let file = File::open(cache.path(&entry_name(key))).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(ago))
            .unwrap();
    }

    /// Sends raw lines as a broken or hostile child would.
    fn raw_exchange(stream: &mut UnixStream, line: &[u8]) -> String {
        stream.write_all(line).unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8];
        while stream.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            reply.push(byte[0]);
        }
        String::from_utf8(reply).unwrap()
    }

    #[test]
    fn round_trip_stores_then_hits() {
        let (_temp, cache) = new_cache(1 << 20);
        let k = key(1);
        let (stored, summary) = converse_with(Some(&cache), |link| {
            assert!(link.lookup(&k).unwrap().is_none());
            link.store(&k, b"compiled code").unwrap().unwrap()
        });
        assert_eq!(read(&stored), b"compiled code");
        let mode = nix::fcntl::fcntl(&stored, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(mode & libc::O_ACCMODE, libc::O_RDONLY);
        // Whoever holds the entry (a child, or anyone who took its fd)
        // cannot reopen it for writing, whatever its capabilities.
        let reopen = std::fs::OpenOptions::new()
            .append(true)
            .open(fd_path(&stored).unwrap())
            .unwrap_err();
        assert_eq!(reopen.raw_os_error(), Some(Errno::EROFS as i32), "{reopen}");
        let summary = summary.unwrap();
        assert_eq!(summary.key.as_deref(), Some(k.as_str()));
        assert!(
            matches!(summary.outcome, Outcome::Stored { bytes: 13, .. }),
            "{summary}"
        );
        let meta = std::fs::metadata(cache.path(&entry_name(&k))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        assert_eq!(names(&cache), files_of(&k));

        let (hit, summary) = converse_with(Some(&cache), |link| link.lookup(&k).unwrap().unwrap());
        assert_eq!(read(&hit), b"compiled code");
        assert_eq!(summary.unwrap().outcome, Outcome::Hit);
        assert_eq!(cache.size(), 13);
        assert_eq!(read(&cache.lookup(&k).unwrap().unwrap()), b"compiled code");
    }

    #[test]
    fn no_cache_answers_off() {
        let k = key(2);
        let (stored, summary) = converse_with(None, |link| {
            assert!(link.lookup(&k).unwrap().is_none());
            link.store(&k, b"code").unwrap()
        });
        assert!(stored.is_none());
        assert_eq!(summary.unwrap().outcome, Outcome::Off);
    }

    #[test]
    fn corrupt_entries_are_compiled_again() {
        let (_temp, cache) = new_cache(1 << 20);
        let k = key(3);
        let code = b"the compiled code of a module".to_vec();
        store_direct(&cache, &k, &code);
        let entry = cache.path(&entry_name(&k));
        let digest = cache.path(&digest_name(&k));
        let writable = |path: &Path| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap()
        };
        let corruptions: Vec<Corruption> = vec![
            (
                "truncated",
                Box::new(|| {
                    writable(&entry);
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&entry)
                        .unwrap()
                        .set_len(5)
                        .unwrap();
                }),
            ),
            (
                "a byte flipped",
                Box::new(|| {
                    writable(&entry);
                    let mut bytes = std::fs::read(&entry).unwrap();
                    bytes[10] ^= 0x40;
                    std::fs::write(&entry, bytes).unwrap();
                }),
            ),
            (
                "digest missing",
                Box::new(|| std::fs::remove_file(&digest).unwrap()),
            ),
            (
                "digest short",
                Box::new(|| {
                    writable(&digest);
                    std::fs::write(&digest, "0123\n").unwrap();
                }),
            ),
        ];
        for (what, corrupt) in corruptions {
            corrupt();
            let ((), summary) = converse_with(Some(&cache), |link| {
                assert!(link.lookup(&k).unwrap().is_none(), "{what}: a miss");
                assert!(!entry.exists(), "{what}: the entry is removed");
                let stored = link.store(&k, &code).unwrap().unwrap();
                assert_eq!(read(&stored), code, "{what}");
            });
            assert!(
                matches!(summary.unwrap().outcome, Outcome::Stored { .. }),
                "{what}"
            );
            let (hit, _) = converse_with(Some(&cache), |link| link.lookup(&k).unwrap());
            assert_eq!(read(&hit.unwrap()), code, "{what}: a hit again");
        }
    }

    #[test]
    fn eviction_drops_least_recently_used_and_keeps_the_new_entry() {
        let (_temp, cache) = new_cache(250);
        let (a, b, c) = (key(10), key(11), key(12));
        store_direct(&cache, &a, &[1; 100]);
        store_direct(&cache, &b, &[2; 100]);
        set_mtime(&cache, &a, 300);
        set_mtime(&cache, &b, 200);
        // A hit makes `a` the most recently used.
        assert!(cache.lookup(&a).unwrap().is_some());
        store_direct(&cache, &c, &[3; 100]);
        let left = names(&cache);
        assert!(
            left.contains(&entry_name(&a)) && left.contains(&entry_name(&c)),
            "{left:?}"
        );
        assert!(!left.iter().any(|n| n.starts_with(&b)), "{left:?}");
        assert_eq!(cache.size(), 200);

        // An entry larger than the bound is not stored: the bound holds.
        let small = Cache::open(&cache.dir, 50).unwrap();
        let d = key(13);
        let _lock = small.lock(&d).unwrap();
        let error = small.store(&d, &[4u8; 100][..], 100).unwrap_err();
        assert!(
            format!("{error:#}").contains("over the limit of 50"),
            "{error:#}"
        );
        let left = names(&small);
        assert!(
            !left
                .iter()
                .any(|n| n.starts_with(&d) && !n.ends_with(".lock")),
            "{left:?}"
        );
    }

    #[test]
    fn a_conversation_cannot_store_for_another_module() {
        let (_temp, cache) = new_cache(1 << 20);
        let (k, other) = (key(42), key(43));
        let ((), summary) = converse_with(Some(&cache), |link| {
            assert!(link.lookup(&k).unwrap().is_none());
            link.store(&k, b"code of k").unwrap().unwrap();
            assert!(link.lookup(&other).is_err(), "a second module's lookup");
        });
        let error = summary.unwrap_err();
        assert!(
            format!("{error:#}").contains("one module per conversation"),
            "{error:#}"
        );
        assert!(cache.lookup(&other).unwrap().is_none());
    }

    #[test]
    fn a_lookup_stops_waiting_for_anothers_compile_and_compiles_alone() {
        let (_temp, mut cache) = new_cache(1 << 20);
        cache.wait_limit = Duration::from_millis(300);
        let k = key(40);
        // Another child's compile of the same module, which never ends.
        let _held = cache.lock(&k).unwrap();
        let (stored, summary) = converse_with(Some(&cache), |link| {
            assert!(link.lookup(&k).unwrap().is_none());
            link.store(&k, b"code").unwrap()
        });
        assert!(stored.is_none(), "nothing is stored without the key's lock");
        assert_eq!(summary.unwrap().outcome, Outcome::WaitedTooLong);
    }

    /// A tmpfs of `bytes` mounted on a new directory, unmounted on drop.
    struct SmallDisk(tempfile::TempDir);

    impl SmallDisk {
        fn new(bytes: u64) -> Option<SmallDisk> {
            if !geteuid().is_root() {
                eprintln!("skipped: mounting a small filesystem needs root");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let data = format!("size={bytes},mode=0700");
            nix::mount::mount(
                Some("tmpfs"),
                dir.path(),
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(data.as_str()),
            )
            .unwrap();
            Some(SmallDisk(dir))
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }

    #[test]
    fn a_full_disk_leaves_no_entry_and_no_half_written_file() {
        let Some(disk) = SmallDisk::new(1 << 20) else {
            return;
        };
        let mut cache = Cache::open(&disk.0.path().join("cache"), 1 << 30).unwrap();
        let k = key(41);
        let _lock = cache.lock(&k).unwrap();
        // Refused before a byte is written: not enough room to spare.
        let error = cache.store(&k, &[7u8; 4096][..], 4096).unwrap_err();
        assert!(format!("{error:#}").contains("bytes free"), "{error:#}");
        // Without the reserve, an entry that fits is stored whole.
        cache.free_reserve = 0;
        let code = vec![7u8; 256 << 10];
        cache.store(&k, &code[..], code.len() as u64).unwrap();
        // One larger than what is left is refused, and the old one stays.
        let big = vec![8u8; 1 << 20];
        assert!(cache.store(&k, &big[..], big.len() as u64).is_err());
        assert!(temps(&cache).is_empty(), "{:?}", names(&cache));
        drop(_lock);
        assert_eq!(read(&cache.lookup(&k).unwrap().unwrap()), code);
    }

    #[test]
    fn eviction_spares_entries_in_use() {
        let (_temp, cache) = new_cache(150);
        let (a, b) = (key(20), key(21));
        store_direct(&cache, &a, &[1; 100]);
        set_mtime(&cache, &a, 100);
        let reading = cache.acquire(&a, false, Wait::Block).unwrap().unwrap();
        store_direct(&cache, &b, &[2; 100]);
        assert!(cache.path(&entry_name(&a)).exists());
        drop(reading);
        let c = key(22);
        store_direct(&cache, &c, &[3; 100]);
        assert!(!cache.path(&entry_name(&a)).exists());
        assert!(!cache.path(&entry_name(&b)).exists());
    }

    #[test]
    fn concurrent_lookups_compile_once() {
        let (_temp, cache) = new_cache(1 << 20);
        let k = key(30);
        let barrier = Barrier::new(2);
        let mut results: Vec<(&str, Vec<u8>, Duration)> = thread::scope(|s| {
            let children: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        converse_with(Some(&cache), |link| {
                            barrier.wait();
                            let started = Instant::now();
                            match link.lookup(&k).unwrap() {
                                Some(entry) => ("hit", read(&entry), started.elapsed()),
                                None => {
                                    thread::sleep(Duration::from_millis(400));
                                    let entry = link.store(&k, b"compiled once").unwrap().unwrap();
                                    ("miss", read(&entry), started.elapsed())
                                }
                            }
                        })
                        .0
                    })
                })
                .collect();
            children.into_iter().map(|c| c.join().unwrap()).collect()
        });
        results.sort();
        assert_eq!(results[0].0, "hit");
        assert_eq!(results[1].0, "miss");
        assert_eq!(results[0].1, b"compiled once");
        assert_eq!(results[1].1, b"compiled once");
        assert!(
            results[0].2 >= Duration::from_millis(250),
            "the hit waited: {:?}",
            results[0].2
        );
    }

    #[test]
    fn a_miss_abandoned_releases_the_lock() {
        let (_temp, cache) = new_cache(1 << 20);
        let k = key(40);
        let (missed, summary) = converse_with(Some(&cache), |link| link.lookup(&k).unwrap());
        assert!(missed.is_none());
        assert_eq!(summary.unwrap().outcome, Outcome::MissAbandoned);
        assert!(cache.acquire(&k, true, Wait::Never).unwrap().is_some());
        // The next child misses too, and may store.
        let (stored, _) = converse_with(Some(&cache), |link| {
            assert!(link.lookup(&k).unwrap().is_none());
            link.store(&k, b"x").unwrap()
        });
        assert!(stored.is_some());
    }

    #[test]
    fn malformed_keys_and_requests_are_refused() {
        let (temp, cache) = new_cache(1 << 20);
        let k = key(50);
        let bad_keys = [
            "../x".to_string(),
            k.to_uppercase(),
            k[1..].to_string(),
            format!("{k}0"),
        ];
        for bad in &bad_keys {
            assert!(cache.lookup(bad).is_err(), "{bad}");
            assert!(cache.lock(bad).is_err(), "{bad}");
            assert!(cache.store(bad, &b"x"[..], 1).is_err(), "{bad}");
        }
        let lines = [
            format!("lookup {}\n", bad_keys[0]),
            format!("lookup {}\n", bad_keys[1]),
            format!("lookup {}\n", bad_keys[2]),
            format!("store {k} 1\n"),
            format!("store {k} {}\n", wire::MAX_ENTRY_BYTES + 1),
            "hello\n".to_string(),
        ];
        for line in lines {
            let (mut ours, theirs) = UnixStream::pair().unwrap();
            let cache = &cache;
            let (answer, result) = thread::scope(|s| {
                let server = s.spawn(move || serve_child(Some(cache), theirs, "task test"));
                (
                    raw_exchange(&mut ours, line.as_bytes()),
                    server.join().unwrap(),
                )
            });
            assert!(answer.starts_with("error "), "{line:?}: {answer}");
            assert!(result.is_err(), "{line:?}");
        }
        // A store for another key than the miss's releases the miss's lock.
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let other = key(51);
        let cache_ref = &cache;
        let result = thread::scope(|s| {
            let server = s.spawn(move || serve_child(Some(cache_ref), theirs, "task test"));
            assert_eq!(
                raw_exchange(&mut ours, format!("lookup {k}\n").as_bytes()),
                "miss"
            );
            let answer = raw_exchange(&mut ours, format!("store {other} 1\nx").as_bytes());
            assert!(answer.starts_with("error "), "{answer}");
            server.join().unwrap()
        });
        assert!(result.unwrap_err().to_string().contains(&other));
        assert!(cache.acquire(&k, true, Wait::Never).unwrap().is_some());
        assert!(!temp.path().join("x").exists());
        assert!(temps(&cache).is_empty());
    }

    #[test]
    fn shutdown_ends_the_conversation_and_leaves_no_temp() {
        let (_temp, cache) = new_cache(1 << 20);
        let k = key(60);

        // Shut down after the miss: the store fails, nothing is written.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let shim_end = theirs.try_clone().unwrap();
        let cache_ref = &cache;
        let (stored, result) = thread::scope(|s| {
            let server = s.spawn(move || serve_child(Some(cache_ref), theirs, "task test"));
            let mut link = CacheLink::from_stream(ours);
            assert!(link.lookup(&k).unwrap().is_none());
            shim_end.shutdown(Shutdown::Both).unwrap();
            let result = server.join().unwrap();
            (link.store(&k, &[7; 100_000]), result)
        });
        assert!(stored.is_err());
        assert_eq!(result.unwrap().outcome, Outcome::MissAbandoned);
        assert!(temps(&cache).is_empty());
        assert!(!cache.path(&entry_name(&k)).exists());

        // Shut down in the middle of the payload: the temp file goes.
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let shim_end = theirs.try_clone().unwrap();
        let result = thread::scope(|s| {
            let server = s.spawn(move || serve_child(Some(cache_ref), theirs, "task test"));
            assert_eq!(
                raw_exchange(&mut ours, format!("lookup {k}\n").as_bytes()),
                "miss"
            );
            ours.write_all(format!("store {k} 1000000\n").as_bytes())
                .unwrap();
            ours.write_all(&[7; 1000]).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while temps(cache_ref).is_empty() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            assert!(!temps(cache_ref).is_empty(), "the store began");
            shim_end.shutdown(Shutdown::Both).unwrap();
            server.join().unwrap()
        });
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("1000 of 1000000"), "{error}");
        assert!(temps(&cache).is_empty(), "{:?}", names(&cache));
        assert!(!cache.path(&entry_name(&k)).exists());
        assert!(cache.acquire(&k, true, Wait::Never).unwrap().is_some());
    }

    #[test]
    fn a_waiting_lookup_ends_when_the_socket_is_shut_down() {
        let (_temp, cache) = new_cache(1 << 20);
        let k = key(70);
        let held = cache.lock(&k).unwrap();
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let shim_end = theirs.try_clone().unwrap();
        let cache_ref = &cache;
        let (result, waited) = thread::scope(|s| {
            let server = s.spawn(move || serve_child(Some(cache_ref), theirs, "task test"));
            ours.write_all(format!("lookup {k}\n").as_bytes()).unwrap();
            thread::sleep(Duration::from_millis(300));
            assert!(!server.is_finished(), "the lookup waits for the lock");
            let started = Instant::now();
            shim_end.shutdown(Shutdown::Both).unwrap();
            (server.join().unwrap(), started.elapsed())
        });
        assert_eq!(result.unwrap().outcome, Outcome::Interrupted);
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        drop(held);
    }

    #[test]
    fn a_store_needs_the_lock() {
        let (_temp, cache) = new_cache(1 << 20);
        let k = key(80);
        let error = cache.store(&k, &b"x"[..], 1).unwrap_err();
        assert!(error.to_string().contains("without its lock"), "{error}");
        assert!(temps(&cache).is_empty());
    }

    #[test]
    fn leftovers_of_crashed_writers_are_removed() {
        let (_temp, cache) = new_cache(1 << 20);
        let (stale, fresh) = (key(90), key(91));
        std::fs::write(cache.path(&format!("{stale}.tmp.1.1")), b"half").unwrap();
        std::fs::write(cache.path(&lock_name(&stale)), b"").unwrap();
        store_direct(&cache, &fresh, b"code");
        assert_eq!(names(&cache), files_of(&fresh));
    }

    #[test]
    fn unsafe_directories_are_refused() {
        let temp = tempfile::tempdir().unwrap();
        let open = temp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = Cache::open(&open, 1).unwrap_err().to_string();
        assert!(
            error.contains(&open.display().to_string()) && error.contains("0777"),
            "{error}"
        );

        let link = temp.path().join("link");
        let real = temp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let error = format!("{:#}", Cache::open(&link, 1).unwrap_err());
        assert!(error.contains(&link.display().to_string()), "{error}");

        if geteuid().is_root() {
            let theirs = temp.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let error = Cache::open(&theirs, 1).unwrap_err().to_string();
            assert!(error.contains("owned by uid 65534"), "{error}");
        }

        let made = temp.path().join("a/b/cache");
        Cache::open(&made, 1).unwrap();
        let mode = std::fs::metadata(&made).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
    }
}
