//! A Wasm container's process named after its program, as a native one is
//! named by its execve: `comm` is the module file's name (what `ps`,
//! `top` and `/proc/<pid>/stat` show) and `/proc/<pid>/cmdline` is the
//! container's `process.args`, instead of the shim binary's hidden
//! sub-command line.

/// Renames the calling process. Neither name is part of the container's
/// contract (only what tools display): where the kernel refuses, the old
/// names stay and the container runs all the same.
pub fn take_program_name(args: &[String]) {
    let Some(first) = args.first() else { return };
    // `path.wasm#func` names the module `path.wasm`.
    let module = first.split_once('#').map_or(first.as_str(), |(m, _)| m);
    let name = module.rsplit('/').next().unwrap_or(module);
    if let Ok(name) = std::ffi::CString::new(name) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    if let Some((start, end)) = argument_area() {
        rewrite_arguments(args, start, end);
    }
}

/// Where the kernel reads `/proc/self/cmdline` from: the start and end of
/// the arguments execve left (fields 48 and 49 of `/proc/self/stat`).
fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split(' ').skip(48 - 3);
    let start: usize = fields.next()?.parse().ok()?;
    let end: usize = fields.next()?.parse().ok()?;
    (start < end).then_some((start, end))
}

/// Writes `args` (NUL-separated, cut to fit) over the arguments this
/// process was started with, the rest zeroed: moving the area elsewhere
/// (PR_SET_MM) needs CAP_SYS_RESOURCE, which a container's process may
/// lack. The last byte stays NUL, so the kernel shows the area as it is.
fn rewrite_arguments(args: &[String], start: usize, end: usize) {
    let mut bytes = Vec::new();
    for arg in args {
        bytes.extend_from_slice(arg.as_bytes());
        bytes.push(0);
    }
    let room = end - start - 1;
    bytes.truncate(room);
    bytes.resize(room + 1, 0);
    // SAFETY: [start, end) is this process's own argument strings, mapped
    // writable on its stack; nothing reads them after the child parsed its
    // arguments (std keeps pointers to them only for env::args).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, bytes.len()) };
}

#[cfg(test)]
mod tests {
    /// Run in a child process: the test harness's own names must stay.
    #[test]
    fn names_the_process_after_its_module() {
        // SAFETY: the child only renames itself, reads /proc and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let args = [
                    "/app/server.wasm#serve".to_string(),
                    "--port".into(),
                    "80".into(),
                ];
                super::take_program_name(&args);
                let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
                let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
                let wanted = b"/app/server.wasm#serve\0--port\080\0";
                // The rest of the area is zeroes.
                let good = comm == "server.wasm\n"
                    && cmdline.starts_with(wanted)
                    && cmdline[wanted.len()..].iter().all(|b| *b == 0);
                // SAFETY: _exit ends the forked child without running the
                // harness's destructors, which belong to the parent.
                unsafe { libc::_exit(if good { 0 } else { 1 }) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
