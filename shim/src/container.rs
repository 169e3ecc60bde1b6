//! The operating-system side of one container: its rootfs mount, stdio,
//! cgroup and sandboxed child, created together and removed together.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use containerd_shim::api::CreateTaskRequest;
use executor::protocol::{self, CHILD_SUBCOMMAND, Workload};
use executor::spawn::spawn_child;
use executor::spec;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::cache::{Cache, Compiler};
use crate::cgroup::{self, Cgroup};
use crate::errors::Fail;
use crate::reaper::Reaper;
use crate::steps;

/// The file in the bundle that records the child's pid and start time, so
/// that the `delete` action can find a child whose shim died, and never
/// mistake a process that reused the pid for it.
pub const PID_FILE: &str = "init.pid";

/// What exists of a created container besides its child.
#[derive(Debug)]
pub struct Resources {
    pub bundle: PathBuf,
    rootfs: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    /// The device rules applied at Create, which an Update that repeats
    /// them (the CRI sends all resources each time) leaves in place.
    pub device_rules: Option<Vec<oci_spec::runtime::LinuxDeviceCgroup>>,
    /// The spec, for the poststart and poststop hooks.
    pub spec: Option<std::sync::Arc<oci_spec::runtime::Spec>>,
}

/// A container whose child is ready and waits for Start.
pub struct Created {
    pub pid: Pid,
    pub control: File,
    /// What the child runs at Start.
    pub workload: Workload,
    pub stdio_hold: Option<crate::stdio::StdioHold>,
    pub resources: Resources,
    pub exit: oneshot::Receiver<i32>,
}

/// Creates everything for the task in `req` and a child that has loaded
/// and checked the module. On failure nothing is left behind.
/// The containerd this shim serves, whose API holds the images.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub grpc_address: String,
    pub namespace: String,
}

pub async fn create(
    req: &CreateTaskRequest,
    exe: &Path,
    reaper: &Arc<Reaper>,
    origin: &Origin,
) -> Result<Created, Fail> {
    let bundle = PathBuf::from(&req.bundle);
    let spec = spec::load(&bundle).map_err(|e| Fail::invalid(e.chain()))?;
    if req.terminal != spec::wants_terminal(&spec) {
        return Err(Fail::invalid(format!(
            "task {}: the request's terminal ({}) differs from process.terminal in config.json",
            req.id, req.terminal
        )));
    }
    let flags = spec::clone_flags(&spec).map_err(|e| Fail::invalid(e.chain()))?;
    spec::child_config(&spec, &bundle).map_err(|e| Fail::invalid(e.chain()))?;

    let mut resources = Resources {
        bundle: bundle.clone(),
        rootfs: None,
        cgroup: None,
        device_rules: None,
        spec: None,
    };
    let cache = open_cache(req, &bundle)?;
    let artifact = match origin.grpc_address.is_empty() {
        true => None,
        false => crate::artifact::lookup(&origin.grpc_address, &origin.namespace, &req.id)
            .await
            .map_err(|e| Fail::invalid(format!("task {}: {e:#}", req.id)))?,
    };
    let module = Module { cache, artifact };
    let result = create_with(req, exe, reaper, &spec, flags, module, &mut resources).await;
    match result {
        Ok((pid, (control, workload), stdio_hold, exit)) => Ok(Created {
            pid,
            control,
            workload,
            stdio_hold,
            resources,
            exit,
        }),
        Err(fail) => {
            if let Err(e) = resources.release() {
                log::warn!("task {}: cleaning up after a failed create: {e:#}", req.id);
            }
            Err(fail)
        }
    }
}

/// Create, after the spec was checked, in named steps: the rootfs, the
/// stdio, the cgroup, the child's clone, then its preparation (pid file,
/// cache server, hooks, the go-ahead, the report). Everything made is
/// recorded in `resources` as it is made, for the caller to undo.
async fn create_with(
    req: &CreateTaskRequest,
    exe: &Path,
    reaper: &Arc<Reaper>,
    spec: &oci_spec::runtime::Spec,
    flags: nix::sched::CloneFlags,
    module: Module,
    resources: &mut Resources,
) -> Result<
    (
        Pid,
        (File, Workload),
        Option<crate::stdio::StdioHold>,
        oneshot::Receiver<i32>,
    ),
    Fail,
> {
    let id = &req.id;
    mount_rootfs(req, resources).await?;
    steps::reached(id, "rootfs");
    let crate::stdio::Opened {
        fds: stdio,
        hold: stdio_hold,
    } = crate::stdio::open(&req.stdin, &req.stdout, &req.stderr)
        .map_err(|e| Fail::invalid(format!("task {id}: {e:#}")))?;
    steps::reached(id, "stdio");
    let (stdio, terminal) = for_terminal(id, req.terminal, stdio)?;
    create_cgroup(spec, id, resources)?;
    steps::reached(id, "cgroup");
    let (cache_socket, child_socket) = UnixStream::pair()
        .map_err(|e| Fail::internal(format!("task {id}: create the cache socket: {e}")))?;
    let clone = ChildSetup {
        id,
        exe,
        bundle: &resources.bundle,
        stdio,
        cache: OwnedFd::from(child_socket),
        artifact: module.artifact,
        console: terminal.as_ref().map(|(_, theirs)| theirs),
        flags,
    };
    let (child, pid, exit) = clone_child(reaper, clone)?;
    steps::reached(id, "clone");
    let terminal = terminal.map(|(pending, _)| pending);
    // In a pod that shares its PID namespace (the spec names the pause
    // container's), the child forks into it once it has joined the
    // others, and the shim adopts that fork (executor's fork.rs).
    let forks = spec::pid_namespace_path(spec).is_some();

    // Every failure from here on goes through `ready`, which kills the
    // child (and its fork) and waits for it.
    let mut forked = None;
    let ready = async {
        // Recorded at once: if the shim dies from here on, the `delete`
        // action finds the child by this file and kills it.
        write_pid_file(&resources.bundle, pid)
            .map_err(|e| Fail::internal(format!("task {id}: write {PID_FILE}: {e:#}")))?;
        steps::reached(id, "pid-file");
        // On a miss the shim compiles the module itself, charged to the
        // container's cgroup.
        let compiler = Compiler {
            exe: exe.to_path_buf(),
            reaper: reaper.clone(),
            cgroup: resources.cgroup.clone(),
        };
        let cache_server = serve_cache(id, module.cache, compiler, cache_socket)
            .map_err(|e| Fail::internal(format!("task {id}: {e:#}")))?;
        let hooks = Hooks {
            reaper,
            spec: spec.clone(),
            id: id.clone(),
            bundle: resources.bundle.clone(),
            pid,
        };
        let pipes = (child.status, child.control);
        let fork = forks.then_some(&mut forked);
        let ready = start_child(id, pid, pipes, &resources.cgroup, hooks, fork).await;
        cache_server.finish().await;
        let ready = ready?;
        // Sent by the child before its report.
        let stdio_hold = match terminal {
            None => stdio_hold,
            Some(pending) => {
                let console = pending
                    .start(&format!("task {id}"))
                    .map_err(|e| Fail::internal(format!("{e:#}")))?;
                Some(crate::stdio::StdioHold::with_console(stdio_hold, console))
            }
        };
        steps::reached(id, "ready");
        Ok::<_, Fail>((ready, stdio_hold))
    }
    .await;
    resources.spec = Some(std::sync::Arc::new(spec.clone()));
    match (ready, forked) {
        // The child exits by itself once its fork is adopted: the fork is
        // the container's process.
        (Ok((ready, stdio_hold)), Some(fork)) => Ok((fork.pid, ready, stdio_hold, fork.exit)),
        (Ok((ready, stdio_hold)), None) => Ok((pid, ready, stdio_hold, exit)),
        (Err(fail), fork) => {
            // The child is ours and not started: kill it and wait for the
            // reaper, so that the cgroup can be removed.
            if let Some(fork) = fork {
                let _ = reaper.signal(fork.pid, Signal::SIGKILL);
                let code = fork.exit.await.ok();
                log::debug!("task {id}: fork {} ended with {code:?}", fork.pid);
            }
            let _ = reaper.signal(pid, Signal::SIGKILL);
            let code = exit.await.ok();
            log::debug!("task {id}: child {pid} ended with {code:?} after a failed create");
            match code {
                // An empty report means the child had already ended (its
                // status pipe closed): its own status tells why, 128 +
                // signal when something killed it during Create.
                Some(code) if fail.message.ends_with("ended before reporting") => Err(
                    Fail::internal(format!("{} (exit status {code})", fail.message)),
                ),
                _ => Err(fail),
            }
        }
    }
}

/// Mounts the rootfs containerd prepared (none for a bundle that holds
/// its own).
async fn mount_rootfs(req: &CreateTaskRequest, resources: &mut Resources) -> Result<(), Fail> {
    let id = &req.id;
    let rootfs = resources.bundle.join("rootfs");
    for m in &req.rootfs {
        log::debug!(
            "task {id}: mount {} ({}) on {}",
            m.source,
            m.type_,
            rootfs.display()
        );
        // Recorded first: a mount that half succeeds is still undone.
        resources.rootfs = Some(rootfs.clone());
        containerd_shim::util::mount_rootfs(m, &rootfs)
            .await
            .map_err(|e| {
                Fail::internal(format!("task {id}: mount rootfs {}: {e}", rootfs.display()))
            })?;
    }
    Ok(())
}

/// Creates the container's cgroup (`linux.cgroupsPath`, or runc's
/// default) with the spec's limits and device rules.
fn create_cgroup(
    spec: &oci_spec::runtime::Spec,
    id: &str,
    resources: &mut Resources,
) -> Result<(), Fail> {
    let cg = cgroup::of_spec(spec, id).map_err(|e| Fail::invalid(format!("task {id}: {e:#}")))?;
    // Recorded first: a hierarchy created before a failure is removed too.
    resources.cgroup = Some(cg.clone());
    cg.create()
        .map_err(|e| Fail::internal(format!("task {id}: {e:#}")))?;
    log::debug!("task {id}: cgroup {:?}", cg.dirs);
    let none = oci_spec::runtime::LinuxResources::default();
    let limits = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .unwrap_or(&none);
    cg.apply(limits)
        .map_err(|e| Fail::invalid(format!("task {id}: {e:#}")))?;
    // As runc: without device rules a container still gets the
    // allow-list of default devices, not every device of the host.
    if limits.devices().is_none() {
        cg.apply_devices(&[])
            .map_err(|e| Fail::invalid(format!("task {id}: {e:#}")))?;
    }
    resources.device_rules = limits.devices().clone();
    Ok(())
}

/// What the child is cloned with; its descriptors are closed in the shim
/// once it has them.
struct ChildSetup<'a> {
    id: &'a str,
    exe: &'a Path,
    bundle: &'a Path,
    stdio: [OwnedFd; 3],
    /// The child's end of the cache conversation, its fd 5.
    cache: OwnedFd,
    /// An artifact's module, the child's fd 6.
    artifact: Option<crate::artifact::Artifact>,
    /// The socket its terminal's master comes back on, the child's fd 7.
    console: Option<&'a OwnedFd>,
    flags: nix::sched::CloneFlags,
}

/// A terminal's relay-to-be and the child's end of its socket.
type PendingTerminal = (crate::console::Pending, OwnedFd);

/// With a terminal, the process gets /dev/null and the socket to send its
/// terminal on, and the relay gets the fifos (`console::pending`).
fn for_terminal(
    id: &str,
    terminal: bool,
    stdio: [OwnedFd; 3],
) -> Result<([OwnedFd; 3], Option<PendingTerminal>), Fail> {
    if !terminal {
        return Ok((stdio, None));
    }
    let (pending, stdio, theirs) =
        crate::console::pending(stdio).map_err(|e| Fail::internal(format!("task {id}: {e:#}")))?;
    Ok((stdio, Some((pending, theirs))))
}

/// Clones the child (in the shim's PID namespace or a new one) and
/// registers it with the reaper.
fn clone_child(
    reaper: &Reaper,
    clone: ChildSetup,
) -> Result<(executor::spawn::Child, Pid, oneshot::Receiver<i32>), Fail> {
    let id = clone.id;
    let bundle = clone.bundle.to_string_lossy().into_owned();
    let mut args = vec![CHILD_SUBCOMMAND, id, bundle.as_str()];
    let mut extra = vec![Some(&clone.cache), None, clone.console];
    if let Some(artifact) = &clone.artifact {
        log::debug!(
            "task {id}: module from the image's layer {}",
            artifact.digest
        );
        extra[1] = Some(&artifact.module);
        args.push(protocol::ARTIFACT_FLAG);
    }
    let (child, pid, exit) = reaper
        .spawn(|| {
            let stdio = [&clone.stdio[0], &clone.stdio[1], &clone.stdio[2]];
            let child = spawn_child(clone.exe, &args, stdio, &extra, clone.flags)
                .map_err(|e| anyhow::anyhow!(e.chain()))?;
            Ok((child.pid, child))
        })
        .map_err(|e| Fail::internal(format!("task {id}: {e:#}")))?;
    log::debug!("task {id}: child {pid} cloned with {:?}", clone.flags);
    Ok((child, pid, exit))
}

/// Where a container's code comes from besides its rootfs.
struct Module {
    /// The compiled-code cache, unless the runtime options turn it off.
    cache: Option<Cache>,
    /// The module of an OCI Wasm artifact image.
    artifact: Option<crate::artifact::Artifact>,
}

/// Opens the cache the task's runtime options name (or the default one).
/// A cache that cannot be used fails Create: a misconfiguration would
/// otherwise only show as every start compiling again.
fn open_cache(req: &CreateTaskRequest, bundle: &Path) -> Result<Option<Cache>, Fail> {
    let id = &req.id;
    let settings = crate::options::cache_settings(req.options.as_ref(), bundle)
        .map_err(|e| Fail::invalid(format!("task {id}: {e:#}")))?;
    let Some(max_bytes) = settings.max_bytes else {
        return Ok(None);
    };
    Cache::open(&settings.dir, max_bytes)
        .map(Some)
        .map_err(|e| Fail::invalid(format!("task {id}: compiled-code cache: {e:#}")))
}

/// The shim's side of a child's cache conversation, served on a blocking
/// thread until the child closes its end or [`CacheServer::finish`].
struct CacheServer {
    socket: UnixStream,
    task: tokio::task::JoinHandle<anyhow::Result<crate::cache::Summary>>,
    /// Names the task in the log.
    what: String,
}

fn serve_cache(
    id: &str,
    cache: Option<Cache>,
    compiler: Compiler,
    socket: UnixStream,
) -> anyhow::Result<CacheServer> {
    let what = format!("task {id}");
    let served = socket.try_clone().context("clone the cache socket")?;
    let name = what.clone();
    let task = tokio::task::spawn_blocking(move || {
        crate::cache::serve_child(cache.as_ref(), &compiler, served, &name)
    });
    Ok(CacheServer { socket, task, what })
}

impl CacheServer {
    /// Ends the conversation: called once the child has reported (or
    /// failed); a compile still running for it is given up.
    async fn finish(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        // serve_child logs what happened; only a panic is left to say.
        if let Err(e) = self.task.await {
            log::warn!("{}: compiled-code cache: {e}", self.what);
        }
    }
}

/// What the runtime-side hooks of a new container need.
struct Hooks<'a> {
    reaper: &'a Reaper,
    spec: oci_spec::runtime::Spec,
    id: String,
    bundle: PathBuf,
    pid: Pid,
}

/// Runs the hooks of `stage`. The shim reaps every child it has, so a
/// hook is spawned through the reaper and its status comes from there.
pub async fn run_hooks(
    reaper: &Reaper,
    spec: &oci_spec::runtime::Spec,
    stage: &'static str,
    id: &str,
    bundle: &Path,
    pid: Pid,
    status: &'static str,
) -> Result<(), Fail> {
    let state = executor::hooks::State {
        id,
        pid: pid.as_raw(),
        bundle,
        status,
    };
    for mut ready in executor::hooks::commands(spec, stage, &state) {
        let spawned = reaper.spawn(|| {
            let child = ready.command.spawn()?;
            Ok((Pid::from_raw(child.id() as i32), child))
        });
        let (mut child, hook_pid, exit) = spawned
            .map_err(|e| Fail::invalid(ready.failed(&format!("cannot run it: {e:#}")).chain()))?;
        executor::hooks::feed(&mut child, &ready.input);
        let stderr = executor::hooks::Stderr::collect(&mut child);
        let code = match ready.timeout {
            None => exit.await.ok(),
            Some(limit) => match tokio::time::timeout(limit, exit).await {
                Ok(code) => code.ok(),
                Err(_) => {
                    let _ = reaper.signal(hook_pid, Signal::SIGKILL);
                    let secs = limit.as_secs();
                    return Err(Fail::invalid(
                        ready.failed(&format!("timed out after {secs}s")).chain(),
                    ));
                }
            },
        };
        if code != Some(0) {
            let said = tokio::task::spawn_blocking(move || stderr.text())
                .await
                .unwrap_or_default();
            let reason = format!("exit status {}: {said}", code.unwrap_or(-1));
            return Err(Fail::invalid(ready.failed(&reason).chain()));
        }
    }
    Ok(())
}

/// Places the child in its cgroup, runs the prestart and createRuntime
/// hooks (the child's namespaces exist: a network hook can set up its
/// network), lets it exec and reads its report. With `fork`, the child
/// forks into its pod's PID namespace first: the fork is adopted into
/// `fork`, recorded in the pid file, and reports instead of the child.
async fn start_child(
    id: &str,
    pid: Pid,
    (status, mut control): (File, File),
    cgroup: &Option<Cgroup>,
    hooks: Hooks<'_>,
    fork: Option<&mut Option<crate::adopt::Adopted>>,
) -> Result<(File, Workload), Fail> {
    if let Some(cg) = cgroup {
        cg.add(pid.as_raw())
            .map_err(|e| Fail::internal(format!("task {id}: {e:#}")))?;
    }
    for stage in ["prestart", "createRuntime"] {
        let (spec, bundle) = (&hooks.spec, &hooks.bundle);
        run_hooks(
            hooks.reaper,
            spec,
            stage,
            &hooks.id,
            bundle,
            hooks.pid,
            "creating",
        )
        .await
        .map_err(|fail| Fail::invalid(format!("task {id}: {}", fail.message)))?;
    }
    let what = format!("task {id}");
    protocol::release(&mut control)
        .map_err(|e| Fail::internal(format!("{what}: release child {pid}: {e}")))?;
    let Some(slot) = fork else {
        let workload = crate::readiness::await_ready(&what, pid, status).await?;
        return Ok((control, workload));
    };
    let (status, adopted) =
        crate::adopt::adopt_fork(&what, pid, hooks.reaper, status, &mut control).await?;
    let fork_pid = adopted.pid;
    *slot = Some(adopted);
    // From here on, the `delete` action of a dead shim kills the fork.
    write_pid_file(&hooks.bundle, fork_pid)
        .map_err(|e| Fail::internal(format!("{what}: write {PID_FILE}: {e:#}")))?;
    let workload = crate::readiness::await_ready(&what, fork_pid, status).await?;
    Ok((control, workload))
}

/// Writes `<pid> <start time>` to the bundle's pid file.
fn write_pid_file(bundle: &Path, pid: Pid) -> anyhow::Result<()> {
    let started =
        executor::process_start_time(pid.as_raw()).context("read the child's start time")?;
    std::fs::write(bundle.join(PID_FILE), format!("{pid} {started}"))?;
    Ok(())
}

/// The pid and start time recorded in the bundle's pid file.
pub fn read_pid_file(bundle: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(bundle.join(PID_FILE)).ok()?;
    let (pid, started) = text.trim().split_once(' ')?;
    Some((pid.parse().ok()?, started.parse().ok()?))
}

impl Resources {
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// Removes the cgroup, unmounts the rootfs and the pid file. The child
    /// must be gone. Every step is tried even when one fails.
    pub fn release(&mut self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        if let Some(cg) = self.cgroup.take()
            && let Err(e) = cg.remove()
        {
            errors.push(format!("{e:#}"));
        }
        if let Some(rootfs) = self.rootfs.take()
            && let Err(e) = unmount(&rootfs)
        {
            errors.push(format!("{e:#}"));
        }
        let _ = std::fs::remove_file(self.bundle.join(PID_FILE));
        match errors.is_empty() {
            true => Ok(()),
            false => Err(anyhow::anyhow!(errors.join("; "))),
        }
    }
}

pub fn unmount(rootfs: &Path) -> anyhow::Result<()> {
    let target = rootfs.to_string_lossy().into_owned();
    containerd_shim::mount::umount_recursive(Some(&target), libc::MNT_DETACH)
        .map_err(|e| anyhow::anyhow!("unmount {target}: {e}"))
}
