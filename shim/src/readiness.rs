//! The shim's side of a child's readiness (executor's protocol.rs): the
//! report of a released child, exec helper or fork, within the time a
//! child may take to get ready, and the go-ahead to start.

use std::fs::File;
use std::time::Duration;

use anyhow::Context;
use executor::protocol::{self, Workload};
use nix::unistd::Pid;

use crate::errors::Fail;

/// How long a child may take to build its sandbox and compile its module.
/// Generous: cranelift needs tens of seconds for a module of tens of MB.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(300);

/// Reads a released child's report: what it will run, or why it cannot.
pub async fn await_ready(what: &str, pid: Pid, status: File) -> Result<Workload, Fail> {
    let read = tokio::task::spawn_blocking(move || protocol::await_report(status));
    // The caller kills a child that overstays, which ends the read.
    let report = tokio::time::timeout(PREPARE_TIMEOUT, read)
        .await
        .map_err(|_| {
            Fail::internal(format!(
                "{what}: the child {pid} did not get ready within {PREPARE_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| Fail::internal(format!("{what}: {e}")))?
        .map_err(|e| Fail::internal(format!("{what}: read the child's report: {e}")))?;
    match report {
        Ok(workload) => Ok(workload),
        Err(Some(message)) => Err(Fail::invalid(format!("{what}: {message}"))),
        // Completed with the child's exit status by the caller.
        Err(None) => Err(Fail::internal(format!(
            "{what}: the child {pid} ended before reporting"
        ))),
    }
}

/// Lets a created child run its workload.
pub fn start(control: &mut File) -> anyhow::Result<()> {
    protocol::start(control).context("tell the child to start")
}
