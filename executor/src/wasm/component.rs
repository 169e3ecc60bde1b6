//! WASI 0.2 command components: those that export `wasi:cli/run`, or any
//! exported function without parameters or results named by `#func`.

use wasmtime::component::{Component, InstancePre, Linker, ResourceTable, types::ComponentItem};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use super::GuestEnv;
use crate::limits::GuestLimits;

/// The store's data of a component.
pub struct Guest {
    pub ctx: WasiCtx,
    pub table: ResourceTable,
    pub limits: GuestLimits,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// What a command component runs.
enum Entry {
    /// `wasi:cli/run`'s `run`.
    Run(CommandPre<Guest>),
    /// A top-level exported function, from `path.wasm#func`.
    Func(InstancePre<Guest>, String),
}

/// A component that links against WASI and has what it should run.
pub struct Prepared {
    engine: Engine,
    entry: Entry,
}

/// Links the component and finds its entry: `wasi:cli/run` unless `func`
/// names an export. The error is the reason, for the caller to name the
/// component.
pub fn prepare(
    engine: &Engine,
    component: &Component,
    func: Option<&str>,
) -> Result<Prepared, String> {
    let mut linker: Linker<Guest> = Linker::new(engine);
    // `wasi:cli/exit` includes `exit-with-code` (since 0.2.12), so a
    // component may exit with any code, as proc_exit lets a module.
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| format!("link WASI: {e:#}"))?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| format!("cannot link: {e:#}"))?;
    let entry = match func {
        None => Entry::Run(CommandPre::new(pre).map_err(|_| {
            "it is a component that exports no `wasi:cli/run` (nor `wasi:http/incoming-handler`); \
             name an exported function with `path.wasm#func`"
                .to_string()
        })?),
        Some(name) => {
            check_func(engine, component, name)?;
            Entry::Func(pre, name.to_string())
        }
    };
    Ok(Prepared {
        engine: engine.clone(),
        entry,
    })
}

fn check_func(engine: &Engine, component: &Component, name: &str) -> Result<(), String> {
    let ty = component.component_type();
    let export = ty.get_export(engine, name).map(|export| export.ty);
    match export {
        Some(ComponentItem::ComponentFunc(f))
            if f.params().len() == 0 && f.results().len() == 0 =>
        {
            Ok(())
        }
        Some(_) => Err(format!(
            "export `{name}` is not a function without parameters or results"
        )),
        None => Err(format!("it exports no function `{name}`")),
    }
}

/// Instantiates the component and runs its entry. `run` returning its
/// error case is exit status 1, as `wasmtime run` reports it.
pub fn run(prepared: &Prepared, guest: &GuestEnv) -> wasmtime::Result<()> {
    let data = Guest {
        ctx: super::wasi_builder(guest)?.build(),
        table: ResourceTable::new(),
        limits: GuestLimits::new(guest.memory_limit),
    };
    let mut store = Store::new(&prepared.engine, data);
    store.limiter(|guest| &mut guest.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();
    match &prepared.entry {
        Entry::Run(pre) => {
            let command = pre.instantiate(&mut store)?;
            match command.wasi_cli_run().call_run(&mut store)? {
                Ok(()) => Ok(()),
                Err(()) => Err(I32Exit(1).into()),
            }
        }
        Entry::Func(pre, name) => {
            let instance = pre.instantiate(&mut store)?;
            let func = instance.get_typed_func::<(), ()>(&mut store, name)?;
            func.call(&mut store, ())
        }
    }
}
