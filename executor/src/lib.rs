//! Everything that runs inside a container's sandboxed child, plus the one
//! function the shim uses to create that child ([`spawn::spawn_child`]).
//!
//! The child is created by `clone` with fresh namespaces and immediately
//! exec's the shim binary's hidden `__child` sub-command, which lands in
//! [`child::main`]: it reads the bundle's `config.json`, builds the sandbox
//! (namespaces, mounts, /dev, pivot_root, sysctl, masks, rlimits, user,
//! capabilities, seccomp), loads and checks the Wasm module or finds the
//! native program, tells the shim it is ready, waits for Start and then
//! runs the module and exits with its status, or execve's the program.

/// `eprintln!` that never panics: a process's stderr may be a fifo whose
/// reader went away or a file on a full disk, and a diagnostic that cannot
/// be written must not turn into a panic (and a wrong exit status).
#[macro_export]
macro_rules! diagnose {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod cache;
#[cfg(feature = "runtime")]
pub mod child;
#[cfg(feature = "runtime")]
pub mod compiler;
pub mod console;
pub mod error;
pub mod exec;
pub mod exit;
pub mod fork;
pub mod hooks;
pub mod image;
pub mod kind;
#[cfg(feature = "runtime")]
pub mod limits;
pub mod native;
pub mod pidfd;
pub mod protocol;
pub mod readonly;
pub mod sandbox;
pub mod signals;
pub mod spawn;
pub mod spec;
pub mod title;
pub mod unsupported;
#[cfg(feature = "runtime")]
pub mod wasm;

pub use error::Error;

/// The version of wasmtime this executor was built against, for `-v`.
pub const WASMTIME_VERSION: &str = env!("WASMTIME_VERSION");

/// When process `pid` started, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`): with the pid, it names one process for good.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it do not.
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split(' ').nth(19)?.parse().ok()
}
