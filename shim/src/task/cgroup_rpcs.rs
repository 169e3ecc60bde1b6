//! The RPCs that act on a task's cgroup: Pause, Resume, Update, Stats, and
//! the `/tasks/oom` events of its memory controller.

use containerd_shim::api;
use containerd_shim::protos::events::task::{TaskOOM, TaskPaused, TaskResumed};
use containerd_shim::protos::topics;
use oci_spec::runtime::LinuxResources;

use super::lifecycle::Event;
use super::service::{Live, RpcResult, Service, not_found};
use crate::cgroup::{self, Cgroup};
use crate::errors::Fail;

/// The type of the resources an Update carries (JSON of the OCI struct).
const RESOURCES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

fn cgroup_of<'a>(id: &str, live: &'a Live) -> Result<&'a Cgroup, Fail> {
    live.resources.cgroup().ok_or_else(|| {
        Fail::precondition(format!(
            "task {id} has no cgroup (its spec names no linux.cgroupsPath)"
        ))
    })
}

/// Runs blocking cgroup work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    id: &str,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> RpcResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Fail::internal(format!("task {id}: {e}")))?
        .map_err(|e| Fail::internal(format!("task {id}: {e:#}")))
}

impl Service {
    pub async fn pause_task(&self, id: &str) -> RpcResult<()> {
        self.freeze(id, Event::Pause).await?;
        log::info!("task {id}: paused");
        let event = TaskPaused {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event));
        Ok(())
    }

    pub async fn resume_task(&self, id: &str) -> RpcResult<()> {
        self.freeze(id, Event::Resume).await?;
        log::info!("task {id}: resumed");
        let event = TaskResumed {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(event));
        Ok(())
    }

    /// Freezes (Pause) or thaws (Resume) the task's cgroup, holding the
    /// table so that no other move of the task happens meanwhile.
    async fn freeze(&self, id: &str, event: Event) -> RpcResult<()> {
        let tasks = self.table().await;
        let task = tasks.get(id).ok_or_else(|| not_found(id))?;
        let cg = cgroup_of(id, task.live(id, event)?)?.clone();
        let frozen = event == Event::Pause;
        blocking(id, move || cg.freeze(frozen)).await?;
        task.apply(id, event)?;
        Ok(())
    }

    pub async fn update_task(&self, req: &api::UpdateTaskRequest) -> RpcResult<()> {
        let id = &req.id;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| Fail::invalid(format!("task {id}: Update carries no resources")))?;
        if !any.type_url.ends_with("LinuxResources") {
            return Err(Fail::invalid(format!(
                "task {id}: Update resources of type {:?}; expected {RESOURCES_TYPE}",
                any.type_url
            )));
        }
        let mut resources: LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| Fail::invalid(format!("task {id}: Update resources: {e}")))?;
        let tasks = self.table().await;
        let task = tasks.get(id).ok_or_else(|| not_found(id))?;
        let live = task.live(id, Event::Resources)?;
        let cg = cgroup_of(id, live)?.clone();
        // The CRI sends every resource at each Update, the device rules
        // included: rules equal to those in force are left alone.
        if resources.devices() == &live.resources.device_rules {
            resources.set_devices(None);
        }
        // A v2 filter attached at Create cannot be widened by another one
        // (every attached filter must allow), so a change is refused.
        if cg.v2() && resources.devices().is_some() {
            return Err(Fail::invalid(format!(
                "task {id}: linux.resources.devices cannot be changed by Update on cgroup v2"
            )));
        }
        // A limit below usage is the request's fault: InvalidArgument.
        let applied = tokio::task::spawn_blocking(move || {
            cgroup::check_update(&cg, &resources)?;
            cg.apply(&resources)
        })
        .await
        .map_err(|e| Fail::internal(format!("task {id}: {e}")))?;
        applied.map_err(|e| match e.downcast_ref::<cgroup::BelowUsage>() {
            Some(below) => Fail::invalid(format!("task {id}: {below}")),
            None => Fail::internal(format!("task {id}: {e:#}")),
        })?;
        log::info!("task {id}: resources updated");
        Ok(())
    }

    pub async fn stats_of(&self, id: &str) -> RpcResult<api::StatsResponse> {
        let cg = {
            let tasks = self.table().await;
            let task = tasks.get(id).ok_or_else(|| not_found(id))?;
            cgroup_of(id, task.live(id, Event::Resources)?)?.clone()
        };
        let metrics = blocking(id, move || {
            containerd_shim::util::convert_to_any(cg.stats()).map_err(anyhow::Error::from)
        })
        .await?;
        Ok(api::StatsResponse {
            stats: Some(metrics).into(),
            ..Default::default()
        })
    }

    /// Publishes `/tasks/oom` each time the kernel OOM-kills a process of
    /// the task's cgroup, until the cgroup is removed.
    pub(super) fn watch_oom(&self, id: &str, cg: &Cgroup) {
        let mut watch = match cgroup::oom::watch(cg) {
            Ok(Some(watch)) => watch,
            Ok(None) => return,
            Err(e) => {
                log::warn!("task {id}: no OOM events: {e:#}");
                return;
            }
        };
        let (kills, mut killed) = tokio::sync::mpsc::unbounded_channel();
        let watcher = std::thread::Builder::new()
            .name("oom".into())
            .stack_size(64 << 10)
            .spawn(
                move || {
                    while watch.next().is_some() && kills.send(()).is_ok() {}
                },
            );
        if let Err(e) = watcher {
            log::warn!("task {id}: no OOM events: start the watch thread: {e}");
            return;
        }
        let (service, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            while killed.recv().await.is_some() {
                log::info!("task {id}: OOM kill in its cgroup");
                let event = TaskOOM {
                    container_id: id.clone(),
                    ..Default::default()
                };
                service.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(event));
            }
        });
    }
}
