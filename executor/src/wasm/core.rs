//! Loading, checking and running a WASI preview 1 module.

use std::path::Path;

use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::{WasiP1Ctx, add_to_linker_sync};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::error::{Error, Result};
use crate::kind::{Kind, detect};
use crate::limits::GuestLimits;

/// The entry point a command module exports.
const DEFAULT_ENTRY: &str = "_start";

/// A module that compiled, links against WASI and has its entry point:
/// everything that can fail before the guest runs has been checked.
pub struct Prepared {
    pub engine: Engine,
    instance_pre: InstancePre<Guest>,
    entry: String,
}

/// What the guest sees of its process.
pub struct GuestEnv<'a> {
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub cwd: &'a Path,
    /// The container's memory limit, which bounds the guest's memories.
    pub memory_limit: Option<u64>,
}

/// The store's data: the guest's WASI context and its limits.
pub struct Guest {
    wasi: WasiP1Ctx,
    limits: GuestLimits,
}

/// The engine the child runs guests with: wasmtime's defaults, which are
/// the Wasm features `wasmtime run` enables, plus epoch interruption so a
/// termination signal can stop a running guest.
pub fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    Engine::new(&config).map_err(|e| Error::Module {
        path: String::new(),
        reason: format!("create the wasm engine: {e:#}"),
    })
}

/// Splits `path.wasm#func` into the module path and the exported function
/// to call.
pub fn split_entry(arg0: &str) -> (&str, &str) {
    match arg0.rsplit_once('#') {
        Some((path, func)) if !func.is_empty() => (path, func),
        _ => (arg0, DEFAULT_ENTRY),
    }
}

/// Reads, compiles and links the module named by args[0].
pub fn prepare(engine: &Engine, arg0: &str, bytes: &[u8]) -> Result<Prepared> {
    let (path, entry) = split_entry(arg0);
    let fail = |reason: String| Error::Module {
        path: path.to_string(),
        reason,
    };
    match detect(bytes) {
        Kind::CoreModule => {}
        Kind::Component => {
            return Err(fail(
                "it is a WebAssembly component; only core modules (WASI preview 1) are supported"
                    .into(),
            ));
        }
        Kind::Native => {
            return Err(fail(
                "it is a native executable; the child runs those natively".into(),
            ));
        }
        Kind::Unknown(reason) => return Err(fail(reason.into())),
    }
    let module = Module::new(engine, bytes).map_err(|e| fail(format!("cannot compile: {e:#}")))?;
    match module.get_export(entry) {
        Some(wasmtime::ExternType::Func(ty))
            if ty.params().len() == 0 && ty.results().len() == 0 => {}
        Some(_) => {
            return Err(fail(format!(
                "export `{entry}` is not a function without parameters or results"
            )));
        }
        None => return Err(fail(format!("it exports no function `{entry}`"))),
    }
    let mut linker: Linker<Guest> = Linker::new(engine);
    add_to_linker_sync(&mut linker, |guest: &mut Guest| &mut guest.wasi)
        .map_err(|e| fail(format!("link WASI: {e:#}")))?;
    let instance_pre = linker
        .instantiate_pre(&module)
        .map_err(|e| fail(format!("cannot link: {e:#}")))?;
    Ok(Prepared {
        engine: engine.clone(),
        instance_pre,
        entry: entry.to_string(),
    })
}

/// Instantiates the module and calls its entry point. The error, if any,
/// is classified by [`crate::exit::outcome`].
pub fn run(prepared: &Prepared, guest: &GuestEnv) -> wasmtime::Result<()> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(guest.args).envs(guest.env).inherit_stdio();
    wasi.preopened_dir("/", "/", FsPerms::ReadWrite)?;
    if guest.cwd != Path::new("/") {
        // WASI libc resolves relative paths against a preopen named ".".
        wasi.preopened_dir(guest.cwd, ".", FsPerms::ReadWrite)?;
    }
    let guest_data = Guest {
        wasi: wasi.build_p1(),
        limits: GuestLimits::new(guest.memory_limit),
    };
    let mut store = Store::new(&prepared.engine, guest_data);
    store.limiter(|guest| &mut guest.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();
    let instance = prepared.instance_pre.instantiate(&mut store)?;
    let entry = instance.get_typed_func::<(), ()>(&mut store, &prepared.entry)?;
    entry.call(&mut store, ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).unwrap()
    }

    #[test]
    fn splits_entry() {
        assert_eq!(split_entry("/a.wasm"), ("/a.wasm", "_start"));
        assert_eq!(split_entry("/a.wasm#run"), ("/a.wasm", "run"));
        assert_eq!(split_entry("/a.wasm#"), ("/a.wasm#", "_start"));
    }

    #[test]
    fn refuses_bad_modules_by_name() {
        let engine = engine().unwrap();
        let err = |bytes: &[u8]| {
            prepare(&engine, "/m.wasm", bytes)
                .err()
                .unwrap()
                .to_string()
        };
        assert!(err(b"").contains("/m.wasm: the file is empty"));
        assert!(err(b"not wasm").contains("/m.wasm: it is not a WebAssembly module"));
        assert!(err(&module("(module)")).contains("exports no function `_start`"));
        let unknown = module(r#"(module (import "env" "nope" (func)) (func (export "_start")))"#);
        assert!(err(&unknown).contains("cannot link"));
        assert!(err(b"\0asm\x01\0\0\0\x01").contains("cannot compile"));
    }

    #[test]
    fn runs_a_module_and_reports_proc_exit() {
        let engine = engine().unwrap();
        let bytes = module(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                       (memory (export "memory") 1)
                       (func (export "_start") (call $exit (i32.const 7))))"#,
        );
        let prepared = prepare(&engine, "/m.wasm", &bytes).unwrap();
        let guest = GuestEnv {
            args: &["/m.wasm".into()],
            env: &[],
            cwd: Path::new("/"),
            memory_limit: None,
        };
        let outcome = crate::exit::outcome(run(&prepared, &guest), None);
        assert_eq!(outcome.status, 7);
    }
}
