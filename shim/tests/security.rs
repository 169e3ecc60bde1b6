//! Attacks by a hostile pod neighbour, end to end through the CRI: a
//! native busybox sidecar, root with containerd's default capabilities,
//! in a pod that shares one PID namespace with a Wasm container. Each
//! attack must fail and leave the host, the compiled-code cache and the
//! other pods untouched (ARCHITECTURE.md, "Security model").

mod common;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cri::api::security_profile::ProfileType;
use common::cri::api::{ContainerConfig, ContainerState, NamespaceMode, SecurityProfile};
use common::cri::{Cri, Pod, container_log, cri};
use common::{children_of, shim_pids, wait_for};
use sha2::{Digest, Sha256};

/// What the scan prints for every process it looked at, and for each
/// attack that worked (none may).
const SCAN: &str = r#"
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" = "$$" ] && continue
  cmd=$(tr '\0' ' ' < $p/cmdline 2>/dev/null)
  echo "SEEN $pid $cmd"
  for f in $p/fd/* $p/map_files/*; do
    t=$(readlink $f 2>/dev/null) || continue
    case "$t" in *.cwasm*) echo "LISTED $f $t";; esac
    if ( : >> "$f" ) 2>/dev/null; then
      case "$t" in *.cwasm*|*containerd-shim*|/) echo "WROTE $f $t";; esac
    fi
  done
  if ( : >> $p/exe ) 2>/dev/null; then echo "WROTE $p/exe"; fi
  if ( exec 3< $p/exe ) 2>/dev/null; then
    case "$cmd" in *__child*|*__exec*|*.wasm*) echo "OPENED $p/exe";; esac
  fi
  if cat $p/root$MARKER 2>/dev/null; then echo "HOST $p/root"; fi
done
"#;

/// The same, for every new pid, until /stop exists: it watches helpers
/// and children while they start. Findings go to /findings, the number
/// of processes it looked at to /looked.
const WATCH: &str = r#"
seen=" "; n=0
while [ ! -e /stop ]; do
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    case "$seen" in *" $pid "*) continue;; esac
    seen="$seen$pid "; n=$((n+1))
    if cat $p/root$MARKER 2>/dev/null; then echo "HOST $pid" >> /findings; fi
    if ( : >> $p/exe ) 2>/dev/null; then echo "WROTE $pid/exe" >> /findings; fi
    for f in $p/fd/*; do
      t=$(readlink $f 2>/dev/null) || continue
      case "$t" in *.cwasm*) echo "LISTED $pid $t" >> /findings;; esac
    done
  done
  echo $n > /looked
done
echo done >> /looked
exec /bin/busybox sleep 1000
"#;

/// Held by the test that loads the machine most (250 starts and execs) and
/// by the one that measures answers: the second must not measure the first.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A file only the host has: what a process of ours still rooted in the
/// host would show through `/proc/<pid>/root`.
struct Marker(PathBuf);

impl Marker {
    fn new() -> Marker {
        let path =
            std::env::temp_dir().join(format!("wasmtime-shim-host-only-{}", std::process::id()));
        std::fs::write(&path, "HOST-ONLY-CONTENT\n").unwrap();
        Marker(path)
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn busybox(pod: &Pod, name: &str, script: &str, marker: &Marker) -> ContainerConfig {
    let mut config = pod.container(name, "busybox", &[]);
    config.command = vec![
        "/bin/busybox".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
    ];
    config.envs = vec![common::cri::api::KeyValue {
        key: "MARKER".into(),
        value: marker.0.to_string_lossy().into_owned(),
    }];
    config
}

fn run_running(cri: &Cri, pod: &Pod, config: ContainerConfig) -> String {
    let id = cri.run(pod, config);
    cri.wait_state(&id, ContainerState::ContainerRunning);
    id
}

fn sh(cri: &Cri, id: &str, script: &str) -> String {
    let out = cri
        .exec_sync(id, &["/bin/busybox", "sh", "-c", script])
        .unwrap_or_else(|e| panic!("ExecSync: {e:?}\n{}", cri.log_tail()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cache_dir(cri: &Cri) -> PathBuf {
    cri.dir().join("state/io.containerd.wasmtime.v1/cache")
}

/// The sha256 of every entry of the cache, by file name.
fn entry_digests(dir: &Path) -> BTreeMap<String, String> {
    let mut digests = BTreeMap::new();
    for dirent in std::fs::read_dir(dir).unwrap() {
        let name = dirent.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".cwasm") {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            digests.insert(name, format!("{:x}", Sha256::digest(&bytes)));
        }
    }
    digests
}

/// The host pids of the shim's Wasm children.
fn wasm_children(cri: &Cri) -> Vec<i32> {
    shim_pids(cri.dir())
        .into_iter()
        .flat_map(children_of)
        .filter(|pid| common::is_wasm_child(*pid))
        .collect()
}

fn lines_with<'a>(text: &'a str, prefixes: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .collect()
}

/// The sidecar lists every fd, mapping, root and binary of the processes
/// it shares its PID namespace with and tries to open each for writing,
/// to ptrace them and to take their descriptors with pidfd_getfd,
/// while a container of another pod runs the same module: every attempt
/// fails, the cache entries keep their digests, the other container wakes
/// and exits 0, and the binary the Wasm child runs is on a read-only
/// mount (even for a descriptor taken out of the pod, as host root can).
#[test]
fn a_root_sidecar_cannot_write_the_cache_the_binary_or_reach_the_host() {
    let Some(cri) = cri() else { return };
    cri.import(&["sleep", "busybox"]);
    let marker = Marker::new();

    // The module's entry is compiled and stored by the first start.
    let other = cri.new_pod("bystander", NamespaceMode::Node);
    let attacked = cri.shared_pid_pod("attacked");
    let wasm = run_running(&cri, &attacked, attacked.container("wasm", "sleep", &[]));
    let sidecar = busybox(
        &attacked,
        "sidecar",
        "exec /bin/busybox sleep 1000",
        &marker,
    );
    let sidecar = run_running(&cri, &attacked, sidecar);
    let bystander = run_running(&cri, &other, other.container("wasm", "sleep", &["20"]));
    let digests = entry_digests(&cache_dir(&cri));
    assert!(!digests.is_empty(), "no cache entry was stored");

    // A descriptor of the child's binary, as host root can take one.
    let child = *wasm_children(&cri).first().expect("a Wasm child");
    let exe = std::fs::File::open(format!("/proc/{child}/exe")).unwrap();

    let script = format!("MARKER={}\n{SCAN}", marker.0.display());
    let report = sh(&cri, &sidecar, &script);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("SEEN") && l.contains("/sleep.wasm")),
        "the scan must see the Wasm child: {report}"
    );
    let broken = lines_with(&report, &["WROTE", "OPENED", "HOST", "LISTED", "HOST-ONLY"]);
    assert!(
        broken.is_empty(),
        "attacks that worked: {broken:#?}\n{report}"
    );
    assert!(!report.contains("HOST-ONLY-CONTENT"), "{report}");

    // ptrace and pidfd_getfd, from the unconfined sidecar and from one
    // under containerd's RuntimeDefault seccomp profile (which refuses
    // pidfd_getfd without CAP_SYS_PTRACE but allows ptrace).
    assert_reaches_none_of_ours(&cri, &sidecar);
    let mut confined = busybox(
        &attacked,
        "confined",
        "exec /bin/busybox sleep 1000",
        &marker,
    );
    let context = confined.linux.as_mut().unwrap();
    let context = context.security_context.as_mut().unwrap();
    context.seccomp = Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let confined = run_running(&cri, &attacked, confined);
    let status = sh(&cri, &confined, "grep Seccomp: /proc/self/status");
    assert_eq!(
        status.split_whitespace().nth(1),
        Some("2"),
        "not under a filter: {status}"
    );
    assert_reaches_none_of_ours(&cri, &confined);

    assert_eq!(
        entry_digests(&cache_dir(&cri)),
        digests,
        "the cache entries changed"
    );
    let exited = cri.wait_state(&bystander, ContainerState::ContainerExited);
    assert_eq!(exited.exit_code, 0, "{}", container_log(&other, "wasm"));
    assert!(container_log(&other, "wasm").contains("awake"));

    assert_read_only(&exe, "while the child runs");
    let _ = wasm;
    cri.remove_pod(&attacked);
    cri.remove_pod(&other);
    assert_read_only(&exe, "after the pod ended");
    cri.assert_clean();
}

/// Runs the static attack program in `sidecar`: ptrace and pidfd_getfd
/// of every descriptor of every process it sees. None may reach a
/// process of ours; the sidecar may reach its own container's, and
/// pause, as under runc (the control that the attack works at all).
fn assert_reaches_none_of_ours(cri: &Cri, sidecar: &str) {
    let attack = cri
        .exec_sync(sidecar, &["/bin/attack"])
        .unwrap_or_else(|e| panic!("ExecSync: {e:?}\n{}", cri.log_tail()));
    assert_eq!(attack.exit_code, 0, "{attack:?}");
    let attack = String::from_utf8_lossy(&attack.stdout).into_owned();
    let ours: Vec<&str> = attack
        .lines()
        .filter_map(|l| l.strip_prefix("SEEN "))
        .filter(|l| l.contains(".wasm") || l.contains("__child") || l.contains("__exec"))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(
        !ours.is_empty(),
        "the attack must see the Wasm child: {attack}"
    );
    let reached: Vec<&str> = attack
        .lines()
        .filter(|l| l.starts_with("PTRACED ") || l.starts_with("GOTFD "))
        .filter(|l| ours.contains(&l.split(' ').nth(1).unwrap_or("")))
        .collect();
    // The control: the tool reaches what it may, the sidecar's own
    // process (where Yama does not restrict ptrace to descendants).
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").unwrap_or_default();
    if yama.trim().is_empty() || yama.trim() == "0" {
        let own: Vec<&str> = attack
            .lines()
            .filter_map(|l| l.strip_prefix("SEEN "))
            .filter(|l| l.contains("sleep 1000"))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let traced = attack.lines().any(|l| {
            l.strip_prefix("PTRACED ")
                .is_some_and(|pid| own.contains(&pid.trim()))
        });
        assert!(
            traced,
            "the attack could not even ptrace its own container: {attack}"
        );
    }
    assert!(
        reached.is_empty(),
        "a process of ours was reached: {reached:#?}\n{attack}"
    );
}

/// The file behind `exe` is reached through a read-only mount: no reopen
/// of it through /proc can ever write it.
fn assert_read_only(exe: &std::fs::File, when: &str) {
    let flags = nix::sys::statvfs::fstatvfs(exe).unwrap().flags();
    assert!(
        flags.contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
        "{when}: the child's binary is on a writable mount ({flags:?})"
    );
    let reopen = std::fs::OpenOptions::new()
        .append(true)
        .open(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    assert!(
        reopen.is_err(),
        "{when}: the child's binary was reopened for writing"
    );
}

/// A sidecar that watches every new pid while 200 ExecSync calls go into
/// the pod, 30 modules are exec'd into its Wasm container and 50 Wasm
/// containers start in it never reaches a host file
/// through a helper's `/proc/<pid>/root`, never opens one's binary for
/// writing and never sees a cache entry among its descriptors.
#[test]
fn helpers_and_children_are_never_exposed_while_they_start() {
    let _alone = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cri) = cri() else { return };
    cri.import(&["hello", "sleep", "busybox"]);
    let marker = Marker::new();
    let pod = cri.shared_pid_pod("watched");
    let watcher = run_running(&cri, &pod, busybox(&pod, "watcher", WATCH, &marker));
    for _ in 0..200 {
        let out = cri
            .exec_sync(&watcher, &["/bin/busybox", "true"])
            .unwrap_or_else(|e| panic!("ExecSync: {e:?}\n{}", cri.log_tail()));
        assert_eq!(out.exit_code, 0);
    }
    // Modules exec'd into a Wasm container: each helper forks, compiles
    // the module in the container's sandbox and runs it, in sight.
    let wasm = run_running(&cri, &pod, pod.container("wasm", "sleep", &[]));
    for _ in 0..30 {
        let out = cri
            .exec_sync(&wasm, &["/sleep.wasm", "0"])
            .unwrap_or_else(|e| panic!("ExecSync: {e:?}\n{}", cri.log_tail()));
        assert_eq!(out.exit_code, 0);
    }
    for n in 0..50 {
        let id = cri.run(&pod, pod.container(&format!("hello-{n}"), "hello", &[]));
        let status = cri.wait_state(&id, ContainerState::ContainerExited);
        assert_eq!(status.exit_code, 0);
    }
    sh(&cri, &watcher, "touch /stop");
    wait_for("the watcher's last round", Duration::from_secs(60), || {
        sh(&cri, &watcher, "cat /looked").contains("done")
    });
    let looked: usize = sh(&cri, &watcher, "head -n1 /looked")
        .trim()
        .parse()
        .unwrap();
    assert!(
        looked >= 50,
        "the watcher looked at only {looked} processes"
    );
    let findings = sh(&cri, &watcher, "cat /findings 2>/dev/null; true");
    assert!(
        findings.trim().is_empty(),
        "attacks that worked:\n{findings}"
    );
    cri.remove_pod(&pod);
    cri.assert_clean();
}

/// The pids in cgroup directory `dir`.
fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// Freezes or thaws a container's cgroup behind the shim's back, as a
/// SIGSTOP would stop one process: the shim believes it runs.
fn freeze(cri: &Cri, id: &str, frozen: bool) {
    let (file, value) = match common::cri::cgroup_v2() {
        true => ("cgroup.freeze", if frozen { "1" } else { "0" }),
        false => ("freezer.state", if frozen { "FROZEN" } else { "THAWED" }),
    };
    std::fs::write(cri.cgroup("freezer", id).join(file), value).unwrap();
}

/// An exec helper that never gets ready (frozen as it joins the
/// container's cgroup) stalls only its own exec: the pod's other
/// containers are created, started, asked for and stopped meanwhile,
/// each call answered within a second. A lock held across the exec
/// would hold every try back; a loaded machine may slow one try, so
/// each call gets five and one must be quick.
#[test]
fn a_stalled_exec_helper_does_not_stall_the_other_containers() {
    let _alone = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cri) = cri() else { return };
    cri.import(&["hello", "sleep", "busybox"]);
    let pod = cri.new_pod("stalled", NamespaceMode::Node);
    let marker = Marker::new();
    let sidecar = run_running(
        &cri,
        &pod,
        busybox(&pod, "sidecar", "exec /bin/busybox sleep 1000", &marker),
    );
    // The module's code is compiled before the stall: the calls below
    // measure the shim's answers, not a compile.
    let warm = cri.run(&pod, pod.container("warm", "hello", &[]));
    cri.wait_state(&warm, ContainerState::ContainerExited);
    let sleepers: Vec<String> = (0..TRIES)
        .map(|n| {
            run_running(
                &cri,
                &pod,
                pod.container(&format!("wasm-{n}"), "sleep", &[]),
            )
        })
        .collect();
    freeze(&cri, &sidecar, true);
    std::thread::scope(|s| {
        let exec = s.spawn(|| cri.exec_sync(&sidecar, &["/bin/busybox", "echo", "late"]));
        let dir = cri.cgroup("freezer", &sidecar);
        wait_for(
            "the exec helper in the frozen cgroup",
            Duration::from_secs(30),
            || procs(&dir).len() > 1,
        );
        let mut hellos = Vec::new();
        quick("a Wasm container's Create and Start", &mut |n| {
            hellos.push(cri.run(&pod, pod.container(&format!("hello-{n}"), "hello", &[])));
        });
        quick("ContainerStatus", &mut |n| {
            let state = cri.status(&sleepers[n]).state;
            assert_eq!(state, ContainerState::ContainerRunning as i32);
        });
        quick("StopContainer", &mut |n| cri.stop(&sleepers[n], 10));
        freeze(&cri, &sidecar, false);
        let out = exec.join().unwrap().expect("the exec, once thawed");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "late");
        for id in &hellos {
            let exited = cri.wait_state(id, ContainerState::ContainerExited);
            assert_eq!(exited.exit_code, 0);
        }
    });
    cri.remove_pod(&pod);
    cri.assert_clean();
}

/// How many times [`quick`] may try a call.
const TRIES: usize = 5;

/// Makes `call(n)` for n = 0, 1, … until one returns within a second.
fn quick(what: &str, call: &mut dyn FnMut(usize)) {
    let mut took = Vec::new();
    for n in 0..TRIES {
        let started = std::time::Instant::now();
        call(n);
        took.push(started.elapsed());
        if took[n] < Duration::from_secs(1) {
            return;
        }
    }
    panic!("{what} took {took:?} while an exec helper was stalled");
}
