//! The container's file-system identity, taken for a moment by the
//! still-privileged child: the files the container names (its module or
//! program, and the directories of its PATH) are looked up and opened as
//! the container's process would open them, never with the host root's
//! rights. A root-only module is refused to a non-root user, as an execve
//! of it would be.

use nix::unistd::{Gid, Uid, getgroups, setfsgid, setfsuid, setgroups};

use super::caps;
use crate::error::{Error, Result};
use crate::spec::ChildConfig;

/// Who the container's process is, for its files.
#[derive(Debug, Clone)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The effective capabilities its process will have.
    pub effective: u64,
}

impl User {
    pub fn of(config: &ChildConfig) -> User {
        User {
            uid: config.uid,
            gid: config.gid,
            groups: config.additional_gids.clone(),
            effective: caps::after_execve(config.capabilities, config.uid).effective,
        }
    }
}

/// Runs `open` with the user's supplementary groups, fsgid and fsuid and
/// effective capabilities, then takes this process's own back. The child
/// is single-threaded here, so the change is seen by nothing else.
pub fn as_user<T>(user: &User, open: impl FnOnce() -> Result<T>) -> Result<T> {
    let groups = getgroups().map_err(Error::sys("read this process's groups"))?;
    let theirs: Vec<Gid> = user.groups.iter().copied().map(Gid::from_raw).collect();
    setgroups(&theirs).map_err(Error::sys("set process.user.additionalGids"))?;
    // The ids first: changing them takes CAP_SETUID and CAP_SETGID, which
    // the user's capabilities may lack.
    let gid = setfsgid(Gid::from_raw(user.gid));
    let uid = setfsuid(Uid::from_raw(user.uid));
    // setfsuid reports no error: it returns the old id either way, so
    // asking again tells whether the change took.
    let taken = setfsuid(Uid::from_raw(user.uid)) == Uid::from_raw(user.uid)
        && setfsgid(Gid::from_raw(user.gid)) == Gid::from_raw(user.gid);
    let result = match taken {
        true => caps::set_effective(user.effective).and_then(|()| open()),
        false => Err(Error::InvalidSpec(format!(
            "cannot take uid {} and gid {} to open the container's files",
            user.uid, user.gid
        ))),
    };
    // Back to everything permitted, then to this process's ids and groups:
    // the privilege drop comes later, in runc's order, for the whole
    // process.
    let restored = caps::set_effective(u64::MAX);
    setfsuid(uid);
    setfsgid(gid);
    restored?;
    setgroups(&groups).map_err(Error::sys("restore this process's groups"))?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn user(uid: u32, effective: u64) -> User {
        User {
            uid,
            gid: uid,
            groups: vec![],
            effective,
        }
    }

    /// Runs `check` in a forked process (the identity changes are the
    /// process's) and returns whether it succeeded.
    fn in_fork(check: impl FnOnce() -> bool) -> bool {
        // SAFETY: the child of this multithreaded test only runs `check`,
        // which takes no lock of ours or of std (glibc's fork handlers
        // leave malloc usable), and leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = if check() { 0 } else { 1 };
                // SAFETY: _exit ends the forked child without running the
                // harness's destructors or atexit handlers.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => matches!(
                nix::sys::wait::waitpid(child, None).unwrap(),
                nix::sys::wait::WaitStatus::Exited(_, 0)
            ),
        }
    }

    #[test]
    fn a_root_only_file_is_refused_to_another_user_and_to_root_without_dac_override() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: taking another identity needs root");
            return;
        }
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("module.wasm");
        std::fs::write(&path, b"\0asm").unwrap();
        // Another user's, readable by its owner only.
        nix::unistd::chown(&path, Some(Uid::from_raw(2000)), Some(Gid::from_raw(2000))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = |user: User| {
            let path = path.clone();
            in_fork(move || {
                as_user(&user, || std::fs::File::open(&path).map_err(Error::io("open")))
                    .is_ok()
                    // The process's own rights are back afterwards.
                    && std::fs::File::open(&path).is_ok()
            })
        };
        let dac = (1 << 1) | (1 << 2);
        assert!(open(user(0, u64::MAX)), "root with CAP_DAC_OVERRIDE");
        assert!(open(user(2000, 0)), "the owner");
        assert!(!open(user(1000, 0)), "another user");
        assert!(!open(user(0, !dac)), "root without CAP_DAC_OVERRIDE");
    }
}
