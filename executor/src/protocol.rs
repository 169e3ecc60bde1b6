//! The small protocol between the shim and a container's child.
//!
//! The child inherits two pipes at fixed descriptors. On [`STATUS_FD`] it
//! writes one report, `ready` or `error: <message>`, then closes it. On
//! [`CONTROL_FD`] the shim writes single bytes: [`GO_EXEC`] once the child
//! is in its cgroup (the child waits for it before exec, so nothing it does
//! is charged elsewhere), then [`GO_START`] when containerd calls Start.
//! End of file on the control pipe before Start means the shim is gone or
//! the task was deleted: the child then exits without running the guest.

use std::os::fd::RawFd;

/// The hidden sub-command of the shim binary that runs a container's child.
pub const CHILD_SUBCOMMAND: &str = "__child";
/// Child to shim: the readiness report.
pub const STATUS_FD: RawFd = 3;
/// Shim to child: the go-ahead bytes.
pub const CONTROL_FD: RawFd = 4;
/// The child may exec: it has been placed in its cgroup.
pub const GO_EXEC: u8 = b'x';
/// The task was started: run the guest.
pub const GO_START: u8 = b's';

const READY: &str = "ready";
const ERROR_PREFIX: &str = "error: ";

pub fn encode_ready() -> Vec<u8> {
    READY.as_bytes().to_vec()
}

pub fn encode_error(message: &str) -> Vec<u8> {
    format!("{ERROR_PREFIX}{message}").into_bytes()
}

/// Reads the child's report. An empty report means the child died before
/// it could say anything; the caller adds what it knows of that exit.
pub fn decode(report: &[u8]) -> Result<(), Option<String>> {
    let text = String::from_utf8_lossy(report);
    let text = text.trim_end();
    if text == READY {
        return Ok(());
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
    fn round_trips() {
        assert_eq!(decode(&encode_ready()), Ok(()));
        assert_eq!(
            decode(&encode_error("module /a.wasm: bad")),
            Err(Some("module /a.wasm: bad".to_string()))
        );
        assert_eq!(decode(b""), Err(None));
        assert!(matches!(decode(b"garbage"), Err(Some(m)) if m.contains("garbage")));
    }
}
