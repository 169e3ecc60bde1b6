//! The Task API: containerd's RPCs mapped onto the lifecycle table and the
//! containers' operating-system resources.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use containerd_shim::api;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::topics;
use containerd_shim::protos::types::task::{ProcessInfo, Status as ApiStatus};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::{Mutex, MutexGuard, watch};

use super::lifecycle::{Event, Exit, Status, next};
use crate::container::{self, Resources};
use crate::errors::Fail;
use crate::events::Publisher;
use crate::reaper::Reaper;

/// One row of the table: a task from the start of its Create to the end
/// of its Delete.
pub(super) struct TaskEntry {
    /// The task's status. Kept in a watch cell so that Wait and Delete can
    /// wait for the exit; it is the only place the exit status is held.
    status: watch::Sender<Status>,
    pub(super) bundle: PathBuf,
    stdio: [String; 3],
    /// Whether its process has a terminal.
    terminal: bool,
    /// What the task owns once Create has made it.
    pub(super) live: Option<Live>,
    /// The processes exec'd into it, by exec id.
    pub(super) execs: HashMap<String, super::exec_entry::ExecEntry>,
}

pub(super) struct Live {
    pub(super) pid: Pid,
    /// The go-ahead pipe to the child, until Start or the exit.
    control: Option<File>,
    stdio_hold: Option<crate::stdio::StdioHold>,
    pub(super) resources: Resources,
}

impl TaskEntry {
    pub(super) fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Moves the task through `event`, or says why it cannot.
    pub(super) fn apply(&self, id: &str, event: Event) -> Result<Status, Fail> {
        let status = next(id, self.status(), event)?;
        self.status.send_replace(status);
        Ok(status)
    }

    /// The task's resources, for an RPC that `event` allows now.
    pub(super) fn live(&self, id: &str, event: Event) -> Result<&Live, Fail> {
        next(id, self.status(), event)?;
        self.live
            .as_ref()
            .ok_or_else(|| Fail::internal(format!("task {id} has no process")))
    }
}

pub(super) struct Inner {
    tasks: Mutex<HashMap<String, TaskEntry>>,
    pub(super) reaper: Arc<Reaper>,
    publisher: Publisher,
    pub(super) exe: PathBuf,
    exit: Arc<ExitSignal>,
    /// The containerd whose API serves images (OCI Wasm artifacts).
    origin: container::Origin,
}

/// The task service of one shim; cheap to clone.
#[derive(Clone)]
pub struct Service(pub(super) Arc<Inner>);

pub type RpcResult<T> = Result<T, Fail>;

impl Service {
    pub fn new(
        reaper: Arc<Reaper>,
        publisher: Publisher,
        exe: PathBuf,
        exit: Arc<ExitSignal>,
        origin: container::Origin,
    ) -> Self {
        Service(Arc::new(Inner {
            tasks: Mutex::new(HashMap::new()),
            reaper,
            publisher,
            exe,
            exit,
            origin,
        }))
    }

    pub(super) async fn table(&self) -> MutexGuard<'_, HashMap<String, TaskEntry>> {
        self.0.tasks.lock().await
    }

    /// Queues an event for containerd; events leave in this order.
    pub(super) fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        self.0.publisher.publish(topic, event);
    }

    /// Waits (a little) for queued events to reach containerd.
    pub async fn flush_events(&self) {
        self.0
            .publisher
            .flush(std::time::Duration::from_secs(10))
            .await;
    }

    /// Creates the task for a caller that may give up before it is done:
    /// ttrpc drops the RPC at the client's deadline (kubelet's is two
    /// minutes; a large module can take long to compile), and then no one
    /// will start or delete the task, and containerd's Shutdown came while
    /// the shim was busy. Such a task is deleted at once, and the shim
    /// exits if it has nothing else to serve.
    pub async fn create_for(
        &self,
        req: api::CreateTaskRequest,
        caller_gone: &AtomicBool,
    ) -> RpcResult<api::CreateTaskResponse> {
        let id = req.id.clone();
        let created = self.create_task(req).await;
        if !caller_gone.load(Ordering::SeqCst) {
            return created;
        }
        log::warn!("task {id}: its Create outlived the caller; undoing it");
        match created {
            // Nobody receives this failure any more: the log keeps it.
            Err(fail) => log::error!("create: {fail}"),
            Ok(_) => {
                if let Err(fail) = self.delete_task(&id).await {
                    log::warn!("task {id}: delete after an abandoned create: {fail}");
                }
            }
        }
        self.shutdown_if_idle().await;
        Err(Fail::deadline(format!(
            "task {id}: the caller gave up before Create ended; nothing of it is kept"
        )))
    }

    async fn create_task(&self, req: api::CreateTaskRequest) -> RpcResult<api::CreateTaskResponse> {
        let id = req.id.clone();
        if !req.checkpoint.is_empty() {
            return Err(Fail::unimplemented(format!(
                "task {id}: restoring a checkpoint is not supported"
            )));
        }
        {
            let mut tasks = self.table().await;
            if tasks.contains_key(&id) {
                return Err(Fail::already_exists(format!("task {id} already exists")));
            }
            let (status, _) = watch::channel(Status::Creating);
            tasks.insert(
                id.clone(),
                TaskEntry {
                    status,
                    bundle: PathBuf::from(&req.bundle),
                    stdio: [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()],
                    terminal: req.terminal,
                    live: None,
                    execs: HashMap::new(),
                },
            );
        }
        let created = container::create(&req, &self.0.exe, &self.0.reaper, &self.0.origin).await;
        let mut tasks = self.table().await;
        let created = match created {
            Ok(created) => created,
            Err(fail) => {
                tasks.remove(&id);
                return Err(fail);
            }
        };
        let pid = created.pid;
        let entry = tasks
            .get_mut(&id)
            .ok_or_else(|| Fail::internal(format!("task {id} left the table while created")))?;
        entry.live = Some(Live {
            pid,
            control: Some(created.control),
            stdio_hold: created.stdio_hold,
            resources: created.resources,
        });
        entry.apply(&id, Event::Created)?;
        log::info!("task {id}: created, pid {pid}, {:?}", created.workload);
        if let Some(cg) = entry.live.as_ref().and_then(|l| l.resources.cgroup()) {
            self.watch_oom(&id, cg);
        }
        // The exit is handled under the table's lock, so after the create
        // event below; the watcher exists before any await can be cut short.
        let service = self.clone();
        let id_exit = id.clone();
        let exit = created.exit;
        tokio::spawn(async move {
            // A dropped sender means the reaper lost the child: report the
            // status as lost rather than leave Wait hanging.
            let code = exit.await.unwrap_or(executor::exit::LOST);
            service.on_exit(&id_exit, code as u32).await;
        });
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                pid: pid.as_raw() as u32,
                ..Default::default()
            }),
        );
        drop(tasks);
        Ok(api::CreateTaskResponse {
            pid: pid.as_raw() as u32,
            ..Default::default()
        })
    }

    async fn on_exit(&self, id: &str, code: u32) {
        let at = SystemTime::now();
        self.kill_the_rest(id).await;
        let mut tasks = self.table().await;
        let Some(task) = tasks.get_mut(id) else {
            return;
        };
        let before = task.status();
        let Ok(status) = task.apply(id, Event::Exit(Exit { code, at })) else {
            return;
        };
        if status == before {
            return;
        }
        let Some(live) = task.live.as_mut() else {
            return;
        };
        live.control = None;
        live.stdio_hold = None;
        let pid = live.pid.as_raw() as u32;
        log::info!("task {id}: exited with status {code}");
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(TaskExit {
                container_id: id.to_string(),
                id: id.to_string(),
                pid,
                exit_status: code,
                exited_at: Some(timestamp(at)).into(),
                ..Default::default()
            }),
        );
    }

    /// Kills what is left of a container whose first process has exited,
    /// when it has no PID namespace of its own (the host's, or a pod's that
    /// its containers share): as runc's shim does, so that no process
    /// outlives its container and keeps its stdio open (the CRI would wait
    /// for that forever). In its own PID namespace the kernel does it.
    /// Done before the exit is published, and without the table's lock:
    /// freezing the cgroup may take as long as its processes make it.
    async fn kill_the_rest(&self, id: &str) {
        let cgroup = {
            let tasks = self.table().await;
            let Some(live) = tasks.get(id).and_then(|task| task.live.as_ref()) else {
                return;
            };
            let shared = live
                .resources
                .spec
                .as_ref()
                .is_some_and(|spec| !executor::spec::own_pid_namespace(spec));
            match (shared, live.resources.cgroup()) {
                (true, Some(cgroup)) => (cgroup.clone(), live.pid),
                _ => return,
            }
        };
        let (cgroup, pid) = cgroup;
        let killed =
            tokio::task::spawn_blocking(move || cgroup.signal_all(Signal::SIGKILL, pid, false))
                .await;
        if let Ok(Err(e)) = killed {
            log::warn!("task {id}: kill the processes left in its cgroup: {e:#}");
        }
    }

    pub async fn start_task(&self, id: &str) -> RpcResult<api::StartResponse> {
        let mut tasks = self.table().await;
        let task = tasks.get_mut(id).ok_or_else(|| not_found(id))?;
        next(id, task.status(), Event::Start)?;
        let live = task
            .live
            .as_mut()
            .ok_or_else(|| Fail::internal(format!("task {id} has no process")))?;
        let control = live
            .control
            .as_mut()
            .ok_or_else(|| Fail::precondition(format!("task {id} has already exited")))?;
        crate::readiness::start(control)
            .map_err(|e| Fail::internal(format!("task {id}: {e:#}")))?;
        live.control = None;
        let pid = live.pid.as_raw() as u32;
        let hooks = (live.resources.spec.clone(), task.bundle.clone(), live.pid);
        task.apply(id, Event::Start)?;
        log::info!("task {id}: started");
        // Published under the lock, so the exit event cannot come first.
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: id.to_string(),
                pid,
                ..Default::default()
            }),
        );
        drop(tasks);
        // As runc: a failed poststart hook ends the container it started.
        if let (Some(spec), bundle, child) = hooks
            && let Err(fail) = container::run_hooks(
                &self.0.reaper,
                &spec,
                "poststart",
                id,
                &bundle,
                child,
                "running",
            )
            .await
        {
            let _ = self.0.reaper.signal(child, Signal::SIGKILL);
            return Err(Fail::invalid(format!("task {id}: {}", fail.message)));
        }
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    pub async fn kill_task(&self, req: &api::KillRequest) -> RpcResult<()> {
        let tasks = self.table().await;
        let task = tasks.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let live = task.live(&req.id, Event::Signal)?;
        let what = format!("task {}", req.id);
        let signal = self.send_signal(&what, live.pid, req.signal)?;
        let paused = task.status() == Status::Paused;
        // The container's other processes too (`ctr task kill --all`): in
        // a shared or the host's PID namespace they outlive its process.
        if req.all
            && let Some(cg) = live.resources.cgroup()
            && let Err(e) = cg.signal_all(signal, live.pid, paused)
        {
            log::warn!("{what}: signal every process of its cgroup: {e:#}");
        }
        // A frozen process does not die until it is thawed; as runc does,
        // a SIGKILL to a paused task thaws it so that it ends now.
        if signal == Signal::SIGKILL && paused {
            thaw_for_kill(&req.id, live);
        }
        Ok(())
    }

    /// Sends signal number `number` to child `pid` (`what` names it in
    /// errors): NotFound once it has finished, as containerd expects.
    pub(super) fn send_signal(&self, what: &str, pid: Pid, number: u32) -> RpcResult<Signal> {
        let signal = Signal::try_from(number as i32)
            .map_err(|_| Fail::invalid(format!("{what}: unknown signal {number}")))?;
        log::info!("{what}: sending {signal}");
        match self.0.reaper.signal(pid, signal) {
            Ok(true) => Ok(signal),
            Ok(false) => Err(Fail::not_found(format!("{what}: process already finished"))),
            Err(e) => Err(Fail::internal(format!("{what}: kill {pid}: {e}"))),
        }
    }

    pub async fn delete_task(&self, id: &str) -> RpcResult<api::DeleteResponse> {
        crate::steps::reached(id, "delete");
        let mut stopped = {
            let tasks = self.table().await;
            let task = tasks.get(id).ok_or_else(|| not_found(id))?;
            match task.status() {
                // A child that was never started holds no work: end it.
                Status::Created => {
                    if let Some(live) = &task.live {
                        let _ = self.0.reaper.signal(live.pid, Signal::SIGKILL);
                    }
                }
                Status::Stopped(_) => {}
                status => {
                    next(id, status, Event::Delete)?;
                }
            }
            task.status.subscribe()
        };
        let _ = stopped.wait_for(|s| s.exit().is_some()).await;
        self.end_execs(id).await;
        let (pid, exit, mut resources, bundle) = {
            let mut tasks = self.table().await;
            let task = tasks.get_mut(id).ok_or_else(|| not_found(id))?;
            let Status::Deleting(exit) = task.apply(id, Event::Delete)? else {
                return Err(Fail::internal(format!(
                    "task {id}: not deleting after Delete"
                )));
            };
            let live = task
                .live
                .take()
                .ok_or_else(|| Fail::internal(format!("task {id} has no process")))?;
            (
                live.pid.as_raw() as u32,
                exit,
                live.resources,
                task.bundle.clone(),
            )
        };
        let spec = resources.spec.clone();
        crate::steps::reached(id, "release");
        // Removing cgroups may wait for the kernel: off the runtime and
        // without the table's lock, so other tasks' RPCs go on meanwhile.
        // The entry stays (Deleting) until then, so the shim stays up.
        let released = tokio::task::spawn_blocking(move || resources.release()).await;
        match released {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::error!("task {id}: {e:#}"),
            Err(e) => log::error!("task {id}: release: {e}"),
        }
        // As runc: a failed poststop hook is logged, the delete goes on.
        if let Some(spec) = spec
            && let Err(fail) = container::run_hooks(
                &self.0.reaper,
                &spec,
                "poststop",
                id,
                &bundle,
                Pid::from_raw(pid as i32),
                "stopped",
            )
            .await
        {
            log::warn!("task {id}: {}", fail.message);
        }
        log::info!("task {id}: deleted");
        crate::steps::reached(id, "deleted");
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: id.to_string(),
                id: id.to_string(),
                pid,
                exit_status: exit.code,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            }),
        );
        // Last: until now the row kept the shim from shutting down.
        self.table().await.remove(id);
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    pub async fn state_of(&self, id: &str) -> RpcResult<api::StateResponse> {
        let tasks = self.table().await;
        let task = tasks.get(id).ok_or_else(|| not_found(id))?;
        let status = match task.status() {
            Status::Creating => ApiStatus::UNKNOWN,
            Status::Created | Status::Starting => ApiStatus::CREATED,
            Status::Running => ApiStatus::RUNNING,
            Status::Paused => ApiStatus::PAUSED,
            Status::Stopped(_) | Status::Deleting(_) => ApiStatus::STOPPED,
        };
        let exit = task.status().exit();
        Ok(api::StateResponse {
            id: id.to_string(),
            bundle: task.bundle.to_string_lossy().into_owned(),
            pid: task.live.as_ref().map_or(0, |l| l.pid.as_raw() as u32),
            status: status.into(),
            stdin: task.stdio[0].clone(),
            stdout: task.stdio[1].clone(),
            stderr: task.stdio[2].clone(),
            terminal: task.terminal,
            exit_status: exit.map_or(0, |e| e.code),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    pub async fn wait_task(&self, id: &str) -> RpcResult<api::WaitResponse> {
        let mut status = {
            let tasks = self.table().await;
            tasks
                .get(id)
                .ok_or_else(|| not_found(id))?
                .status
                .subscribe()
        };
        let exit = status
            .wait_for(|s| s.exit().is_some())
            .await
            .map_err(|_| Fail::not_found(format!("task {id} was deleted while waiting")))?
            .exit()
            .ok_or_else(|| Fail::internal(format!("task {id}: no exit after waiting")))?;
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    pub async fn pids_of(&self, id: &str) -> RpcResult<api::PidsResponse> {
        let tasks = self.table().await;
        let task = tasks.get(id).ok_or_else(|| not_found(id))?;
        let mut processes = match (task.status().exit(), &task.live) {
            (None, Some(live)) => vec![ProcessInfo {
                pid: live.pid.as_raw() as u32,
                ..Default::default()
            }],
            _ => Vec::new(),
        };
        processes.extend(
            task.execs
                .values()
                .filter_map(|e| e.running())
                .map(|(pid, _)| ProcessInfo {
                    pid: pid.as_raw() as u32,
                    ..Default::default()
                }),
        );
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    /// The pid of task `id`, or 0 when there is no such task (yet).
    pub async fn task_pid(&self, id: &str) -> u32 {
        let tasks = self.table().await;
        tasks
            .get(id)
            .and_then(|t| t.live.as_ref())
            .map(|l| l.pid.as_raw() as u32)
            .unwrap_or_default()
    }

    /// Kills what still runs of a task's execs once the task has exited
    /// (its PID namespace may be shared, so they need not have died with
    /// it), so that its cgroup can go, and waits for them.
    async fn end_execs(&self, id: &str) {
        let running: Vec<_> = {
            let tasks = self.table().await;
            let Some(task) = tasks.get(id) else { return };
            task.execs.values().filter_map(|e| e.running()).collect()
        };
        for (pid, mut status) in running {
            let _ = self.0.reaper.signal(pid, Signal::SIGKILL);
            let _ = status.wait_for(|s| s.exit().is_some()).await;
        }
    }

    /// Ends the shim when it serves no task any more: it serves every
    /// container of its group and only goes away after the last one. A
    /// task being created or deleted is in the table, so it keeps the
    /// shim up.
    pub async fn shutdown_if_idle(&self) {
        let tasks = self.table().await;
        if tasks.is_empty() {
            log::info!("shutdown: no tasks left, exiting");
            self.0.exit.signal();
        }
    }

    pub async fn resize_task(&self, req: &api::ResizePtyRequest) -> RpcResult<()> {
        let tasks = self.table().await;
        let task = tasks.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let hold = task.live.as_ref().and_then(|live| live.stdio_hold.as_ref());
        match hold {
            Some(hold) => hold
                .resize(super::exec_rpcs::size_of(req))
                .map_err(|e| Fail::internal(format!("task {}: {e:#}", req.id))),
            None => Ok(()),
        }
    }

    pub async fn close_stdin(&self, req: &api::CloseIORequest) -> RpcResult<()> {
        let mut tasks = self.table().await;
        let task = tasks.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
        if req.stdin
            && let Some(live) = task.live.as_mut()
        {
            // The child sees end-of-file once the client's end is closed too.
            if let Some(hold) = live.stdio_hold.as_mut() {
                hold.close_stdin();
            }
            log::debug!("task {}: stdin closed", req.id);
        }
        Ok(())
    }
}

pub(super) fn not_found(id: &str) -> Fail {
    Fail::not_found(format!("task {id} not found"))
}

pub fn timestamp(at: SystemTime) -> Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Thaws a paused task that was sent SIGKILL, so that it dies now.
fn thaw_for_kill(id: &str, live: &Live) {
    if let Some(cg) = live.resources.cgroup()
        && let Err(e) = cg.freeze(false)
    {
        log::warn!("task {id}: thaw after SIGKILL: {e:#}");
    }
}
