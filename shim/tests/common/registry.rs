//! A container registry on loopback: Debian's docker-registry (the
//! reference implementation, distribution 2.8) with its storage in a
//! temporary directory, images pushed into it by `ctr images push`, and the
//! `hosts.toml` files that make containerd pull other registries' names from
//! it. Dropping it stops the registry and removes its storage.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Containerd;
use super::tools::{required, unpacked};

/// The containerd namespace images pass through on their way to the
/// registry.
const PUSH_NAMESPACE: &str = "registry-push";

pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`.
    pub addr: String,
}

impl Registry {
    /// A registry serving on a free loopback port, or `None` (saying why)
    /// where docker-registry is not unpacked.
    pub fn start() -> Option<Registry> {
        let binary = required(
            unpacked("registry/usr/bin/docker-registry"),
            "docker-registry is missing from .dev/versions/registry \
             (scripts/containerd-versions.sh unpacks it; make versions runs that)",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("registry-")
            .tempdir_in("/tmp")
            .unwrap();
        // A port another process takes between our probe and the registry's
        // bind makes the registry exit; then another port is tried.
        for _ in 0..5 {
            let addr = free_loopback_addr();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {addr}\n",
                    dir.path().join("storage").display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new(&binary)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            if wait_serving(&mut child, &addr) {
                return Some(Registry { child, dir, addr });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "docker-registry did not start; its log:\n{}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// Pushes `archive` (an OCI image tarball naming `reference`) to this
    /// registry as `<addr>/<repository>:<tag>` of `reference`, through
    /// `ctrd`'s content store.
    pub fn push(&self, ctrd: &Containerd, archive: &Path, reference: &str) {
        let check = |what: &str, out: std::process::Output| {
            assert!(
                out.status.success(),
                "{what}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let archive = archive.to_string_lossy();
        check(
            &format!("import {archive}"),
            ctrd.ctr_in(PUSH_NAMESPACE, &["images", "import", &archive]),
        );
        let remote = self.name_here(reference);
        check(
            &format!("push {reference} as {remote}"),
            ctrd.ctr_in(
                PUSH_NAMESPACE,
                &["images", "push", "--plain-http", &remote, reference],
            ),
        );
        check(
            &format!("remove {reference} after its push"),
            ctrd.ctr_in(PUSH_NAMESPACE, &["images", "rm", "--sync", reference]),
        );
    }

    /// `reference` with this registry in place of its own host.
    pub fn name_here(&self, reference: &str) -> String {
        let path = reference
            .split_once('/')
            .map_or(reference, |(_, path)| path);
        format!("{}/{path}", self.addr)
    }

    /// Writes a `hosts.toml` for each of `registries` into `dir/<registry>/`
    /// that makes this registry their server, over plain HTTP, and returns
    /// `dir` (containerd's registry `config_path`).
    pub fn hosts_dir(&self, dir: &Path, registries: &[&str]) -> PathBuf {
        for registry in registries {
            let host_dir = dir.join(registry);
            std::fs::create_dir_all(&host_dir).unwrap();
            std::fs::write(
                host_dir.join("hosts.toml"),
                format!(
                    "server = \"http://{0}\"\n\n[host.\"http://{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                    self.addr
                ),
            )
            .unwrap();
        }
        dir.to_path_buf()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_loopback_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Whether the registry at `addr` answers `GET /v2/` with 200 before it
/// exits (or 30 s pass).
fn wait_serving(child: &mut Child, addr: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if api_version_check(addr) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn api_version_check(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
}
