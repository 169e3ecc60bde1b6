//! The ttrpc glue of the Task API: each RPC checks what the shim does not
//! support, calls the service and turns its error into a ttrpc status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use containerd_shim::TtrpcResult;
use containerd_shim::api::{self, Empty};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;

use super::service::{RpcResult, Service};
use crate::errors::Fail;

fn unsupported<T>(what: &str) -> TtrpcResult<T> {
    Err(Fail::unimplemented(format!("{what} is not supported by the wasmtime shim")).into())
}

/// Logs a failed RPC at the shim's log and turns it into a ttrpc status.
fn reply<T>(rpc: &str, result: RpcResult<T>) -> TtrpcResult<T> {
    result.map_err(|fail| {
        // A refused Create is the user's problem to see; the rest is noise
        // that containerd asks for routinely (Kill of an exited task, …).
        match rpc {
            "create" => log::error!("{rpc}: {fail}"),
            _ => log::warn!("{rpc}: {fail}"),
        }
        fail.into()
    })
}

/// An RPC on one of a task's processes: `task` for its init process (no
/// exec id), `exec` for an exec'd one; its failure is logged and mapped.
async fn on_process<T>(
    rpc: &str,
    exec_id: &str,
    task: impl Future<Output = RpcResult<T>>,
    exec: impl Future<Output = RpcResult<T>>,
) -> TtrpcResult<T> {
    let result = match exec_id.is_empty() {
        true => task.await,
        false => exec.await,
    };
    reply(rpc, result)
}

/// Runs an RPC body as its own task. ttrpc drops the handler's future when
/// the client's deadline passes; Create and Delete must not stop half way,
/// or they would leave mounts and cgroups without an owner.
async fn uncancelled<T: Send + 'static>(
    body: impl Future<Output = RpcResult<T>> + Send + 'static,
) -> RpcResult<T> {
    tokio::spawn(body)
        .await
        .unwrap_or_else(|e| Err(Fail::internal(format!("rpc task failed: {e}"))))
}

/// Raises its flag when dropped while armed: that is, when ttrpc drops
/// the RPC's future (the client's deadline passed) before the body ended.
struct CallerGone {
    flag: Arc<AtomicBool>,
    armed: bool,
}

impl CallerGone {
    fn new() -> Self {
        CallerGone {
            flag: Arc::new(AtomicBool::new(false)),
            armed: true,
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CallerGone {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let service = self.clone();
        let gone = CallerGone::new();
        let flag = gone.flag.clone();
        let created = uncancelled(async move { service.create_for(req, &flag).await }).await;
        gone.disarm();
        reply("create", created)
    }

    async fn start(
        &self,
        _: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let exec = self.start_exec(&req.id, &req.exec_id);
        on_process("start", &req.exec_id, self.start_task(&req.id), exec).await
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        on_process(
            "kill",
            &req.exec_id,
            self.kill_task(&req),
            self.kill_exec(&req),
        )
        .await?;
        Ok(Empty::default())
    }

    async fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let (service, id) = (self.clone(), req.id.clone());
        let delete = uncancelled(async move { service.delete_task(&id).await });
        let exec = self.delete_exec(&req.id, &req.exec_id);
        on_process("delete", &req.exec_id, delete, exec).await
    }

    async fn state(
        &self,
        _: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let exec = self.state_of_exec(&req.id, &req.exec_id);
        on_process("state", &req.exec_id, self.state_of(&req.id), exec).await
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let exec = self.wait_exec(&req.id, &req.exec_id);
        on_process("wait", &req.exec_id, self.wait_task(&req.id), exec).await
    }

    async fn pids(
        &self,
        _: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        reply("pids", self.pids_of(&req.id).await)
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.task_pid(&req.id).await,
            version: crate::version::SHIM_VERSION.to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, _: api::ShutdownRequest) -> TtrpcResult<Empty> {
        self.shutdown_if_idle().await;
        Ok(Empty::default())
    }

    async fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        let exec = self.close_exec_stdin(&req);
        on_process("close_io", &req.exec_id, self.close_stdin(&req), exec).await?;
        Ok(Empty::default())
    }

    async fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        reply("exec", self.add_exec(&req).await)?;
        Ok(Empty::default())
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        reply("pause", self.pause_task(&req.id).await)?;
        Ok(Empty::default())
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        reply("resume", self.resume_task(&req.id).await)?;
        Ok(Empty::default())
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        unsupported("checkpoint")
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        let exec = self.resize_exec(&req);
        on_process("resize_pty", &req.exec_id, self.resize_task(&req), exec).await?;
        Ok(Empty::default())
    }

    async fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        reply("update", self.update_task(&req).await)?;
        Ok(Empty::default())
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        reply("stats", self.stats_of(&req.id).await)
    }
}
