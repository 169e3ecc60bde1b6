//! The shim's compiler (`__compile <module|component> <command|http>
//! <threads> <max bytes>`): compiles the module on its stdin (a sealed
//! memfd whose bytes the shim hashed for the key) into its stdout (the
//! cache entry's temp file, which the shim opened), and reports on the
//! status pipe `compiled <engine part of the key>` or `error: <message>`.
//!
//! The shim clones it with new mount, PID, network, IPC and UTS
//! namespaces, in its own PID namespace's tree and so in no container's,
//! into the cgroup of the container whose child asked (the compile's
//! memory and CPU are that container's), and lets it exec once it is
//! there. Before it reads a byte of the module it is non-dumpable
//! (main.rs), its root is an empty read-only tmpfs, it is the user nobody
//! without any capability and under no_new_privs, and it cannot write a
//! file past the entry's bound. No container can see, signal or ptrace
//! it, nor choose what it writes: entries are only ever this compiler's
//! output for the bytes they are named after.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::FromRawFd;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Uid, chdir, pivot_root, setgroups, setresgid, setresuid};

use crate::cache::{Compile, MAX_THREADS, engine_part};
use crate::error::{Error, Result};
use crate::exit::FAILURE;
use crate::protocol::STATUS_FD;
use crate::wasm::compile::{Shape, precompile};
use crate::wasm::engine::{Flavor, engine};

/// The hidden sub-command of the shim binary that runs the compiler.
pub const COMPILE_SUBCOMMAND: &str = "__compile";
/// Compiler to shim, on success: `compiled <engine part>`.
const COMPILED_PREFIX: &str = "compiled ";
const ERROR_PREFIX: &str = "error: ";
/// The user the compiler runs as: nobody.
const NOBODY: u32 = 65534;
/// Where the empty root is mounted before the switch to it.
const EMPTY_ROOT: &str = "/tmp";

/// The compiler's arguments after the sub-command, for the shim.
pub fn args(compile: Compile, max_bytes: u64) -> Vec<String> {
    let shape = if compile.component {
        "component"
    } else {
        "module"
    };
    let flavor = if compile.http { "http" } else { "command" };
    vec![
        shape.to_string(),
        flavor.to_string(),
        compile.threads.to_string(),
        max_bytes.to_string(),
    ]
}

/// The compiler's report: the engine part of the key of what it wrote,
/// or its message. An empty report means it died without a word.
pub fn decode_report(report: &[u8]) -> std::result::Result<String, String> {
    let text = String::from_utf8_lossy(report);
    if let Some(engine) = text.strip_prefix(COMPILED_PREFIX) {
        return Ok(engine.to_string());
    }
    match text.strip_prefix(ERROR_PREFIX) {
        Some(message) => Err(message.to_string()),
        None if text.is_empty() => Err("the compiler ended without a report".into()),
        None => Err(format!("unexpected report from the compiler: {text:?}")),
    }
}

/// Runs the compiler and exits: 0 once the code is written and reported.
pub fn main(args: &[String]) -> ! {
    // SAFETY: the shim hands this process the status pipe at STATUS_FD,
    // and nothing else in this process owns it.
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    let result = parse(args).and_then(|(how, max_bytes)| {
        confine(max_bytes)?;
        compile_stdin(how)
    });
    let (report, code) = match result {
        Ok(engine) => (format!("{COMPILED_PREFIX}{engine}"), 0),
        Err(e) => (format!("{ERROR_PREFIX}{}", e.chain()), FAILURE),
    };
    // A shim that is gone cannot be told; it removes the temp file.
    let _ = status.write_all(report.as_bytes());
    std::process::exit(code)
}

fn parse(args: &[String]) -> Result<((Shape, Flavor, usize), u64)> {
    let bad = || {
        Error::InvalidSpec(format!(
            "the compiler expects <module|component> <command|http> <threads> <max bytes>, got {args:?}"
        ))
    };
    let [shape, flavor, threads, max_bytes] = args else {
        return Err(bad());
    };
    let shape = match shape.as_str() {
        "module" => Shape::Module,
        "component" => Shape::Component,
        _ => return Err(bad()),
    };
    let flavor = match flavor.as_str() {
        "command" => Flavor::Command,
        "http" => Flavor::Http,
        _ => return Err(bad()),
    };
    let threads: u16 = threads.parse().map_err(|_| bad())?;
    let threads = usize::from(threads.clamp(1, MAX_THREADS));
    let max_bytes = max_bytes.parse().map_err(|_| bad())?;
    Ok(((shape, flavor, threads), max_bytes))
}

/// Everything that makes the compiler unreachable and harmless, before
/// it reads the module: an empty read-only root, no file past
/// `max_bytes`, the user nobody without capabilities, no_new_privs.
fn confine(max_bytes: u64) -> Result<()> {
    const NONE: Option<&str> = None;
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(Error::sys("make the compiler's mounts private"))?;
    let locked = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        EMPTY_ROOT,
        Some("tmpfs"),
        locked,
        Some("size=4k,mode=0555"),
    )
    .map_err(Error::sys("mount the compiler's empty root"))?;
    chdir(EMPTY_ROOT).map_err(Error::sys("enter the compiler's empty root"))?;
    pivot_root(".", ".").map_err(Error::sys("pivot_root into the compiler's empty root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(Error::sys("detach the host's root"))?;
    chdir("/").map_err(Error::sys("enter the compiler's root"))?;
    let readonly = locked | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(NONE, "/", NONE, readonly, NONE)
        .map_err(Error::sys("make the compiler's root read-only"))?;
    setrlimit(Resource::RLIMIT_FSIZE, max_bytes, max_bytes)
        .map_err(Error::sys("limit the size of the compiler's output"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(Error::sys("forbid core dumps"))?;
    setgroups(&[]).map_err(Error::sys("drop the compiler's groups"))?;
    let (gid, uid) = (Gid::from_raw(NOBODY), Uid::from_raw(NOBODY));
    setresgid(gid, gid, gid).map_err(Error::sys("become group nobody"))?;
    // From root to another user without keep-caps: every capability goes.
    setresuid(uid, uid, uid).map_err(Error::sys("become user nobody"))?;
    nix::sys::prctl::set_no_new_privs().map_err(Error::sys("set no_new_privs"))?;
    // A change of user resets dumpability to fs.suid_dumpable.
    crate::readonly::make_non_dumpable()?;
    Ok(())
}

/// Compiles stdin into stdout; returns the engine part of the key.
fn compile_stdin((shape, flavor, threads): (Shape, Flavor, usize)) -> Result<String> {
    // SAFETY: the shim hands the compiler the module's memfd as fd 0, and
    // nothing else in this process reads stdin.
    let mut module = unsafe { File::from_raw_fd(0) };
    // The memfd is the child's open file, its offset where the child's
    // write of it ended.
    let mut bytes = Vec::new();
    module
        .rewind()
        .and_then(|_| module.read_to_end(&mut bytes))
        .map_err(Error::io("read the module"))?;
    drop(module);
    let engine = engine(flavor)?;
    let compiled = precompile(&engine, shape, &bytes, threads).map_err(|e| Error::Module {
        path: "the module".into(),
        reason: format!("cannot compile: {e:#}"),
    })?;
    drop(bytes);
    let mut out = std::io::stdout().lock();
    out.write_all(&compiled)
        .and_then(|()| out.flush())
        .map_err(Error::io("write the compiled code"))?;
    Ok(engine_part(&engine))
}
