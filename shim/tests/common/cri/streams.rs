//! What a container says: its CRI log file, and an exec's streams over
//! the streaming server's websocket.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use super::{CALL_LIMIT, Pod};

/// The CRI log of container `name` of `pod`.
pub fn container_log(pod: &Pod, name: &str) -> String {
    let path = Path::new(&pod.config.log_directory).join(format!("{name}.log"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The content of the CRI log lines of `stream` ("stdout" or "stderr"),
/// each checked to be `<RFC 3339 time> <stream> F <content>`.
pub fn log_lines(log: &str, stream: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for line in log.lines() {
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        assert!(
            fields.len() == 4 && is_rfc3339(fields[0]) && fields[2] == "F",
            "not a CRI log line: {line:?}"
        );
        if fields[1] == stream {
            lines.push(fields[3].to_string());
        }
    }
    lines
}

/// `2006-01-02T15:04:05.999999999Z07:00`, as CRI logs stamp lines.
fn is_rfc3339(time: &str) -> bool {
    let b = time.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let zone = time.ends_with('Z')
        || time
            .get(time.len().saturating_sub(6)..)
            .is_some_and(|z| z.as_bytes()[0] == b'+' || z.as_bytes()[0] == b'-');
    digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && digits(14..16)
        && digits(17..19)
        && zone
}

/// What an Exec through the CRI's streaming server produced.
#[derive(Debug, Default)]
pub struct Streamed {
    pub stdout: String,
    pub stderr: String,
    /// The v4 channel protocol's status: a Kubernetes `Status` object.
    pub status: serde_json::Value,
}

/// Drives an Exec URL as `kubectl exec` does over WebSocket, with the
/// `v4.channel.k8s.io` protocol: each binary message is a channel byte
/// (1 stdout, 2 stderr, 3 the final status) and data. No stdin is sent.
pub fn stream_exec(url: &str) -> Streamed {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut socket = std::net::TcpStream::connect(host).unwrap();
    socket.set_read_timeout(Some(CALL_LIMIT)).unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: Y3JpLWUyZS10ZXN0LWtleQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(socket);
    let mut head = String::new();
    while reader.read_line(&mut head).unwrap() > 2 && !head.ends_with("\r\n\r\n") {}
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "no websocket upgrade: {head}"
    );
    let mut out = Streamed::default();
    while let Some((opcode, payload)) = read_frame(&mut reader) {
        if opcode == 8 {
            break;
        }
        let Some((channel, data)) = payload.split_first() else {
            continue;
        };
        let data = String::from_utf8_lossy(data);
        match channel {
            1 => out.stdout += &data,
            2 => out.stderr += &data,
            3 if !data.is_empty() => out.status = serde_json::from_str(&data).unwrap(),
            _ => {}
        }
    }
    out
}

/// One unfragmented WebSocket frame from the server (unmasked): its
/// opcode and payload, or `None` at the end of the connection.
fn read_frame(reader: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    reader.read_exact(&mut head).ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            reader.read_exact(&mut n).ok()?;
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0u8; 8];
            reader.read_exact(&mut n).ok()?;
            u64::from_be_bytes(n) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).ok()?;
    Some((head[0] & 0x0f, payload))
}

/// The exit code a v4 Exec status reports: 0 for Success, else the
/// `ExitCode` cause of a NonZeroExitCode failure.
pub fn streamed_exit_code(status: &serde_json::Value) -> Option<i32> {
    if status["status"] == "Success" {
        return Some(0);
    }
    status["details"]["causes"]
        .as_array()?
        .iter()
        .find(|c| c["reason"] == "ExitCode")?["message"]
        .as_str()?
        .parse()
        .ok()
}
