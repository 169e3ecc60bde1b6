//! The container's memory limit inside the guest: a wasmtime resource
//! limiter sized from `linux.resources.memory.limit`, less what the child
//! itself already uses, so that a growing guest sees `memory.grow` return
//! -1 (with a line on stderr naming the limit) before the kernel would
//! OOM-kill the whole container. Tables and instances are bounded too.

use wasmtime::{ResourceLimiter, Result};

/// Headroom kept for the runtime beyond what it uses when the guest
/// starts: WASI buffers, stacks of host calls, the signal thread.
const RUNTIME_HEADROOM: u64 = 8 << 20;
/// Bounds on what one guest may create, far above what real programs
/// use and far below what would exhaust the host.
const MAX_INSTANCES: usize = 1_000;
const MAX_TABLES: usize = 1_000;
const MAX_MEMORIES: usize = 100;
const MAX_TABLE_ELEMENTS: usize = 10_000_000;

#[derive(Clone)]
pub struct GuestLimits {
    /// The bytes of linear memory the guest may hold in all, if limited.
    memory: Option<u64>,
    /// The container's limit, for the message.
    container_limit: u64,
    told: bool,
    /// A bound of one instance below the container's (an HTTP request's).
    per_request: Option<u64>,
}

impl GuestLimits {
    /// Limits for a container with `limit` bytes of memory, measured now:
    /// the child's own resident memory is taken off it.
    pub fn new(limit: Option<u64>) -> GuestLimits {
        let used = resident_bytes().unwrap_or(0) + RUNTIME_HEADROOM;
        GuestLimits {
            memory: limit.map(|l| l.saturating_sub(used)),
            container_limit: limit.unwrap_or(0),
            told: false,
            per_request: None,
        }
    }

    /// The same, with each clone's linear memory also bounded by `bytes`.
    pub fn per_request(self, bytes: u64) -> GuestLimits {
        GuestLimits {
            memory: Some(self.memory.map_or(bytes, |m| m.min(bytes))),
            per_request: Some(bytes),
            ..self
        }
    }
}

/// The calling process's resident set (VmRSS), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let Some(allowed) = self.memory else {
            return Ok(true);
        };
        if desired as u64 <= allowed {
            return Ok(true);
        }
        if !self.told {
            // Once: a guest that retries must not flood its stderr.
            self.told = true;
            match self.per_request {
                Some(bytes) if bytes == allowed => crate::diagnose!(
                    "wasmtime shim: memory.grow from {current} to {desired} bytes refused: a request may use {bytes} bytes of linear memory ({})",
                    crate::wasm::http_limits::REQUEST_MEMORY_VAR
                ),
                _ => crate::diagnose!(
                    "wasmtime shim: memory.grow from {current} to {desired} bytes refused: the container's memory limit of {} bytes leaves {allowed} bytes for the guest's linear memory",
                    self.container_limit
                ),
            }
        }
        Ok(false)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_growth_past_the_limit_only() {
        let mut limits = GuestLimits {
            memory: Some(1 << 20),
            container_limit: 64 << 20,
            told: false,
            per_request: None,
        };
        assert!(limits.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!limits.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert!(limits.told);
        assert!(!limits.memory_growing(0, 10, Some(5)).unwrap());
        let mut free = GuestLimits::new(None);
        assert!(free.memory_growing(0, 1 << 40, None).unwrap());
        let measured = GuestLimits::new(Some(64 << 20)).memory.unwrap();
        assert!(measured < (64 << 20) - RUNTIME_HEADROOM, "{measured}");
    }

    #[test]
    fn a_request_bound_applies_below_the_containers() {
        let mut request = GuestLimits::new(None).per_request(1 << 20);
        assert!(request.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!request.memory_growing(1 << 20, 2 << 20, None).unwrap());
        let tight = GuestLimits::new(Some(64 << 20)).per_request(1 << 40);
        assert!(tight.memory.unwrap() < 64 << 20);
    }
}
