//! End-to-end tests of `wasi:http/proxy` components served by the shim:
//! requests from a real HTTP client (curl) on loopback, each answered by a
//! fresh instance, the guest's per-request lines in the container's log,
//! a drain on SIGTERM and an immediate stop on a second signal.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Containerd, containerd, wait_for};

/// Far beyond the compile of the Python component on a busy machine.
const COMPILE: Duration = Duration::from_secs(300);

/// Runtime options that give every test of this file one cache, so the
/// Python component is compiled once (the others wait for that compile).
fn shared_cache() -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http-test-cache");
    let options = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http-test-options.toml");
    std::fs::write(&options, format!("CacheDir = \"{}\"\n", dir.display())).unwrap();
    format!("--runtime-config-path={}", options.display())
}

/// A free port on loopback, for a container on the host's network.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `curl` of `path`: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "30", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl (make deps installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A served container: ctr attached to it, and its stdout line by line.
struct Served {
    ctr: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    /// Waits until the guest prints `want`, e.g. the line a request logs
    /// when the guest has it in hand.
    fn wait_line(&mut self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line == want;
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(e) => panic!(
                    "no {want:?} on the container's stdout ({e}): {:?}",
                    self.seen
                ),
            }
        }
    }
}

/// Starts the HTTP component on the host's network, listening on
/// `127.0.0.1:<port>` through `var`, with ctr attached to its output.
fn serve(ctrd: &Containerd, id: &str, var: &str, port: u16) -> Served {
    serve_with(ctrd, id, var, port, &[])
}

/// As [`serve`], with more `NAME=value` variables in the environment.
fn serve_with(ctrd: &Containerd, id: &str, var: &str, port: u16, vars: &[&str]) -> Served {
    let env = format!("{var}=127.0.0.1:{port}");
    let image = common::image("python-http");
    let options = shared_cache();
    let mut args = vec!["run", "--rm", "--net-host", "--runtime", common::RUNTIME];
    args.extend([options.as_str(), "--env", env.as_str()]);
    for var in vars {
        args.extend(["--env", var]);
    }
    args.extend([image.as_str(), id]);
    let mut ctr = ctrd
        .ctr_command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = BufReader::new(ctr.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first Create compiles 18 MB while other tests do the same.
    ctrd.wait_status_within(id, "RUNNING", COMPILE);
    wait_for("the server to answer", Duration::from_secs(30), || {
        get(port, "/ready").0 == 200
    });
    Served {
        ctr,
        lines,
        seen: Vec::new(),
    }
}

/// Waits for ctr to end and returns its status and the container's stdout.
fn finish(mut served: Served, id: &str) -> (i32, String) {
    let status = common::exit_status_within(&mut served.ctr, id, Duration::from_secs(30));
    // ctr has exited and closed its stdout: the reader's lines end.
    served.seen.extend(served.lines.iter());
    let stdout = served.seen.iter().map(|line| format!("{line}\n")).collect();
    (status, stdout)
}

#[test]
fn serves_requests_and_logs_each_one() {
    if !common::programs_built() {
        return;
    }
    let Some(ctrd) = containerd() else { return };
    ctrd.import("python-http");
    let port = free_port();
    let ctr = serve(&ctrd, "http-serve", "WASI_HTTP_LISTEN_ADDR", port);
    for path in ["/a", "/b/c", "/a"] {
        assert_eq!(
            get(port, path),
            (200, format!("hello from python http {path}\n"))
        );
    }
    assert_eq!(get(port, "/status/418").0, 418);
    // Concurrent requests, each in an instance of its own, all succeed.
    let many: Vec<_> = (0..8)
        .map(|i| std::thread::spawn(move || get(port, &format!("/n{i}"))))
        .collect();
    for (i, request) in many.into_iter().enumerate() {
        assert_eq!(
            request.join().unwrap(),
            (200, format!("hello from python http /n{i}\n"))
        );
    }
    ctrd.kill("http-serve", "SIGTERM");
    let (status, stdout) = finish(ctr, "http-serve");
    assert_eq!(status, 0, "a drained server exits 0: {stdout}");
    // Concurrent requests' lines come out whole, one request's each.
    let concurrent = (0..8).map(|i| format!("request GET /n{i}"));
    let expected = ["/a", "/b/c", "/status/418"]
        .map(|path| format!("request GET {path}"))
        .into_iter()
        .chain(concurrent);
    for line in expected {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in {stdout}");
    }
    assert_eq!(stdout.lines().filter(|l| *l == "request GET /a").count(), 2);
    ctrd.assert_clean("http-serve");
}

#[test]
fn the_peer_shims_variable_sets_the_address() {
    if !common::programs_built() {
        return;
    }
    let Some(ctrd) = containerd() else { return };
    ctrd.import("python-http");
    let port = free_port();
    let ctr = serve(&ctrd, "http-peer", "WASMTIME_HTTP_PROXY_SOCKET_ADDR", port);
    assert_eq!(
        get(port, "/x"),
        (200, "hello from python http /x\n".to_string())
    );
    ctrd.kill("http-peer", "SIGTERM");
    assert_eq!(finish(ctr, "http-peer").0, 0);
    ctrd.assert_clean("http-peer");
}

#[test]
fn sigterm_drains_the_request_in_flight_and_a_second_signal_stops_at_once() {
    if !common::programs_built() {
        return;
    }
    let Some(ctrd) = containerd() else { return };
    ctrd.import("python-http");
    let port = free_port();
    let mut served = serve(&ctrd, "http-drain", "WASI_HTTP_LISTEN_ADDR", port);
    // A request that takes 2 s is in flight when SIGTERM arrives: it is
    // answered in full, then the task exits 0.
    let slow = std::thread::spawn(move || get(port, "/sleep/2"));
    served.wait_line("request GET /sleep/2");
    ctrd.kill("http-drain", "SIGTERM");
    assert_eq!(
        slow.join().unwrap(),
        (200, "hello from python http /sleep/2\n".to_string())
    );
    assert_eq!(finish(served, "http-drain").0, 0);
    ctrd.assert_clean("http-drain");

    // With a 60 s request in flight, a drain would end with exit 0 after
    // it; the second signal ends the task with 143 and the request fails.
    let mut served = serve(&ctrd, "http-stop", "WASI_HTTP_LISTEN_ADDR", port);
    let slow = std::thread::spawn(move || get(port, "/sleep/60"));
    served.wait_line("request GET /sleep/60");
    ctrd.kill("http-stop", "SIGTERM");
    // Two signals sent together may arrive as one: the second goes once
    // the drain has begun, which closes the listener.
    wait_for(
        "the drain to close the listener",
        Duration::from_secs(30),
        || get(port, "/closed").0 == 0,
    );
    ctrd.kill("http-stop", "SIGTERM");
    assert_eq!(finish(served, "http-stop").0, 143);
    assert_ne!(slow.join().unwrap().0, 200);
    ctrd.assert_clean("http-stop");
}

#[test]
fn an_address_in_use_fails_create_by_name() {
    if !common::programs_built() {
        return;
    }
    let Some(ctrd) = containerd() else { return };
    ctrd.import("python-http");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let env = format!("WASI_HTTP_LISTEN_ADDR=127.0.0.1:{port}");
    let options = shared_cache();
    let flags = ["--net-host", options.as_str(), "--env", env.as_str()];
    let run = ctrd.run_with("python-http", "http-taken", &flags, &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    ctrd.assert_clean("http-taken");
}

/// A client that sends half a request's headers and then nothing is
/// disconnected at the header timeout; past the connection cap clients
/// wait until a connection ends; a request that loops forever ends at its
/// deadline with 500 or 503, one that grows past the request memory bound
/// gets a 500, and the server goes on serving after each.
#[test]
fn slow_clients_and_runaway_requests_are_bounded() {
    if !common::programs_built() {
        return;
    }
    let Some(ctrd) = containerd() else { return };
    ctrd.import("python-http");
    let port = free_port();
    let limits = [
        "WASI_HTTP_HEADER_TIMEOUT=5",
        "WASI_HTTP_MAX_CONNECTIONS=2",
        "WASI_HTTP_REQUEST_TIMEOUT=3",
        "WASI_HTTP_REQUEST_MEMORY=209715200",
    ];
    let served = serve_with(&ctrd, "http-limits", "WASI_HTTP_LISTEN_ADDR", port, &limits);

    // Two clients that send half a request hold both connections: a third
    // is not served while they last.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            stream
        })
        .collect();
    let third = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{port}/third"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&third.stdout),
        "000",
        "past the cap"
    );
    // The header timeout closes them; then the next client is served.
    for mut stream in slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        assert!(read.is_ok(), "the server closes a slow client: {read:?}");
    }
    assert_eq!(get(port, "/after-slow").0, 200);

    let (status, _) = get(port, "/spin");
    assert!(
        status == 503 || status == 500,
        "a request that loops: {status}"
    );
    assert_eq!(get(port, "/after-spin").0, 200);
    assert_eq!(get(port, "/alloc/400").0, 500);
    assert_eq!(get(port, "/alloc/8").0, 200);

    ctrd.kill("http-limits", "SIGTERM");
    let (status, stdout) = finish(served, "http-limits");
    assert_eq!(status, 0, "{stdout}");
    ctrd.assert_clean("http-limits");
}
