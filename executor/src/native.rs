//! Native workloads (the pod's pause container, sidecars, busybox): the
//! program args[0] names is found as runc finds it, and the child
//! execve's it as its very last step, so that it is the container's only
//! process and its PID 1.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
use nix::unistd::{AccessFlags, access, execve};

use crate::error::{Error, Result};

/// Finds args[0] the way runc does (Go's `exec.LookPath` with the spec's
/// PATH): a name with a slash is taken as it is (relative to the working
/// directory), any other is searched in PATH; there is no PATH default.
pub fn resolve(arg0: &str, env: &[(String, String)]) -> Result<PathBuf> {
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(arg0);
        let is_file = std::fs::metadata(&candidate).is_ok_and(|m| m.is_file());
        if is_file {
            return Ok(candidate);
        }
    }
    Err(Error::Module {
        path: arg0.to_string(),
        reason: "executable file not found in $PATH".into(),
    })
}

/// A native program, checked and ready to exec at Start.
pub struct Program {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

fn c_string(what: &str, bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::InvalidSpec(format!("{what} contains a NUL byte")))
}

/// Checks that the container's user may execute `path` (runc checks it
/// too, so a Create fails rather than a Start) and prepares the call.
pub fn prepare(path: &Path, args: &[String], env: &[(String, String)]) -> Result<Program> {
    access(path, AccessFlags::X_OK).map_err(|e| Error::Module {
        path: path.display().to_string(),
        reason: format!("cannot execute it: {e}"),
    })?;
    Ok(Program {
        path: c_string("process.args[0]", path.as_os_str().as_bytes())?,
        argv: args
            .iter()
            .map(|a| c_string("process.args", a.as_bytes()))
            .collect::<Result<_>>()?,
        envp: env
            .iter()
            .map(|(k, v)| c_string("process.env", format!("{k}={v}").as_bytes()))
            .collect::<Result<_>>()?,
    })
}

/// Replaces the child with the program. Returns only if execve failed.
pub fn exec(program: &Program) -> Error {
    // Only stdio crosses into the program, as under runc.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on this
    // process's descriptors; it touches no memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret != 0 {
        return Error::Io {
            what: "mark descriptors close-on-exec".into(),
            source: std::io::Error::last_os_error(),
        };
    }
    // The child blocked termination signals for its own use; the program
    // starts with none blocked, as any process runc starts.
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    match execve(&program.path, &program.argv, &program.envp) {
        Ok(never) => match never {},
        Err(e) => Error::Sys {
            what: format!("exec {}", program.path.to_string_lossy()),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_lookpath() {
        let env = [("PATH".to_string(), "/nonexistent:/bin:/usr/bin".to_string())];
        let sh = resolve("sh", &env).unwrap();
        assert!(sh.ends_with("sh") && sh.is_absolute(), "{}", sh.display());
        assert_eq!(resolve("/x/y", &[]).unwrap(), PathBuf::from("/x/y"));
        assert_eq!(resolve("./y", &[]).unwrap(), PathBuf::from("./y"));
        let err = resolve("sh", &[]).unwrap_err().to_string();
        assert!(err.contains("not found in $PATH"), "{err}");
    }
}
