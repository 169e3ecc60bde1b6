//! The spec's seccomp profile, compiled and loaded with libseccomp (the
//! `libseccomp` crate, bindings to the C library runc uses, so syscall
//! names, architectures and argument rules resolve exactly as under
//! runc). A syscall name this kernel and libseccomp do not know is
//! skipped, as runc skips it; errno actions default to EPERM.

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

/// Loads the profile into the calling process (and its future threads).
pub fn load(seccomp: &LinuxSeccomp) -> Result<()> {
    filter(seccomp)?
        .load()
        .map_err(|e| invalid(format!("load the filter: {e}")))
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
