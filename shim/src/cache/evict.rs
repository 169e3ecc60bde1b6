//! Eviction: least recently used entries first, never one in use, and the
//! leftovers of crashed writers and abandoned misses.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::fstatat;

use super::{Cache, Wait, digest_name, entry_name, is_regular, is_temp, lock_name, wire};

/// The directory's files, by what they are.
#[derive(Default)]
pub(super) struct Listing {
    pub(super) entries: Vec<Listed>,
    /// Every other file of the cache (digests, locks, temps), by key.
    pub(super) others: BTreeMap<String, Vec<String>>,
}

pub(super) struct Listed {
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) mtime: (i64, i64),
}

impl Cache {
    /// Evicts the least recently used entries until the entries and
    /// `incoming` more bytes fit the bound, never `keep` nor an entry whose
    /// lock someone holds, and removes the leftovers of crashed writers
    /// and abandoned misses.
    pub(super) fn evict(&self, keep: &str, incoming: u64) {
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
    pub(super) fn list(&self) -> Result<Listing> {
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
}
