//! The `start` action: find or launch the shim that serves this
//! container's group and tell containerd its address.
//!
//! containerd 2.3 and later send `BootstrapParams` on stdin and read a
//! `BootstrapResult`; older ones pass flags and read the address. A plain
//! address is the one reply every older version (1.6 to 2.2) accepts: it
//! means task API v2, which the server serves beside v3.

use std::io::{IsTerminal, Read};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use containerd_shim::Flags;
use containerd_shim::bootstrap::{BootstrapParams, BootstrapResult};
use containerd_shim::protos::TASK_API_VERSION;
use containerd_shim::protos::protobuf::Message;
use nix::fcntl::{Flock, FlockArg};

/// What containerd told the `start` action.
struct Params {
    grpc_address: String,
    ttrpc_address: String,
    /// Set when containerd speaks the bootstrap protocol.
    bootstrap: bool,
    socket_dir: Option<String>,
}

fn read_params(flags: &Flags) -> anyhow::Result<Params> {
    let mut input = Vec::new();
    if !std::io::stdin().is_terminal() {
        std::io::stdin()
            .take(10 << 20)
            .read_to_end(&mut input)
            .context("read stdin")?;
    }
    // Legacy runtime options (a protobuf Any) can also decode as
    // BootstrapParams; only a message naming this very instance is one.
    if let Ok(p) = BootstrapParams::parse_from_bytes(&input)
        && !input.is_empty()
        && p.instance_id == flags.id
        && p.namespace == flags.namespace
    {
        return Ok(Params {
            grpc_address: p.containerd_grpc_address,
            ttrpc_address: p.containerd_ttrpc_address,
            bootstrap: true,
            socket_dir: p.socket_dir,
        });
    }
    Ok(Params {
        grpc_address: flags.address.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set")?,
        bootstrap: false,
        socket_dir: None,
    })
}

pub fn run(flags: &Flags) -> anyhow::Result<()> {
    // The socket directory and the socket the serving shim binds (it
    // inherits this mask) are root's alone, whatever umask containerd
    // runs with: anyone who can connect can send a Create.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let params = read_params(flags)?;
    let bundle = std::env::current_dir().context("current directory (the bundle)")?;
    let spec = executor::spec::load(&bundle).map_err(|e| anyhow::anyhow!(e.chain()))?;
    let group = executor::spec::group(&spec).unwrap_or_else(|| flags.id.clone());
    let address = match &params.socket_dir {
        Some(dir) => format!(
            "unix://{}/{}",
            dir.trim_end_matches('/'),
            socket_name(&params.grpc_address, &flags.namespace, &group)
        ),
        None => containerd_shim::socket_address(&params.grpc_address, &flags.namespace, &group),
    };
    // Two containers of one group may start at once: only one of them may
    // launch the group's shim. The socket directory's lock serializes the
    // check and the launch, and leaves no file behind.
    let socket = Path::new(address.trim_start_matches("unix://"));
    let dir = socket.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("make {} private", dir.display()))?;
    let dir_file = std::fs::File::open(dir).with_context(|| format!("open {}", dir.display()))?;
    let _lock = Flock::lock(dir_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("lock {}: {e}", dir.display()))?;
    if !answers(&address) {
        launch_server(flags, &params, &bundle, &address)?;
    }
    // containerd 1.6 and 1.7 reconnect through this file after a restart.
    std::fs::write(bundle.join("address"), &address).context("write the bundle's address file")?;
    let reply = if params.bootstrap {
        BootstrapResult {
            version: TASK_API_VERSION,
            address: address.clone(),
            protocol: "ttrpc".into(),
            ..Default::default()
        }
        .write_to_bytes()?
    } else {
        address.into_bytes()
    };
    std::io::Write::write_all(&mut std::io::stdout(), &reply).context("write reply")?;
    Ok(())
}

fn socket_name(grpc_address: &str, namespace: &str, group: &str) -> String {
    let full = containerd_shim::socket_address(grpc_address, namespace, group);
    full.rsplit('/').next().unwrap_or_default().to_string()
}

/// Whether a shim already serves `address`.
pub fn answers(address: &str) -> bool {
    UnixStream::connect(address.trim_start_matches("unix://")).is_ok()
}

/// Starts the serving shim in its own process group (so a Ctrl-C at
/// `ctr run` does not reach it) and waits until it listens: the server
/// closes its stdout once its socket is bound.
fn launch_server(
    flags: &Flags,
    params: &Params,
    bundle: &Path,
    address: &str,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locate the shim binary")?;
    let mut command = Command::new(exe);
    command
        .current_dir(bundle)
        .args([
            "-namespace",
            &flags.namespace,
            "-id",
            &flags.id,
            "-address",
            &params.grpc_address,
        ])
        .args(["-socket", address])
        .env("TTRPC_ADDRESS", &params.ttrpc_address)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    if flags.debug {
        command.arg("-debug");
    }
    let mut child = command.spawn().context("launch the serving shim")?;
    let started = wait_serving(&mut child, address);
    if started.is_err() {
        // A shim that failed to come up must not stay with nothing to serve.
        let _ = child.kill();
        let _ = child.wait();
    }
    started
}

/// Sets the new shim's oom score and waits until it listens.
fn wait_serving(child: &mut std::process::Child, address: &str) -> anyhow::Result<()> {
    // As containerd's runc shim: one above containerd, so that under
    // memory pressure the kernel kills a shim before containerd.
    containerd_shim::cgroup::adjust_oom_score(child.id())
        .map_err(|e| anyhow::anyhow!("adjust the serving shim's oom_score_adj: {e}"))?;
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_end(&mut out)
            .context("wait for the serving shim")?;
    }
    if !answers(address) {
        let status = child.try_wait().ok().flatten();
        anyhow::bail!(
            "the serving shim does not answer at {address} (exit: {status:?}); its log is the bundle's log fifo"
        );
    }
    Ok(())
}
