//! Runs the compiled programs on the host, which is what lets these tests exist at all: the
//! host is x86_64 Linux whenever the programs were built.

use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::time::Duration;

use super::*;
use crate::testutil::{entries, first_line, spawn_program};

fn run(name: &str, elf: &[u8], args: &[&str]) -> Output {
    spawn_program(name, elf, args).wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn probe_reports_every_fact_once_per_key_in_a_stable_order() {
    let output = run("probe", PROBE_ELF, &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    let report = stdout(&output);
    let lines: Vec<&str> = report.lines().collect();
    let single_keys = [
        "fds",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
        "Seccomp_filters",
        "uid",
        "euid",
        "gid",
        "egid",
        "groups",
        "ns.cgroup",
        "ns.ipc",
        "ns.mnt",
        "ns.net",
        "ns.pid",
        "ns.user",
        "ns.uts",
        "rlimit.NOFILE",
        "rlimit.STACK",
        "hostname",
        "domainname",
        "umask",
        "oom_score_adj",
        "pid",
        "ppid",
        "cwd",
        "env.PATH",
        "path./proc/kcore",
        "path./proc/sysrq-trigger",
        "path./sys/firmware",
    ];
    for key in single_keys {
        let prefix = format!("{key}:");
        let found = lines
            .iter()
            .filter(|line| line.starts_with(&prefix))
            .count();
        assert_eq!(found, 1, "{key} in\n{report}");
    }
    assert_eq!(lines.iter().filter(|l| l.starts_with("path.")).count(), 16);
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("rlimit.")).count(),
        16
    );
    assert!(lines.iter().any(|line| line.starts_with("dev: /dev d ")));
    assert!(lines.contains(&"dev: /dev/null c 0666 1:3"), "{report}");
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("mount: /proc proc "))
    );
    // Whatever else the test runner leaves open, the standard streams are there.
    assert!(lines[0].starts_with("fds: 0 1 2"), "{}", lines[0]);
    let pid = lines.iter().find_map(|line| line.strip_prefix("pid: "));
    assert!(pid.unwrap().parse::<u32>().unwrap() > 0);

    // Each multi-line section is sorted, which is what makes two reports diffable.
    for prefix in ["mount: ", "path.", "rlimit.", "cgroup: ", "dev: "] {
        let section: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|line| line.starts_with(prefix))
            .collect();
        let mut sorted = section.clone();
        sorted.sort_unstable();
        assert_eq!(section, sorted, "{prefix} lines are sorted");
    }
}

#[test]
fn probe_open_prints_ok_or_the_errno_name() {
    let output = run(
        "probe-open",
        PROBE_ELF,
        &["open", "/proc/self/status", "/nonexistent-probe-path", "/"],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        stdout(&output),
        "/proc/self/status: ok\n/nonexistent-probe-path: ENOENT\n/: EISDIR\n"
    );
}

#[test]
fn probe_alloc_reports_every_16_mib_and_exits_0() {
    let output = run("probe-alloc", PROBE_ELF, &["alloc", "40"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(stdout(&output), "allocated 16 MiB\nallocated 32 MiB\n");
    let bad = run("probe-alloc-bad", PROBE_ELF, &["alloc", "lots"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

#[test]
fn probe_sleep_says_ready_and_idles_until_killed() {
    let mut child = spawn_program("probe-sleep", PROBE_ELF, &["sleep"]);
    let line = first_line(&mut child);
    std::thread::sleep(Duration::from_millis(200));
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(line.as_deref(), Some("ready\n"));
    assert!(running, "exited on its own: {status}");
    assert_eq!(status.signal(), Some(9));
}

#[test]
fn pause_prints_its_version() {
    let output = run("pause-v", PAUSE_ELF, &["-v"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(stdout(&output), PAUSE_VERSION_LINE);
}

#[test]
fn pause_idles_until_sigterm_or_sigint_and_then_exits_0() {
    for signal in [libc_signal::SIGTERM, libc_signal::SIGINT] {
        let mut child = spawn_program("pause", PAUSE_ELF, &[]);
        // pause prints nothing, so give it time to install its handlers before signalling.
        std::thread::sleep(Duration::from_millis(300));
        let running = child.try_wait().unwrap().is_none();
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(running && sent.success(), "signal {signal}");
        assert_eq!(status.code(), Some(0), "signal {signal}: {status}");
    }
}

/// Signal numbers, to avoid a libc dependency for two constants.
mod libc_signal {
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}

#[test]
fn dynhello_runs_with_the_host_libraries() {
    let output = run("dynhello", DYNHELLO_ELF, &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(output.stdout, DYNHELLO_MESSAGE);
}

#[test]
fn dynamic_image_carries_the_program_its_loader_and_its_libraries() {
    let image = dynamic_image().unwrap();
    assert_eq!(image.entrypoint, DYNHELLO_PATH);
    let loader = crate::elf::interpreter(DYNHELLO_ELF).unwrap().unwrap();
    let paths: Vec<&str> = image.files.iter().map(|(path, _)| path.as_str()).collect();
    assert!(paths.contains(&loader.as_str()), "{loader} in {paths:?}");
    assert!(
        paths.iter().any(|path| path.ends_with("/libc.so.6")),
        "{paths:?}"
    );
    let layer = entries(&crate::layer::layer_tar(&image).unwrap());
    for (path, bytes) in DYNHELLO_LIBS {
        let entry = &layer[path.trim_start_matches('/')];
        assert_eq!(
            (entry.mode, entry.data.as_slice()),
            (0o755, *bytes),
            "{path}"
        );
    }
}

#[test]
fn probe_image_has_a_root_only_secret_tmp_and_data() {
    let layer = entries(&crate::layer::layer_tar(&probe_image().unwrap()).unwrap());
    let secret = &layer["secret"];
    assert_eq!((secret.mode, secret.uid, secret.gid), (0o600, 0, 0));
    assert_eq!(secret.data, b"secret\n");
    assert_eq!(layer["tmp/"].mode, 0o1777);
    assert_eq!(layer["data/"].mode, 0o755);
    assert_eq!(layer["probe"].data, PROBE_ELF);
}
