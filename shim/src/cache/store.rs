//! Writing an entry: within the bound and the free-space reserve, under
//! the key's exclusive lock, as temp files renamed into place (digest
//! first), so that nothing half-written is ever handed out.

use std::fs::File;
#[cfg(test)]
use std::io::Read;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag, renameat};
use nix::sys::stat::{Mode, fchmod};
use nix::unistd::fsync;

use super::{Cache, check_key, digest_name, digest_of, entry_name, lock_name, wire};

/// A file being written, removed unless it is renamed into place.
pub(super) struct Temp<'a> {
    cache: &'a Cache,
    name: String,
    file: File,
    renamed: bool,
}

impl Cache {
    /// Writes the entry of `key` with `write`, which gets the temp file
    /// and the most bytes it may write: `max`, within the entry bound, the
    /// cache's bound and the free space less [`FREE_RESERVE`](super::FREE_RESERVE),
    /// measured before the write (a full disk must never leave half an
    /// entry, and the cache must not take what others need). Returns the
    /// entry open read-only and its size, once other entries over the
    /// bound are evicted. The caller holds the key's [`lock`](Self::lock).
    /// On failure nothing of the attempt is left in the directory.
    pub fn store_with(
        &self,
        key: &str,
        max: u64,
        write: impl FnOnce(&File, u64) -> Result<()>,
    ) -> Result<(File, u64)> {
        check_key(key)?;
        self.check_held(key)?;
        let room = self.room()?;
        let max = max.min(wire::MAX_ENTRY_BYTES).min(self.max_bytes);
        if room == 0 {
            bail!(
                "{} has no room for an entry with {} bytes to spare",
                self.dir.display(),
                self.free_reserve
            );
        }
        let max = max.min(room);
        let entry = self.temp(key, "", 0o444)?;
        let path = self.path(&entry.name);
        write(&entry.file, max).with_context(|| format!("write {}", path.display()))?;
        let len = entry
            .file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        if len > max {
            bail!("cache entry {key}: {len} bytes is over the limit of {max}");
        }
        if len == 0 {
            bail!("cache entry {key}: nothing was written");
        }
        entry
            .file
            .sync_all()
            .with_context(|| format!("fsync {}", path.display()))?;
        // Room for it, so that the entries stay within the bound once it
        // is in place.
        self.evict(key, len);
        let digest = digest_of(&entry.file).with_context(|| format!("read {}", path.display()))?;
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
        Ok((stored, len))
    }

    /// Writes exactly `len` bytes from `bytes` as the entry of `key`
    /// ([`store_with`](Self::store_with)): for tests and tools.
    #[cfg(test)]
    pub fn store(&self, key: &str, bytes: impl Read, len: u64) -> Result<File> {
        let write = |file: &File, max: u64| {
            if len > max {
                bail!("cache entry {key}: {len} bytes is over the limit of {max}");
            }
            copy_exactly(bytes, file, len)
        };
        self.store_with(key, len, write).map(|(entry, _)| entry)
    }

    /// The bytes an entry may take on the cache's filesystem: what is
    /// free less the reserve.
    fn room(&self) -> Result<u64> {
        let stat = nix::sys::statvfs::fstatvfs(&self.fd)
            .with_context(|| format!("statvfs {}", self.dir.display()))?;
        let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        Ok(free.saturating_sub(self.free_reserve))
    }

    /// Refuses a store by a caller that does not hold the key's exclusive
    /// lock: without it two writers could interleave digest and entry.
    pub(super) fn check_held(&self, key: &str) -> Result<()> {
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

    /// Creates `<key>.tmp.<pid>.<n><suffix>` for writing (and reading
    /// back), with `mode`.
    pub(super) fn temp(&self, key: &str, suffix: &str, mode: u32) -> Result<Temp<'_>> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL;
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

/// Copies exactly `len` bytes into `file`.
#[cfg(test)]
fn copy_exactly(mut from: impl Read, mut file: &File, len: u64) -> Result<()> {
    let copied = std::io::copy(&mut (&mut from).take(len), &mut file)?;
    if copied != len {
        bail!("the input ended after {copied} of {len} bytes");
    }
    Ok(())
}
