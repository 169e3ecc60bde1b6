//! The Task API: containerd's RPCs mapped onto the lifecycle state
//! machine and the containers' operating-system resources.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use containerd_shim::Context;
use containerd_shim::api;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::topics;
use containerd_shim::protos::types::task::{ProcessInfo, Status as ApiStatus};
use containerd_shim::publisher::RemotePublisher;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::{Mutex, watch};

use crate::container::{self, Resources};
use crate::errors::Fail;
use crate::lifecycle::{Event, Status, next};
use crate::reaper::Reaper;

struct TaskEntry {
    pid: Pid,
    bundle: PathBuf,
    stdio: [String; 3],
    status: Status,
    control: Option<File>,
    stdin_hold: Option<crate::stdio::StdinHold>,
    resources: Resources,
    stopped: watch::Sender<Option<(u32, SystemTime)>>,
}

struct Inner {
    tasks: Mutex<HashMap<String, TaskEntry>>,
    /// Ids whose Create is under way: they are taken, and the shim is not idle.
    creating: std::sync::Mutex<HashSet<String>>,
    /// Deletes under way: their task has left the table, but its cgroup and
    /// mount are still being released, so the shim is not idle.
    deleting: AtomicUsize,
    reaper: Arc<Reaper>,
    publisher: RemotePublisher,
    namespace: String,
    exe: PathBuf,
    exit: Arc<ExitSignal>,
}

/// The task service of one shim; cheap to clone.
#[derive(Clone)]
pub struct Service(Arc<Inner>);

pub type RpcResult<T> = Result<T, Fail>;

impl Service {
    pub fn new(
        reaper: Arc<Reaper>,
        publisher: RemotePublisher,
        namespace: String,
        exe: PathBuf,
        exit: Arc<ExitSignal>,
    ) -> Self {
        Service(Arc::new(Inner {
            tasks: Mutex::new(HashMap::new()),
            creating: std::sync::Mutex::new(HashSet::new()),
            deleting: AtomicUsize::new(0),
            reaper,
            publisher,
            namespace,
            exe,
            exit,
        }))
    }

    fn creating(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.creating.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let result = self
            .0
            .publisher
            .publish(Context::default(), topic, &self.0.namespace, event)
            .await;
        if let Err(e) = result {
            log::warn!("publish {topic}: {e}");
        }
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
            let tasks = self.0.tasks.lock().await;
            if tasks.contains_key(&id) || !self.creating().insert(id.clone()) {
                return Err(Fail::already_exists(format!("task {id} already exists")));
            }
        }
        let created = container::create(&req, &self.0.exe, &self.0.reaper).await;
        let created = match created {
            Ok(created) => created,
            Err(fail) => {
                self.creating().remove(&id);
                return Err(fail);
            }
        };
        let pid = created.pid;
        let (stopped, _) = watch::channel(None);
        let entry = TaskEntry {
            pid,
            bundle: created.resources.bundle.clone(),
            stdio: [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()],
            status: Status::Created,
            control: Some(created.control),
            stdin_hold: created.stdin_hold,
            resources: created.resources,
            stopped,
        };
        let mut tasks = self.0.tasks.lock().await;
        tasks.insert(id.clone(), entry);
        self.creating().remove(&id);
        log::info!("task {id}: created, pid {pid}");
        // The exit is handled under the table's lock, so after the create
        // event below; the watcher exists before any await can be cut short.
        let service = self.clone();
        let id_exit = id.clone();
        let exit = created.exit;
        tokio::spawn(async move {
            // A dropped sender means the reaper lost the child: report it
            // as killed rather than leave Wait hanging.
            let code = exit.await.unwrap_or(128 + libc::SIGKILL);
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
        )
        .await;
        drop(tasks);
        Ok(api::CreateTaskResponse {
            pid: pid.as_raw() as u32,
            ..Default::default()
        })
    }

    async fn on_exit(&self, id: &str, code: u32) {
        let at = SystemTime::now();
        let mut tasks = self.0.tasks.lock().await;
        let Some(task) = tasks.get_mut(id) else {
            return;
        };
        let Ok(status) = next(id, task.status, Event::Exit { code, at }) else {
            return;
        };
        task.status = status;
        task.control = None;
        task.stdin_hold = None;
        let pid = task.pid.as_raw() as u32;
        task.stopped.send_replace(Some((code, at)));
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
        )
        .await;
    }

    pub async fn start_task(&self, id: &str) -> RpcResult<api::StartResponse> {
        let mut tasks = self.0.tasks.lock().await;
        let task = tasks.get_mut(id).ok_or_else(|| not_found(id))?;
        let status = next(id, task.status, Event::Start)?;
        let control = task
            .control
            .as_mut()
            .ok_or_else(|| Fail::precondition(format!("task {id} has already exited")))?;
        container::start(control).map_err(|e| Fail::internal(format!("task {id}: {e:#}")))?;
        task.status = status;
        task.control = None;
        let pid = task.pid.as_raw() as u32;
        log::info!("task {id}: started");
        // Published under the lock, so the exit event cannot come first.
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: id.to_string(),
                pid,
                ..Default::default()
            }),
        )
        .await;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    pub async fn kill_task(&self, req: &api::KillRequest) -> RpcResult<()> {
        let tasks = self.0.tasks.lock().await;
        let task = tasks.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        next(&req.id, task.status, Event::Kill)?;
        let signal = Signal::try_from(req.signal as i32).map_err(|_| {
            Fail::invalid(format!("task {}: unknown signal {}", req.id, req.signal))
        })?;
        log::info!("task {}: sending {signal}", req.id);
        match self.0.reaper.signal(task.pid, signal) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Fail::not_found(format!(
                "task {}: process already finished",
                req.id
            ))),
            Err(e) => Err(Fail::internal(format!(
                "task {}: kill {}: {e}",
                req.id, task.pid
            ))),
        }
    }

    pub async fn delete_task(&self, id: &str) -> RpcResult<api::DeleteResponse> {
        let _busy = Busy::new(&self.0.deleting);
        self.delete_counted(id).await
    }

    async fn delete_counted(&self, id: &str) -> RpcResult<api::DeleteResponse> {
        let mut stopped = {
            let tasks = self.0.tasks.lock().await;
            let task = tasks.get(id).ok_or_else(|| not_found(id))?;
            match task.status {
                Status::Running => {
                    next(id, task.status, Event::Delete)?;
                }
                // A child that was never started holds no work: end it.
                Status::Created => {
                    let _ = self.0.reaper.signal(task.pid, Signal::SIGKILL);
                }
                Status::Stopped { .. } => {}
            }
            task.stopped.subscribe()
        };
        let _ = stopped.wait_for(Option::is_some).await;
        let (task, code, at) = {
            let mut tasks = self.0.tasks.lock().await;
            let task = tasks.get(id).ok_or_else(|| not_found(id))?;
            let Status::Stopped { code, at } = next(id, task.status, Event::Delete)? else {
                return Err(Fail::internal(format!(
                    "task {id}: not stopped after its exit"
                )));
            };
            (tasks.remove(id).ok_or_else(|| not_found(id))?, code, at)
        };
        let pid = task.pid.as_raw() as u32;
        // Removing cgroups may wait for the kernel: off the runtime and
        // without the table's lock, so other tasks' RPCs go on meanwhile.
        let mut resources = task.resources;
        let released = tokio::task::spawn_blocking(move || resources.release()).await;
        match released {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::error!("task {id}: {e:#}"),
            Err(e) => log::error!("task {id}: release: {e}"),
        }
        log::info!("task {id}: deleted");
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: id.to_string(),
                id: id.to_string(),
                pid,
                exit_status: code,
                exited_at: Some(timestamp(at)).into(),
                ..Default::default()
            }),
        )
        .await;
        Ok(api::DeleteResponse {
            pid,
            exit_status: code,
            exited_at: Some(timestamp(at)).into(),
            ..Default::default()
        })
    }

    pub async fn state_of(&self, id: &str) -> RpcResult<api::StateResponse> {
        let tasks = self.0.tasks.lock().await;
        let task = tasks.get(id).ok_or_else(|| not_found(id))?;
        let (status, exit_status, exited_at) = match task.status {
            Status::Created => (ApiStatus::CREATED, 0, None),
            Status::Running => (ApiStatus::RUNNING, 0, None),
            Status::Stopped { code, at } => (ApiStatus::STOPPED, code, Some(timestamp(at))),
        };
        Ok(api::StateResponse {
            id: id.to_string(),
            bundle: task.bundle.to_string_lossy().into_owned(),
            pid: task.pid.as_raw() as u32,
            status: status.into(),
            stdin: task.stdio[0].clone(),
            stdout: task.stdio[1].clone(),
            stderr: task.stdio[2].clone(),
            exit_status,
            exited_at: exited_at.into(),
            ..Default::default()
        })
    }

    pub async fn wait_task(&self, id: &str) -> RpcResult<api::WaitResponse> {
        let mut stopped = {
            let tasks = self.0.tasks.lock().await;
            tasks
                .get(id)
                .ok_or_else(|| not_found(id))?
                .stopped
                .subscribe()
        };
        let exit = *stopped
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Fail::not_found(format!("task {id} was deleted while waiting")))?;
        let (code, at) = exit.unwrap_or((0, SystemTime::now()));
        Ok(api::WaitResponse {
            exit_status: code,
            exited_at: Some(timestamp(at)).into(),
            ..Default::default()
        })
    }

    pub async fn pids_of(&self, id: &str) -> RpcResult<api::PidsResponse> {
        let tasks = self.0.tasks.lock().await;
        let task = tasks.get(id).ok_or_else(|| not_found(id))?;
        let processes = match task.status {
            Status::Stopped { .. } => Vec::new(),
            _ => vec![ProcessInfo {
                pid: task.pid.as_raw() as u32,
                ..Default::default()
            }],
        };
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    /// The pid of task `id`, or 0 when there is no such task.
    pub async fn task_pid(&self, id: &str) -> u32 {
        let tasks = self.0.tasks.lock().await;
        tasks
            .get(id)
            .map(|t| t.pid.as_raw() as u32)
            .unwrap_or_default()
    }

    /// Ends the shim when it serves no task any more: it serves every
    /// container of its group and only goes away after the last one.
    pub async fn shutdown_if_idle(&self) {
        let tasks = self.0.tasks.lock().await;
        let deleting = self.0.deleting.load(Ordering::SeqCst);
        if tasks.is_empty() && self.creating().is_empty() && deleting == 0 {
            log::info!("shutdown: no tasks left, exiting");
            self.0.exit.signal();
        }
    }

    pub async fn close_stdin(&self, req: &api::CloseIORequest) -> RpcResult<()> {
        let mut tasks = self.0.tasks.lock().await;
        let task = tasks.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
        if req.stdin {
            // The child sees end-of-file once the client's end is closed too.
            task.stdin_hold = None;
            log::debug!("task {}: stdin closed", req.id);
        }
        Ok(())
    }
}

/// Counts one operation in progress for as long as it lives.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Busy(count)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn not_found(id: &str) -> Fail {
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
