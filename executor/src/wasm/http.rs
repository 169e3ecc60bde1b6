//! `wasi:http/proxy` components, served over HTTP/1.1 inside the
//! container's network namespace: a fresh instance from the pooling
//! allocator for every request, the guest's output on the container's
//! stdout and stderr in whole lines per request, the limits of
//! `http_limits.rs` (header and idle timeout, connection cap, a deadline
//! and a memory bound per request), and a drain of the requests in
//! flight on the first termination signal.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::GuestEnv;
use super::http_limits::{self, HttpLimits};
use super::lines::{Lines, Target};
use crate::limits::GuestLimits;

/// The environment variables that name the listen address, ours first,
/// then the one runwasi's wasmtime shim reads, so its users' manifests
/// keep working.
pub const LISTEN_VARS: [&str; 2] = ["WASI_HTTP_LISTEN_ADDR", "WASMTIME_HTTP_PROXY_SOCKET_ADDR"];
/// How long the server waits after a failed accept.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// Where the component is served when no variable says otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// How often the engine's epoch advances: the resolution of a request's
/// deadline in Wasm code.
const EPOCH_TICK: Duration = Duration::from_millis(100);

/// The store's data for one request.
struct Guest {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: GuestLimits,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Guest {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// A linked handler and the socket it will be served on, bound at Create
/// so that an address in use fails Create, not the running task.
pub struct Prepared {
    pre: ProxyPre<Guest>,
    listener: TcpListener,
    limits: HttpLimits,
}

/// The listen address from the container's environment.
pub fn listen_address(env: &[(String, String)]) -> Result<SocketAddr, String> {
    let chosen = LISTEN_VARS.iter().find_map(|var| {
        env.iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| (*var, v.as_str()))
    });
    let (var, value) = chosen.unwrap_or(("the default", DEFAULT_LISTEN));
    value
        .parse()
        .map_err(|e| format!("{var} {value:?} is not an address like 0.0.0.0:8080: {e}"))
}

/// Links the component against `wasi:http/proxy` and binds its socket.
pub fn prepare(
    engine: &Engine,
    component: &Component,
    env: &[(String, String)],
) -> Result<Prepared, String> {
    let mut linker: Linker<Guest> = Linker::new(engine);
    // All of WASI 0.2, as `wasmtime serve` gives it: toolchains import
    // more than the proxy world names (componentize-py wants
    // wasi:cli/environment).
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| format!("link WASI: {e:#}"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| format!("link wasi:http: {e:#}"))?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| format!("cannot link: {e:#}"))?;
    let pre = ProxyPre::new(pre).map_err(|e| format!("cannot link: {e:#}"))?;
    let limits = http_limits::from_env(env)?;
    let address = listen_address(env)?;
    let listener =
        TcpListener::bind(address).map_err(|e| format!("cannot listen on {address}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    Ok(Prepared {
        pre,
        listener,
        limits,
    })
}

/// What every request's store starts from.
struct Server {
    pre: ProxyPre<Guest>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    limits: GuestLimits,
    http: HttpLimits,
}

/// Serves until the first termination signal, then lets the requests in
/// flight finish and returns 0. A second signal ends the process at once
/// (crate::signals). `threads` bounds tokio's workers, like the compiler.
pub fn serve(prepared: Prepared, guest: &GuestEnv, threads: usize) -> i32 {
    let (drain_tx, drain_rx) = watch::channel(false);
    crate::signals::drain_with(move || {
        let _ = drain_tx.send(true);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("http")
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            crate::diagnose!("Error: start the HTTP server's runtime: {e}");
            return crate::exit::FAILURE;
        }
    };
    let http = prepared.limits;
    let server = Arc::new(Server {
        limits: GuestLimits::new(guest.memory_limit).per_request(http.request_memory),
        pre: prepared.pre,
        env: guest.env.to_vec(),
        args: guest.args.to_vec(),
        http,
    });
    if let Err(e) = tick_epochs(server.pre.engine().clone()) {
        crate::diagnose!("Error: start the HTTP server's epoch thread: {e}");
        return crate::exit::FAILURE;
    }
    runtime.block_on(accept_until_drained(server, prepared.listener, drain_rx))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its
/// own, which a guest looping on every worker cannot hold up.
fn tick_epochs(engine: Engine) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
}

async fn accept_until_drained(
    server: Arc<Server>,
    listener: TcpListener,
    mut drain: watch::Receiver<bool>,
) -> i32 {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            crate::diagnose!("Error: serve the HTTP listener: {e}");
            return crate::exit::FAILURE;
        }
    };
    let mut connections = JoinSet::new();
    let connection_drain = drain.clone();
    // A connection is accepted only with a permit: past the cap, clients
    // wait in the listen backlog until a connection ends.
    let slots = Arc::new(Semaphore::new(server.http.max_connections));
    let mut permit: Option<OwnedSemaphorePermit> = None;
    loop {
        if permit.is_none() {
            tokio::select! {
                _ = drain.wait_for(|draining| *draining) => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                taken = slots.clone().acquire_owned() => permit = taken.ok(),
            }
            continue;
        }
        tokio::select! {
            _ = drain.wait_for(|draining| *draining) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let held = permit.take();
                    let conn = connection(server.clone(), stream, connection_drain.clone());
                    connections.spawn(async move {
                        conn.await;
                        drop(held);
                    });
                }
                // Out of descriptors or a connection reset before accept:
                // the server goes on with the next one, after a pause that
                // keeps a lasting error from spinning and filling the log.
                Err(e) => {
                    crate::diagnose!("Error: accept an HTTP connection: {e}");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    0
}

/// Serves one connection; once draining, finishes the request in flight
/// and closes it instead of waiting for the next.
async fn connection(
    server: Arc<Server>,
    stream: tokio::net::TcpStream,
    mut drain: watch::Receiver<bool>,
) {
    let header_timeout = server.http.header_timeout;
    let service = service_fn(move |request| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(handle(server, request).await) }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        // hyper starts this clock whenever it waits for a request's head,
        // so it also ends a kept-alive connection that stays idle.
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = drain.wait_for(|draining| *draining) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// One request in a fresh instance. A guest that fails gets a 500 and
/// its error on the container's stderr; one that has not answered by its
/// deadline a 503.
async fn handle(
    server: Arc<Server>,
    request: hyper::Request<Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    let deadline = server.http.request_timeout;
    match tokio::time::timeout(deadline, call_guest(&server, request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            crate::diagnose!("Error: {e:?}");
            plain(
                hyper::StatusCode::INTERNAL_SERVER_ERROR,
                b"internal server error\n",
            )
        }
        Err(_) => {
            crate::diagnose!(
                "Error: the request did not finish within {deadline:?} ({})",
                http_limits::REQUEST_TIMEOUT_VAR
            );
            plain(
                hyper::StatusCode::SERVICE_UNAVAILABLE,
                b"request timed out\n",
            )
        }
    }
}

fn plain(status: hyper::StatusCode, text: &'static [u8]) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(text))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = status;
    response
}

async fn call_guest(
    server: &Server,
    request: hyper::Request<Incoming>,
) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
    let mut wasi = WasiCtx::builder();
    wasi.stdout(Lines::new(Target::Stdout))
        .stderr(Lines::new(Target::Stderr))
        .envs(&server.env)
        .args(&server.args);
    let data = Guest {
        ctx: wasi.build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        limits: server.limits.clone(),
    };
    let mut store = Store::new(server.pre.engine(), data);
    store.limiter(|guest| &mut guest.limits);
    // Wasm code that runs past the deadline traps (a guest waiting in the
    // host is ended by the timeout in `handle`, which drops this store).
    let ticks = server.http.request_timeout.as_millis() / EPOCH_TICK.as_millis();
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX).max(1));
    store.epoch_deadline_trap();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let request = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let pre = server.pre.clone();
    // The guest goes on in its own task: it may stream the body after it
    // has set the response.
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, request, out)
            .await
    });
    // Dropped when `handle` gives up on the request: the guest goes too.
    let mut task = AbortOnDrop(Some(task));
    match receiver.await {
        Ok(Ok(response)) => {
            // The guest may go on streaming the body (its Wasm code still
            // under the epoch deadline).
            task.detach();
            Ok(response)
        }
        Ok(Err(code)) => Err(wasmtime::format_err!(
            "the guest answered with error {code:?}"
        )),
        Err(_) => match task.join().await {
            Ok(Ok(())) => Err(wasmtime::format_err!("the guest set no response")),
            Ok(Err(e)) => Err(e.context("the guest set no response")),
            Err(e) => Err(wasmtime::format_err!("the guest's task failed: {e}")),
        },
    }
}

/// A guest's task, aborted when the request it serves is given up.
struct AbortOnDrop(Option<tokio::task::JoinHandle<wasmtime::Result<()>>>);

impl AbortOnDrop {
    fn detach(&mut self) {
        self.0 = None;
    }

    async fn join(&mut self) -> Result<wasmtime::Result<()>, tokio::task::JoinError> {
        match self.0.as_mut() {
            Some(handle) => handle.await,
            None => Ok(Ok(())),
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}
