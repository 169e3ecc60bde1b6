//! The spec's seccomp profile, compiled with libseccomp (the `libseccomp`
//! crate, bindings to the C library runc uses, so syscall names,
//! architectures and argument rules resolve exactly as under runc). A
//! syscall name this kernel and libseccomp do not know is skipped, as runc
//! skips it; errno actions default to EPERM. As runc 1.1 does, a stub in
//! front of the program answers ENOSYS to syscalls newer than any the
//! profile names, so that libc falls back to older ones instead of
//! failing on EPERM.

use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};

use crate::error::{Error, Result};

fn invalid(message: String) -> Error {
    Error::InvalidSpec(format!("linux.seccomp: {message}"))
}

/// Refuses what runc refuses, at Create, before any child exists.
pub fn check(seccomp: &LinuxSeccomp) -> Result<()> {
    if seccomp.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(invalid("flags are not supported".into()));
    }
    let notify = seccomp.default_action() == LinuxSeccompAction::ScmpActNotify
        || seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
    if notify || seccomp.listener_path().is_some() {
        return Err(invalid(
            "SCMP_ACT_NOTIFY and listenerPath are not supported".into(),
        ));
    }
    filter(seccomp).map(drop)
}

/// Loads the profile into the calling thread (and the threads it starts
/// later): there must be no other thread yet.
pub fn load(seccomp: &LinuxSeccomp) -> Result<()> {
    let ctx = filter(seccomp)?;
    let Some(newest) = enosys_stub_above(seccomp) else {
        return ctx
            .load()
            .map_err(|e| invalid(format!("load the filter: {e}")));
    };
    let program = export(&ctx)?;
    install(&with_enosys_stub(&program, newest))
}

/// The newest native syscall number the profile names, above which the
/// ENOSYS stub answers; None where runc adds no stub (a default action
/// that lets syscalls through, or one that already answers ENOSYS).
fn enosys_stub_above(seccomp: &LinuxSeccomp) -> Option<u32> {
    let lets_through = matches!(
        seccomp.default_action(),
        LinuxSeccompAction::ScmpActAllow
            | LinuxSeccompAction::ScmpActLog
            | LinuxSeccompAction::ScmpActTrace
    );
    if lets_through || seccomp.default_errno_ret() == Some(libc::ENOSYS as u32) {
        return None;
    }
    seccomp
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|rule| rule.names())
        .filter_map(|name| ScmpSyscall::from_name(name).ok())
        .map(|nr| nr.as_raw_syscall())
        .filter(|nr| *nr >= 0)
        .map(|nr| nr as u32)
        .max()
}

/// One classic BPF instruction (struct sock_filter).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// The compiled filter, as the kernel takes it.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<SockFilter>> {
    use std::io::{Read, Seek};
    let fd = nix::sys::memfd::memfd_create(c"seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| invalid(format!("memfd for the filter: {e}")))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file)
        .map_err(|e| invalid(format!("export the filter: {e}")))?;
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|()| file.read_to_end(&mut bytes))
        .map_err(|e| invalid(format!("read the filter: {e}")))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| SockFilter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_00b7;
/// Syscall numbers of the x32 ABI carry this bit on x86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// `program` behind a stub that answers ENOSYS, for the native
/// architecture, to syscall numbers above `newest`.
pub fn with_enosys_stub(program: &[SockFilter], newest: u32) -> Vec<SockFilter> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let i = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    // Offsets of struct seccomp_data: nr at 0, arch at 4.
    let mut out = vec![
        i(LD_W_ABS, 0, 0, 4),
        i(JEQ_K, 0, 4, AUDIT_ARCH_NATIVE),
        i(LD_W_ABS, 0, 0, 0),
        i(JGE_K, 2, 0, X32_SYSCALL_BIT),
        i(JGT_K, 0, 1, newest),
        i(RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ];
    out.extend_from_slice(program);
    out
}

/// Installs a classic BPF program as the calling thread's filter.
fn install(program: &[SockFilter]) -> Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }
    let prog = SockFprog {
        len: program.len() as u16,
        filter: program.as_ptr(),
    };
    // SAFETY: prctl reads `prog` and the `len` instructions it points to,
    // both alive for the call; the layouts are the kernel's sock_fprog and
    // sock_filter.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &raw const prog,
        )
    };
    if ret != 0 {
        return Err(invalid(format!(
            "load the filter: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn action(action: LinuxSeccompAction, errno: Option<u32>, default_errno: u32) -> ScmpAction {
    let errno = errno.unwrap_or(default_errno);
    match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno as i32),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    }
}

fn compare(arg: &oci_spec::runtime::LinuxSeccompArg) -> ScmpArgCompare {
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(arg.value()),
    };
    let datum = match arg.op() {
        LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
        _ => arg.value(),
    };
    ScmpArgCompare::new(arg.index() as u32, op, datum)
}

/// Compiles the profile without loading it.
pub fn filter(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let default_errno = seccomp.default_errno_ret().unwrap_or(libc::EPERM as u32);
    let default = action(seccomp.default_action(), None, default_errno);
    let mut ctx =
        ScmpFilterContext::new(default).map_err(|e| invalid(format!("create a filter: {e}")))?;
    // no_new_privs is the spec's business (process.noNewPrivileges), not
    // libseccomp's: it would otherwise set it on every load.
    ctx.set_ctl_nnp(false)
        .map_err(|e| invalid(format!("configure the filter: {e}")))?;
    for arch in seccomp.architectures().iter().flatten() {
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let arch = ScmpArch::from_str(&name)
            .map_err(|_| invalid(format!("unknown architecture {name}")))?;
        ctx.add_arch(arch)
            .map_err(|e| invalid(format!("add architecture {name}: {e}")))?;
    }
    for (i, rule) in seccomp.syscalls().iter().flatten().enumerate() {
        add_rule(&mut ctx, i, rule, default, default_errno)?;
    }
    Ok(ctx)
}

fn add_rule(
    ctx: &mut ScmpFilterContext,
    index: usize,
    rule: &LinuxSyscall,
    default: ScmpAction,
    default_errno: u32,
) -> Result<()> {
    // As runc: a rule without errnoRet returns EPERM; defaultErrnoRet is
    // for the default action only.
    let _ = default_errno;
    let act = action(rule.action(), rule.errno_ret(), libc::EPERM as u32);
    // libseccomp refuses a rule that repeats the default action.
    if act == default {
        return Ok(());
    }
    let conditions: Vec<ScmpArgCompare> = rule.args().iter().flatten().map(compare).collect();
    // Several conditions on one argument cannot hold together: runc reads
    // them as alternatives, one rule each; otherwise they all must hold.
    let mut indexes: Vec<usize> = rule.args().iter().flatten().map(|a| a.index()).collect();
    indexes.sort();
    let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
    for name in rule.names() {
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            log::debug!("seccomp: unknown syscall {name} skipped, as runc does");
            continue;
        };
        let added = match (conditions.is_empty(), repeated) {
            (true, _) => ctx.add_rule(act, syscall).map(drop),
            (false, false) => ctx
                .add_rule_conditional(act, syscall, &conditions)
                .map(drop),
            (false, true) => conditions
                .iter()
                .try_for_each(|c| ctx.add_rule_conditional(act, syscall, &[*c]).map(drop)),
        };
        added.map_err(|e| invalid(format!("syscalls[{index}] ({name}): {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn compiles_a_profile_and_skips_unknown_syscalls() {
        let p = profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                "syscalls": [
                  {"names": ["read", "write", "no_such_syscall_here"], "action": "SCMP_ACT_ALLOW"},
                  {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                            {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                  {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                  {"names": ["mount"], "action": "SCMP_ACT_ERRNO"}
                ]}"#,
        );
        check(&p).unwrap();
        assert!(filter(&p).is_ok());
    }

    #[test]
    fn refuses_what_runc_refuses() {
        let flags =
            profile(r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}"#);
        assert!(check(&flags).unwrap_err().to_string().contains("flags"));
        let notify = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(check(&notify).unwrap_err().to_string().contains("NOTIFY"));
    }

    /// In a thread of its own (filters are per thread), a syscall newer
    /// than any the profile names gets ENOSYS; a known one not allowed
    /// gets EPERM.
    #[test]
    fn newer_syscalls_get_enosys() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipping: loading a filter without no_new_privs needs root");
            return;
        }
        let p = profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names":
                ["read", "write", "futex", "exit", "exit_group", "munmap", "madvise",
                 "rt_sigprocmask", "sched_yield", "sigaltstack"], "action": "SCMP_ACT_ALLOW"}]}"#,
        );
        let newest = enosys_stub_above(&p).unwrap();
        let errno = |nr: i64| {
            // SAFETY: a syscall without arguments; the filter answers it
            // before the kernel runs it (or it is getpid, which is harmless).
            let ret = unsafe { libc::syscall(nr) };
            (ret, std::io::Error::last_os_error().raw_os_error())
        };
        let got = std::thread::spawn(move || {
            load(&p).unwrap();
            (errno(newest as i64 + 1), errno(libc::SYS_getpid))
        })
        .join()
        .unwrap();
        assert_eq!(got.0, (-1, Some(libc::ENOSYS)), "newer than the profile");
        assert_eq!(got.1, (-1, Some(libc::EPERM)), "known and not allowed");
        let allow = profile(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#);
        assert_eq!(enosys_stub_above(&allow), None);
    }

    #[test]
    fn errno_defaults_to_eperm() {
        assert_eq!(
            action(LinuxSeccompAction::ScmpActErrno, None, libc::EPERM as u32),
            ScmpAction::Errno(libc::EPERM)
        );
        assert_eq!(
            action(LinuxSeccompAction::ScmpActErrno, Some(38), 1),
            ScmpAction::Errno(38)
        );
    }
}
