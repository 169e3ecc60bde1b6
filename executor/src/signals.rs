//! Termination signals in the child.
//!
//! The child is PID 1 of its PID namespace, and the kernel delivers to
//! PID 1 only the signals it handles: without this module `ctr task kill`
//! would do nothing until SIGKILL. A Wasm guest cannot handle signals, so a
//! dedicated thread waits for them, stops the guest through wasmtime's
//! epoch interruption and makes the child exit with 128 + signal. A guest
//! blocked in a host call (a long sleep) does not reach an epoch check, so
//! the thread ends the process itself after a short grace period.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
#[cfg(feature = "runtime")]
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// The signals whose default action would terminate an ordinary process.
const TERMINATING: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// How long an interrupted guest has to unwind before the process ends.
#[cfg(feature = "runtime")]
const GRACE: Duration = Duration::from_millis(100);

static RECEIVED: AtomicI32 = AtomicI32::new(0);
#[cfg(feature = "runtime")]
static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
/// What a server does on the first signal instead of ending at once.
type Drain = Box<dyn Fn() + Send + Sync>;
static DRAIN: OnceLock<Drain> = OnceLock::new();

/// The signals the child turns into an exit; blocked from before its exec.
pub fn set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in TERMINATING {
        set.add(signal);
    }
    set
}

/// Blocks the terminating signals in the calling thread. Call it before
/// any other thread exists, so that every thread inherits the mask and
/// only the watcher's `sigwait` receives them.
pub fn block() -> nix::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set()), None)
}

/// Starts the thread that turns a terminating signal into an exit.
pub fn spawn_watcher() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(watch)
        .map(drop)
}

/// Registers the engine whose guests the watcher interrupts.
#[cfg(feature = "runtime")]
pub fn watch_engine(engine: &wasmtime::Engine) {
    let _ = ENGINE.set(engine.clone());
}

/// Makes the first terminating signal call `drain` (an HTTP server stops
/// accepting and finishes its requests, then the child exits 0) and the
/// second end the process at once with 128 + signal.
pub fn drain_with(drain: impl Fn() + Send + Sync + 'static) {
    let _ = DRAIN.set(Box::new(drain));
}

/// The terminating signal received so far, if any.
pub fn received() -> Option<i32> {
    Some(RECEIVED.load(Ordering::SeqCst)).filter(|s| *s != 0)
}

fn watch() {
    let Ok(signal) = set().wait() else {
        return;
    };
    let number = signal as i32;
    RECEIVED.store(number, Ordering::SeqCst);
    if let Some(drain) = DRAIN.get() {
        drain();
        let Ok(second) = set().wait() else {
            return;
        };
        // SAFETY: as below.
        unsafe { libc::_exit(crate::exit::signaled(second as i32)) }
    }
    #[cfg(feature = "runtime")]
    if let Some(engine) = ENGINE.get() {
        engine.increment_epoch();
        std::thread::sleep(GRACE);
    }
    // SAFETY: _exit ends the process at once without running destructors or
    // atexit handlers, which the main thread may be using right now.
    unsafe { libc::_exit(crate::exit::signaled(number)) }
}
