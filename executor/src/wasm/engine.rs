//! The wasmtime engines the child runs guests with, and the threads that
//! compile for them.

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::{Error, Result};

/// Which engine a guest needs: commands can be interrupted by a signal;
/// HTTP handlers run on tokio, one pooled instance per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Command,
    Http,
}

/// Allocations from this size on are mmapped (glibc's default start).
const MMAP_THRESHOLD: libc::c_int = 128 << 10;
/// Instances an HTTP container may hold at once (requests in flight).
const HTTP_INSTANCES: u32 = 256;
/// The largest linear memory one request's instance may grow to.
const HTTP_MAX_MEMORY: usize = 1 << 30;

fn failed(e: wasmtime::Error) -> Error {
    Error::Module {
        path: String::new(),
        reason: format!("create the wasm engine: {e:#}"),
    }
}

/// The engine for `flavor`: wasmtime's defaults, which are the Wasm
/// features `wasmtime run` enables, with parallel compilation on.
/// Both use epoch interruption: a termination signal stops a running
/// command, and a request's deadline its guest. HTTP handlers use the
/// pooling allocator, whose memory
/// slots are reset from the module's copy-on-write image after each
/// request, as `wasmtime serve` does.
pub fn engine(flavor: Flavor) -> Result<Engine> {
    let mut config = Config::new();
    config.parallel_compilation(true);
    match flavor {
        Flavor::Command => {
            config.epoch_interruption(true);
        }
        Flavor::Http => {
            // Each request's store gets a deadline (http.rs).
            config.epoch_interruption(true);
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(HTTP_INSTANCES)
                .total_core_instances(HTTP_INSTANCES * 4)
                .total_memories(HTTP_INSTANCES * 2)
                .total_tables(HTTP_INSTANCES * 4)
                .total_stacks(HTTP_INSTANCES)
                .max_memory_size(HTTP_MAX_MEMORY)
                .max_component_instance_size(8 << 20)
                .max_core_instance_size(8 << 20);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
    }
    Engine::new(&config).map_err(failed)
}

/// Sizes the thread pool wasmtime compiles on to `threads`, the CPUs the
/// container may use ([`cpus`]). Call it in the process that compiles,
/// before its first compilation: a pool made before a fork has no
/// threads in the forked process.
pub fn size_compile_threads(threads: usize) {
    // glibc raises its mmap threshold (up to 32 MB) each time a large
    // mmapped block is freed, after which the compiler's large buffers
    // land in the arenas of its threads, where fragmentation keeps tens
    // of MB after malloc_trim. A fixed threshold keeps them mmapped, and
    // freeing them gives them back.
    // SAFETY: mallopt only changes allocator parameters.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    // Fails only when the pool already exists, which leaves it as it is.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("compile-{i}"))
        .build_global();
}

/// The CPUs the container may use: those it may run on (its cpuset is in
/// force, the child being in its cgroup), bounded by its CFS quota
/// (`cpu_limit`). The compiler and the HTTP server's workers use as many.
pub fn cpus(cpu_limit: Option<usize>) -> usize {
    let allowed = std::thread::available_parallelism().map_or(1, usize::from);
    cpu_limit.map_or(allowed, |limit| limit.min(allowed)).max(1)
}

/// Gives the memory that compilation used back to the kernel: freed heap
/// pages stay with the process otherwise, and a compile of a large module
/// frees hundreds of MB.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it
    // takes the allocator's locks and is safe to call at any time.
    unsafe { libc::malloc_trim(0) };
}
