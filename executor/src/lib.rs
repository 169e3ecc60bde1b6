//! Everything that runs inside a container's sandboxed child, plus the one
//! function the shim uses to create that child ([`spawn::spawn_child`]).
//!
//! The child is created by `clone` with fresh namespaces and immediately
//! exec's the shim binary's hidden `__child` sub-command, which lands in
//! [`child::main`]: it reads the bundle's `config.json`, builds the sandbox
//! (mounts, pivot_root, hostname, user), loads and checks the Wasm module,
//! tells the shim it is ready, waits for Start and then runs the module and
//! exits with the module's status.

pub mod caps;
pub mod child;
pub mod error;
pub mod exit;
pub mod kind;
pub mod protocol;
pub mod sandbox;
pub mod signals;
pub mod spawn;
pub mod spec;
pub mod wasm;

pub use error::Error;

/// The version of wasmtime this executor was built against, for `-v`.
pub const WASMTIME_VERSION: &str = env!("WASMTIME_VERSION");
