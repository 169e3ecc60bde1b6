//! OCI hooks, run as runc runs them: each hook's program with its args
//! (args[0] is its name) and env, the container's state as JSON on stdin,
//! within its timeout. The shim runs prestart, createRuntime, poststart
//! and poststop in the runtime's namespaces; the child runs
//! createContainer (in the container's namespaces, before pivot_root) and
//! startContainer (in the container, just before the workload).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};

use crate::error::{Error, Result};

/// The container's state, as a hook reads it on stdin.
pub struct State<'a> {
    pub id: &'a str,
    pub pid: i32,
    pub bundle: &'a Path,
    /// creating, created, running or stopped.
    pub status: &'a str,
}

fn state_json(spec: &Spec, state: &State) -> String {
    let annotations = spec.annotations().clone().unwrap_or_default();
    serde_json::json!({
        "ociVersion": spec.version(),
        "id": state.id,
        "status": state.status,
        "pid": state.pid,
        "bundle": state.bundle,
        "annotations": annotations,
    })
    .to_string()
}

/// The hooks of one stage, by their spec name.
pub fn of<'a>(spec: &'a Spec, stage: &str) -> &'a [Hook] {
    let Some(hooks) = spec.hooks() else {
        return &[];
    };
    let list = match stage {
        "prestart" => hooks.prestart(),
        "createRuntime" => hooks.create_runtime(),
        "createContainer" => hooks.create_container(),
        "startContainer" => hooks.start_container(),
        "poststart" => hooks.poststart(),
        "poststop" => hooks.poststop(),
        _ => &None,
    };
    list.as_deref().unwrap_or(&[])
}

/// One hook ready to run: its command (stdin and stderr piped), the
/// state to write to it, its time limit, and its name for errors.
pub struct Ready {
    pub command: Command,
    pub input: String,
    pub timeout: Option<Duration>,
    pub label: String,
}

impl Ready {
    /// The error for this hook failing with `reason`.
    pub fn failed(&self, reason: &str) -> Error {
        Error::InvalidSpec(format!("{}: {reason}", self.label))
    }
}

/// The hooks of `stage`, in order, ready to run. A process that reaps
/// every child (the shim) runs them itself; the child uses [`run`].
pub fn commands(spec: &Spec, stage: &str, state: &State) -> Vec<Ready> {
    let input = state_json(spec, state);
    of(spec, stage)
        .iter()
        .enumerate()
        .map(|(i, hook)| Ready {
            command: command(hook),
            input: input.clone(),
            timeout: hook
                .timeout()
                .filter(|t| *t > 0)
                .map(|t| Duration::from_secs(t as u64)),
            label: format!("hooks.{stage}[{i}] ({})", hook.path().display()),
        })
        .collect()
}

/// Runs the hooks of `stage` in order and waits for each; the first that
/// fails stops them.
pub fn run(spec: &Spec, stage: &str, state: &State) -> Result<()> {
    for ready in commands(spec, stage, state) {
        run_one(ready)?;
    }
    Ok(())
}

fn command(hook: &Hook) -> Command {
    let args = hook.args().clone().unwrap_or_default();
    let env: HashMap<String, String> = hook
        .env()
        .iter()
        .flatten()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect();
    let mut command = Command::new(hook.path());
    if let Some((name, rest)) = args.split_first() {
        command.arg0(name).args(rest);
    }
    command
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Gives a started hook its state; one that does not read it is fine.
pub fn feed(child: &mut std::process::Child, input: &str) {
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
}

/// What a hook writes on stderr, read while it runs (a hook that writes
/// more than a pipe holds must not block), at most 64 KiB of it kept.
pub struct Stderr {
    kept: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Stderr {
    pub fn collect(child: &mut std::process::Child) -> Stderr {
        let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, done) = std::sync::mpsc::channel();
        if let Some(mut err) = child.stderr.take() {
            let sink = kept.clone();
            let _ = std::thread::Builder::new()
                .name("hook-stderr".into())
                .spawn(move || {
                    use std::io::Read;
                    let mut chunk = [0u8; 4096];
                    while let Ok(n @ 1..) = err.read(&mut chunk) {
                        let mut kept = sink.lock().unwrap_or_else(|e| e.into_inner());
                        if kept.len() < 64 << 10 {
                            kept.extend_from_slice(&chunk[..n]);
                        }
                    }
                    let _ = tx.send(());
                });
        }
        Stderr { kept, done }
    }

    /// The text, once the hook has ended. A process the hook left behind
    /// may hold the pipe open: then what arrived within a second.
    pub fn text(self) -> String {
        let _ = self.done.recv_timeout(Duration::from_secs(1));
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).trim().to_string()
    }
}

fn run_one(mut ready: Ready) -> Result<()> {
    let mut child = ready
        .command
        .spawn()
        .map_err(|e| ready.failed(&format!("cannot run it: {e}")))?;
    feed(&mut child, &ready.input);
    let stderr = Stderr::collect(&mut child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| ready.failed(&e.to_string()))? {
            break status;
        }
        if ready.timeout.is_some_and(|l| start.elapsed() > l) {
            let _ = child.kill();
            let _ = child.wait();
            let secs = ready.timeout.unwrap_or_default().as_secs();
            return Err(ready.failed(&format!("timed out after {secs}s")));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if status.success() {
        return Ok(());
    }
    Err(ready.failed(&format!("{status}: {}", stderr.text())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hooks: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion": "1.0.2", "root": {{"path": "rootfs"}}, "annotations": {{"a": "b"}},
                "hooks": {hooks}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn hooks_get_the_state_and_their_failures_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("state.json");
        let s = spec(&format!(
            r#"{{"createRuntime": [{{"path": "/bin/sh", "args": ["sh", "-c", "cat > {}; echo $X >> {}"], "env": ["X=from-env"]}}],
                "poststop": [{{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}}],
                "prestart": [{{"path": "/bin/sh", "args": ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x >&2; sleep 30 >&2 & exit 4"]}}],
                "poststart": [{{"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}}]}}"#,
            out.display(),
            out.display()
        ));
        let state = State {
            id: "c1",
            pid: 42,
            bundle: Path::new("/b"),
            status: "creating",
        };
        run(&s, "createRuntime", &state).unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        assert!(
            written.contains(r#""id":"c1""#) && written.contains(r#""pid":42"#),
            "{written}"
        );
        assert!(written.contains(r#""status":"creating""#) && written.contains("from-env"));
        let err = run(&s, "poststop", &state).unwrap_err().to_string();
        assert!(
            err.contains("hooks.poststop[0] (/bin/sh)") && err.contains("nope"),
            "{err}"
        );
        let err = run(&s, "poststart", &state).unwrap_err().to_string();
        assert!(err.contains("timed out after 1s"), "{err}");
        // 300 kB of stderr and a process left holding it: no hang.
        let started = Instant::now();
        let err = run(&s, "prestart", &state).unwrap_err().to_string();
        assert!(
            err.contains("exit status: 4") && err.contains("xxx"),
            "{}",
            &err[..200.min(err.len())]
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(run(&s, "startContainer", &state).is_ok());
    }
}
