//! Docker Engine on this shim: a private containerd 2.1.9 (the fixture of
//! common/mod.rs, taken from forky's packages) and a private dockerd 28 on
//! it with the containerd image store; the test images are `docker load`ed
//! and run with `docker run --runtime io.containerd.wasmtime.v1` (`-it` too,
//! from a real terminal).
//!
//! The forky binaries come from `scripts/containerd-versions.sh
//! .dev/versions`. Without them the test says so and passes, unless
//! `REQUIRE_MATRIX=1` (as the Makefile sets it), where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Containerd, RUNTIME, Run, image, images_dir, shim_pids, wait_for};

/// The platform of the test images, which `docker run` must be told.
const PLATFORM: &str = "wasip1/wasm";
/// The containerd namespace of Docker Engine.
const MOBY: &str = "moby";
/// Far beyond what any docker call of this test takes; only a hang hits it.
const DOCKER_LIMIT: Duration = Duration::from_secs(120);
/// `docker stop` of a guest that dies on SIGTERM takes about 0.2 s; this
/// bound only keeps a noisy machine from failing the test. A shim that
/// ignored the SIGTERM would take the whole grace period (10 s) and more.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Where scripts/containerd-versions.sh unpacks forky's packages.
fn versions_dir() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap().join(".dev/versions")
}

/// The unpacked forky binaries this test runs.
struct Forky {
    /// containerd 2.1.9's usr/bin: containerd, ctr and its runc shim.
    containerd_bin: PathBuf,
    /// docker.io's and docker-cli's usr/bin and usr/sbin.
    docker_bin: PathBuf,
    docker_sbin: PathBuf,
}

impl Forky {
    /// The binaries, or `None` (skipping, or failing under
    /// `REQUIRE_MATRIX=1`) when they have not been fetched.
    fn find() -> Option<Self> {
        let versions = versions_dir();
        let forky = Forky {
            containerd_bin: versions.join("containerd-2.1.9/usr/bin"),
            docker_bin: versions.join("docker/usr/bin"),
            docker_sbin: versions.join("docker/usr/sbin"),
        };
        let missing: Vec<String> = [
            forky.containerd_bin.join("containerd"),
            forky.containerd_bin.join("ctr"),
            forky.dockerd(),
            forky.docker(),
        ]
        .into_iter()
        .filter(|bin| !bin.is_file())
        .map(|bin| bin.display().to_string())
        .collect();
        if missing.is_empty() {
            return Some(forky);
        }
        skip(&format!(
            "{} missing: run scripts/containerd-versions.sh .dev/versions",
            missing.join(", ")
        ));
        None
    }

    fn dockerd(&self) -> PathBuf {
        self.docker_sbin.join("dockerd")
    }

    fn docker(&self) -> PathBuf {
        self.docker_bin.join("docker")
    }
}

/// Says why the test does not run; under `REQUIRE_MATRIX=1` that fails it.
fn skip(why: &str) {
    if std::env::var_os("REQUIRE_MATRIX").is_some_and(|v| v == "1") {
        panic!("REQUIRE_MATRIX=1, but the docker test cannot run: {why}");
    }
    eprintln!("skipping: {why}");
}

/// A private dockerd on the fixture's containerd, with its data root, exec
/// root, pidfile, socket and log in a temporary directory. Dropping it
/// stops dockerd (killing it if it does not end) and unmounts what it left.
struct Docker<'a> {
    ctrd: &'a Containerd,
    cli: PathBuf,
    process: Child,
    /// Set once dockerd has been waited for.
    exited: Option<ExitStatus>,
    dir: tempfile::TempDir,
}

impl<'a> Docker<'a> {
    fn start(ctrd: &'a Containerd, forky: &Forky) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("e2e-docker")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        for sub in ["data", "exec", "cli"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(
            d.join("daemon.json"),
            r#"{"features": {"containerd-snapshotter": true}}"#,
        )
        .unwrap();
        // The shim (in the fixture's bin dir) and docker-init on dockerd's
        // PATH too, not only on containerd's.
        let mut path = vec![
            ctrd.dir().join("bin"),
            forky.docker_bin.clone(),
            forky.docker_sbin.clone(),
            forky.containerd_bin.clone(),
        ];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let process = Command::new(forky.dockerd())
            .arg("--containerd")
            .arg(ctrd.dir().join("containerd.sock"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .env("PATH", std::env::join_paths(path).unwrap())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let mut docker = Docker {
            ctrd,
            cli: forky.docker(),
            process,
            exited: None,
            dir,
        };
        let start = Instant::now();
        loop {
            if let Some(status) = docker.process.try_wait().unwrap() {
                docker.exited = Some(status);
                panic!("dockerd exited with {status}\n{}", docker.logs());
            }
            let answer = docker.command(&["version"]).output().unwrap();
            if answer.status.success() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "dockerd did not answer within 60 s\n{}",
                docker.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("dockerd answered after {:?}", start.elapsed());
        docker
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The docker CLI for this dockerd, with a config directory of its own.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.cli);
        command
            .arg("-H")
            .arg(format!(
                "unix://{}",
                self.dir().join("docker.sock").display()
            ))
            .args(args)
            .env("DOCKER_CONFIG", self.dir().join("cli"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs the docker CLI to its end; a hang fails the test.
    fn docker(&self, args: &[&str]) -> Run {
        let child = self.command(args).spawn().expect("run docker");
        let what = format!("docker {}", args.join(" "));
        Run::from(self.ctrd.finish(child, DOCKER_LIMIT, &what))
    }

    /// As [`Docker::docker`], failing the test unless docker succeeds;
    /// returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.docker(args);
        assert_eq!(
            run.code,
            0,
            "docker {}: {run:?}\n{}",
            args.join(" "),
            self.logs()
        );
        run.stdout
    }

    /// `docker run` of test image `name` under the wasmtime shim.
    fn run(&self, flags: &[&str], name: &str, args: &[&str]) -> Run {
        let image = image(name);
        let mut all = vec![
            "run",
            "--runtime",
            RUNTIME,
            "--platform",
            PLATFORM,
            // --bridge=none leaves no default network to join.
            "--network",
            "none",
        ];
        all.extend_from_slice(flags);
        all.push(&image);
        all.extend_from_slice(args);
        self.docker(&all)
    }

    /// `docker load` of a test image's OCI tarball.
    fn load(&self, name: &str) {
        let tar = images_dir().join(format!("{name}.tar"));
        let out = self.ok(&["load", "-i", tar.to_str().unwrap()]);
        assert!(out.contains("Loaded image"), "docker load {name}: {out}");
    }

    /// `docker inspect -f <format>` of a container.
    fn inspect(&self, container: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, container])
            .trim()
            .to_string()
    }

    /// The ends of dockerd's and containerd's logs (where the shim's
    /// errors are), for failure messages.
    fn logs(&self) -> String {
        let dockerd = std::fs::read_to_string(self.dir().join("dockerd.log")).unwrap_or_default();
        format!(
            "dockerd log (end):\n{}\ncontainerd log (end):\n{}",
            tail(&dockerd, 40),
            tail(&self.ctrd.log(), 40)
        )
    }

    /// Sends dockerd SIGTERM if it still runs and waits for it; kills it
    /// if it has not ended after 30 s. Returns how it ended.
    fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let pid = nix::unistd::Pid::from_raw(self.process.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.process.kill();
                break self.process.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.exited = Some(status);
        status
    }

    /// Stops dockerd, asserting that it ends by itself on SIGTERM and
    /// leaves no mount behind, then removes its directory, whose path it
    /// returns.
    fn stop(mut self) -> PathBuf {
        let start = Instant::now();
        let status = self.terminate();
        assert!(
            status.success(),
            "dockerd ended with {status} after {:?}\n{}",
            start.elapsed(),
            self.logs()
        );
        eprintln!("dockerd stopped in {:?}", start.elapsed());
        let mounts = mounts_under(self.dir());
        assert!(mounts.is_empty(), "dockerd left mounts: {mounts:?}");
        self.dir().to_path_buf()
    }
}

impl Drop for Docker<'_> {
    fn drop(&mut self) {
        self.terminate();
        // Container root filesystems and network namespaces of a test that
        // failed half way, so that the directory can be removed.
        let mut mounts = mounts_under(self.dir());
        mounts.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in mounts {
            let _ = nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The mount points at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The cgroup directories (in any hierarchy) of Docker container `id`.
fn container_cgroups(id: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|hierarchy| hierarchy.path().join("docker").join(id))
        .filter(|cgroup| cgroup.exists())
        .collect()
}

#[test]
fn docker_runs_wasm_containers_with_this_shim() {
    let started = Instant::now();
    let Some(forky) = Forky::find() else { return };
    // The fixture picks the config (version = 3, CRI and NRI off) by the
    // version of the containerd it runs.
    common::use_containerd_bin_dir(&forky.containerd_bin);
    let Some(ctrd) = common::containerd() else {
        skip("the containerd fixture cannot run here (see above)");
        return;
    };
    let docker = Docker::start(&ctrd, &forky);
    assert_eq!(
        docker.ok(&["info", "-f", "{{json .DriverStatus}}"]).trim(),
        r#"[["driver-type","io.containerd.snapshotter.v1"]]"#,
        "dockerd does not use the containerd image store"
    );

    // `docker load` takes the OCI layout tarballs into containerd's
    // namespace of Docker.
    for name in ["hello", "exit", "sleep", "tty"] {
        docker.load(name);
    }
    let images = ctrd.ctr_in(MOBY, &["images", "ls", "-q"]);
    let images = String::from_utf8_lossy(&images.stdout);
    for name in ["hello", "exit", "sleep", "tty"] {
        assert!(images.lines().any(|l| l == image(name)), "{images}");
    }

    // (1) Output and exit status 0, and (4) the same output in its log.
    let run = docker.run(&["--name", "hello"], "hello", &[]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "hello from wasm\n"),
        "{run:?}\n{}",
        docker.logs()
    );
    assert_eq!(docker.inspect("hello", "{{.State.ExitCode}}"), "0");
    assert_eq!(docker.ok(&["logs", "hello"]), "hello from wasm\n");

    // (2) The guest's exit code is the container's.
    let run = docker.run(&["--rm"], "exit", &["42"]);
    assert_eq!(run.code, 42, "{run:?}\n{}", docker.logs());

    // (5) `docker run -it`, from a real terminal: the guest's stdout is a
    // terminal, as under `wasmtime run` in one.
    let tty = image("tty");
    let flags = [
        "run",
        "-it",
        "--rm",
        "--runtime",
        RUNTIME,
        "--platform",
        PLATFORM,
    ];
    let mut all = flags.to_vec();
    all.extend_from_slice(&["--network", "none", &tty]);
    let client = common::pty::PtyClient::spawn(docker.command(&all), 24, 80, "docker run -it");
    let (code, screen) = client.wait();
    assert_eq!(code, 0, "{screen}\n{}", docker.logs());
    let screen = screen.replace('\r', "");
    assert!(screen.contains("stdout is a terminal\n"), "{screen:?}");

    // (3) `docker stop` of a guest asleep in a host call: SIGTERM ends it
    // at once, with 128 + 15.
    let id = docker.run(&["-d", "--name", "sleeper"], "sleep", &[]);
    assert_eq!(id.code, 0, "{id:?}\n{}", docker.logs());
    let id = id.stdout.trim().to_string();
    wait_for("the sleeper to print", Duration::from_secs(30), || {
        docker.docker(&["logs", "sleeper"]).stdout == "sleeping\n"
    });
    assert_eq!(docker.inspect("sleeper", "{{.State.Status}}"), "running");
    assert_eq!(
        common::cgroup_pids(&format!("/docker/{id}")).len(),
        1,
        "the guest is in the cgroup Docker chose"
    );
    let start = Instant::now();
    docker.ok(&["stop", "-t", "10", "sleeper"]);
    let took = start.elapsed();
    eprintln!("docker stop -t 10 of the sleeping guest took {took:?}");
    assert!(took < STOP_LIMIT, "docker stop took {took:?}");
    assert_eq!(
        docker.inspect("sleeper", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 143"
    );
    // (4) The log outlives the container's end.
    assert_eq!(docker.ok(&["logs", "sleeper"]), "sleeping\n");

    // Clean up, checking that nothing is left at each step.
    docker.ok(&["rm", "hello", "sleeper"]);
    assert_eq!(docker.ok(&["ps", "-aq"]), "", "containers left");
    wait_for(
        "the shims to exit once Docker removed their containers",
        Duration::from_secs(10),
        || shim_pids(ctrd.dir()).is_empty(),
    );
    let cgroups = container_cgroups(&id);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let docker_dir = docker.stop();
    assert!(!docker_dir.exists(), "{} is left", docker_dir.display());
    let ctrd_dir = ctrd.dir().to_path_buf();
    drop(ctrd);
    assert!(shim_pids(&ctrd_dir).is_empty(), "shims outlived containerd");
    assert!(!ctrd_dir.exists(), "{} is left", ctrd_dir.display());
    // The image tarballs this test process wrote.
    std::fs::remove_dir_all(images_dir()).unwrap();
    eprintln!("the docker test took {:?}", started.elapsed());
}
