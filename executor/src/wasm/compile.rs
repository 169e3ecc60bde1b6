//! Turning a module's bytes into code: from the shim's compiled-code cache
//! when it has them, else compiled here, inside the container's cgroup,
//! and handed to the shim for the cache.
//!
//! Code loaded from a cache entry is mapped from the entry's file, so its
//! pages are shared by every container that runs the module. On a miss
//! the module is compiled in a forked process of the child, which hands
//! the code to the shim and exits: all the memory the compiler used goes
//! with it (freed heap would otherwise stay with the child, tens of MB for
//! an 18 MB component), and the child maps the entry the shim just wrote.

use std::fs::File;

use wasmtime::Engine;
use wasmtime::Module;
use wasmtime::component::Component;

use crate::cache::{CacheLink, fd_path, key};
use crate::wasm::engine::release_free_memory;

/// Compiled code of either kind.
pub enum Code {
    Module(Module),
    Component(Component),
}

/// What a module's bytes are: the kind decides which wasmtime type holds
/// its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Module,
    Component,
}

/// Loads `bytes` through the cache when the shim offers one. `Err` is the
/// compiler's message: the module is invalid or needs a feature that is
/// off.
pub fn load(
    engine: &Engine,
    shape: Shape,
    bytes: &[u8],
    threads: usize,
    cache: Option<&mut CacheLink>,
) -> wasmtime::Result<Code> {
    let Some(link) = cache else {
        return compile(engine, shape, bytes, threads);
    };
    let key = key(bytes, engine);
    // A cache that fails to answer is not a reason to fail the container:
    // the shim logs what went wrong on its side, and the child compiles.
    match link.lookup(&key) {
        Ok(Some(entry)) => {
            if let Ok(code) = deserialize(engine, shape, &entry) {
                return Ok(code);
            }
            compile(engine, shape, bytes, threads)
        }
        Ok(None) => match compile_in_fork(engine, shape, bytes, threads, link, &key) {
            Forked::Stored => {
                link.stored_by_fork();
                match link.lookup(&key) {
                    Ok(Some(entry)) => deserialize(engine, shape, &entry)
                        .or_else(|_| compile(engine, shape, bytes, threads)),
                    _ => compile(engine, shape, bytes, threads),
                }
            }
            // The compiler's own message, from a compile here; the link
            // is done with (its miss is still pending in the shim).
            Forked::Failed => compile(engine, shape, bytes, threads),
            Forked::Unavailable => compile_and_store(engine, shape, bytes, threads, link, &key),
        },
        Err(_) => compile(engine, shape, bytes, threads),
    }
}

/// How a compile in a forked process went.
enum Forked {
    /// The shim stored the entry.
    Stored,
    /// The module did not compile, or the shim did not take it.
    Failed,
    /// No process could be forked (a seccomp profile may refuse it).
    Unavailable,
}

/// Compiles in a forked process that sends the code to the shim over
/// `link` and exits. Run before any thread but the signal watcher exists
/// (the compile pool is made in the fork), so the fork has the child's
/// memory and nothing of another thread's work in progress.
fn compile_in_fork(
    engine: &Engine,
    shape: Shape,
    bytes: &[u8],
    threads: usize,
    link: &mut CacheLink,
    key: &str,
) -> Forked {
    // SAFETY: the child is single-threaded here but for the signal thread,
    // which only waits in sigwait and holds no lock; glibc's fork keeps
    // the allocator usable in the new process. The forked process only
    // compiles, writes to the cache socket and leaves with _exit, never
    // returning into the caller's frames.
    match unsafe { nix::unistd::fork() } {
        Err(_) => Forked::Unavailable,
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: prctl(PR_SET_PDEATHSIG) only sets this process's
            // parent-death signal: if the child is killed, so is its compiler.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            let compiled = precompile(engine, shape, bytes, threads);
            let stored = compiled.map(|code| link.store(key, &code));
            let status = if matches!(stored, Ok(Ok(Some(_)))) {
                0
            } else {
                1
            };
            // SAFETY: _exit ends the forked process without running the
            // destructors and atexit handlers that belong to the child.
            unsafe { libc::_exit(status) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => loop {
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => break Forked::Stored,
                Err(nix::errno::Errno::EINTR) => continue,
                _ => break Forked::Failed,
            }
        },
    }
}

/// The module or component compiled to its serialized form, on a compile
/// pool of `threads`.
fn precompile(
    engine: &Engine,
    shape: Shape,
    bytes: &[u8],
    threads: usize,
) -> wasmtime::Result<Vec<u8>> {
    crate::wasm::engine::size_compile_threads(threads);
    match shape {
        Shape::Module => engine.precompile_module(bytes),
        Shape::Component => engine.precompile_component(bytes),
    }
}

fn compile(engine: &Engine, shape: Shape, bytes: &[u8], threads: usize) -> wasmtime::Result<Code> {
    crate::wasm::engine::size_compile_threads(threads);
    let code = match shape {
        Shape::Module => Code::Module(Module::new(engine, bytes)?),
        Shape::Component => Code::Component(Component::new(engine, bytes)?),
    };
    release_free_memory();
    Ok(code)
}

/// After a miss, where no process can be forked: compiles here to the
/// serialized form, which the shim writes as the entry, then maps the
/// entry. The serialized bytes are our own
/// compiler's output from this very process, before any guest ran.
fn compile_and_store(
    engine: &Engine,
    shape: Shape,
    bytes: &[u8],
    threads: usize,
    link: &mut CacheLink,
    key: &str,
) -> wasmtime::Result<Code> {
    let compiled = precompile(engine, shape, bytes, threads)?;
    let stored = link.store(key, &compiled);
    let code = match stored {
        Ok(Some(entry)) => match deserialize(engine, shape, &entry) {
            Ok(code) => code,
            Err(_) => deserialize_own(engine, shape, &compiled)?,
        },
        _ => deserialize_own(engine, shape, &compiled)?,
    };
    drop(compiled);
    release_free_memory();
    Ok(code)
}

/// Maps a cache entry the shim handed over: written by the shim from a
/// compiler's output and verified against its digest before it was sent.
/// A module is mapped from the descriptor itself; a component (wasmtime
/// has no `deserialize_open_file` for them) through `/proc/self/fd`, which
/// [`fd_path`] checks leads to this very descriptor.
fn deserialize(engine: &Engine, shape: Shape, entry: &File) -> wasmtime::Result<Code> {
    // SAFETY: the entry is compiler output written by the shim into a
    // directory only root can write, checked against the digest the shim
    // recorded when it wrote it; nothing from an image or a container is
    // ever deserialized. The file is never modified in place: entries are
    // replaced by rename, so the mapping stays valid.
    Ok(unsafe {
        match shape {
            Shape::Module => {
                Code::Module(Module::deserialize_open_file(engine, entry.try_clone()?)?)
            }
            Shape::Component => {
                Code::Component(Component::deserialize_file(engine, fd_path(entry)?)?)
            }
        }
    })
}

/// Loads the serialized form this process's compiler just produced, when
/// the cache could not take it.
fn deserialize_own(engine: &Engine, shape: Shape, compiled: &[u8]) -> wasmtime::Result<Code> {
    // SAFETY: `compiled` is the output of `precompile_*` on this engine in
    // this process, never bytes from outside.
    Ok(unsafe {
        match shape {
            Shape::Module => Code::Module(Module::deserialize(engine, compiled)?),
            Shape::Component => Code::Component(Component::deserialize(engine, compiled)?),
        }
    })
}
