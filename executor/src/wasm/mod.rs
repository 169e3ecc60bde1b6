//! Loading, checking and running Wasm: WASI preview 1 core modules, WASI
//! 0.2 command components, and `wasi:http/proxy` components, which are
//! served.

pub mod compile;
pub mod component;
pub mod core;
pub mod engine;
pub mod http;
pub mod http_limits;
pub mod lines;

use std::path::Path;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::cache::CacheLink;
use crate::error::{Error, Result};
use crate::exit::{Outcome, outcome};
use crate::kind::{Kind, detect};
use compile::{Code, Shape};
use engine::Flavor;

/// The entry point a command module exports.
const DEFAULT_ENTRY: &str = "_start";

/// A guest whose code is loaded and linked and whose entry point exists:
/// everything that can fail before it runs has been checked.
pub enum Prepared {
    Core(core::Prepared),
    Command(component::Prepared),
    Http(http::Prepared),
}

impl Prepared {
    /// The engine a termination signal interrupts, for commands; an HTTP
    /// server drains instead.
    pub fn interruptible(&self) -> bool {
        !matches!(self, Prepared::Http(_))
    }
}

/// What the guest sees of its process.
pub struct GuestEnv<'a> {
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub cwd: &'a Path,
    /// The container's memory limit, which bounds the guest's memories.
    pub memory_limit: Option<u64>,
}

/// Splits `path.wasm#func` into the module path and the exported function
/// to call.
pub fn split_entry(arg0: &str) -> (&str, &str) {
    match arg0.rsplit_once('#') {
        Some((path, func)) if !func.is_empty() => (path, func),
        _ => (arg0, DEFAULT_ENTRY),
    }
}

/// Compiles (or loads from the cache) and links the module named by
/// `arg0`, whose bytes are `bytes`, on `threads` compile threads. The
/// engine the guest needs is made
/// here; a command's is given to `on_engine` (the signal thread
/// interrupts it).
pub fn prepare(
    arg0: &str,
    bytes: &[u8],
    env: &[(String, String)],
    threads: usize,
    cache: Option<&mut CacheLink>,
    on_engine: &dyn Fn(&wasmtime::Engine),
) -> Result<Prepared> {
    let (path, entry) = split_entry(arg0);
    let fail = |reason: String| Error::Module {
        path: path.to_string(),
        reason,
    };
    let (shape, flavor) = match detect(bytes) {
        Kind::CoreModule => (Shape::Module, Flavor::Command),
        Kind::Component if entry == DEFAULT_ENTRY && crate::kind::is_http_proxy(bytes) => {
            (Shape::Component, Flavor::Http)
        }
        Kind::Component => (Shape::Component, Flavor::Command),
        Kind::Native => {
            return Err(fail(
                "it is a native executable; the child runs those natively".into(),
            ));
        }
        Kind::Unknown(reason) => return Err(fail(reason.into())),
    };
    let engine = engine::engine(flavor)?;
    if flavor == Flavor::Command {
        on_engine(&engine);
    }
    let code = compile::load(&engine, (shape, flavor), bytes, threads, cache)
        .map_err(|e| fail(format!("cannot compile: {e:#}")))?;
    let func = (entry != DEFAULT_ENTRY).then_some(entry);
    let prepared = match (code, flavor) {
        (Code::Module(module), _) => core::prepare(&engine, &module, entry).map(Prepared::Core),
        (Code::Component(c), Flavor::Http) => http::prepare(&engine, &c, env).map(Prepared::Http),
        (Code::Component(c), Flavor::Command) => {
            component::prepare(&engine, &c, func).map(Prepared::Command)
        }
    };
    prepared.map_err(fail)
}

/// Runs the guest to its end and says what the child exits with. `signal`
/// tells which termination signal, if any, interrupted a command.
pub fn run(
    prepared: Prepared,
    guest: &GuestEnv,
    threads: usize,
    signal: &dyn Fn() -> Option<i32>,
) -> Outcome {
    match prepared {
        Prepared::Core(p) => {
            let result = core::run(&p, guest);
            outcome(result, signal())
        }
        Prepared::Command(p) => {
            let result = component::run(&p, guest);
            outcome(result, signal())
        }
        Prepared::Http(p) => Outcome {
            status: http::serve(p, guest, threads),
            message: None,
        },
    }
}

/// The WASI context of a command: its args, env and stdio, the
/// container's root preopened as `/` and its working directory as `.`.
fn wasi_builder(guest: &GuestEnv) -> wasmtime::Result<WasiCtxBuilder> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(guest.args).envs(guest.env).inherit_stdio();
    wasi.preopened_dir("/", "/", FsPerms::ReadWrite)?;
    if guest.cwd != Path::new("/") {
        // WASI libc resolves relative paths against a preopen named ".".
        wasi.preopened_dir(guest.cwd, ".", FsPerms::ReadWrite)?;
    }
    Ok(wasi)
}

#[cfg(test)]
mod tests;
