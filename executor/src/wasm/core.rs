//! WASI preview 1 core modules: linking and running a command module.

use wasmtime::{Engine, InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::{WasiP1Ctx, add_to_linker_sync};

use super::GuestEnv;
use crate::limits::GuestLimits;

/// A module that links against WASI and has its entry point.
pub struct Prepared {
    engine: Engine,
    instance_pre: InstancePre<Guest>,
    entry: String,
}

/// The store's data: the guest's WASI context and its limits.
pub struct Guest {
    wasi: WasiP1Ctx,
    limits: GuestLimits,
}

/// Checks the entry point and links the module. The error is the reason,
/// for the caller to name the module.
pub fn prepare(engine: &Engine, module: &Module, entry: &str) -> Result<Prepared, String> {
    match module.get_export(entry) {
        Some(wasmtime::ExternType::Func(ty))
            if ty.params().len() == 0 && ty.results().len() == 0 => {}
        Some(_) => {
            return Err(format!(
                "export `{entry}` is not a function without parameters or results"
            ));
        }
        None => return Err(format!("it exports no function `{entry}`")),
    }
    let mut linker: Linker<Guest> = Linker::new(engine);
    add_to_linker_sync(&mut linker, |guest: &mut Guest| &mut guest.wasi)
        .map_err(|e| format!("link WASI: {e:#}"))?;
    let instance_pre = linker
        .instantiate_pre(module)
        .map_err(|e| format!("cannot link: {e:#}"))?;
    Ok(Prepared {
        engine: engine.clone(),
        instance_pre,
        entry: entry.to_string(),
    })
}

/// Instantiates the module and calls its entry point. The error, if any,
/// is classified by [`crate::exit::outcome`].
pub fn run(prepared: &Prepared, guest: &GuestEnv) -> wasmtime::Result<()> {
    let guest_data = Guest {
        wasi: super::wasi_builder(guest)?.build_p1(),
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
