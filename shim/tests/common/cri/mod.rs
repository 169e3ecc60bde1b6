//! A private containerd with its CRI plugin, driven through the CRI gRPC
//! API as kubelet drives it: pods under the `wasmtime` runtime handler,
//! the test images in the `k8s.io` namespace, pod networking by CNI's
//! bridge plugin on a bridge of the fixture's own. Dropping the fixture
//! removes what the tests left: pods, containerd, shims, cgroups, bridge.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use api::image_service_client::ImageServiceClient;
use api::runtime_service_client::RuntimeServiceClient;
use api::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ImageSpec,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};
pub use k8s_cri::v1 as api;
use tonic::transport::{Channel, Endpoint};

use super::{Containerd, wait_for};

mod fixture;
mod streams;
use fixture::*;
#[allow(unused_imports)]
pub use fixture::{CriOptions, cgroup_v2, fit_to_fixture};
#[allow(unused_imports)]
pub use streams::*;

/// The runtime handler that the config maps to this shim.
pub const HANDLER: &str = "wasmtime";
/// The containerd namespace of the CRI.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// Far beyond any CRI call of these tests; only a hang hits it.
const CALL_LIMIT: Duration = Duration::from_secs(60);
/// Where Debian's containernetworking-plugins are.
const CNI_BIN_DIR: &str = "/usr/lib/cni";

pub struct Cri {
    ctrd: Option<Containerd>,
    rt: tokio::runtime::Runtime,
    channel: Channel,
    /// The fixture's name: its cgroup parent (`/<name>`) and bridge.
    name: String,
    /// Whether its pod network maps host ports (CNI's portmap, whose
    /// iptables chains outlive the pods).
    portmap: bool,
}

/// A pod that runs, with the config it was made with (CreateContainer
/// wants it again).
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

/// A private containerd with the CRI on, the pause image imported, or
/// `None` (saying why) where the tests cannot run.
pub fn cri() -> Option<Cri> {
    cri_with(CriOptions::default())
}

/// As [`cri`], with `options`.
pub fn cri_with(options: CriOptions) -> Option<Cri> {
    if !super::can_run() {
        return None;
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        if !Path::new(CNI_BIN_DIR).join(plugin).exists() {
            let why = format!(
                "CNI plugin {CNI_BIN_DIR}/{plugin} is missing \
                 (apt-get install containernetworking-plugins; make deps does)"
            );
            // make test sets REQUIRE_MATRIX: there, a skipped suite is a failure.
            assert!(std::env::var_os("REQUIRE_MATRIX").is_none(), "{why}");
            eprintln!("skipping: {why}");
            return None;
        }
    }
    Some(Cri::start(options))
}

impl Cri {
    fn start(options: CriOptions) -> Self {
        let mut cri = Self::on(Containerd::start_with("cri-e2e", false, None, |dir| {
            cri_config(dir, &options)
        }));
        cri.portmap = options.routed_subnet.is_some();
        cri.import(&["pause"]);
        cri
    }

    /// The CRI of a containerd that serves it, once it is ready.
    pub fn on(ctrd: Containerd) -> Self {
        let name = ctrd
            .dir()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = ctrd.dir().join("containerd.sock");
        let channel = rt
            .block_on(connect(socket))
            .expect("connect to the CRI socket");
        let cri = Cri {
            ctrd: Some(ctrd),
            rt,
            channel,
            name,
            portmap: false,
        };
        cri.wait_ready();
        cri
    }

    pub fn ctrd(&self) -> &Containerd {
        self.ctrd.as_ref().unwrap()
    }

    pub fn dir(&self) -> &Path {
        self.ctrd().dir()
    }

    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    /// Runs one CRI call to its end (at most [`CALL_LIMIT`]).
    pub fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        self.call_within(call)
            .unwrap_or_else(|| panic!("a CRI call hung\n{}", self.log_tail()))
    }

    /// As [`Cri::call`], `None` if the call hung.
    fn call_within<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Option<Result<T, tonic::Status>> {
        self.rt
            .block_on(async { tokio::time::timeout(CALL_LIMIT, call).await })
            .ok()
            .map(|r| r.map(tonic::Response::into_inner))
    }

    /// As [`Cri::call`], failing the test with containerd's log if the
    /// call fails.
    pub fn ok<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> T {
        self.call(call)
            .unwrap_or_else(|e| panic!("{what}: {e:?}\n{}", self.log_tail()))
    }

    /// The end of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.ctrd().log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("containerd log (last 40 lines):\n{tail}")
    }

    /// Waits until the CRI reports the runtime and the network ready,
    /// which it does once it has loaded and the CNI config is read.
    fn wait_ready(&self) {
        wait_for("the CRI to be ready", Duration::from_secs(30), || {
            let status = self.call(self.runtime().status(api::StatusRequest::default()));
            status.is_ok_and(|s| {
                s.status
                    .is_some_and(|s| s.conditions.iter().all(|c| c.status))
            })
        });
    }

    /// Imports test images into the CRI's namespace and waits until the
    /// CRI sees them.
    pub fn import(&self, names: &[&str]) {
        for name in names {
            self.ctrd().import_into(K8S_NAMESPACE, name);
            let spec = image_spec(name);
            wait_for(
                &format!("the CRI to see image {name}"),
                Duration::from_secs(10),
                || {
                    let req = api::ImageStatusRequest {
                        image: Some(spec.clone()),
                        verbose: false,
                    };
                    self.call(self.images().image_status(req))
                        .is_ok_and(|s| s.image.is_some())
                },
            );
        }
    }

    /// A pod config as kubelet makes one: `network` NODE (host network) or
    /// POD (its own, through CNI), a PID namespace per container, logs in
    /// the fixture's directory, the fixture's cgroup parent.
    pub fn pod_config(&self, name: &str, network: NamespaceMode) -> PodSandboxConfig {
        let log_directory = self.dir().join("pods").join(name);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("{}-{name}", self.name),
                namespace: "default".into(),
                attempt: 0,
            }),
            // As kubelet: a pod on the host network keeps the host's name
            // (and has no UTS namespace of its own to set one in).
            hostname: match network {
                NamespaceMode::Node => String::new(),
                _ => name.into(),
            },
            log_directory: log_directory.to_string_lossy().into_owned(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}", self.name),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network.into(),
                        pid: NamespaceMode::Container.into(),
                        ipc: NamespaceMode::Pod.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox under the `wasmtime` handler.
    pub fn run_pod(&self, config: PodSandboxConfig) -> Pod {
        self.run_pod_under(config, HANDLER)
    }

    /// RunPodSandbox under runtime handler `handler`.
    pub fn run_pod_under(&self, config: PodSandboxConfig, handler: &str) -> Pod {
        let req = api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        let id = self
            .ok("RunPodSandbox", self.runtime().run_pod_sandbox(req))
            .pod_sandbox_id;
        Pod { id, config }
    }

    /// A pod of `name` with `network`, running.
    pub fn new_pod(&self, name: &str, network: NamespaceMode) -> Pod {
        self.run_pod(self.pod_config(name, network))
    }

    /// A pod of `name` on the host's network whose containers share one
    /// PID namespace (`shareProcessNamespace: true`), running.
    pub fn shared_pid_pod(&self, name: &str) -> Pod {
        let mut config = self.pod_config(name, NamespaceMode::Node);
        let options = config
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
            .expect("pod_config sets namespace options");
        options.pid = NamespaceMode::Pod.into();
        self.run_pod(config)
    }

    /// StopPodSandbox and RemovePodSandbox, as kubelet ends a pod.
    pub fn remove_pod(&self, pod: &Pod) {
        if let Err(e) = self.end_pod(&pod.id) {
            panic!("{e}\n{}", self.log_tail());
        }
    }

    /// StopPodSandbox and RemovePodSandbox of pod `id`, never panicking.
    fn end_pod(&self, id: &str) -> Result<(), String> {
        let hung = |what: &str| format!("{what} hung");
        let stop = api::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call_within(self.runtime().stop_pod_sandbox(stop))
            .ok_or_else(|| hung("StopPodSandbox"))?
            .map_err(|e| format!("StopPodSandbox: {e:?}"))?;
        let remove = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call_within(self.runtime().remove_pod_sandbox(remove))
            .ok_or_else(|| hung("RemovePodSandbox"))?
            .map_err(|e| format!("RemovePodSandbox: {e:?}"))?;
        Ok(())
    }

    /// CreateContainer in `pod`.
    pub fn create(&self, pod: &Pod, config: ContainerConfig) -> String {
        let req = api::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        self.ok("CreateContainer", self.runtime().create_container(req))
            .container_id
    }

    /// CreateContainer and StartContainer.
    pub fn run(&self, pod: &Pod, config: ContainerConfig) -> String {
        let id = self.create(pod, config);
        let req = api::StartContainerRequest {
            container_id: id.clone(),
        };
        self.ok("StartContainer", self.runtime().start_container(req));
        id
    }

    pub fn status(&self, id: &str) -> ContainerStatus {
        let req = api::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.ok("ContainerStatus", self.runtime().container_status(req))
            .status
            .expect("a status")
    }

    /// Polls ContainerStatus until the container is in `state`.
    pub fn wait_state(&self, id: &str, state: ContainerState) -> ContainerStatus {
        let mut status = None;
        wait_for(
            &format!("container {id} to be {state:?}"),
            Duration::from_secs(30),
            || {
                let now = self.status(id);
                let done = now.state == state as i32;
                status = Some(now);
                done
            },
        );
        status.unwrap()
    }

    /// StopContainer with a grace period of `timeout` seconds.
    pub fn stop(&self, id: &str, timeout: i64) {
        let req = api::StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        self.ok("StopContainer", self.runtime().stop_container(req));
    }

    /// ExecSync of `cmd` in container `id`, with a 10 s timeout.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
    ) -> Result<api::ExecSyncResponse, tonic::Status> {
        self.exec_sync_within(id, cmd, 10)
    }

    /// ExecSync with kubelet's `timeout` (seconds), as a probe sends it.
    pub fn exec_sync_within(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<api::ExecSyncResponse, tonic::Status> {
        let req = api::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        self.call(self.runtime().exec_sync(req))
    }

    /// Exec of `cmd` in container `id` (stdout and stderr, no tty): the
    /// URL of the CRI's streaming server that runs it.
    pub fn exec_url(&self, id: &str, cmd: &[&str]) -> String {
        let req = api::ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        self.ok("Exec", self.runtime().exec(req)).url
    }

    /// The cgroup directory of container `id` in hierarchy `controller`
    /// (cgroup v1) or in the unified hierarchy (v2).
    pub fn cgroup(&self, controller: &str, id: &str) -> PathBuf {
        let root = Path::new("/sys/fs/cgroup");
        let root = match cgroup_v2() {
            true => root.to_path_buf(),
            false => root.join(controller),
        };
        root.join(&self.name).join(id)
    }

    /// Waits until nothing of the fixture's pods is left: no shim of this
    /// containerd, no cgroup below the fixture's cgroup parent.
    pub fn assert_clean(&self) {
        wait_for("the shims to exit", Duration::from_secs(10), || {
            super::shim_pids(self.dir()).is_empty()
        });
        wait_for("the cgroups to go", Duration::from_secs(10), || {
            cgroup_roots().iter().all(|root| {
                let mut dirs = vec![];
                collect_dirs(&root.join(&self.name), &mut dirs);
                dirs.len() <= 1
            })
        });
    }

    /// Best effort, never failing: every pod still there stopped and
    /// removed.
    fn remove_all_pods(&self) {
        let list = api::ListPodSandboxRequest::default();
        if let Some(Ok(pods)) = self.call_within(self.runtime().list_pod_sandbox(list)) {
            for pod in pods.items {
                let _ = self.end_pod(&pod.id);
            }
        }
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        self.remove_all_pods();
        // containerd, the shims and their children go first, so that the
        // cgroups they were in can be removed.
        drop(self.ctrd.take());
        remove_cgroup_parent(&self.name);
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
        if self.portmap {
            remove_portmap_chains();
        }
    }
}

/// A tonic channel over containerd's unix socket.
async fn connect(socket: PathBuf) -> Result<Channel, tonic::transport::Error> {
    // The URI is required but unused: the connector dials the socket.
    Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

pub fn image_spec(name: &str) -> ImageSpec {
    ImageSpec {
        image: test_images::reference(name),
        ..Default::default()
    }
}

impl Pod {
    /// A container config of test image `image` named `name`, its args
    /// after the image's entrypoint, logging to `<name>.log` in the pod's
    /// log directory, with the pod's namespace options (kubelet repeats
    /// them for each container; without them the CRI shares the pod's PID
    /// namespace).
    pub fn container(&self, name: &str, image: &str, args: &[&str]) -> ContainerConfig {
        let linux = self.config.linux.as_ref();
        let namespace_options = linux
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(image_spec(image)),
            args: args.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(api::LinuxContainerConfig {
                security_context: Some(api::LinuxContainerSecurityContext {
                    namespace_options,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The sum of the proportional set sizes of `pids`, in KiB.
pub fn pss_kib(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .flat_map(|rollup| {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}
