//! The CRI fixture's files: the private containerd's CRI config, its CNI
//! bridge, and the cgroups its pods leave.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CNI_BIN_DIR;
use crate::common::containerd_major;

/// What one CRI fixture differs from the others by.
#[derive(Debug, Clone, Default)]
pub struct CriOptions {
    /// The `hosts.toml` directory that image pulls go by (the CRI's
    /// registry `config_path`).
    pub registry_hosts: Option<PathBuf>,
    /// A pod network the host reaches: the bridge is the gateway of this
    /// subnet and host ports are mapped (CNI's portmap). `None`: the pods'
    /// bridge has no address on the host.
    pub routed_subnet: Option<&'static str>,
}

/// The CRI part of the containerd config, for containerd's major version;
/// `dir` is the fixture's directory, where the CNI config goes.
pub(super) fn cri_config(dir: &Path, options: &CriOptions) -> String {
    let cni_dir = dir.join("cni");
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    write_cni_config(
        &cni_dir,
        &name,
        &dir.join("cni-ipam"),
        options.routed_subnet,
    );
    let pause = test_images::reference("pause");
    let registry = |plugin: &str| match &options.registry_hosts {
        Some(hosts) => format!(
            "[{plugin}.registry]\n  config_path = \"{}\"\n",
            hosts.display()
        ),
        None => String::new(),
    };
    // The handlers and CNI, in the plugin that holds them in each version.
    let handlers = |plugin: &str, bin_dir: &str| {
        format!(
            "[{plugin}.containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.wasmtime.v1\"\n\
             [{plugin}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
             [{plugin}.cni]\n  {bin_dir}\n  conf_dir = \"{}\"\n",
            cni_dir.display()
        )
    };
    match containerd_major() {
        1 => {
            let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
            format!(
                "[{cri}]\n  sandbox_image = \"{pause}\"\n  restrict_oom_score_adj = true\n\
                 [{cri}.containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = \"runc\"\n{}{}",
                handlers(cri, &format!("bin_dir = \"{CNI_BIN_DIR}\"")),
                registry(cri)
            )
        }
        // 2.x splits the CRI: the images (and the pinned sandbox image)
        // have a plugin of their own. NRI, on by default there, gets a
        // socket of the fixture's own.
        _ => {
            let images = "plugins.'io.containerd.cri.v1.images'";
            let runtime = "plugins.'io.containerd.cri.v1.runtime'";
            format!(
                "[{images}]\n  snapshotter = \"overlayfs\"\n\
                 [{images}.pinned_images]\n  sandbox = \"{pause}\"\n{}\
                 [{runtime}]\n  restrict_oom_score_adj = true\n\
                 [{runtime}.containerd]\n  default_runtime_name = \"runc\"\n{}\
                 [plugins.'io.containerd.nri.v1.nri']\n  socket_path = \"{}/nri.sock\"\n",
                registry(images),
                handlers(runtime, &format!("bin_dirs = [\"{CNI_BIN_DIR}\"]")),
                dir.display()
            )
        }
    }
}

/// A node's containerd config (`config default` plus the installer's
/// lines) made to run as a fixture in `dir`: its root, state, sockets, NRI
/// socket and CNI config move into `dir`, CNI's plugins are Debian's, and
/// oom_score_adj is restricted, since root on these machines may not
/// lower it. Everything else stays as the node would have it.
pub fn fit_to_fixture(config: &str, dir: &Path) -> String {
    let cni_dir = dir.join("cni");
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    write_cni_config(&cni_dir, &name, &dir.join("cni-ipam"), None);
    let d = dir.display();
    config
        .replace(
            "/run/containerd/containerd.sock",
            &format!("{d}/containerd.sock"),
        )
        .replace("/var/lib/containerd", &format!("{d}/root"))
        .replace("/run/containerd", &format!("{d}/state"))
        .replace("/var/run/nri/nri.sock", &format!("{d}/nri.sock"))
        .replace("/etc/cni/net.d", &cni_dir.to_string_lossy())
        .replace("/opt/cni/bin", CNI_BIN_DIR)
        .replace(
            "restrict_oom_score_adj = false",
            "restrict_oom_score_adj = true",
        )
}

/// A CNI config for pods with a network of their own. The CRI wants an
/// address on the pod's `eth0` (a loopback-only config fails RunPodSandbox
/// with "failed to find network info for sandbox"), so: a bridge of the
/// fixture's own, without an address on the host (no route, no forwarding
/// turned on), and host-local addresses kept in the fixture's directory.
/// With `routed_subnet` the bridge is the pods' gateway on the host instead,
/// and portmap maps their host ports (as a node's CNI does).
pub(super) fn write_cni_config(
    conf_dir: &Path,
    bridge: &str,
    ipam_dir: &Path,
    routed_subnet: Option<&str>,
) {
    std::fs::create_dir_all(conf_dir).unwrap();
    let mut plugins = vec![serde_json::json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": routed_subnet.is_some(),
        "ipam": {
            "type": "host-local",
            "subnet": routed_subnet.unwrap_or("198.18.0.0/24"),
            "dataDir": ipam_dir,
        },
    })];
    if routed_subnet.is_some() {
        plugins.push(serde_json::json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
        }));
    }
    let config = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": bridge,
        "plugins": plugins,
    });
    std::fs::write(conf_dir.join("10-cri-e2e.conflist"), config.to_string()).unwrap();
}

/// Removes the iptables chains CNI's portmap adds on its first use and
/// never removes (empty once its pods are gone), with the rules that jump
/// to them.
pub(super) fn remove_portmap_chains() {
    let iptables = |args: &[&str]| {
        std::process::Command::new("iptables")
            .args(["-w", "-t", "nat"])
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let local = [
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "CNI-HOSTPORT-DNAT",
    ];
    for chain in ["PREROUTING", "OUTPUT"] {
        while iptables(&[&["-D", chain][..], &local].concat()) {}
    }
    let masquerade = [
        "-D",
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        "CNI portfwd requiring masquerade",
        "-j",
        "CNI-HOSTPORT-MASQ",
    ];
    while iptables(&masquerade) {}
    for chain in [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-MASQ",
        "CNI-HOSTPORT-SETMARK",
    ] {
        iptables(&["-F", chain]);
        iptables(&["-X", chain]);
    }
}

pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The roots of the cgroup hierarchies: the unified one (v2) or one per
/// controller (v1).
pub(super) fn cgroup_roots() -> Vec<PathBuf> {
    match cgroup_v2() {
        true => vec![PathBuf::from("/sys/fs/cgroup")],
        false => std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect(),
    }
}

/// Removes the cgroup parent `/<name>` (kubelet's job for a pod's cgroup)
/// in every hierarchy, deepest directories first.
pub(super) fn remove_cgroup_parent(name: &str) {
    for root in cgroup_roots() {
        let parent = root.join(name);
        let mut dirs = vec![];
        collect_dirs(&parent, &mut dirs);
        for dir in dirs.iter().rev() {
            // Killed processes may take a moment to leave their cgroup.
            for _ in 0..20 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// `dir` and the directories below it, parents before children.
pub(super) fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out);
        }
    }
}
