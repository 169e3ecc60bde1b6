//! Terminals (`ctr run -t`, `ctr task exec -t`), driven from a real
//! terminal as a user drives them: the process gets a pseudo-terminal
//! made in its container's own devpts, the shim relays it and applies the
//! client's window size (ResizePty), and the exit status is the process's.
//! Native sessions are compared with runc on the same image.

mod common;

use common::pty::PtyClient;
use common::{Containerd, RUNTIME, containerd, image};

const RUNC: &str = "io.containerd.runc.v2";

/// A shell command that ends once the terminal's size is `rows` × `cols`:
/// the client sends its size (ResizePty) only after Start, so a command
/// typed at once may run before it lands, under runc as here. What it
/// prints is computed, so the terminal's echo of it never matches.
fn until_size(rows: u16, cols: u16) -> String {
    format!(
        "until [ \"$(busybox stty size)\" = '{rows} {cols}' ]; do sleep 1; done; echo size-is-$(({rows}))x$(({cols}))"
    )
}

/// The screen without carriage returns: the container's terminal turns
/// "\n" into "\r\n", and ctr's own terminal handling adds one more.
fn lines(screen: &str) -> String {
    screen.replace('\r', "")
}

/// `ctr run -t --rm` of `image` as `id` under `runtime`, on a terminal of
/// `rows` × `cols`.
fn run_on_terminal(
    ctrd: &Containerd,
    runtime: &str,
    name: &str,
    id: &str,
    args: &[&str],
    (rows, cols): (u16, u16),
) -> PtyClient {
    let image = image(name);
    let mut all = vec!["run", "-t", "--rm", "--runtime", runtime, &image, id];
    all.extend_from_slice(args);
    let what = format!("ctr run -t {name} under {runtime}");
    PtyClient::spawn(ctrd.ctr_command(&all), rows, cols, &what)
}

#[test]
fn a_wasm_hello_on_a_terminal_prints_and_exits_zero() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("hello");
    let client = run_on_terminal(&ctrd, RUNTIME, "hello", "tty-hello", &[], (24, 80));
    let (code, screen) = client.wait();
    assert_eq!(code, 0, "{screen}");
    // The terminal turns the guest's "\n" into "\r\n", as under wasmtime run.
    assert!(lines(&screen).contains("hello from wasm\n"), "{screen:?}");
    ctrd.assert_clean("tty-hello");
}

/// WASI's fd_fdstat_get says character device for stdout on a terminal
/// (as `wasmtime run` in a terminal does), and not without one.
#[test]
fn a_wasm_guest_sees_a_terminal_only_under_t() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("tty");
    let client = run_on_terminal(&ctrd, RUNTIME, "tty", "tty-yes", &[], (24, 80));
    let (code, screen) = client.wait();
    assert_eq!(code, 0, "{screen}");
    assert!(
        lines(&screen).contains("stdout is a terminal\n"),
        "{screen:?}"
    );
    ctrd.assert_clean("tty-yes");

    let run = ctrd.run("tty", "tty-no", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("stdout is not a terminal"),
        "{run:?}"
    );
    ctrd.assert_clean("tty-no");
}

/// A typed session of busybox sh under `ctr run -t`: the terminal is the
/// container's own (its devpts holds only it; /dev/console is it), the
/// window size is the client's and follows a resize, a typed command runs
/// and `exit 5` is the status; runc, on the same session, shows the same.
#[test]
fn a_native_shell_on_a_terminal_runs_typed_commands_as_under_runc() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("busybox");
    for (runtime, id) in [(RUNC, "tty-sh-runc"), (RUNTIME, "tty-sh")] {
        let mut client = run_on_terminal(&ctrd, runtime, "busybox", id, &["sh"], (37, 111));
        let mut at = 0;
        let mut answer = |client: &mut PtyClient, command: &str, marker: &str| {
            client.type_line(&format!("{command}; echo {marker}-$((40+2))"));
            let end = client.expect_after(at, &format!("{marker}-42"));
            let answer = lines(&client.screen()[at..end]);
            at = end;
            answer
        };
        let tty = answer(&mut client, "busybox tty; ls -1 /dev/pts", "tty");
        let size = answer(&mut client, &until_size(37, 111), "size");
        client.resize(50, 132);
        // The client's SIGWINCH handler sends ResizePty.
        let resized = answer(&mut client, &until_size(50, 132), "resized");
        let console = answer(&mut client, "ls -l /dev/console", "console");
        client.type_line("exit 5");
        let (code, screen) = client.wait();
        assert_eq!(code, 5, "{runtime}: {screen}");
        for (what, text, wanted) in [
            ("tty", &tty, "/dev/pts/0\n0\nptmx\n"),
            ("size", &size, "size-is-37x111\n"),
            ("resize", &resized, "size-is-50x132\n"),
            ("console", &console, "136,"),
        ] {
            assert!(text.contains(wanted), "{runtime}: {what}: {text:?}");
        }
        ctrd.assert_clean(id);
    }
}

/// `ctr task exec -t` into a running native container: a shell on a
/// terminal of its own, typed into, ending with the typed status; the
/// container goes on.
#[test]
fn exec_on_a_terminal_runs_typed_commands() {
    let Some(ctrd) = containerd() else { return };
    ctrd.import("busybox");
    let image = image("busybox");
    let id = "tty-exec";
    let out = ctrd.ctr(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        &image,
        id,
        "sleep",
        "3600",
    ]);
    assert!(out.status.success(), "{out:?}");
    ctrd.wait_status(id, "RUNNING");
    let command = ctrd.ctr_command(&["task", "exec", "-t", "--exec-id", "sh1", id, "sh"]);
    let mut client = PtyClient::spawn(command, 30, 90, "ctr task exec -t");
    client.type_line(&format!("echo exec-$((6*7)); {}", until_size(30, 90)));
    let at = client.expect_after(0, "exec-42");
    client.expect_after(at, "size-is-30x90\r");
    client.type_line("exit 7");
    let (code, screen) = client.wait();
    assert_eq!(code, 7, "{screen}");
    assert_eq!(ctrd.task_status(id).as_deref(), Some("RUNNING"));
    ctrd.stop_and_remove(id, "SIGKILL");
}

/// A pod's containers with `tty: true` (`kubectl run -it`): the Wasm
/// guest sees a terminal and its output is in the container's log; and
/// `crictl exec -it` (kubelet's streaming exec, as `kubectl exec -it`)
/// runs a typed shell in the native sidecar, whose status comes back.
#[test]
fn pods_get_terminals_and_crictl_exec_it_types_into_a_sidecar() {
    let Some(crictl) = common::tools::cri_tool("crictl") else {
        return;
    };
    let Some(cri) = common::cri::cri() else {
        return;
    };
    cri.import(&["tty", "busybox"]);
    let pod = cri.new_pod("tty", common::cri::api::NamespaceMode::Node);
    let mut wasm = pod.container("wasm", "tty", &[]);
    wasm.tty = true;
    let wasm = cri.run(&pod, wasm);
    cri.wait_state(&wasm, common::cri::api::ContainerState::ContainerExited);
    let log = common::cri::container_log(&pod, "wasm");
    let said = common::cri::log_lines(&log, "stdout");
    assert_eq!(
        said.iter().map(|l| lines(l)).collect::<Vec<_>>(),
        ["stdout is a terminal"],
        "{log}"
    );

    let mut sidecar = pod.container("sidecar", "busybox", &[]);
    sidecar.command = ["/bin/busybox", "sleep", "1000"].map(String::from).to_vec();
    let sidecar = cri.run(&pod, sidecar);
    cri.wait_state(&sidecar, common::cri::api::ContainerState::ContainerRunning);
    let endpoint = format!("unix://{}", cri.dir().join("containerd.sock").display());
    let mut command = std::process::Command::new(crictl);
    command.args([
        "--runtime-endpoint",
        &endpoint,
        "exec",
        "-it",
        &sidecar,
        "sh",
    ]);
    let mut client = PtyClient::spawn(command, 40, 100, "crictl exec -it");
    client.type_line(&format!("echo crictl-$((6*7)); {}", until_size(40, 100)));
    let at = client.expect_after(0, "crictl-42");
    client.expect_after(at, "size-is-40x100");
    client.type_line("exit 3");
    let (code, screen) = client.wait();
    assert_ne!(code, 0, "{screen}");
    assert!(lines(&screen).contains("exit code 3"), "{screen:?}");
    cri.remove_pod(&pod);
    cri.assert_clean();
}
