//! The RPCs on processes exec'd into a task (requests with an exec id):
//! Exec records one, Start runs it, and Kill, Wait, State, CloseIO and
//! Delete act on it. An exec goes through the same lifecycle table as its
//! task, from Created on. A Wasm container takes them too: an exec of a
//! module of its root runs as a new instance in its sandbox (executor's
//! exec.rs), an exec of a native program it holds runs natively.

use std::collections::HashMap;
use std::time::SystemTime;

use containerd_shim::api;
use containerd_shim::protos::events::task::{TaskExecAdded, TaskExecStarted, TaskExit};
use containerd_shim::protos::topics;
use containerd_shim::protos::types::task::Status as ApiStatus;
use nix::unistd::Pid;
use tokio::sync::watch;

use super::exec_entry::ExecEntry;
use super::lifecycle::{Event, Exit, Status, next};
use super::service::{RpcResult, Service, TaskEntry, not_found, timestamp};
use crate::errors::Fail;

fn name(id: &str, exec_id: &str) -> String {
    format!("{id} exec {exec_id}")
}

fn exec_not_found(id: &str, exec_id: &str) -> Fail {
    Fail::not_found(format!("exec {exec_id} not found in task {id}"))
}

type Table = HashMap<String, TaskEntry>;

/// What an exec's start needs, taken from the table under its lock.
struct Launch {
    bundle: std::path::PathBuf,
    init: Pid,
    cgroup: Option<crate::cgroup::Cgroup>,
    spec: Vec<u8>,
    stdio: [String; 3],
    terminal: bool,
}

/// Exec `exec_id` of task `id`, or NotFound naming what is missing.
fn exec_in<'a>(tasks: &'a Table, id: &str, exec_id: &str) -> RpcResult<&'a ExecEntry> {
    let task = tasks.get(id).ok_or_else(|| not_found(id))?;
    task.execs
        .get(exec_id)
        .ok_or_else(|| exec_not_found(id, exec_id))
}

/// As [`exec_in`], to change it.
fn exec_in_mut<'a>(tasks: &'a mut Table, id: &str, exec_id: &str) -> RpcResult<&'a mut ExecEntry> {
    let task = tasks.get_mut(id).ok_or_else(|| not_found(id))?;
    task.execs
        .get_mut(exec_id)
        .ok_or_else(|| exec_not_found(id, exec_id))
}

impl Service {
    pub async fn add_exec(&self, req: &api::ExecProcessRequest) -> RpcResult<()> {
        let (id, exec_id) = (&req.id, &req.exec_id);
        let what = format!("exec {exec_id} in task {id}");
        let mut tasks = self.table().await;
        let task = tasks.get_mut(id).ok_or_else(|| not_found(id))?;
        task.live
            .as_ref()
            .ok_or_else(|| Fail::precondition(format!("{what}: the task is not created yet")))?;
        if task.status() != Status::Running {
            return Err(Fail::precondition(format!(
                "{what}: the task {}",
                match task.status() {
                    Status::Paused => "is paused",
                    _ => "is not running",
                }
            )));
        }
        if task.execs.contains_key(exec_id) {
            return Err(Fail::already_exists(format!("{what} already exists")));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|any| any.value.clone())
            .unwrap_or_default();
        crate::exec::check_process(&what, &spec, req.terminal)?;
        let (status, _) = watch::channel(Status::Created);
        task.execs.insert(
            exec_id.clone(),
            ExecEntry {
                status,
                spec,
                stdio: [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()],
                terminal: req.terminal,
                pid: None,
                stdio_hold: None,
            },
        );
        log::info!("{what}: added");
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: id.clone(),
                exec_id: exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(())
    }

    /// Runs the exec. The table is not locked while the process gets
    /// ready (a helper that the container stops must not stall every
    /// other RPC of the shim): the exec is Starting meanwhile, which
    /// refuses a second Start, Kill and Delete. Its exit cannot be handled
    /// before its start is recorded: the exit is read only afterwards.
    pub async fn start_exec(&self, id: &str, exec_id: &str) -> RpcResult<api::StartResponse> {
        let what = format!("exec {exec_id} in task {id}");
        let launch = self.launch_exec(id, exec_id).await?;
        let target = crate::exec::Target {
            id,
            bundle: &launch.bundle,
            init: launch.init,
            cgroup: launch.cgroup.as_ref(),
        };
        let started = crate::exec::start(
            &what,
            &self.0.exe,
            &self.0.reaper,
            target,
            &launch.spec,
            (&launch.stdio, launch.terminal),
        )
        .await;
        let mut tasks = self.table().await;
        let exec = match (started, exec_in_mut(&mut tasks, id, exec_id)) {
            (Ok(running), Ok(exec)) => (running, exec),
            (Ok(running), Err(gone)) => {
                // Deleted with its task while it started: nobody waits for it.
                let _ = self
                    .0
                    .reaper
                    .signal(running.pid, nix::sys::signal::Signal::SIGKILL);
                return Err(gone);
            }
            (Err(fail), Ok(exec)) => {
                let back = next(&name(id, exec_id), exec.status(), Event::Unlaunch)?;
                exec.status.send_replace(back);
                return Err(fail);
            }
            (Err(fail), Err(_)) => return Err(fail),
        };
        let (running, exec) = exec;
        let now = next(&name(id, exec_id), exec.status(), Event::Start)?;
        exec.pid = Some(running.pid);
        exec.stdio_hold = running.stdio_hold;
        exec.status.send_replace(now);
        let pid = running.pid.as_raw() as u32;
        log::info!("{what}: started, pid {pid}");
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Box::new(TaskExecStarted {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                pid,
                ..Default::default()
            }),
        );
        drop(tasks);
        let (service, id, exec_id) = (self.clone(), id.to_string(), exec_id.to_string());
        let exit = running.exit;
        tokio::spawn(async move {
            let code = exit.await.unwrap_or(executor::exit::LOST);
            service.on_exec_exit(&id, &exec_id, code as u32).await;
        });
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    /// Moves the exec to Starting and takes what its start needs.
    async fn launch_exec(&self, id: &str, exec_id: &str) -> RpcResult<Launch> {
        let what = format!("exec {exec_id} in task {id}");
        let mut tasks = self.table().await;
        let task = tasks.get_mut(id).ok_or_else(|| not_found(id))?;
        if task.status() != Status::Running {
            return Err(Fail::precondition(format!(
                "{what}: the task is not running"
            )));
        }
        let live = task
            .live
            .as_ref()
            .ok_or_else(|| Fail::internal(format!("task {id} has no process")))?;
        let (init, cgroup) = (live.pid, live.resources.cgroup().cloned());
        let bundle = task.bundle.clone();
        let exec = task
            .execs
            .get_mut(exec_id)
            .ok_or_else(|| exec_not_found(id, exec_id))?;
        let starting = next(&name(id, exec_id), exec.status(), Event::Launch)?;
        exec.status.send_replace(starting);
        Ok(Launch {
            bundle,
            init,
            cgroup,
            spec: exec.spec.clone(),
            stdio: exec.stdio.clone(),
            terminal: exec.terminal,
        })
    }

    async fn on_exec_exit(&self, id: &str, exec_id: &str, code: u32) {
        let at = SystemTime::now();
        let mut tasks = self.table().await;
        let Ok(exec) = exec_in_mut(&mut tasks, id, exec_id) else {
            return;
        };
        exec.status.send_replace(Status::Stopped(Exit { code, at }));
        exec.stdio_hold = None;
        let pid = exec.pid.map_or(0, |p| p.as_raw() as u32);
        log::info!("exec {exec_id} in task {id}: exited with status {code}");
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(TaskExit {
                container_id: id.to_string(),
                id: exec_id.to_string(),
                pid,
                exit_status: code,
                exited_at: Some(timestamp(at)).into(),
                ..Default::default()
            }),
        );
    }

    pub async fn kill_exec(&self, req: &api::KillRequest) -> RpcResult<()> {
        let (id, exec_id) = (&req.id, &req.exec_id);
        let tasks = self.table().await;
        let exec = exec_in(&tasks, id, exec_id)?;
        next(&name(id, exec_id), exec.status(), Event::Signal)?;
        let Some(pid) = exec.pid else {
            return Err(Fail::precondition(format!(
                "exec {exec_id} in task {id} has not started"
            )));
        };
        self.send_signal(&format!("exec {exec_id} in task {id}"), pid, req.signal)
            .map(drop)
    }

    pub async fn wait_exec(&self, id: &str, exec_id: &str) -> RpcResult<api::WaitResponse> {
        let mut status = exec_in(&*self.table().await, id, exec_id)?
            .status
            .subscribe();
        let exit = status
            .wait_for(|s| s.exit().is_some())
            .await
            .map_err(|_| Fail::not_found(format!("exec {exec_id} in task {id} was deleted")))?
            .exit()
            .ok_or_else(|| Fail::internal(format!("exec {exec_id}: no exit after waiting")))?;
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    pub async fn delete_exec(&self, id: &str, exec_id: &str) -> RpcResult<api::DeleteResponse> {
        let mut tasks = self.table().await;
        let task = tasks.get_mut(id).ok_or_else(|| not_found(id))?;
        let exec = task
            .execs
            .get(exec_id)
            .ok_or_else(|| exec_not_found(id, exec_id))?;
        // One that never started has no process: it simply goes.
        let exit = match exec.status() {
            Status::Created => None,
            status => match next(&name(id, exec_id), status, Event::Delete)? {
                Status::Deleting(exit) => Some(exit),
                _ => None,
            },
        };
        let pid = exec.pid.map_or(0, |p| p.as_raw() as u32);
        task.execs.remove(exec_id);
        log::info!("exec {exec_id} in task {id}: deleted");
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.map_or(0, |e| e.code),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    pub async fn state_of_exec(&self, id: &str, exec_id: &str) -> RpcResult<api::StateResponse> {
        let tasks = self.table().await;
        let exec = exec_in(&tasks, id, exec_id)?;
        let bundle = &tasks.get(id).ok_or_else(|| not_found(id))?.bundle;
        let status = match exec.status() {
            Status::Created | Status::Starting => ApiStatus::CREATED,
            Status::Running => ApiStatus::RUNNING,
            _ => ApiStatus::STOPPED,
        };
        let exit = exec.status().exit();
        Ok(api::StateResponse {
            id: exec_id.to_string(),
            exec_id: exec_id.to_string(),
            bundle: bundle.to_string_lossy().into_owned(),
            pid: exec.pid.map_or(0, |p| p.as_raw() as u32),
            status: status.into(),
            stdin: exec.stdio[0].clone(),
            stdout: exec.stdio[1].clone(),
            stderr: exec.stdio[2].clone(),
            terminal: exec.terminal,
            exit_status: exit.map_or(0, |e| e.code),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    pub async fn resize_exec(&self, req: &api::ResizePtyRequest) -> RpcResult<()> {
        let tasks = self.table().await;
        let exec = exec_in(&tasks, &req.id, &req.exec_id)?;
        match exec.stdio_hold.as_ref() {
            Some(hold) => hold
                .resize(size_of(req))
                .map_err(|e| Fail::internal(format!("{e:#}"))),
            None => Ok(()),
        }
    }

    pub async fn close_exec_stdin(&self, req: &api::CloseIORequest) -> RpcResult<()> {
        let mut tasks = self.table().await;
        let exec = exec_in_mut(&mut tasks, &req.id, &req.exec_id)?;
        if req.stdin
            && let Some(hold) = exec.stdio_hold.as_mut()
        {
            hold.close_stdin();
        }
        Ok(())
    }
}

/// ResizePty's window size.
pub(super) fn size_of(req: &api::ResizePtyRequest) -> crate::console::Size {
    let clamp = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
    crate::console::Size {
        rows: clamp(req.height),
        cols: clamp(req.width),
    }
}
