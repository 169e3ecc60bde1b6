//! What a child, exec helper or fork writes on its status pipe, read as
//! the shim reads it: the `forked <pid>` line, then the report.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = executor::protocol::decode(data);
    // Within a pipe's buffer, so the write never waits for the reader.
    let data = &data[..data.len().min(32 << 10)];
    let (r, mut w) = std::io::pipe().unwrap();
    w.write_all(data).unwrap();
    drop(w);
    let mut r = std::fs::File::from(std::os::fd::OwnedFd::from(r));
    if let Ok(executor::protocol::Fork::Forked(pid)) = executor::protocol::await_fork(&mut r) {
        assert!(pid > 0);
    }
    let _ = executor::protocol::await_report(r);
});
