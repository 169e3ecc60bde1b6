//! The stdout and stderr of one served request, line-buffered per request.
//!
//! Requests run concurrently and share the container's stdout and stderr.
//! Writing each guest write straight through (or through the process-wide
//! line buffer of `std::io::Stdout`) lets one request's text and its newline
//! land on either side of another request's line. Here every request holds
//! its own buffer and only whole lines leave it, each batch under the
//! process's lock of the stream, so a line in the container's log always
//! comes from one request. What is left without a newline goes out when the
//! request's store is dropped, or as soon as it grows past [`MAX_PENDING`].

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::body::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Bytes without a newline held back at most; a longer run goes out as is.
pub const MAX_PENDING: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
}

/// Where whole lines are written: the process's stdout or stderr, or, in
/// unit tests, a shared vector.
trait Sink: Send + Sync {
    fn write_lines(&self, bytes: &[u8]) -> io::Result<()>;
}

impl Sink for Target {
    fn write_lines(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Target::Stderr => io::stderr().lock().write_all(bytes),
        }
    }
}

struct Buffer {
    sink: Box<dyn Sink>,
    pending: Mutex<Vec<u8>>,
}

impl Buffer {
    fn push(&self, bytes: &[u8]) -> io::Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        let ready = if pending.len() > MAX_PENDING {
            pending.len()
        } else {
            match pending.iter().rposition(|&b| b == b'\n') {
                Some(last) => last + 1,
                None => return Ok(()),
            }
        };
        let result = self.sink.write_lines(&pending[..ready]);
        pending.drain(..ready);
        result
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let pending = self.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            let _ = self.sink.write_lines(pending);
        }
    }
}

/// One request's stdout or stderr; every stream the guest opens on it
/// shares the one buffer.
#[derive(Clone)]
pub struct Lines(Arc<Buffer>);

impl Lines {
    pub fn new(target: Target) -> Self {
        Self::with_sink(Box::new(target))
    }

    fn with_sink(sink: Box<dyn Sink>) -> Self {
        Lines(Arc::new(Buffer {
            sink,
            pending: Mutex::new(Vec::new()),
        }))
    }
}

impl IsTerminal for Lines {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Lines {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

fn stream_error(e: io::Error) -> StreamError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        StreamError::Closed
    } else {
        StreamError::LastOperationFailed(e.into())
    }
}

impl OutputStream for Lines {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.push(&bytes).map_err(stream_error)
    }

    /// A flush does not cut a line: the rest of it waits for its newline
    /// or for the end of the request.
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_PENDING)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Lines {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Lines {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.0.push(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Sink for Captured {
        fn write_lines(&self, bytes: &[u8]) -> io::Result<()> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(())
        }
    }

    fn writes(captured: &Captured) -> Vec<String> {
        let writes = captured.0.lock().unwrap();
        writes
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect()
    }

    #[test]
    fn a_line_leaves_whole_whatever_the_guest_flushes() {
        let captured = Captured::default();
        let mut stream = Lines::with_sink(Box::new(captured.clone()));
        stream
            .write(Bytes::from_static(b"request GET /n3"))
            .unwrap();
        stream.flush().unwrap();
        assert!(writes(&captured).is_empty());
        stream.write(Bytes::from_static(b"\nsecond")).unwrap();
        assert_eq!(writes(&captured), ["request GET /n3\n"]);
        stream.write(Bytes::from_static(b" line\nthird")).unwrap();
        assert_eq!(writes(&captured), ["request GET /n3\n", "second line\n"]);
        drop(stream);
        assert_eq!(
            writes(&captured),
            ["request GET /n3\n", "second line\n", "third"]
        );
    }

    #[test]
    fn streams_of_one_request_share_a_buffer_until_the_last_is_dropped() {
        let captured = Captured::default();
        let lines = Lines::with_sink(Box::new(captured.clone()));
        let mut first = lines.p2_stream();
        let mut second = lines.p2_stream();
        first.write(Bytes::from_static(b"half ")).unwrap();
        second.write(Bytes::from_static(b"and half\n")).unwrap();
        assert_eq!(writes(&captured), ["half and half\n"]);
        first.write(Bytes::from_static(b"tail")).unwrap();
        drop((first, second));
        assert_eq!(writes(&captured), ["half and half\n"]);
        drop(lines);
        assert_eq!(writes(&captured), ["half and half\n", "tail"]);
    }

    #[test]
    fn a_run_without_newline_is_not_held_forever() {
        let captured = Captured::default();
        let mut stream = Lines::with_sink(Box::new(captured.clone()));
        let long = vec![b'x'; MAX_PENDING + 1];
        stream.write(Bytes::from(long)).unwrap();
        assert_eq!(writes(&captured).len(), 1);
        assert_eq!(writes(&captured)[0].len(), MAX_PENDING + 1);
    }
}
