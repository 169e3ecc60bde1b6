//! A private containerd for end-to-end tests: its own root, state and
//! sockets in a temporary directory, with this build's shim on its PATH,
//! stopped (and its leftovers checked) when the fixture is dropped.

#![allow(dead_code)]

pub mod cri;
mod events;
mod mounts;
mod procs;
pub mod pty;
pub mod registry;
mod run;
mod tasks;
pub mod tools;
mod versions;

pub use events::Events;
#[allow(unused_imports)]
pub use mounts::Tmpfs;
#[allow(unused_imports)]
pub use procs::*;
pub use run::Run;
#[allow(unused_imports)]
pub use versions::*;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const RUNTIME: &str = "io.containerd.wasmtime.v1";
pub const NAMESPACE: &str = "e2e";
const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasmtime-v1");
/// Far beyond what any ctr call of these tests takes; only a hang hits it.
const CTR_LIMIT: Duration = Duration::from_secs(120);

pub struct Containerd {
    dir: tempfile::TempDir,
    process: Child,
    /// How it was started, to start it again (`restart`).
    umask: Option<u32>,
    env: Vec<(String, String)>,
}

/// A private containerd with this build's shim on its PATH, or `None`
/// (saying why) where the end-to-end tests cannot run.
pub fn containerd() -> Option<Containerd> {
    can_run().then(|| Containerd::start(false, None))
}

/// As [`containerd`], with containerd started under `umask`.
pub fn containerd_with_umask(umask: u32) -> Option<Containerd> {
    can_run().then(|| Containerd::start(false, Some(umask)))
}

/// As [`containerd`], with a copy of the shim binary on containerd's PATH
/// (not a link to the build's), for tests that replace it.
pub fn containerd_with_copied_shim() -> Option<Containerd> {
    can_run().then(|| Containerd::start(true, None))
}

/// The end-to-end tests need root and a containerd; say so when missing.
/// Under `make test` (which sets REQUIRE_MATRIX) a skip is a failure.
pub fn can_run() -> bool {
    let why = if !nix::unistd::Uid::effective().is_root() {
        "end-to-end tests need root"
    } else if Command::new(containerd_bin("containerd"))
        .arg("--version")
        .output()
        .is_err()
    {
        "containerd is not installed (make deps installs it)"
    } else {
        return true;
    };
    assert!(std::env::var_os("REQUIRE_MATRIX").is_none(), "{why}");
    eprintln!("skipping: {why}");
    false
}

/// The directory of the containerd under test: the one a test chose with
/// [`use_containerd_bin_dir`], else `CONTAINERD_BIN_DIR` (the version
/// matrix runs the suites against other containerd releases), else none:
/// the binaries on PATH.
pub fn containerd_bin_dir() -> Option<PathBuf> {
    CHOSEN_BIN_DIR
        .get()
        .cloned()
        .or_else(|| std::env::var_os("CONTAINERD_BIN_DIR").map(PathBuf::from))
}

static CHOSEN_BIN_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Makes this test binary use the containerd in `dir`, whatever the
/// environment says. Call it before the first fixture starts.
pub fn use_containerd_bin_dir(dir: &Path) {
    let _ = CHOSEN_BIN_DIR.set(dir.to_path_buf());
}

/// `containerd` or `ctr` of the containerd under test.
pub fn containerd_bin(name: &str) -> PathBuf {
    match containerd_bin_dir() {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// The major version of that containerd (1 or 2), which picks the config
/// format: `version = 2` for 1.x, `version = 3` for 2.x.
pub fn containerd_major() -> u32 {
    static MAJOR: OnceLock<u32> = OnceLock::new();
    *MAJOR.get_or_init(|| {
        let out = Command::new(containerd_bin("containerd"))
            .arg("--version")
            .output()
            .expect("containerd --version");
        // "containerd github.com/containerd/containerd[/v2] [v]1.6.20~ds1 …"
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("testing against {}", text.trim());
        text.split_whitespace()
            .nth(2)
            .and_then(|v| v.trim_start_matches('v').split('.').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no version in {text:?}"))
    })
}

/// The config that turns the CRI off for the ctr suites. In 2.x the CRI is
/// several plugins, and NRI (on by default there) would make every test
/// containerd listen on the same socket in /var/run/nri.
fn disabled_cri() -> String {
    let plugins: &[&str] = match containerd_major() {
        1 => &["io.containerd.grpc.v1.cri"],
        _ => &[
            "io.containerd.grpc.v1.cri",
            "io.containerd.cri.v1.images",
            "io.containerd.cri.v1.runtime",
            "io.containerd.podsandbox.controller.v1.podsandbox",
            "io.containerd.nri.v1.nri",
        ],
    };
    format!("disabled_plugins = {plugins:?}\n")
}

/// The cache temp files (`….tmp.…`) below `dir`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in read.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(temp_files(&path));
        } else if entry.file_name().to_string_lossy().contains(".tmp.") {
            found.push(path.display().to_string());
        }
    }
    found
}

/// Starts containerd on `d/config.toml` under `umask` with `env` added to
/// its environment, its output appended to `d/containerd.log`.
fn spawn_containerd(d: &Path, umask: Option<u32>, env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("containerd.log"))
        .unwrap();
    // A shell sets the umask, then becomes containerd.
    let umask = format!("{:03o}", umask.unwrap_or(0o022));
    Command::new("sh")
        .args(["-c", "umask \"$0\" && exec \"$2\" --config \"$1\""])
        .arg(&umask)
        .arg(d.join("config.toml"))
        .arg(containerd_bin("containerd"))
        .env("PATH", containerd_path(&d.join("bin")))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start containerd")
}

/// A config whose root, state and sockets are in `d`, plus `extra`
/// (top-level keys first, then tables), in the format of containerd's
/// major version.
fn config_in(d: &Path, extra: &str) -> String {
    format!(
        "version = {1}\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n{extra}\n\
         [grpc]\n  address = \"{0}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n",
        d.display(),
        if containerd_major() >= 2 { 3 } else { 2 },
    )
}

/// The PATH containerd runs with: the fixture's bin dir with the shim, then
/// the containerd's own (so that its runc shim serves `runc`), then ours.
fn containerd_path(bin: &Path) -> OsString {
    let mut dirs = vec![bin.to_path_buf()];
    dirs.extend(containerd_bin_dir());
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH")
}

/// The OCI tarballs of the test images, written once per test process.
pub(crate) fn images_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("images-{}", std::process::id()));
        test_images::write_all_images(&dir).expect("write test images");
        dir
    })
}

/// Waits for a `ctr` process to end and returns its exit status.
pub fn exit_status_within(ctr: &mut Child, what: &str, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = ctr.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < limit,
            "{what} did not end within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the toolchain-built program images (`make programs`: a C
/// module, Python components) exist; says why not. Under `make test`
/// (REQUIRE_MATRIX) a missing one is a failure, not a skip.
pub fn programs_built() -> bool {
    let Err(why) = test_images::require_wasm_programs() else {
        return true;
    };
    assert!(std::env::var_os("REQUIRE_MATRIX").is_none(), "{why:#}");
    eprintln!("skipping: {why:#}");
    false
}

pub fn image(name: &str) -> String {
    test_images::reference(name)
}

impl Containerd {
    fn start(copy_shim: bool, umask: Option<u32>) -> Self {
        Self::start_with("e2e-ctrd", copy_shim, umask, |_| disabled_cri())
    }

    /// Starts a containerd in a new temporary directory `<prefix>…` whose
    /// config is its root, state and sockets there plus `extra(dir)`
    /// (top-level keys first, then tables); waits until it answers.
    pub(crate) fn start_with(
        prefix: &str,
        copy_shim: bool,
        umask: Option<u32>,
        extra: impl FnOnce(&Path) -> String,
    ) -> Self {
        let dir = Self::new_dir(prefix, copy_shim);
        let config = config_in(dir.path(), &extra(dir.path()));
        Self::launch(dir, &config, umask)
    }

    /// A private containerd on a whole config of the caller's (`config`
    /// gets the fixture's directory), which must keep root, state and the
    /// sockets in that directory.
    pub fn start_on_config(prefix: &str, config: impl FnOnce(&Path) -> String) -> Self {
        let dir = Self::new_dir(prefix, false);
        let text = config(dir.path());
        Self::launch(dir, &text, None)
    }

    /// The fixture's directory, with the shim (linked or copied) in `bin/`.
    fn new_dir(prefix: &str, copy_shim: bool) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let shim = bin.join("containerd-shim-wasmtime-v1");
        match copy_shim {
            true => std::fs::copy(SHIM, shim).map(drop).unwrap(),
            false => std::os::unix::fs::symlink(SHIM, shim).unwrap(),
        }
        dir
    }

    /// Starts containerd on `config` in `dir` and waits until it answers.
    fn launch(dir: tempfile::TempDir, config: &str, umask: Option<u32>) -> Self {
        Self::launch_with_env(dir, config, umask, &[])
    }

    /// A private containerd (config as [`Containerd::start`]'s) whose
    /// environment, which its shims inherit, also holds `env`.
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let dir = Self::new_dir("e2e-ctrd", false);
        let config = config_in(dir.path(), &disabled_cri());
        Self::launch_with_env(dir, &config, None, env)
    }

    fn launch_with_env(
        dir: tempfile::TempDir,
        config: &str,
        umask: Option<u32>,
        env: &[(&str, &str)],
    ) -> Self {
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let process = spawn_containerd(dir.path(), umask, &env);
        let ctrd = Containerd {
            dir,
            process,
            umask,
            env,
        };
        ctrd.wait_answering();
        ctrd
    }

    fn wait_answering(&self) {
        wait_for("containerd to answer", Duration::from_secs(30), || {
            self.ctr(&["version"]).status.success()
        });
    }

    /// Kills containerd (SIGKILL, as a crash) and starts it again on the
    /// same config, root and state; its shims live on.
    pub fn restart(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        self.process = spawn_containerd(self.dir.path(), self.umask, &self.env);
        self.wait_answering();
    }

    /// The shim binary containerd runs.
    pub fn shim(&self) -> PathBuf {
        self.dir().join("bin").join("containerd-shim-wasmtime-v1")
    }

    /// The build's shim binary.
    pub fn built_shim() -> &'static str {
        SHIM
    }

    /// The compiled-code cache's temp files (`<key>.tmp.<pid>.<n>…`), which
    /// a store cut short would leave.
    pub fn cache_temp_files(&self) -> Vec<String> {
        temp_files(&self.dir().join("state/io.containerd.wasmtime.v1/cache"))
    }

    /// containerd's process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default()
    }

    /// Waits until containerd's log holds a line for which `wanted` is
    /// true and returns the log. The shim's log reaches containerd's
    /// through a fifo that containerd copies on its own time, so a line
    /// may land after the ctr call whose failure wrote it has returned.
    pub fn wait_log(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let mut log = String::new();
        wait_for(
            &format!("{what} in containerd's log"),
            Duration::from_secs(30),
            || {
                log = self.log();
                log.lines().any(&wanted)
            },
        );
        log
    }

    pub fn ctr_command(&self, args: &[&str]) -> Command {
        self.ctr_command_in(NAMESPACE, args)
    }

    pub fn ctr_command_in(&self, namespace: &str, args: &[&str]) -> Command {
        let mut command = Command::new(containerd_bin("ctr"));
        command
            .arg("--address")
            .arg(self.dir().join("containerd.sock"))
            .args(["--namespace", namespace])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs ctr to its end; a ctr that hangs fails the test instead of
    /// holding up the whole suite.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(NAMESPACE, args)
    }

    /// As [`Containerd::ctr`], in containerd namespace `namespace`.
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        let child = self
            .ctr_command_in(namespace, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ctr");
        self.finish(child, CTR_LIMIT, &format!("ctr {}", args.join(" ")))
    }

    /// Waits for `child` (a ctr) and collects its output; fails the test
    /// with containerd's and the shims' log if it has not ended in `limit`.
    pub fn finish(&self, child: Child, limit: Duration, what: &str) -> Output {
        let (out, late) = output_within(child, limit);
        assert!(
            !late,
            "{what} did not end within {limit:?}\nstderr: {}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }

    pub fn import(&self, name: &str) {
        self.import_into(NAMESPACE, name)
    }

    /// Imports (and unpacks) test image `name` into containerd namespace
    /// `namespace`.
    pub fn import_into(&self, namespace: &str, name: &str) {
        let tar = images_dir().join(format!("{name}.tar"));
        let args = ["images", "import", "--all-platforms", tar.to_str().unwrap()];
        let out = self.ctr_in(namespace, &args);
        assert!(
            out.status.success(),
            "import {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ctr run --rm` of a test image under the wasmtime shim.
    pub fn run(&self, name: &str, id: &str, args: &[&str]) -> Run {
        self.run_with(name, id, &[], args)
    }

    pub fn run_with(&self, name: &str, id: &str, flags: &[&str], args: &[&str]) -> Run {
        self.run_under(RUNTIME, name, id, flags, args)
    }

    /// `ctr run --rm` of a test image under `runtime` (ours or runc's).
    pub fn run_under(
        &self,
        runtime: &str,
        name: &str,
        id: &str,
        flags: &[&str],
        args: &[&str],
    ) -> Run {
        let image = image(name);
        let mut all = vec!["run", "--rm", "--runtime", runtime];
        all.extend_from_slice(flags);
        all.push(&image);
        all.push(id);
        all.extend_from_slice(args);
        Run::from(self.ctr(&all))
    }

    /// A rootfs directory `name` under the fixture's directory holding the
    /// static probe at `/probe`, for specs run with [`Self::run_config`].
    pub fn probe_rootfs(&self, name: &str) -> PathBuf {
        let rootfs = self.dir().join(name);
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::write(rootfs.join("probe"), test_images::PROBE_ELF).unwrap();
        std::fs::set_permissions(
            rootfs.join("probe"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        rootfs
    }

    /// ctr's default spec for a container `id` whose root is the directory
    /// `rootfs`, running `args`, for `ctr run --config`.
    pub fn default_spec(&self, rootfs: &Path, id: &str, args: &[&str]) -> serde_json::Value {
        let out = self.ctr(&["oci", "spec"]);
        assert!(out.status.success(), "ctr oci spec");
        let mut spec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        spec["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
        spec["process"]["args"] = serde_json::json!(args);
        spec["linux"]["cgroupsPath"] = format!("/{NAMESPACE}/{id}").into();
        spec
    }

    /// `ctr run --rm --config` of `spec` under `runtime`.
    pub fn run_config(&self, runtime: &str, id: &str, spec: &serde_json::Value) -> Run {
        let config = self.dir().join(format!("{id}.json"));
        std::fs::write(&config, spec.to_string()).unwrap();
        let config = config.to_string_lossy().into_owned();
        Run::from(self.ctr(&["run", "--rm", "--runtime", runtime, "--config", &config, id]))
    }

    /// Starts `ctr events`, whose lines [`Events::seen`] collects.
    pub fn events(&self) -> Events {
        let mut child = self
            .ctr_command(&["events"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ctr events");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Events { child, lines }
    }

    /// Starts `ctr run --rm` without waiting, stdout piped.
    pub fn spawn_run(&self, name: &str, id: &str, args: &[&str], stdin: Stdio) -> Child {
        let image = image(name);
        let mut all = vec!["run", "--rm", "--runtime", RUNTIME, &image, id];
        all.extend_from_slice(args);
        let mut command = self.ctr_command(&all);
        command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().expect("spawn ctr run")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.process.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.process.wait();
        // A test that failed half way leaves shims and their children:
        // they must not outlive the test and disturb the next ones.
        for shim in shim_pids(self.dir()) {
            for pid in children_of(shim).into_iter().chain([shim]) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Snapshot mounts of this containerd, if any survived a failed test.
        let root = self.dir().to_string_lossy().into_owned();
        let _ = containerd_umount(&root);
    }
}

fn containerd_umount(root: &str) -> std::io::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
    Ok(())
}

/// Waits for `child` and collects its output; kills it if it has not
/// ended within `limit` and says so with `true`.
fn output_within(child: Child, limit: Duration) -> (Output, bool) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let late = finished.recv_timeout(limit).is_err();
        if late {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        late
    });
    let out = child.wait_with_output().expect("wait for a child");
    let _ = done.send(());
    (out, watchdog.join().expect("watchdog"))
}

pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
