//! The main function of a container's child (`__child <id> <bundle>`).

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use crate::cache::CacheLink;
use crate::error::{Error, Result};
use crate::exit::{EXEC_FAILED, FAILURE};
use crate::kind::{Kind, detect};
use crate::protocol::{self, ARTIFACT_FLAG, CONTROL_FD, MODULE_FD, STATUS_FD};
use crate::sandbox::{self, Workload};
use crate::signals;
use crate::spec::{ChildConfig, child_config, load, pid_namespace_path};
use crate::wasm::{GuestEnv, Prepared, prepare, run, split_entry};

/// What runs at Start, checked and ready.
pub(crate) enum Ready {
    Native(crate::native::Program),
    Wasm(Box<(ChildConfig, Prepared)>),
}

/// The child's ends of the protocol pipes, lent to the fork into a pod's
/// PID namespace (`crate::fork`), which reports through them.
struct Pipes<'a> {
    status: &'a mut File,
    control: &'a mut File,
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
        crate::diagnose!("block termination signals: {e}");
        std::process::exit(FAILURE);
    }
    // SAFETY: the shim hands the child these two descriptors (protocol.rs)
    // and nothing else in this process owns them.
    let (mut status, mut control) =
        unsafe { (File::from_raw_fd(STATUS_FD), File::from_raw_fd(CONTROL_FD)) };
    // The cache conversation and the artifact's module end with Create:
    // neither descriptor is open when the guest starts.
    let mut cache = CacheLink::inherit();
    let mut pipes = Pipes {
        status: &mut status,
        control: &mut control,
    };
    let prepared = parse_args(args).and_then(|(id, bundle, artifact)| {
        prepare_child(id, bundle, artifact, cache.as_mut(), &mut pipes)
    });
    drop(cache);
    let ready = match prepared {
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
        crate::diagnose!("{}", e.chain());
        std::process::exit(FAILURE);
    }
    match ready {
        Ready::Native(program) => {
            let error = crate::native::exec(&program);
            crate::diagnose!("{}", error.chain());
            std::process::exit(EXEC_FAILED)
        }
        Ready::Wasm(ready) => run_wasm(*ready),
    }
}

/// Runs a prepared guest and exits with its status (DESIGN §2).
pub(crate) fn run_wasm((config, prepared): (ChildConfig, Prepared)) -> ! {
    let guest = GuestEnv {
        args: &config.args,
        env: &config.env,
        cwd: &config.cwd,
        memory_limit: config.memory_limit,
    };
    let threads = crate::wasm::engine::cpus(config.cpu_limit);
    let result = run(prepared, &guest, threads, &signals::received);
    if let Some(message) = result.message {
        crate::diagnose!("{message}");
    }
    std::process::exit(result.status)
}

/// `<id> <bundle> [ARTIFACT_FLAG]`.
fn parse_args(args: &[String]) -> Result<(String, PathBuf, bool)> {
    match args {
        [id, bundle] => Ok((id.clone(), PathBuf::from(bundle), false)),
        [id, bundle, flag] if flag == ARTIFACT_FLAG => {
            Ok((id.clone(), PathBuf::from(bundle), true))
        }
        _ => Err(Error::InvalidSpec(format!(
            "child expects <id> <bundle> [{ARTIFACT_FLAG}], got {args:?}"
        ))),
    }
}

/// Finds args[0] with the spec's PATH and opens it, both as the
/// container's user (`sandbox::identity`): a file that user may not read
/// is refused by name, as an execve of it would be.
pub(crate) fn open_entry(config: &ChildConfig, name: &str) -> Result<(PathBuf, File)> {
    let user = sandbox::identity::User::of(config);
    sandbox::identity::as_user(&user, || {
        let found = crate::native::resolve(name, &config.env)?;
        // Relative to the working directory, as exec would take it.
        let path = config.cwd.join(&found);
        let file = File::open(&path).map_err(|e| Error::Module {
            path: name.to_string(),
            reason: format!("cannot read it in the container's rootfs: {e}"),
        })?;
        Ok((found, file))
    })
}

/// The first bytes of a file, enough to tell its kind.
pub(crate) fn head(file: &File, name: &str) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0u8; 8];
    let n = file.read_at(&mut bytes, 0).map_err(|e| Error::Module {
        path: name.to_string(),
        reason: format!("cannot read it in the container's rootfs: {e}"),
    })?;
    bytes.truncate(n);
    Ok(bytes)
}

fn prepare_child(
    id: String,
    bundle: PathBuf,
    artifact: bool,
    cache: Option<&mut CacheLink>,
    pipes: &mut Pipes,
) -> Result<(Identity, Ready)> {
    let spec = load(&bundle)?;
    let identity = Identity { id, bundle, spec };
    // Taken before the sandbox: the descriptor must not outlive Create.
    let module = artifact.then(take_artifact_module).transpose()?;
    prepare_in_sandbox(&identity, module, cache, pipes).map(|ready| (identity, ready))
}

/// The module of an OCI Wasm artifact image, which the shim read from
/// containerd's content store (verified against its digest) into a
/// sealed memfd at [`MODULE_FD`].
fn take_artifact_module() -> Result<Vec<u8>> {
    use std::io::{Read, Seek};
    // SAFETY: the shim passes this descriptor only with ARTIFACT_FLAG, and
    // nothing else in this process owns it.
    let mut file = unsafe { File::from_raw_fd(MODULE_FD) };
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(Error::io("read the artifact's module from the shim"))?;
    Ok(bytes)
}

fn prepare_in_sandbox(
    identity: &Identity,
    module: Option<Vec<u8>>,
    cache: Option<&mut CacheLink>,
    pipes: &mut Pipes,
) -> Result<Ready> {
    let mut config = child_config(&identity.spec, &identity.bundle)?;
    sandbox::join(&config)?;
    // A pod that shares its PID namespace names the pause container's:
    // the child goes on as a fork born there, the shim's by adoption.
    if let Some(path) = pid_namespace_path(&identity.spec) {
        let ns = File::open(&path).map_err(Error::io(format!(
            "open linux.namespaces pid path {}",
            path.display()
        )))?;
        crate::fork::fork_into(ns, pipes.status, pipes.control)?;
    }
    sandbox::enter(&config, &|| {
        identity.run_hooks("createContainer", "creating")
    })?;
    crate::native::fill_home(&mut config.env, config.uid);
    if let Some(bytes) = module {
        // args[0] only selects a function: the module is the image's layer.
        let module_arg = match config.args.first().and_then(|a| a.rsplit_once('#')) {
            Some((_, func)) => format!("the image's Wasm layer#{func}"),
            None => "the image's Wasm layer".to_string(),
        };
        return prepare_wasm(config, &module_arg, &bytes, cache);
    }
    let (name, _) = split_entry(&config.args[0]);
    let (found, file) = open_entry(&config, name)?;
    let path = config.cwd.join(&found);
    if detect(&head(&file, name)?) == Kind::Native {
        drop(file);
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
    let (module_arg, bytes) = read_module(&config, &found, file, name)?;
    prepare_wasm(config, &module_arg, &bytes, cache)
}

/// The module's bytes from its opened file, and the argument that names
/// it (with `#func` when args[0] names a function).
pub(crate) fn read_module(
    config: &ChildConfig,
    found: &std::path::Path,
    mut file: File,
    name: &str,
) -> Result<(String, Vec<u8>)> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| Error::Module {
        path: name.to_string(),
        reason: format!("cannot read it in the container's rootfs: {e}"),
    })?;
    let module_arg = match config.args[0].split_once('#') {
        Some((_, func)) => format!("{}#{func}", found.display()),
        None => found.display().to_string(),
    };
    Ok((module_arg, bytes))
}

/// Compiles and links a module whose bytes are read: `module_arg` is its
/// path, with `#func` when args[0] names a function.
pub(crate) fn prepare_wasm(
    config: ChildConfig,
    module_arg: &str,
    bytes: &[u8],
    cache: Option<&mut CacheLink>,
) -> Result<Ready> {
    crate::title::take_program_name(&config.args);
    // Seccomp is in force from here: the module is compiled under it, and
    // every thread started later (compiler, signals, server) inherits it.
    sandbox::drop_privileges(&config, Workload::Wasm)?;
    signals::spawn_watcher().map_err(Error::io("start the signal thread"))?;
    let threads = crate::wasm::engine::cpus(config.cpu_limit);
    let prepared = prepare(
        module_arg,
        bytes,
        &config.env,
        threads,
        cache,
        &signals::watch_engine,
    )?;
    Ok(Ready::Wasm(Box::new((config, prepared))))
}
