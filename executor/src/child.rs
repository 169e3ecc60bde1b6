//! The main function of a container's child (`__child <id> <bundle>`).

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::exit::{EXEC_FAILED, FAILURE, outcome};
use crate::kind::{Kind, detect};
use crate::protocol::{self, CONTROL_FD, STATUS_FD};
use crate::sandbox::{self, Workload};
use crate::signals;
use crate::spec::{ChildConfig, child_config, load};
use crate::wasm::{GuestEnv, Prepared, engine, prepare, run, split_entry};

/// What runs at Start, checked and ready.
enum Ready {
    Native(crate::native::Program),
    Wasm(Box<(ChildConfig, Prepared)>),
}

/// The container's identity, for its hooks' state.
struct Identity {
    id: String,
    bundle: PathBuf,
    spec: oci_spec::runtime::Spec,
}

impl Identity {
    fn run_hooks(&self, stage: &str, status: &str) -> Result<()> {
        let state = crate::hooks::State {
            id: &self.id,
            pid: std::process::id() as i32,
            bundle: &self.bundle,
            status,
        };
        crate::hooks::run(&self.spec, stage, &state)
    }
}

/// Runs the child: prepare, report, wait for Start, run, exit with the
/// workload's status. Never returns: the child must end with the module's
/// code, or become the native program.
pub fn main(args: &[String]) -> ! {
    // Before any thread exists, so every thread inherits the mask.
    if let Err(e) = signals::block() {
        eprintln!("block termination signals: {e}");
        std::process::exit(FAILURE);
    }
    // SAFETY: the shim hands the child these two descriptors (protocol.rs)
    // and nothing else in this process owns them.
    let (status, control) =
        unsafe { (File::from_raw_fd(STATUS_FD), File::from_raw_fd(CONTROL_FD)) };
    let ready = match parse_args(args).and_then(|(id, bundle)| prepare_child(id, bundle)) {
        Ok(ready) => ready,
        Err(e) => {
            protocol::report(status, Err(&e.chain()));
            std::process::exit(FAILURE);
        }
    };
    let workload = match &ready.1 {
        Ready::Native(_) => Workload::Native,
        Ready::Wasm(_) => Workload::Wasm,
    };
    protocol::report(status, Ok(workload));
    if !protocol::await_start(control) {
        std::process::exit(FAILURE);
    }
    let (identity, ready) = ready;
    if let Err(e) = identity.run_hooks("startContainer", "created") {
        eprintln!("{}", e.chain());
        std::process::exit(FAILURE);
    }
    match ready {
        Ready::Native(program) => {
            let error = crate::native::exec(&program);
            eprintln!("{}", error.chain());
            std::process::exit(EXEC_FAILED)
        }
        Ready::Wasm(ready) => {
            let (config, prepared) = *ready;
            let guest = GuestEnv {
                args: &config.args,
                env: &config.env,
                cwd: &config.cwd,
                memory_limit: config.memory_limit,
            };
            let result = outcome(run(&prepared, &guest), signals::received());
            if let Some(message) = result.message {
                eprintln!("{message}");
            }
            std::process::exit(result.status)
        }
    }
}

fn parse_args(args: &[String]) -> Result<(String, PathBuf)> {
    match args {
        [id, bundle] => Ok((id.clone(), PathBuf::from(bundle))),
        _ => Err(Error::InvalidSpec(format!(
            "child expects <id> <bundle>, got {args:?}"
        ))),
    }
}

/// The first bytes of a file, enough to tell its kind.
fn head(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(8);
    File::open(path)
        .and_then(|f| f.take(8).read_to_end(&mut bytes))
        .map_err(|e| Error::Module {
            path: path.display().to_string(),
            reason: format!("cannot read it in the container's rootfs: {e}"),
        })?;
    Ok(bytes)
}

fn prepare_child(id: String, bundle: PathBuf) -> Result<(Identity, Ready)> {
    let spec = load(&bundle)?;
    let identity = Identity { id, bundle, spec };
    prepare_in_sandbox(&identity).map(|ready| (identity, ready))
}

fn prepare_in_sandbox(identity: &Identity) -> Result<Ready> {
    let mut config = child_config(&identity.spec, &identity.bundle)?;
    sandbox::enter(&config, &|| {
        identity.run_hooks("createContainer", "creating")
    })?;
    crate::native::fill_home(&mut config.env, config.uid);
    let (name, _) = split_entry(&config.args[0]);
    let found = crate::native::resolve(name, &config.env)?;
    // Relative to the working directory, as exec would take it.
    let path = config.cwd.join(&found);
    if detect(&head(&path)?) == Kind::Native {
        crate::native::close_on_exec_above_stdio()?;
        // Until the exec, a termination signal ends the child, as it ends
        // runc's init: blocked, it would be dropped at the exec. Started
        // before seccomp, which may not allow making a thread; the thread
        // only waits for a signal and dies at the exec.
        signals::spawn_watcher().map_err(Error::io("start the signal thread"))?;
        sandbox::drop_privileges(&config, Workload::Native)?;
        let program = crate::native::prepare(&path, &config.args, &config.env)?;
        return Ok(Ready::Native(program));
    }
    // Seccomp is in force from here: the module's bytes are read and
    // compiled under it, and every thread started later inherits it.
    sandbox::drop_privileges(&config, Workload::Wasm)?;
    signals::spawn_watcher().map_err(Error::io("start the signal thread"))?;
    let bytes = std::fs::read(&path).map_err(|e| Error::Module {
        path: name.to_string(),
        reason: format!("cannot read it in the container's rootfs: {e}"),
    })?;
    let engine = engine()?;
    signals::watch_engine(&engine);
    let module_arg = match config.args[0].split_once('#') {
        Some((_, func)) => format!("{}#{func}", found.display()),
        None => found.display().to_string(),
    };
    let prepared = prepare(&engine, &module_arg, &bytes)?;
    Ok(Ready::Wasm(Box::new((config, prepared))))
}
