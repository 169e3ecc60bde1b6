//! The WASI preview 1 test modules, compiled from `wat/*.wat` by build.rs and embedded here.
//!
//! Most are runnable commands with an image each ([`WASM_MODULES`]); [`NOSTART_WASM`] is not a
//! command and lives only in the `bad` image.

use crate::entry::Entry;
use crate::{DATA_DIR, SECRET_CONTENT, SECRET_PATH};

/// Embeds the module that build.rs compiled from `wat/<name>.wat`.
macro_rules! compiled_module {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".wasm"))
    };
}

/// Prints "hello from wasm" and exits with status 0.
pub const HELLO_WASM: &[u8] = compiled_module!("hello");
/// Exits with the status given as argv[1] (0 without one).
pub const EXIT_WASM: &[u8] = compiled_module!("exit");
/// Prints "about to trap" and traps in a function named `explode`.
pub const TRAP_WASM: &[u8] = compiled_module!("trap");
/// Prints "looping" and spins forever without calling the host.
pub const LOOP_WASM: &[u8] = compiled_module!("loop");
/// Prints "sleeping", sleeps argv[1] seconds (3600 without one) in poll_oneoff, prints "awake".
pub const SLEEP_WASM: &[u8] = compiled_module!("sleep");
/// Prints each argument as `arg[i]=<value>` and each environment entry as `env=<KEY=VALUE>`.
pub const ARGS_WASM: &[u8] = compiled_module!("args");
/// Copies stdin to stdout until end of input.
pub const CAT_WASM: &[u8] = compiled_module!("cat");
/// Writes `/tmp/wasm-test.txt` through preopen fd 3, reads it back and prints it.
pub const FILE_WASM: &[u8] = compiled_module!("file");
/// Opens each argument below preopen fd 3 (`write:<path>` for writing) and prints
/// `<argument>: ok` or `<argument>: errno <n>`.
pub const OPEN_WASM: &[u8] = compiled_module!("open");
/// Grows its memory 1 MiB at a time to 512 MiB, printing `grew to <n> MiB` every 64 MiB and
/// `reached 512 MiB`; when memory.grow fails it prints `memory.grow failed at <n> MiB` and
/// exits with 12.
pub const MEMGROW_WASM: &[u8] = compiled_module!("memgrow");
/// Prints 1, 2, 3, ... one line every 50 ms, forever.
pub const COUNT_WASM: &[u8] = compiled_module!("count");
/// Prints "stdout is a terminal" when fd_fdstat_get says fd 1 is a character device, else
/// "stdout is not a terminal (filetype <n>)".
pub const TTY_WASM: &[u8] = compiled_module!("tty");

/// A WASI 0.2 command component: `wasi:cli/run` exits 42 through
/// `exit-with-code`; `#hello` returns, `#boom` traps, `#spin` loops forever.
pub const COMPONENT_WASM: &[u8] = compiled_module!("component");

/// Exports memory and `main` but no `_start`, so it is valid Wasm yet not a WASI command.
/// It is deliberately missing from [`WASM_MODULES`]: only the `bad` image carries it.
pub const NOSTART_WASM: &[u8] = compiled_module!("nostart");

/// Every runnable test module with its name, which is also its image's name and its path in
/// the rootfs (`/<name>.wasm`).
pub const WASM_MODULES: &[(&str, &[u8])] = &[
    ("hello", HELLO_WASM),
    ("exit", EXIT_WASM),
    ("trap", TRAP_WASM),
    ("loop", LOOP_WASM),
    ("sleep", SLEEP_WASM),
    ("args", ARGS_WASM),
    ("cat", CAT_WASM),
    ("file", FILE_WASM),
    ("open", OPEN_WASM),
    ("memgrow", MEMGROW_WASM),
    ("count", COUNT_WASM),
    ("tty", TTY_WASM),
    ("component", COMPONENT_WASM),
];

/// Returns the runnable test module called `name` (one of [`WASM_MODULES`]), if there is one.
pub fn wasm_module(name: &str) -> Option<&'static [u8]> {
    WASM_MODULES
        .iter()
        .find(|(module_name, _)| *module_name == name)
        .map(|(_, bytes)| *bytes)
}

/// Returns the entries a module's image carries besides the module: for `open`, the things it
/// is pointed at (see [`open_image_entries`]); for every other module, none.
pub fn wasm_module_entries(name: &str) -> Vec<Entry> {
    match name {
        "open" => open_image_entries(),
        _ => Vec::new(),
    }
}

/// The targets of the `open` module's tests: a block device node `/blk` (loop0, 7:0) and a
/// character device node `/chr` (mem, 1:1), both 0666 so that only the runtime's device policy
/// can refuse them; the root-only [`SECRET_PATH`]; the directory [`DATA_DIR`] to mount volumes
/// on; and two symlinks that leave the rootfs if followed naively, `/abs-link` (absolute, to
/// `/secret`) and `/escape` (`../../../../etc/hostname`).
pub fn open_image_entries() -> Vec<Entry> {
    vec![
        Entry::block_device("/blk", 7, 0, 0o666),
        Entry::char_device("/chr", 1, 1, 0o666),
        Entry::file(SECRET_PATH, SECRET_CONTENT, 0o600),
        Entry::dir(DATA_DIR, 0o755),
        Entry::symlink("/abs-link", SECRET_PATH),
        Entry::symlink("/escape", "../../../../etc/hostname"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle)
    }

    fn source(name: &str) -> String {
        let path = format!("{}/wat/{name}.wat", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"))
    }

    #[test]
    fn every_wat_file_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/wat");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("reading the wat directory")
            .map(|entry| entry.expect("reading a wat entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "wat"))
            .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = WASM_MODULES.iter().map(|(n, _)| n.to_string()).collect();
        // nostart is embedded too, just outside the runnable list.
        embedded.push("nostart".to_owned());
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn modules_are_valid_wasi_commands() {
        for (name, bytes) in WASM_MODULES {
            let reparsed = wat::parse_str(source(name))
                .unwrap_or_else(|err| panic!("{name}.wat does not compile: {err}"));
            assert_eq!(&reparsed[..], *bytes, "{name}: embedded bytes are stale");
            assert_eq!(&bytes[..4], b"\0asm", "{name}: missing the wasm magic");
            if *name == "component" {
                assert_eq!(&bytes[4..8], &[0x0d, 0, 1, 0], "component: not a component");
                assert!(
                    contains(bytes, b"wasi:cli/run@0.2.0"),
                    "component: no wasi:cli/run"
                );
                continue;
            }
            assert_eq!(&bytes[4..8], &[1, 0, 0, 0], "{name}: not a core module");
            assert!(contains(bytes, b"_start"), "{name}: no _start export");
            assert!(contains(bytes, b"memory"), "{name}: no memory export");
            assert!(
                contains(bytes, b"wasi_snapshot_preview1"),
                "{name}: no WASI preview 1 import"
            );
        }
    }

    #[test]
    fn nostart_module_is_valid_wasi_without_start() {
        let reparsed = wat::parse_str(source("nostart")).expect("nostart.wat compiles");
        assert_eq!(&reparsed[..], NOSTART_WASM, "embedded bytes are stale");
        assert_eq!(&NOSTART_WASM[..8], b"\0asm\x01\0\0\0", "not a core module");
        assert!(contains(NOSTART_WASM, b"memory"));
        assert!(contains(NOSTART_WASM, b"main"));
        assert!(contains(NOSTART_WASM, b"wasi_snapshot_preview1"));
        assert!(!contains(NOSTART_WASM, b"_start"));
        assert!(WASM_MODULES.iter().all(|(name, _)| *name != "nostart"));
        assert_eq!(wasm_module("nostart"), None);
    }

    #[test]
    fn trap_module_keeps_the_function_name_for_backtraces() {
        // The name custom section is what lets the runtime print `explode` in the backtrace.
        assert!(contains(TRAP_WASM, b"\x04name"));
        assert!(contains(TRAP_WASM, b"explode"));
    }

    #[test]
    fn memgrow_memory_starts_at_one_mib_without_a_maximum() {
        // The memory section: id 5, 3 bytes, 1 memory, limits flag 0 (no maximum), 16 pages.
        assert!(contains(MEMGROW_WASM, &[0x05, 0x03, 0x01, 0x00, 0x10]));
    }

    #[test]
    fn only_the_open_image_gets_extra_entries() {
        assert_eq!(wasm_module_entries("open"), open_image_entries());
        assert!(wasm_module_entries("hello").is_empty());
    }

    #[test]
    fn modules_are_found_by_name() {
        assert_eq!(wasm_module("hello"), Some(HELLO_WASM));
        assert_eq!(wasm_module("file"), Some(FILE_WASM));
        assert_eq!(wasm_module("native-hello"), None);
    }
}
