//! The serving shim: the ttrpc Task API on the group's socket, the
//! reaper of the containers' children, and the exit when the last task
//! has been deleted.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use anyhow::Context;
use containerd_shim::Flags;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::shim_async::create_task;
use containerd_shim::protos::ttrpc::r#async::Server;
use tokio::signal::unix::{SignalKind, signal};

use crate::events::Publisher;
use crate::reaper::Reaper;
use crate::task::Service;

/// containerd before 2.0 calls the v2 name of the same service.
const TASK_V2: &str = "containerd.task.v2.Task";

pub async fn run(flags: Flags) -> anyhow::Result<()> {
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
        .map_err(|e| anyhow::anyhow!("set up the shim log: {e}"))?;
    nix::sys::prctl::set_child_subreaper(true).context("become a child subreaper")?;
    let socket = flags.socket.trim_start_matches("unix://").to_string();
    if crate::start::answers(&flags.socket) {
        // Another shim of this group won the race to the socket.
        log::info!("a shim already serves {}; exiting", flags.socket);
        return Ok(());
    }
    let _ = std::fs::remove_file(&socket);
    if let Some(dir) = std::path::Path::new(&socket).parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }

    let reaper = Arc::new(Reaper::default());
    let mut sigchld = signal(SignalKind::child()).context("watch SIGCHLD")?;
    tokio::spawn({
        let reaper = reaper.clone();
        async move {
            while sigchld.recv().await.is_some() {
                reaper.reap();
            }
        }
    });

    let ttrpc_address = std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set")?;
    let publisher = Publisher::connect(&ttrpc_address, &flags.namespace).await?;
    let exit = Arc::new(ExitSignal::default());
    let exe = std::env::current_exe().context("locate the shim binary")?;
    let origin = crate::container::Origin {
        grpc_address: flags.address.clone(),
        namespace: flags.namespace.clone(),
    };
    let service = Service::new(reaper, publisher, exe, exit.clone(), origin);
    let task: Arc<dyn containerd_shim::protos::shim_async::Task + Send + Sync> =
        Arc::new(service.clone());
    let mut v2 = create_task(task.clone());
    let v2 = v2
        .drain()
        .map(|(_, service)| (TASK_V2.to_string(), service))
        .collect();
    let mut server = Server::new()
        .bind(&flags.socket)
        .with_context(|| format!("listen on {}", flags.socket))?
        .register_service(create_task(task))
        .register_service(v2);
    server.start().await.context("start the ttrpc server")?;
    // The socket was bound under the `start` action's private umask; what
    // the shim makes from now on (cgroups, bundle files) gets the usual.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    log::info!("serving {} for {}", flags.socket, flags.id);
    release_stdout()?;

    exit.wait().await;
    // Unlinked first: from now on a `start` for this group launches a new
    // shim instead of handing containerd the address of one that is
    // going away, and the new shim's socket is never the one removed.
    let _ = std::fs::remove_file(&socket);
    // The last task's delete event must reach containerd.
    service.flush_events().await;
    server.shutdown().await.ok();
    Ok(())
}

/// Points stdout at /dev/null: the `start` action reads our stdout until
/// it closes, which tells it the socket is ready.
fn release_stdout() -> anyhow::Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2_stdout(&null).context("close stdout")?;
    let _ = null.as_raw_fd();
    Ok(())
}
