//! What `containerd-shim-wasmtime-v1 -v` prints.

pub const SHIM_VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("GIT_REVISION");

pub fn describe() -> String {
    format!(
        "containerd-shim-wasmtime-v1:\n  Version: {SHIM_VERSION}\n  Revision: {REVISION}\n  Wasmtime: {}\n",
        executor::WASMTIME_VERSION
    )
}
