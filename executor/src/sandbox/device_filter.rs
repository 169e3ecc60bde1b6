//! The cgroup v2 device filter: `linux.resources.devices` (followed by the
//! devices every container may use) compiled into an eBPF program of type
//! BPF_PROG_TYPE_CGROUP_DEVICE and attached to the container's cgroup, the
//! v2 counterpart of the v1 devices controller, as runc does it. Rules are
//! checked from the last to the first and the first match decides, so the
//! last matching rule wins, as in v1; a request no rule matches is denied,
//! as runc's device emulator starts from an allow-list.

use std::ffi::c_void;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One device rule: allow or deny `access` (bits: mknod 1, read 2,
/// write 4) to devices of `kind` (`a`ll, `c`har, `b`lock) with the given
/// numbers (None for any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

/// The access bits of a rule's `rwm` string.
pub fn access_bits(access: &str) -> u32 {
    access.chars().fold(0, |bits, c| {
        bits | match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        }
    })
}

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// The program for `rules`. Registers: r2 device type, r3 access, r4
/// major, r5 minor (from struct bpf_cgroup_dev_ctx in r1), r1 scratch.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut code = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let mut checks = Vec::new();
        match rule.kind {
            'c' => checks.push(vec![insn(JNE_K, 2, 0, 0, 2)]),
            'b' => checks.push(vec![insn(JNE_K, 2, 0, 0, 1)]),
            _ => {}
        }
        if rule.access & 7 != 7 {
            // Every requested access bit must be among the rule's.
            checks.push(vec![
                insn(MOV32_X, 1, 3, 0, 0),
                insn(AND32_K, 1, 0, 0, !(rule.access as i32) & 7),
                insn(JNE_K, 1, 0, 0, 0),
            ]);
        }
        if let Some(major) = rule.major {
            checks.push(vec![insn(JNE_K, 4, 0, 0, major as i32)]);
        }
        if let Some(minor) = rule.minor {
            checks.push(vec![insn(JNE_K, 5, 0, 0, minor as i32)]);
        }
        let unconditional = checks.is_empty();
        let mut block: Vec<Insn> = checks.into_iter().flatten().collect();
        block.push(insn(MOV64_K, 0, 0, 0, rule.allow as i32));
        block.push(insn(EXIT, 0, 0, 0, 0));
        // Each failed check jumps past the rest of its block.
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K {
                ins.off = (len - i - 1) as i16;
            }
        }
        code.extend(block);
        // A rule that matches everything decides every request: the
        // verifier refuses the unreachable rules before it.
        if unconditional {
            return code;
        }
    }
    code.push(insn(MOV64_K, 0, 0, 0, 0));
    code.push(insn(EXIT, 0, 0, 0, 0));
    code
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The head of union bpf_attr for BPF_PROG_LOAD.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The head of union bpf_attr for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] head of union
    // bpf_attr; the kernel reads size_of::<T>() bytes of it and treats
    // the fields it does not get as zero. Pointers inside it (program,
    // license, log) point at memory that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *const T).cast::<c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    match ret {
        -1 => Err(std::io::Error::last_os_error()),
        fd => Ok(fd),
    }
}

/// Loads the program for `rules` and attaches it to the cgroup v2
/// directory `cgroup`. The attachment keeps the program alive.
pub fn attach(rules: &[DeviceRule], cgroup: &Path) -> std::io::Result<()> {
    let code = program(rules);
    let license = c"Apache";
    let mut load = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    let prog = match bpf(BPF_PROG_LOAD, &load) {
        Ok(fd) => fd,
        Err(e) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 256 << 10];
            load.log_level = 1;
            load.log_size = log.len() as u32;
            load.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &load);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            return Err(std::io::Error::new(
                e.kind(),
                format!("load the device filter: {e}: {text}"),
            ));
        }
    };
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let dir = File::open(cgroup)?;
    let attach = ProgAttach {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &attach).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        kind: char,
        major: Option<u32>,
        minor: Option<u32>,
        a: &str,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind,
            major,
            minor,
            access: access_bits(a),
        }
    }

    /// Runs the program on one request, as the kernel would.
    fn decide(code: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> i64 {
        let mut r = [0i64; 11];
        let ctx = [(access << 16) | kind, major, minor];
        let mut pc = 0;
        loop {
            let i = code[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = ctx[i.off as usize / 4] as i64,
                AND32_K => r[dst] = ((r[dst] as u32) & (i.imm as u32)) as i64,
                RSH32_K => r[dst] = ((r[dst] as u32) >> i.imm) as i64,
                MOV32_X => r[dst] = (r[src] as u32) as i64,
                MOV64_K => r[dst] = i.imm as i64,
                JNE_K if r[dst] != i.imm as i64 => pc += i.off as usize,
                JNE_K => {}
                EXIT => return r[0],
                other => panic!("unknown opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn last_matching_rule_wins_and_the_rest_is_denied() {
        let rules = [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'c', None, None, "m"),
            rule(true, 'c', Some(136), None, "rw"),
            rule(false, 'c', Some(1), Some(3), "w"),
        ];
        let code = program(&rules);
        let (c, b) = (2, 1);
        let (m, r, w) = (1, 2, 4);
        assert_eq!(decide(&code, c, r, 1, 3), 1, "read /dev/null");
        assert_eq!(
            decide(&code, c, w, 1, 3),
            0,
            "write /dev/null: the last rule denies"
        );
        assert_eq!(decide(&code, c, r | w, 136, 7), 1, "a pts");
        assert_eq!(decide(&code, c, m, 136, 7), 1, "mknod of any char device");
        assert_eq!(
            decide(&code, b, r, 7, 0),
            0,
            "a block device from the image"
        );
        assert_eq!(decide(&code, b, m, 7, 0), 0, "mknod of a block device");
        assert_eq!(decide(&code, c, r, 1, 1), 0, "/dev/mem");
        let open = program(&[
            rule(true, 'a', None, None, "rwm"),
            rule(false, 'b', None, None, "w"),
        ]);
        assert_eq!(decide(&open, b, w, 8, 0), 0);
        assert_eq!(decide(&open, b, r, 8, 0), 1);
        assert_eq!(open.last().unwrap().code, EXIT);
        let no_default = program(&[rule(false, 'c', Some(1), Some(1), "rwm")]);
        assert_eq!(decide(&no_default, c, r, 1, 1), 0);
        assert_eq!(decide(&no_default, c, r, 1, 3), 0, "denied unless allowed");
    }

    /// On a host with a cgroup v2 hierarchy (pure or hybrid), a child in a
    /// cgroup with the filter cannot open a denied device.
    #[test]
    fn an_attached_filter_denies_what_its_rules_deny() {
        let unified = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists());
        let (Some(unified), true) = (unified, nix::unistd::Uid::effective().is_root()) else {
            eprintln!("skipping: needs root and a cgroup v2 hierarchy");
            return;
        };
        let dir = unified.join(format!("device-filter-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let rules = [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(5), "rwm"),
        ];
        attach(&rules, &dir).unwrap();
        // No redirection to /dev/null in here: the filter denies it.
        let script = format!(
            "echo $$ > {}/cgroup.procs; head -c1 /dev/zero | wc -c | grep -q 1 && echo zero-ok; \
             cat /dev/null 2>&1 || echo null-denied",
            dir.display()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let _ = std::fs::remove_dir(&dir);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("zero-ok") && text.contains("null-denied"),
            "{text}"
        );
    }
}
