//! Turning a module's bytes into code: from the shim's compiled-code
//! cache when it offers one, else compiled here.
//!
//! The shim answers a lookup with the entry it has or, on a miss, with
//! the entry its own compiler (`crate::compiler`, a process no container
//! can reach) just made from the very bytes the child sent: nothing this
//! child or its container does can change what another container maps.
//! Code loaded from an entry is mapped from the entry's file, so its pages
//! are shared by every container that runs the module.

use std::fs::File;

use wasmtime::Engine;
use wasmtime::Module;
use wasmtime::component::Component;

use crate::cache::{CacheLink, Compile, MAX_THREADS, engine_part, fd_path};
use crate::wasm::engine::{Flavor, release_free_memory};

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
    (shape, flavor): (Shape, Flavor),
    bytes: &[u8],
    threads: usize,
    cache: Option<&mut CacheLink>,
) -> wasmtime::Result<Code> {
    let Some(link) = cache else {
        return compile(engine, shape, bytes, threads);
    };
    let request = Compile {
        component: shape == Shape::Component,
        http: flavor == Flavor::Http,
        threads: threads.clamp(1, usize::from(MAX_THREADS)) as u16,
    };
    // No entry (no cache, or the shim's compile failed), an entry that
    // does not fit this engine, or a cache that failed to answer: the
    // shim logs why on its side, and the child compiles alone.
    match link.lookup(bytes, &engine_part(engine), request) {
        Ok(Some(entry)) => {
            deserialize(engine, shape, &entry).or_else(|_| compile(engine, shape, bytes, threads))
        }
        Ok(None) | Err(_) => compile(engine, shape, bytes, threads),
    }
}

/// The module or component compiled to its serialized form, on a compile
/// pool of `threads`.
pub fn precompile(
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

/// Maps a cache entry the shim handed over: written by the shim's own
/// compiler and verified against its digest before it was sent.
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
