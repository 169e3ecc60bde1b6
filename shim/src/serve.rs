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
    let log_fifo = open_log_fifo();
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
    // containerd drops what it has not read of the log when the shim's
    // connection closes: the last lines (a refused Create's reason) must
    // be read first.
    if let Some(fifo) = &log_fifo {
        read_by_containerd(fifo, LOG_DRAIN_LIMIT).await;
    }
    server.shutdown().await.ok();
    Ok(())
}

/// How long an exiting shim waits for containerd to read its log.
const LOG_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The log fifo (in the bundle the shim started in), opened once more to
/// ask how much of it containerd has yet to read.
fn open_log_fifo() -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let fifo = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log");
    fifo.ok()
}

/// Waits until nothing written to `fifo` is left unread, or `limit`.
async fn read_by_containerd(fifo: &std::fs::File, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    while unread(fifo) > 0 && start.elapsed() < limit {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The bytes in a pipe that its reader has not read (FIONREAD).
fn unread(fifo: &std::fs::File) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to a valid pointer.
    match unsafe { libc::ioctl(fifo.as_raw_fd(), libc::FIONREAD, &raw mut n) } {
        0 => n,
        _ => 0,
    }
}

/// Points stdout at /dev/null: the `start` action reads our stdout until
/// it closes, which tells it the socket is ready.
fn release_stdout() -> anyhow::Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2_stdout(&null).context("close stdout")?;
    let _ = null.as_raw_fd();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The wait ends once the reader has taken every byte, not before.
    #[tokio::test]
    async fn waits_for_the_reader_of_the_log() {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        let (mut reader, mut writer) = (std::fs::File::from(reader), std::fs::File::from(writer));
        writer.write_all(b"level=error msg=refused\n").unwrap();
        assert_eq!(unread(&writer), 24);
        let late = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut line = [0u8; 24];
            reader.read_exact(&mut line).unwrap();
        });
        let start = std::time::Instant::now();
        read_by_containerd(&writer, std::time::Duration::from_secs(10)).await;
        assert_eq!(unread(&writer), 0);
        assert!(start.elapsed() >= std::time::Duration::from_millis(150));
        late.join().unwrap();
    }
}
