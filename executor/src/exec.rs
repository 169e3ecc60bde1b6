//! The main function of a process exec'd into a running native container
//! (`__exec <id> <bundle> <init pid> <init start time> <process json>`),
//! as `runc exec` runs one, in runc's nsexec order. The shim clones this
//! helper in its own PID namespace and puts it into the container's
//! cgroup. Here it is made non-dumpable first (main.rs), joins the
//! container's other namespaces (the mount namespace last, which enters
//! the container's root), and only then forks into the container's PID
//! namespace: no process of ours is ever visible there while it still
//! holds the host's root or mounts. The fork's pid goes to the shim,
//! which adopts it; the helper exits and the fork takes the process's
//! user, capabilities, rlimits and the container's seccomp profile,
//! reports ready and execve's the program at Start.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::exit::{EXEC_FAILED, FAILURE};
use crate::native::{self, Program};
use crate::protocol::{self, CONTROL_FD, STATUS_FD};
use crate::sandbox::{self, Init, Workload};
use crate::spec::{ChildConfig, child_config, load};

struct Args {
    bundle: PathBuf,
    init: Init,
    process: String,
}

/// Runs the exec'd process: join, fork, prepare, report, wait for Start,
/// execve.
pub fn main(args: &[String]) -> ! {
    // SAFETY: the shim hands this process these two descriptors
    // (protocol.rs) and nothing else in this process owns them.
    let (mut status, mut control) =
        unsafe { (File::from_raw_fd(STATUS_FD), File::from_raw_fd(CONTROL_FD)) };
    let joined = parse_args(args).and_then(|a| join(&a));
    let program = joined.and_then(|(config, pid_ns)| {
        crate::fork::fork_into(pid_ns, &mut status, &mut control)?;
        prepare(config)
    });
    let ready = match program {
        Ok(ready) => ready,
        Err(e) => {
            protocol::report(status, Err(&e.chain()));
            std::process::exit(FAILURE);
        }
    };
    let workload = match &ready {
        Ready::Native(_) => Workload::Native,
        #[cfg(feature = "runtime")]
        Ready::Wasm(_) => Workload::Wasm,
    };
    protocol::report(status, Ok(workload));
    if !protocol::await_start(control) {
        std::process::exit(FAILURE);
    }
    match ready {
        Ready::Native(program) => {
            let error = native::exec(&program);
            crate::diagnose!("{}", error.chain());
            std::process::exit(EXEC_FAILED)
        }
        #[cfg(feature = "runtime")]
        Ready::Wasm(ready) => crate::child::run_wasm(*ready),
    }
}

/// What the exec runs at Start: a native program, or a Wasm module of
/// the container's root as a new instance in the container's sandbox.
enum Ready {
    Native(Program),
    #[cfg(feature = "runtime")]
    Wasm(Box<(ChildConfig, crate::wasm::Prepared)>),
}

/// Everything up to the PID namespace: the process's config, the
/// container's namespaces joined; returns the PID namespace to fork into.
fn join(args: &Args) -> Result<(ChildConfig, File)> {
    let mut spec = load(&args.bundle)?;
    spec.set_process(Some(parse_process(args.process.as_bytes())?));
    let config = child_config(&spec, &args.bundle)?;
    let pid_ns = sandbox::join_container(&config, &args.init)?;
    Ok((config, pid_ns))
}

fn parse_args(args: &[String]) -> Result<Args> {
    let bad = || {
        Error::InvalidSpec(format!(
            "exec expects <id> <bundle> <pid> <start> <process>, got {args:?}"
        ))
    };
    let [_id, bundle, pid, started, process] = args else {
        return Err(bad());
    };
    Ok(Args {
        bundle: PathBuf::from(bundle),
        init: Init {
            pid: pid.parse().map_err(|_| bad())?,
            started: started.parse().map_err(|_| bad())?,
        },
        process: process.clone(),
    })
}

/// The process spec of an exec, as containerd sends it (JSON).
pub fn parse_process(json: &[u8]) -> Result<oci_spec::runtime::Process> {
    let process: oci_spec::runtime::Process = serde_json::from_slice(json)
        .map_err(|e| Error::InvalidSpec(format!("exec process spec: {e}")))?;
    crate::spec::terminal(&process)?;
    Ok(process)
}

fn prepare(mut config: ChildConfig) -> Result<Ready> {
    native::fill_home(&mut config.env, config.uid);
    if let Some(terminal) = &config.terminal {
        crate::console::setup(terminal, crate::console::For::Exec)?;
    }
    #[cfg(feature = "runtime")]
    if let Some(ready) = prepare_wasm(&config)? {
        return Ok(ready);
    }
    let found = native::resolve(&config.args[0], &config.env)?;
    let path = config.cwd.join(found);
    native::close_on_exec_above_stdio()?;
    sandbox::drop_privileges(&config, Workload::Native)?;
    native::prepare(&path, &config.args, &config.env).map(Ready::Native)
}

/// When args[0] (before a `#func`) is a Wasm module in the container's
/// root, found and read as the exec's user: the module compiled (in this
/// process, under the container's seccomp profile, charged to its
/// cgroup) and linked, as the container's child prepares its own.
#[cfg(feature = "runtime")]
fn prepare_wasm(config: &ChildConfig) -> Result<Option<Ready>> {
    let (name, _) = crate::wasm::split_entry(&config.args[0]);
    let Ok((found, file)) = crate::child::open_entry(config, name) else {
        // Not there, or not readable: the native path says which.
        return Ok(None);
    };
    let kind = crate::kind::detect(&crate::child::head(&file, name)?);
    if !matches!(
        kind,
        crate::kind::Kind::CoreModule | crate::kind::Kind::Component
    ) {
        return Ok(None);
    }
    let (module_arg, bytes) = crate::child::read_module(config, &found, file, name)?;
    match crate::child::prepare_wasm(config.clone(), &module_arg, &bytes, None)? {
        crate::child::Ready::Wasm(ready) => Ok(Some(Ready::Wasm(ready))),
        crate::child::Ready::Native(program) => Ok(Some(Ready::Native(program))),
    }
}
