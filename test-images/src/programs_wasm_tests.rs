//! Tests of the cache keys and the lookup of outputs, on a made-up workspace and Cargo home:
//! no toolchain runs.

use super::*;

/// A temporary workspace with every input of the three programs, and a Cargo home whose
/// registry holds the two crates' WIT files; removed when dropped.
struct Workspace {
    dir: PathBuf,
    layout: Layout,
}

impl Workspace {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "test-images-programs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        let workspace = Self {
            layout: Layout::new(&dir.join("ws"), &dir.join("cargo")),
            dir,
        };
        workspace.write(
            "ws/scripts/wasm-tools.sh",
            "#!/bin/sh\nZIGLANG_VERSION=0.1.0\nCOMPONENTIZE_PY_VERSION=0.2.0\n",
        );
        workspace.write(
            "ws/Cargo.lock",
            "version = 4\n\n[[package]]\nname = \"wasmtime-wasi\"\nversion = \"48.0.8\"\n\n\
             [[package]]\nname = \"wasmtime-wasi-http\"\nversion = \"48.0.8\"\n\
             dependencies = [\n \"wasmtime-wasi\",\n]\n",
        );
        workspace.write(
            "ws/test-images/c/wasm/hello.c",
            "int main(void) { return 0; }\n",
        );
        workspace.write("ws/test-images/python/cli/app.py", "print('cli')\n");
        workspace.write("ws/test-images/python/http/app.py", "print('http')\n");
        let registry = "cargo/registry/src/index.crates.io-0123456789abcdef";
        workspace.write(
            &format!("{registry}/wasmtime-wasi-48.0.8/src/p2/wit/deps/cli.wit"),
            "package wasi:cli@0.2.12;\n",
        );
        workspace.write(
            &format!("{registry}/wasmtime-wasi-http-48.0.8/wit/deps/http.wit"),
            "package wasi:http@0.2.12;\n",
        );
        workspace
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.dir.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// The key of the program of each image, in [`WASM_PROGRAM_IMAGES`] order.
    fn keys(&self) -> Vec<String> {
        PROGRAMS
            .iter()
            .map(|program| cache_key(program, &self.layout).unwrap())
            .collect()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Which programs' keys differ between two [`Workspace::keys`].
fn changed(before: &[String], after: &[String]) -> Vec<&'static str> {
    PROGRAMS
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (old, new))| old != new)
        .map(|(program, _)| program.name)
        .collect()
}

#[test]
fn the_table_matches_the_image_names() {
    let images: Vec<&str> = PROGRAMS.iter().map(|program| program.image).collect();
    assert_eq!(images, WASM_PROGRAM_IMAGES);
    for program in PROGRAMS {
        assert_eq!(program.entrypoint, format!("/{}.wasm", program.name));
        let component = matches!(program.toolchain, Toolchain::ComponentizePy { .. });
        assert_eq!(program.os, if component { "wasip2" } else { "wasip1" });
    }
}

#[test]
fn keys_are_stable_and_distinct() {
    let workspace = Workspace::new();
    let keys = workspace.keys();
    assert_eq!(keys, workspace.keys());
    for key in &keys {
        assert_eq!(key.len(), 16, "{key}");
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    }
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[1], keys[2]);
}

#[test]
fn a_changed_source_changes_only_its_programs_key() {
    let workspace = Workspace::new();
    let before = workspace.keys();
    workspace.write(
        "ws/test-images/c/wasm/hello.c",
        "int main(void) { return 1; }\n",
    );
    let after = workspace.keys();
    assert_eq!(changed(&before, &after), ["hello-c"]);
    // A new header counts too, as does a file in a subdirectory of the Python sources.
    workspace.write("ws/test-images/c/wasm/hello.h", "#define X 1\n");
    workspace.write("ws/test-images/python/http/lib/util.py", "X = 1\n");
    assert_eq!(
        changed(&after, &workspace.keys()),
        ["hello-c", "python-http"]
    );
}

#[test]
fn a_renamed_source_changes_the_key() {
    let workspace = Workspace::new();
    let before = workspace.keys();
    let dir = workspace.dir.join("ws/test-images/python/cli");
    fs::rename(dir.join("app.py"), dir.join("main.py")).unwrap();
    assert_eq!(changed(&before, &workspace.keys()), ["python-cli"]);
}

#[test]
fn caches_and_hidden_files_do_not_change_the_key() {
    let workspace = Workspace::new();
    let before = workspace.keys();
    workspace.write(
        "ws/test-images/python/cli/__pycache__/app.cpython-311.pyc",
        "bytecode",
    );
    workspace.write("ws/test-images/python/cli/old.pyc", "bytecode");
    workspace.write("ws/test-images/c/wasm/.hello.c.swp", "editor");
    assert_eq!(workspace.keys(), before);
}

#[test]
fn a_changed_wit_file_changes_only_the_components_that_use_it() {
    let workspace = Workspace::new();
    let before = workspace.keys();
    let registry = "cargo/registry/src/index.crates.io-0123456789abcdef";
    workspace.write(
        &format!("{registry}/wasmtime-wasi-48.0.8/src/p2/wit/deps/cli.wit"),
        "package wasi:cli@0.2.13;\n",
    );
    let after = workspace.keys();
    assert_eq!(changed(&before, &after), ["python-cli"]);
    workspace.write(
        &format!("{registry}/wasmtime-wasi-http-48.0.8/wit/world.wit"),
        "package wasmtime:wasi-http;\n",
    );
    assert_eq!(changed(&after, &workspace.keys()), ["python-http"]);
}

#[test]
fn a_new_crate_version_in_cargo_lock_uses_its_wit() {
    let workspace = Workspace::new();
    let before = workspace.keys();
    workspace.write(
        "ws/Cargo.lock",
        "[[package]]\nname = \"wasmtime-wasi\"\nversion = \"49.0.0\"\n\n\
         [[package]]\nname = \"wasmtime-wasi-http\"\nversion = \"48.0.8\"\n",
    );
    let err = format!(
        "{:#}",
        cache_key(&PROGRAMS[1], &workspace.layout).unwrap_err()
    );
    assert!(err.contains("wasmtime-wasi-49.0.0"), "{err}");
    assert!(err.contains("cargo fetch"), "{err}");
    workspace.write(
        "cargo/registry/src/index.crates.io-fedcba9876543210/wasmtime-wasi-49.0.0/src/p2/wit/deps/cli.wit",
        "package wasi:cli@0.2.12;\n",
    );
    // The same WIT text as before: the key follows the files, not the crate's version.
    assert_eq!(workspace.keys(), before);
}

#[test]
fn a_new_pinned_version_changes_the_key_of_its_tools_programs() {
    let workspace = Workspace::new();
    let before = workspace.keys();
    workspace.write(
        "ws/scripts/wasm-tools.sh",
        "#!/bin/sh\n# a comment\nZIGLANG_VERSION=0.1.1\nCOMPONENTIZE_PY_VERSION=0.2.0\n",
    );
    let after = workspace.keys();
    assert_eq!(changed(&before, &after), ["hello-c"]);
    workspace.write(
        "ws/scripts/wasm-tools.sh",
        "ZIGLANG_VERSION=0.1.1\nCOMPONENTIZE_PY_VERSION=0.3.0\n",
    );
    assert_eq!(
        changed(&after, &workspace.keys()),
        ["python-cli", "python-http"]
    );
    workspace.write("ws/scripts/wasm-tools.sh", "ZIGLANG_VERSION=0.1.1\n");
    let err = format!(
        "{:#}",
        cache_key(&PROGRAMS[2], &workspace.layout).unwrap_err()
    );
    assert!(
        err.contains("does not set COMPONENTIZE_PY_VERSION"),
        "{err}"
    );
}

#[test]
fn the_key_frames_its_fields() {
    let key = |fields: &[(&str, &[u8])]| {
        let mut hasher = KeyHasher::default();
        for (label, value) in fields {
            hasher.field(label, value);
        }
        hasher.finish()
    };
    assert_ne!(key(&[("a", b"bc")]), key(&[("ab", b"c")]));
    assert_ne!(key(&[("a", b""), ("b", b"")]), key(&[("a", b"\0b")]));
    assert_eq!(key(&[("a", b"b")]), key(&[("a", b"b")]));
}

#[test]
fn locked_versions_are_read_from_cargo_lock() {
    let lock = "[[package]]\nname = \"a\"\nversion = \"1.0.0\"\n\n\
                [[package]]\nname = \"ab\"\nversion = \"2.0.0\"\n\n\
                [[package]]\nname = \"c\"\nversion = \"1.0.0\"\n\n\
                [[package]]\nname = \"c\"\nversion = \"2.0.0\"\n";
    assert_eq!(locked_version(lock, "a").unwrap(), "1.0.0");
    assert_eq!(locked_version(lock, "ab").unwrap(), "2.0.0");
    let none = locked_version(lock, "b").unwrap_err().to_string();
    assert!(none.contains("no package b"), "{none}");
    let several = locked_version(lock, "c").unwrap_err().to_string();
    assert!(several.contains("1.0.0, 2.0.0"), "{several}");
}

#[test]
fn images_come_from_the_output_of_the_current_key_only() {
    let workspace = Workspace::new();
    let layout = &workspace.layout;
    let program = &PROGRAMS[1];
    let err = format!("{:#}", program_image(program.image, layout).unwrap_err());
    assert!(err.contains("cannot provide image python-cli"), "{err}");
    assert!(err.contains("make programs"), "{err}");
    let key = cache_key(program, layout).unwrap();
    let output = layout.output(program, &key);
    assert!(err.contains(&output.display().to_string()), "{err}");

    fs::create_dir_all(layout.programs_dir()).unwrap();
    // A core module where a component belongs is refused.
    fs::write(&output, b"\0asm\x01\0\0\0rest").unwrap();
    let err = format!("{:#}", program_image(program.image, layout).unwrap_err());
    assert!(err.contains("does not start as a component does"), "{err}");

    let component = b"\0asm\x0d\0\x01\0rest".to_vec();
    fs::write(&output, &component).unwrap();
    let image = program_image(program.image, layout).unwrap();
    assert_eq!(image.name, "python-cli");
    assert_eq!(image.entrypoint, "/python-cli.wasm");
    assert_eq!(
        (image.architecture.as_str(), image.os.as_str()),
        ("wasm", "wasip2")
    );
    assert_eq!(image.executable, component);

    // After a source changes, the old output is stale: the image is unavailable again.
    workspace.write("ws/test-images/python/cli/app.py", "print('changed')\n");
    assert!(program_image(program.image, layout).is_err());
    assert!(program_image("nope", layout).is_err());
}

#[test]
fn prune_removes_only_the_programs_other_keys() {
    let workspace = Workspace::new();
    let layout = &workspace.layout;
    let dir = layout.programs_dir();
    fs::create_dir_all(&dir).unwrap();
    let names = [
        "python-cli-0123456789abcdef.wasm",
        "python-cli-fedcba9876543210.wasm",
        "python-http-fedcba9876543210.wasm",
        "python-cli-notakey.wasm",
    ];
    for name in names {
        fs::write(dir.join(name), b"").unwrap();
    }
    prune(&PROGRAMS[1], layout, "0123456789abcdef");
    let mut left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "python-cli-0123456789abcdef.wasm",
            "python-cli-notakey.wasm",
            "python-http-fedcba9876543210.wasm",
        ]
    );
}

#[test]
fn the_real_keys_need_no_toolchain() {
    // The sources, the pins and the WIT files of this workspace (the WIT from Cargo's
    // registry, where building the shim put the wasmtime crates).
    let layout = Layout::current();
    for program in PROGRAMS {
        let key = cache_key(program, &layout).unwrap();
        assert_eq!(key, cache_key(program, &layout).unwrap());
    }
}
