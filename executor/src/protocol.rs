//! The small protocol between the shim and a container's child.
//!
//! The child inherits two pipes at fixed descriptors. On [`STATUS_FD`] it
//! writes one report, `ready wasm`, `ready native` or `error: <message>`,
//! then closes it. On
//! [`CONTROL_FD`] the shim writes single bytes: [`GO_EXEC`] once the child
//! is in its cgroup (the child waits for it before exec, so nothing it does
//! is charged elsewhere), then [`GO_START`] when containerd calls Start.
//! End of file on the control pipe before Start means the shim is gone or
//! the task was deleted: the child then exits without running the guest.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::RawFd;

pub use crate::sandbox::Workload;

/// The hidden sub-command of the shim binary that runs a container's child.
pub const CHILD_SUBCOMMAND: &str = "__child";
/// The hidden sub-command that runs a process exec'd into a container.
pub const EXEC_SUBCOMMAND: &str = "__exec";
/// Child to shim: the readiness report.
pub const STATUS_FD: RawFd = 3;
/// Shim to child: the go-ahead bytes.
pub const CONTROL_FD: RawFd = 4;
/// Both ways: the conversation with the shim's compiled-code cache
/// (`crate::cache`), a unix stream socket.
pub const CACHE_FD: RawFd = 5;
/// Shim to child, for an OCI Wasm artifact image only: a sealed memfd
/// holding the module the image's layer carries.
pub const MODULE_FD: RawFd = 6;
/// Child to shim, for a process whose spec asks for a terminal: a unix
/// stream socket on which the process sends its terminal's master
/// (`crate::console`).
pub const CONSOLE_FD: RawFd = 7;
/// The child's last argument when [`MODULE_FD`] holds the module.
pub const ARTIFACT_FLAG: &str = "--artifact";
/// The child may exec: it has been placed in its cgroup.
pub const GO_EXEC: u8 = b'x';
/// The task was started: run the guest.
pub const GO_START: u8 = b's';

/// Shim to an exec helper: the process it forked is registered with the
/// shim's reaper, so the helper may exit and leave it to the shim.
pub const ADOPTED: u8 = b'a';
/// Helper to shim, before the report: `forked <pid>\n`, the pid (in the
/// shim's PID namespace) of the process it forked into the container's.
const FORKED_PREFIX: &str = "forked ";

const READY_WASM: &str = "ready wasm";
const READY_NATIVE: &str = "ready native";
const ERROR_PREFIX: &str = "error: ";

fn encode_ready(workload: Workload) -> Vec<u8> {
    match workload {
        Workload::Wasm => READY_WASM,
        Workload::Native => READY_NATIVE,
    }
    .as_bytes()
    .to_vec()
}

fn encode_error(message: &str) -> Vec<u8> {
    format!("{ERROR_PREFIX}{message}").into_bytes()
}

// The shim's side.

/// Lets a child that is in its cgroup exec the shim binary.
pub fn release(control: &mut File) -> std::io::Result<()> {
    control.write_all(&[GO_EXEC])
}

/// Waits (blocking) for the child's report until it closes its end.
/// `Ok(Err(None))` means it ended without a word: its exit status says why.
pub fn await_report(mut status: File) -> std::io::Result<Result<Workload, Option<String>>> {
    let mut report = Vec::new();
    status.read_to_end(&mut report)?;
    Ok(decode(&report))
}

/// Tells a created child to run its workload.
pub fn start(control: &mut File) -> std::io::Result<()> {
    control.write_all(&[GO_START])
}

/// What an exec helper says first: the pid it forked, or (when it failed
/// before forking) its final report.
#[derive(Debug, PartialEq, Eq)]
pub enum Fork {
    Forked(i32),
    Report(Result<Workload, Option<String>>),
}

/// Reads the helper's first line (blocking), without reading past it.
pub fn await_fork(status: &mut File) -> std::io::Result<Fork> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        match status.read(&mut byte)? {
            0 => return Ok(Fork::Report(decode(&line))),
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
        if line.len() > 4096 {
            return Ok(Fork::Report(decode(&line)));
        }
    }
    let text = String::from_utf8_lossy(&line);
    match text.strip_prefix(FORKED_PREFIX).map(str::parse) {
        Some(Ok(pid)) if pid > 0 => Ok(Fork::Forked(pid)),
        _ => Ok(Fork::Report(decode(&line))),
    }
}

/// Tells the helper that its fork is the shim's now.
pub fn adopted(control: &mut File) -> std::io::Result<()> {
    control.write_all(&[ADOPTED])
}

// The child's side.

/// An exec helper's first words: the pid of its fork.
pub fn report_fork(status: &mut File, pid: i32) -> std::io::Result<()> {
    status.write_all(format!("{FORKED_PREFIX}{pid}\n").as_bytes())
}

/// Waits until the shim has adopted the fork. False when the shim is gone
/// or said something else.
pub fn await_adopted(control: &mut File) -> bool {
    let mut byte = [0u8];
    control.read_exact(&mut byte).is_ok() && byte[0] == ADOPTED
}

/// Reports that the child is ready, or why it is not, and closes the pipe.
pub fn report(mut status: File, result: Result<Workload, &str>) {
    let bytes = match result {
        Ok(workload) => encode_ready(workload),
        Err(message) => encode_error(message),
    };
    // A shim that is gone cannot be told; the child then ends on its own.
    let _ = status.write_all(&bytes);
}

/// Waits for Start. False when the task was deleted first or the shim is
/// gone (end of file): the child then runs nothing.
pub fn await_start(mut control: File) -> bool {
    let mut byte = [0u8];
    control.read_exact(&mut byte).is_ok() && byte[0] == GO_START
}

/// Reads the child's report. An empty report means the child died before
/// it could say anything; the caller adds what it knows of that exit.
pub fn decode(report: &[u8]) -> Result<Workload, Option<String>> {
    let text = String::from_utf8_lossy(report);
    let text = text.trim_end();
    if text == READY_WASM {
        return Ok(Workload::Wasm);
    }
    if text == READY_NATIVE {
        return Ok(Workload::Native);
    }
    match text.strip_prefix(ERROR_PREFIX) {
        Some(message) => Err(Some(message.to_string())),
        None if text.is_empty() => Err(None),
        None => Err(Some(format!("unexpected report from the child: {text:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_talk_over_pipes() {
        let (r, w) = nix::unistd::pipe().unwrap();
        report(File::from(w), Err("module /a.wasm: bad"));
        let got = await_report(File::from(r)).unwrap();
        assert_eq!(got, Err(Some("module /a.wasm: bad".to_string())));
        let (r, w) = nix::unistd::pipe().unwrap();
        start(&mut File::from(w)).unwrap();
        assert!(await_start(File::from(r)));
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(w);
        assert!(!await_start(File::from(r)));
    }

    #[test]
    fn a_fork_is_announced_before_the_report() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let (mut r, mut w) = (File::from(r), File::from(w));
        report_fork(&mut w, 4242).unwrap();
        report(w, Ok(Workload::Native));
        assert_eq!(await_fork(&mut r).unwrap(), Fork::Forked(4242));
        assert_eq!(await_report(r).unwrap(), Ok(Workload::Native));
        // A helper that failed before forking only reports.
        let (r, w) = nix::unistd::pipe().unwrap();
        report(File::from(w), Err("exec: no such container"));
        let got = await_fork(&mut File::from(r)).unwrap();
        assert_eq!(
            got,
            Fork::Report(Err(Some("exec: no such container".into())))
        );
        let (r, w) = nix::unistd::pipe().unwrap();
        File::from(w).write_all(b"forked -1\n").unwrap();
        assert!(matches!(
            await_fork(&mut File::from(r)).unwrap(),
            Fork::Report(Err(Some(_)))
        ));
    }

    #[test]
    fn round_trips() {
        assert_eq!(decode(&encode_ready(Workload::Wasm)), Ok(Workload::Wasm));
        assert_eq!(
            decode(&encode_ready(Workload::Native)),
            Ok(Workload::Native)
        );
        assert_eq!(
            decode(&encode_error("module /a.wasm: bad")),
            Err(Some("module /a.wasm: bad".to_string()))
        );
        assert_eq!(decode(b""), Err(None));
        assert!(matches!(decode(b"garbage"), Err(Some(m)) if m.contains("garbage")));
    }
}
