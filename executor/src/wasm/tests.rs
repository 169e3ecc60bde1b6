use std::path::Path;

use super::*;

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap()
}

fn prepared(bytes: &[u8], arg0: &str) -> Result<Prepared> {
    prepare(arg0, bytes, &[], 1, None, &|_| {})
}

fn status(bytes: &[u8], arg0: &str) -> i32 {
    let guest = GuestEnv {
        args: &[arg0.to_string()],
        env: &[],
        cwd: Path::new("/"),
        memory_limit: None,
    };
    run(prepared(bytes, arg0).unwrap(), &guest, 1, &|| None).status
}

/// A command component whose `wasi:cli/run` returns `ok` or its error.
fn run_component(ok: bool) -> Vec<u8> {
    wat(&format!(
        r#"(component
             (core module $m (func (export "run") (result i32) i32.const {}))
             (core instance $i (instantiate $m))
             (func $run (result (result)) (canon lift (core func $i "run")))
             (instance $cli (export "run" (func $run)))
             (export "wasi:cli/run@0.2.0" (instance $cli)))"#,
        if ok { 0 } else { 1 }
    ))
}

/// A component with top-level functions `hello` (returns) and `boom` (traps).
fn func_component() -> Vec<u8> {
    wat(r#"(component
             (core module $m
               (func (export "hello"))
               (func (export "boom") unreachable)
               (func (export "add") (param i32) (result i32) local.get 0))
             (core instance $i (instantiate $m))
             (func (export "hello") (canon lift (core func $i "hello")))
             (func (export "boom") (canon lift (core func $i "boom")))
             (func (export "add") (param "x" u32) (result u32) (canon lift (core func $i "add"))))"#)
}

#[test]
fn splits_entry() {
    assert_eq!(split_entry("/a.wasm"), ("/a.wasm", "_start"));
    assert_eq!(split_entry("/a.wasm#run"), ("/a.wasm", "run"));
    assert_eq!(split_entry("/a.wasm#"), ("/a.wasm#", "_start"));
}

#[test]
fn refuses_bad_modules_by_name() {
    let err = |bytes: &[u8]| prepared(bytes, "/m.wasm").err().unwrap().to_string();
    assert!(err(b"").contains("/m.wasm: the file is empty"));
    assert!(err(b"not wasm").contains("/m.wasm: it is not a WebAssembly module"));
    assert!(err(&wat("(module)")).contains("exports no function `_start`"));
    let unknown = wat(r#"(module (import "env" "nope" (func)) (func (export "_start")))"#);
    assert!(err(&unknown).contains("cannot link"));
    assert!(err(b"\0asm\x01\0\0\0\x01").contains("cannot compile"));
    assert!(err(b"\0asm\x0d\0\x01\0\x01").contains("cannot compile"));
}

#[test]
fn runs_a_module_and_reports_proc_exit() {
    let bytes = wat(
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                   (memory (export "memory") 1)
                   (func (export "_start") (call $exit (i32.const 7))))"#,
    );
    assert_eq!(status(&bytes, "/m.wasm"), 7);
}

#[test]
fn runs_a_command_component() {
    assert_eq!(status(&run_component(true), "/c.wasm"), 0);
    assert_eq!(status(&run_component(false), "/c.wasm"), 1);
}

#[test]
fn calls_a_components_function_by_name() {
    let bytes = func_component();
    assert_eq!(status(&bytes, "/c.wasm#hello"), 0);
    assert_eq!(status(&bytes, "/c.wasm#boom"), crate::exit::TRAP);
    let err = |arg0: &str| prepared(&bytes, arg0).err().unwrap().to_string();
    assert!(err("/c.wasm#nope").contains("/c.wasm: it exports no function `nope`"));
    assert!(err("/c.wasm#add").contains("not a function without parameters or results"));
    assert!(err("/c.wasm").contains("exports no `wasi:cli/run`"));
}

#[test]
fn a_trap_in_a_component_names_it() {
    let bytes = func_component();
    let guest = GuestEnv {
        args: &["/c.wasm#boom".to_string()],
        env: &[],
        cwd: Path::new("/"),
        memory_limit: None,
    };
    let outcome = run(
        prepared(&bytes, "/c.wasm#boom").unwrap(),
        &guest,
        1,
        &|| None,
    );
    assert_eq!(outcome.status, 134);
    assert!(outcome.message.unwrap().contains("unreachable"));
}

#[test]
fn tells_http_handlers_from_commands() {
    let handler = wat(r#"(component
             (core module $m (func (export "handle") (param i32 i32)))
             (core instance $i (instantiate $m))
             (func $handle (param "a" u32) (param "b" u32) (canon lift (core func $i "handle")))
             (instance $h (export "handle" (func $handle)))
             (export "wasi:http/incoming-handler@0.2.3" (instance $h)))"#);
    assert!(crate::kind::is_http_proxy(&handler));
    assert!(!crate::kind::is_http_proxy(&run_component(true)));
    assert!(!crate::kind::is_http_proxy(b"\0asm\x0d\0\x01\0garbage"));
}

#[test]
fn listen_address_from_the_environment() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let got = http::listen_address(&env(&[])).unwrap();
    assert_eq!(got.to_string(), http::DEFAULT_LISTEN);
    let peer = env(&[("WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:9000")]);
    assert_eq!(
        http::listen_address(&peer).unwrap().to_string(),
        "127.0.0.1:9000"
    );
    let both = env(&[
        ("WASMTIME_HTTP_PROXY_SOCKET_ADDR", "127.0.0.1:9000"),
        ("WASI_HTTP_LISTEN_ADDR", "127.0.0.1:9001"),
    ]);
    assert_eq!(
        http::listen_address(&both).unwrap().to_string(),
        "127.0.0.1:9001"
    );
    let bad = env(&[("WASI_HTTP_LISTEN_ADDR", "localhost")]);
    assert!(
        http::listen_address(&bad)
            .unwrap_err()
            .contains("WASI_HTTP_LISTEN_ADDR \"localhost\"")
    );
}
