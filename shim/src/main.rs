//! `containerd-shim-wasmtime-v1`: a containerd shim v2 that runs WASI
//! modules with wasmtime, one sandboxed child per container.

mod adopt;
mod artifact;
mod cache;
mod cgroup;
mod console;
mod container;
mod delete;
mod errors;
mod events;
mod exec;
mod features;
mod options;
mod readiness;
mod reaper;
mod serve;
mod start;
mod stdio;
mod steps;
mod task;
mod version;

use std::process::ExitCode;

const RUNTIME: &str = "io.containerd.wasmtime.v1";

fn main() -> ExitCode {
    // First of all, in every role: a child or exec'd process appears in a
    // container's PID namespace, and neither it nor the shim it was
    // cloned from may be inspected or ptraced from there (readonly.rs).
    if let Err(e) = executor::readonly::make_non_dumpable() {
        executor::diagnose!("{RUNTIME}: {e}");
        return ExitCode::from(2);
    }
    let args: Vec<String> = std::env::args().collect();
    // The child path comes first, before any thread or runtime exists.
    if args.get(1).map(String::as_str) == Some(executor::protocol::CHILD_SUBCOMMAND) {
        executor::child::main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some(executor::protocol::EXEC_SUBCOMMAND) {
        executor::exec::main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some(executor::compiler::COMPILE_SUBCOMMAND) {
        executor::compiler::main(&args[2..]);
    }
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(flags) => flags,
        Err(e) => {
            executor::diagnose!("{RUNTIME}: {e}");
            return ExitCode::from(2);
        }
    };
    if flags.version {
        print!("{}", version::describe());
        return ExitCode::SUCCESS;
    }
    let result = match flags.action.as_str() {
        _ if flags.info => info(),
        "start" => start::run(&flags).inspect_err(|e| log_to_bundle(&format!("start: {e:#}"))),
        "delete" => delete::run(&flags),
        _ if flags.socket.is_empty() => Err(anyhow::anyhow!(
            "no action given: containerd runs this binary with start, delete or -socket"
        )),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve::run(flags))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            executor::diagnose!("{RUNTIME}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a line to the bundle's `log` fifo, the shim log that containerd
/// copies into its own, for an action that fails before any logger
/// exists. Without a reader (no containerd), nothing is written.
fn log_to_bundle(line: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let fifo = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log");
    if let Ok(mut fifo) = fifo {
        let _ = std::io::Write::write_all(&mut fifo, format!("{RUNTIME}: {line}\n").as_bytes());
    }
}

/// The `-info` action: describe the runtime to containerd.
fn info() -> anyhow::Result<()> {
    use containerd_shim::protos::protobuf::Message;
    use containerd_shim::protos::protobuf::well_known_types::any::Any;
    use containerd_shim::protos::types::introspection::RuntimeInfo;
    let features = Any {
        type_url: features::TYPE_URL.to_string(),
        value: serde_json::to_vec(&features::document())?,
        ..Default::default()
    };
    let info = RuntimeInfo {
        name: RUNTIME.to_string(),
        features: Some(features).into(),
        ..Default::default()
    };
    std::io::Write::write_all(&mut std::io::stdout(), &info.write_to_bytes()?)?;
    Ok(())
}
