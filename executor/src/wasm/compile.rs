//! Turning a module's bytes into code: from the shim's compiled-code cache
//! when it has them, else compiled here, inside the container's cgroup,
//! and handed to the shim for the cache.
//!
//! Code loaded from a cache entry is mapped from the entry's file, so its
//! pages are shared by every container that runs the module. A freshly
//! compiled module is loaded back from the entry the shim just wrote, for
//! the same sharing, and the memory the compiler used is returned to the
//! kernel before the guest runs.

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
    cache: Option<&mut CacheLink>,
) -> wasmtime::Result<Code> {
    let Some(link) = cache else {
        return compile(engine, shape, bytes);
    };
    let key = key(bytes, engine);
    // A cache that fails to answer is not a reason to fail the container:
    // the shim logs what went wrong on its side, and the child compiles.
    match link.lookup(&key) {
        Ok(Some(entry)) => {
            if let Ok(code) = deserialize(engine, shape, &entry) {
                return Ok(code);
            }
            compile(engine, shape, bytes)
        }
        Ok(None) => compile_and_store(engine, shape, bytes, link, &key),
        Err(_) => compile(engine, shape, bytes),
    }
}

fn compile(engine: &Engine, shape: Shape, bytes: &[u8]) -> wasmtime::Result<Code> {
    let code = match shape {
        Shape::Module => Code::Module(Module::new(engine, bytes)?),
        Shape::Component => Code::Component(Component::new(engine, bytes)?),
    };
    release_free_memory();
    Ok(code)
}

/// After a miss: compiles to the serialized form, which the shim writes
/// as the entry, then maps the entry. The serialized bytes are our own
/// compiler's output from this very process, before any guest ran.
fn compile_and_store(
    engine: &Engine,
    shape: Shape,
    bytes: &[u8],
    link: &mut CacheLink,
    key: &str,
) -> wasmtime::Result<Code> {
    let compiled = match shape {
        Shape::Module => engine.precompile_module(bytes)?,
        Shape::Component => engine.precompile_component(bytes)?,
    };
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
fn deserialize(engine: &Engine, shape: Shape, entry: &File) -> wasmtime::Result<Code> {
    let path = fd_path(entry);
    // SAFETY: the entry is compiler output written by the shim into a
    // directory only root can write, checked against the digest the shim
    // recorded when it wrote it; nothing from an image or a container is
    // ever deserialized. The file is never modified in place: entries are
    // replaced by rename, so the mapping stays valid.
    Ok(unsafe {
        match shape {
            Shape::Module => Code::Module(Module::deserialize_file(engine, &path)?),
            Shape::Component => Code::Component(Component::deserialize_file(engine, &path)?),
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
