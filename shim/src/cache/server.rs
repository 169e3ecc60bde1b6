//! The server of one child's conversation about the cache (the wire
//! format is in `executor::cache`): the one lookup, keyed by the sha256
//! of the module's sealed memfd as the shim reads it, that waits for
//! another's compile of the same module within a limit, and on a miss the
//! shim's own compile of those bytes (`compiler.rs`).

use std::fmt;
use std::fs::File;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use executor::cache::{self as wire, Compile, Reply, Request};

use super::compiler::{Compiles, Job};
use super::{Cache, KeyLock, WAIT_LIMIT, Wait, check_key, digest_of, hung_up};

/// How long the shim's compile of a module may take: just under the time
/// the shim gives a child to get ready (`readiness::PREPARE_TIMEOUT`),
/// which the compile is part of.
const COMPILE_LIMIT: std::time::Duration = std::time::Duration::from_secs(280);

/// The largest entry for a module of `len` bytes: compiled code is a few
/// times its module's size (about twice, for an 18 MB component).
fn entry_bound(len: u64) -> u64 {
    len.saturating_mul(16).saturating_add(16 << 20)
}

/// What a child's lookup found.
pub(super) enum Found {
    Hit(File),
    /// No valid entry; the key's exclusive lock is held for the child.
    Miss(KeyLock),
    /// The socket hung up while the lookup waited for the key's lock.
    HungUp,
    /// Another compile of the module held the key's lock past the limit.
    WaitedTooLong,
}

impl Cache {
    /// A child's lookup: verified under the shared lock, so containers that
    /// start the same module read its entry at once; on a miss, again under
    /// the exclusive lock, which is held while the shim compiles.
    pub(super) fn lookup_for(&self, key: &str, socket: &UnixStream) -> Result<Found> {
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
}

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
    /// The shim's compile failed or was given up: the child was told to
    /// compile without the cache.
    NotCompiled(String),
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
            Outcome::NotCompiled(why) => write!(f, "miss {key}, not compiled: {why}"),
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
pub fn serve_child(
    cache: Option<&Cache>,
    compiler: &dyn Compiles,
    socket: UnixStream,
    what: &str,
) -> Result<Summary> {
    let result = converse(cache, compiler, &socket);
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

fn converse(
    cache: Option<&Cache>,
    compiler: &dyn Compiles,
    socket: &UnixStream,
) -> Result<Summary> {
    let mut summary = Summary {
        key: None,
        outcome: Outcome::Silent,
    };
    let (request, module) = match wire::recv_request(socket) {
        Ok(Some(request)) => request,
        Ok(None) => return Ok(summary),
        Err(e) => return refuse(socket, e.into()),
    };
    let Request::Lookup { engine, compile } = request;
    let Some(cache) = cache else {
        summary.outcome = Outcome::Off;
        reply(socket, &Reply::Off, None)?;
        return after_reply(socket, summary);
    };
    let module = match module.map(File::from) {
        Some(module) => module,
        None => return refuse(socket, anyhow!("a lookup without the module's memfd")),
    };
    let digest = match module_digest(&module) {
        Ok(digest) => digest,
        Err(e) => return refuse(socket, e),
    };
    let key = wire::key_of(&digest, &engine);
    summary.key = Some(key.clone());
    match cache.lookup_for(&key, socket) {
        Ok(Found::Hit(entry)) => {
            summary.outcome = Outcome::Hit;
            reply(socket, &Reply::Hit, Some(&entry))?;
        }
        Ok(Found::Miss(lock)) => {
            let started = Instant::now();
            let deadline = started + COMPILE_LIMIT;
            let how = Compiled {
                key: &key,
                engine: &engine,
                module: &module,
                compile,
            };
            match cache.compile(how, compiler, socket, deadline, lock) {
                Ok((entry, bytes)) => {
                    let millis = started.elapsed().as_millis();
                    summary.outcome = Outcome::Stored { bytes, millis };
                    reply(socket, &Reply::Stored, Some(&entry))?;
                }
                Err(e) => {
                    summary.outcome = Outcome::NotCompiled(format!("{e:#}"));
                    // A child that hung up (why a compile is given up)
                    // is not told.
                    if hung_up(socket) {
                        return Ok(summary);
                    }
                    reply(socket, &Reply::Off, None)?;
                }
            }
        }
        Ok(Found::HungUp) => summary.outcome = Outcome::Interrupted,
        Ok(Found::WaitedTooLong) => {
            summary.outcome = Outcome::WaitedTooLong;
            reply(socket, &Reply::Off, None)?;
        }
        Err(e) => return refuse(socket, e.context(format!("lookup {key}"))),
    }
    after_reply(socket, summary)
}

/// Waits for the child to close its end: a conversation has one request.
fn after_reply(socket: &UnixStream, summary: Summary) -> Result<Summary> {
    match wire::recv_request(socket) {
        Ok(None) => Ok(summary),
        Ok(Some(_)) => refuse(
            socket,
            anyhow!("a second request: one lookup per conversation"),
        ),
        Err(e) => refuse(socket, e.into()),
    }
}

/// The sha256 of the module's memfd, which must be sealed (its bytes can
/// then never differ from those hashed) and within the module bound.
fn module_digest(module: &File) -> Result<String> {
    if !executor::readonly::is_sealed(module) {
        bail!("the module's memfd is not sealed against writes");
    }
    let len = module.metadata().context("stat the module's memfd")?.len();
    if len > wire::MAX_MODULE_BYTES {
        bail!(
            "the module has {len} bytes, over the limit of {}",
            wire::MAX_MODULE_BYTES
        );
    }
    digest_of(module).context("read the module's memfd")
}

/// What the shim compiles on a miss.
struct Compiled<'a> {
    key: &'a str,
    /// The engine part of the key, which the compiler's must match.
    engine: &'a str,
    module: &'a File,
    compile: Compile,
}

impl Cache {
    /// Compiles the module with `compiler` into the entry of its key,
    /// under the key's exclusive `lock`. The code is stored only if the
    /// compiler's engine is the one the key names.
    fn compile(
        &self,
        how: Compiled,
        compiler: &dyn Compiles,
        socket: &UnixStream,
        deadline: Instant,
        lock: KeyLock,
    ) -> Result<(File, u64)> {
        let len = how
            .module
            .metadata()
            .context("stat the module's memfd")?
            .len();
        let write = |out: &File, max_bytes: u64| {
            let job = Job {
                module: how.module,
                how: how.compile,
                out,
                max_bytes,
                socket,
                deadline,
            };
            let engine = compiler.compile(&job)?;
            if engine != how.engine {
                bail!(
                    "the compiler's engine {engine} is not the child's {}: its code is not for this key",
                    how.engine
                );
            }
            Ok(())
        };
        let stored = self.store_with(how.key, entry_bound(len), write);
        drop(lock);
        stored
    }
}

fn reply(socket: &UnixStream, reply: &Reply, entry: Option<&File>) -> Result<()> {
    wire::send_reply(socket, reply, entry).context("answer the child")
}

/// Tells the child why its conversation ends, if it is still there.
fn refuse(socket: &UnixStream, error: anyhow::Error) -> Result<Summary> {
    let _ = wire::send_reply(socket, &Reply::Error(format!("{error:#}")), None);
    Err(error)
}
