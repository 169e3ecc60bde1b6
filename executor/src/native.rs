//! Native workloads (the pod's pause container, sidecars, busybox): the
//! program args[0] names is found as runc finds it, and the child
//! execve's it as its very last step, so that it is the container's only
//! process and its PID 1.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
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
        // Go's LookPath takes a regular file with an execute bit.
        let executable = std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if executable {
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

/// Marks every descriptor above stdio close-on-exec, so that only stdio
/// crosses into the program, as under runc. Done before seccomp is loaded,
/// which may not allow close_range; kernels before 5.11 lack its
/// CLOSE_RANGE_CLOEXEC flag, and then each descriptor is marked in turn.
pub fn close_on_exec_above_stdio() -> Result<()> {
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
    if ret == 0 {
        return Ok(());
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(Error::io("list /proc/self/fd"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number sets a flag and touches
        // no memory; a number that closed meanwhile only gives EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Replaces the child with the program. Returns only if execve failed.
pub fn exec(program: &Program) -> Error {
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

/// Sets HOME, when the spec's environment lacks it, to the user's home in
/// the container's /etc/passwd, else `/`, as runc does.
pub fn fill_home(env: &mut Vec<(String, String)>, uid: u32) {
    if env.iter().any(|(k, _)| k == "HOME") {
        return;
    }
    let passwd = read_passwd().unwrap_or_default();
    env.push(("HOME".into(), home_of(&passwd, uid).unwrap_or("/").into()));
}

/// The image's /etc/passwd, if it is a regular file of sane size: the
/// image could make it a FIFO (a hang) or a link to /dev/zero (no end).
fn read_passwd() -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const LIMIT: u64 = 4 << 20;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open("/etc/passwd")
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > LIMIT {
        return None;
    }
    let mut text = String::new();
    file.take(LIMIT).read_to_string(&mut text).ok()?;
    Some(text)
}

fn home_of(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let home = *fields.get(5)?;
        (fields.get(2)?.parse::<u32>().ok()? == uid).then_some(home)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
        assert_eq!(home_of(passwd, 1000), Some("/home/app"));
        assert_eq!(home_of(passwd, 0), Some("/root"));
        assert_eq!(home_of(passwd, 5), None);
        let mut env = vec![("HOME".to_string(), "/x".to_string())];
        fill_home(&mut env, 0);
        assert_eq!(env.len(), 1);
    }

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
