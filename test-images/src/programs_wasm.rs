//! The Wasm test programs made by real toolchains rather than written in WAT: a C program
//! (`c/wasm/`) that zig's clang and wasi-libc compile into a WASI preview 1 module, and two
//! Python programs (`python/cli/`, `python/http/`) that componentize-py turns into WASI preview
//! 2 components, one for the `wasi:cli/command` world and one for `wasi:http/proxy`.
//!
//! The toolchains come from PyPI at the versions `scripts/wasm-tools.sh` pins, in the venv it
//! makes under `.dev/tools/venv`. They are too slow and too large to run from build.rs, so
//! [`build_wasm_programs`] (the `test-images` binary, i.e. `make programs` and `make images`)
//! builds each program into `.dev/programs/<name>-<key>.wasm`, where the key hashes everything
//! the output depends on: the sources, the WIT files, the toolchain's pinned version and the
//! flags. Computing the key runs no tool, so the library finds the outputs of the current
//! sources without building anything ([`wasm_program_image`]) and reports an output that is
//! missing or stale as unavailable ([`missing_wasm_programs`], [`require_wasm_programs`]).
//!
//! The WIT files are those of the wasmtime-wasi and wasmtime-wasi-http crates that Cargo.lock
//! names, read from Cargo's registry sources: the components then import exactly the WASI
//! 0.2.x interfaces of the wasmtime that runs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::{COMPONENT_WASM_HEADER, ImageSpec, sha256_hex};

use build::{Tools, build};

/// The image of the C program, with the module at [`C_HELLO_PATH`] (wasm/wasip1).
pub const C_HELLO_IMAGE_NAME: &str = "c-hello";
/// The image of the Python command, with the component at [`PYTHON_CLI_PATH`] (wasm/wasip2).
pub const PYTHON_CLI_IMAGE_NAME: &str = "python-cli";
/// The image of the Python HTTP handler, with the component at [`PYTHON_HTTP_PATH`]
/// (wasm/wasip2).
pub const PYTHON_HTTP_IMAGE_NAME: &str = "python-http";
/// Every image of a toolchain-built program; each is available once its output is built.
pub const WASM_PROGRAM_IMAGES: &[&str] = &[
    C_HELLO_IMAGE_NAME,
    PYTHON_CLI_IMAGE_NAME,
    PYTHON_HTTP_IMAGE_NAME,
];

/// Where each program lives in its image; each is also the image's entrypoint.
pub const C_HELLO_PATH: &str = "/hello-c.wasm";
pub const PYTHON_CLI_PATH: &str = "/python-cli.wasm";
pub const PYTHON_HTTP_PATH: &str = "/python-http.wasm";

/// What the C program prints without arguments (see `c/wasm/hello.c` for the others).
pub const C_HELLO_MESSAGE: &[u8] = b"hello from c\n";
/// What the Python command prints without arguments (see `python/cli/app.py`).
pub const PYTHON_CLI_MESSAGE: &[u8] = b"hello from python\n";
/// The Python HTTP handler answers `<this><path>\n` (see `python/http/app.py`).
pub const PYTHON_HTTP_BODY_PREFIX: &str = "hello from python http ";

/// The first bytes of a core module (version 1).
const CORE_MODULE_HEADER: &[u8] = b"\0asm\x01\0\0\0";

/// Changes whenever the way a program is built changes in a way the key does not see
/// otherwise (the environment of a tool, the staging of the sources).
const RECIPE_VERSION: &str = "1";

/// The flags of `python -m ziglang cc`, before `-o <out> <sources>`.
const ZIG_CC_FLAGS: &[&str] = &[
    "-target",
    "wasm32-wasi",
    "-O2",
    "-s",
    "-Wall",
    "-Wextra",
    "-Werror",
];

/// The module componentize-py wraps: `<sources>/app.py`.
const PYTHON_APP_MODULE: &str = "app";

/// The variables of `scripts/wasm-tools.sh` that pin each tool's version.
const ZIGLANG_PIN: &str = "ZIGLANG_VERSION";
const COMPONENTIZE_PY_PIN: &str = "COMPONENTIZE_PY_VERSION";

/// How a program is built.
#[derive(Debug)]
enum Toolchain {
    /// `python -m ziglang cc` over every `.c` file of the sources: a core module.
    ZigCc,
    /// `componentize-py` on [`PYTHON_APP_MODULE`] for `world` of the WIT in `wit`: a component.
    ComponentizePy { wit: Wit, world: &'static str },
}

/// A directory of WIT files inside a crate of Cargo.lock, as found in Cargo's registry.
#[derive(Debug)]
struct Wit {
    krate: &'static str,
    dir: &'static str,
}

/// One toolchain-built program.
#[derive(Debug)]
struct Program {
    /// The output's file stem, `<name>-<key>.wasm`.
    name: &'static str,
    image: &'static str,
    entrypoint: &'static str,
    /// The image's OCI os: wasip1 for a module, wasip2 for a component.
    os: &'static str,
    /// The directory of the sources, relative to the test-images crate.
    sources: &'static str,
    toolchain: Toolchain,
}

/// The WIT of the `wasi:cli/command` world, as the wasmtime-wasi crate has it for preview 2.
const WASI_CLI_WIT: Wit = Wit {
    krate: "wasmtime-wasi",
    dir: "src/p2/wit",
};
/// The WIT of the `wasi:http/proxy` world.
const WASI_HTTP_WIT: Wit = Wit {
    krate: "wasmtime-wasi-http",
    dir: "wit",
};

const PROGRAMS: &[Program] = &[
    Program {
        name: "hello-c",
        image: C_HELLO_IMAGE_NAME,
        entrypoint: C_HELLO_PATH,
        os: "wasip1",
        sources: "c/wasm",
        toolchain: Toolchain::ZigCc,
    },
    Program {
        name: "python-cli",
        image: PYTHON_CLI_IMAGE_NAME,
        entrypoint: PYTHON_CLI_PATH,
        os: "wasip2",
        sources: "python/cli",
        // Unversioned: the one version of the package in the WIT, whatever wasmtime's is.
        toolchain: Toolchain::ComponentizePy {
            wit: WASI_CLI_WIT,
            world: "wasi:cli/command",
        },
    },
    Program {
        name: "python-http",
        image: PYTHON_HTTP_IMAGE_NAME,
        entrypoint: PYTHON_HTTP_PATH,
        os: "wasip2",
        sources: "python/http",
        toolchain: Toolchain::ComponentizePy {
            wit: WASI_HTTP_WIT,
            world: "wasi:http/proxy",
        },
    },
];

/// Where the workspace, its caches and Cargo's registry are.
#[derive(Debug, Clone)]
struct Layout {
    /// The workspace root (Cargo.lock, scripts/, test-images/, .dev/).
    root: PathBuf,
    cargo_home: PathBuf,
}

impl Layout {
    /// The workspace this crate was built in, and `$CARGO_HOME` (else `~/.cargo`).
    fn current() -> Self {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf();
        let cargo_home = match std::env::var_os("CARGO_HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home),
            _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"),
        };
        Self { root, cargo_home }
    }

    #[cfg(test)]
    fn new(root: &Path, cargo_home: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            cargo_home: cargo_home.to_path_buf(),
        }
    }

    fn sources(&self, program: &Program) -> PathBuf {
        self.root.join("test-images").join(program.sources)
    }

    fn programs_dir(&self) -> PathBuf {
        self.root.join(".dev/programs")
    }

    fn tools_script(&self) -> PathBuf {
        self.root.join("scripts/wasm-tools.sh")
    }

    fn venv(&self) -> PathBuf {
        self.root.join(".dev/tools/venv")
    }

    fn zig_cache(&self) -> PathBuf {
        self.root.join(".dev/tools/zig-cache")
    }

    /// The output for `key`: `.dev/programs/<name>-<key>.wasm`.
    fn output(&self, program: &Program, key: &str) -> PathBuf {
        self.programs_dir()
            .join(format!("{}-{key}.wasm", program.name))
    }
}

/// What [`build_wasm_programs`] did for one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltProgram {
    /// The image the program goes into.
    pub image: &'static str,
    /// The output, `.dev/programs/<name>-<key>.wasm`.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Whether the output was already there (no tool ran).
    pub cached: bool,
    /// How long the build took (zero when cached).
    pub elapsed: Duration,
}

/// Builds every program whose output for the current inputs is missing, installing the
/// toolchains first if needed (`scripts/wasm-tools.sh`), and removes outputs of older inputs.
/// Progress goes to stderr.
pub fn build_wasm_programs() -> Result<Vec<BuiltProgram>> {
    build_all(&Layout::current())
}

fn build_all(layout: &Layout) -> Result<Vec<BuiltProgram>> {
    let mut tools: Option<Tools> = None;
    let mut built = Vec::new();
    for program in PROGRAMS {
        let key =
            cache_key(program, layout).with_context(|| format!("cannot build {}", program.name))?;
        let path = layout.output(program, &key);
        if valid_output(program, &path).is_ok() {
            built.push(BuiltProgram {
                image: program.image,
                size: fs::metadata(&path)?.len(),
                path,
                cached: true,
                elapsed: Duration::ZERO,
            });
            continue;
        }
        let tools = match &tools {
            Some(tools) => tools,
            None => tools.insert(Tools::install(layout)?),
        };
        eprintln!("test-images: building {}", path.display());
        let start = Instant::now();
        build(program, layout, tools, &path)
            .with_context(|| format!("failed to build {}", path.display()))?;
        let elapsed = start.elapsed();
        let size = fs::metadata(&path)?.len();
        eprintln!(
            "test-images: built {} ({size} bytes) in {:.1} s",
            path.display(),
            elapsed.as_secs_f64()
        );
        prune(program, layout, &key);
        built.push(BuiltProgram {
            image: program.image,
            path,
            size,
            cached: false,
            elapsed,
        });
    }
    Ok(built)
}

/// Returns the image of the toolchain-built program `name` (one of [`WASM_PROGRAM_IMAGES`]),
/// failing if its output for the current sources is not built (`make programs` builds it).
/// Nothing is built here.
pub fn wasm_program_image(name: &str) -> Result<ImageSpec> {
    program_image(name, &Layout::current())
}

fn program_image(name: &str, layout: &Layout) -> Result<ImageSpec> {
    let program = PROGRAMS
        .iter()
        .find(|program| program.image == name)
        .with_context(|| format!("unknown toolchain-built image {name}"))?;
    let executable =
        cached_output(program, layout).with_context(|| format!("cannot provide image {name}"))?;
    Ok(ImageSpec {
        name: name.to_owned(),
        architecture: "wasm".to_owned(),
        os: program.os.to_owned(),
        entrypoint: program.entrypoint.to_owned(),
        executable,
        files: Vec::new(),
        entries: Vec::new(),
        process: crate::Process::default(),
    })
}

/// Returns each image of [`WASM_PROGRAM_IMAGES`] whose program is not built for the current
/// sources, with the reason.
pub fn missing_wasm_programs() -> Vec<(&'static str, anyhow::Error)> {
    let layout = Layout::current();
    WASM_PROGRAM_IMAGES
        .iter()
        .filter_map(|name| program_image(name, &layout).err().map(|err| (*name, err)))
        .collect()
}

/// Fails, naming each one and why, if any image of [`WASM_PROGRAM_IMAGES`] is unavailable:
/// for callers (the end-to-end tests under `REQUIRE_MATRIX=1`) to whom a missing program is
/// a failure rather than a reason to skip.
pub fn require_wasm_programs() -> Result<()> {
    let missing = missing_wasm_programs();
    if missing.is_empty() {
        return Ok(());
    }
    let reasons: Vec<String> = missing
        .iter()
        .map(|(name, err)| format!("{name}: {err:#}"))
        .collect();
    bail!(
        "toolchain-built test programs are missing (`make programs` builds them): {}",
        reasons.join("; ")
    )
}

/// Reads the output for the current inputs, failing if it is missing or not what the
/// toolchain makes.
fn cached_output(program: &Program, layout: &Layout) -> Result<Vec<u8>> {
    let key = cache_key(program, layout)?;
    let path = layout.output(program, &key);
    valid_output(program, &path)?;
    fs::read(&path).with_context(|| format!("failed to read {}", path.display()))
}

/// Checks that `path` exists and starts as the program's kind of Wasm binary does.
fn valid_output(program: &Program, path: &Path) -> Result<()> {
    let mut header = [0u8; 8];
    let read = fs::File::open(path).and_then(|mut file| {
        use std::io::Read;
        file.read_exact(&mut header)
    });
    match read {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} is not built for the current sources, WIT files and tools \
             (`make programs` builds it)",
            path.display()
        ),
        Err(err) => return Err(err).with_context(|| format!("failed to read {}", path.display())),
    }
    let (expected, kind) = expected_header(program);
    ensure!(
        header == expected,
        "{} does not start as a {kind} does",
        path.display()
    );
    Ok(())
}

fn expected_header(program: &Program) -> (&'static [u8], &'static str) {
    match program.toolchain {
        Toolchain::ZigCc => (CORE_MODULE_HEADER, "core module"),
        Toolchain::ComponentizePy { .. } => (COMPONENT_WASM_HEADER, "component"),
    }
}

/// The key of a program's output: the first 16 hex digits of a SHA-256 over the recipe, the
/// tool's pinned version, the flags (or the world), every WIT file used and every source file,
/// each file by its relative path and contents.
fn cache_key(program: &Program, layout: &Layout) -> Result<String> {
    let mut key = KeyHasher::default();
    key.field("recipe", RECIPE_VERSION.as_bytes());
    key.field("program", program.name.as_bytes());
    match &program.toolchain {
        Toolchain::ZigCc => {
            let version = pinned_version(layout, ZIGLANG_PIN)?;
            key.field("tool", format!("ziglang=={version}").as_bytes());
            key.field("flags", ZIG_CC_FLAGS.join(" ").as_bytes());
        }
        Toolchain::ComponentizePy { wit, world } => {
            let version = pinned_version(layout, COMPONENTIZE_PY_PIN)?;
            key.field("tool", format!("componentize-py=={version}").as_bytes());
            key.field("world", world.as_bytes());
            key.field("module", PYTHON_APP_MODULE.as_bytes());
            let dir = wit_dir(wit, layout)?;
            for (relative, path) in files_under(&dir)? {
                key.file(&format!("wit/{relative}"), &path)?;
            }
        }
    }
    let sources = layout.sources(program);
    let files = files_under(&sources)?;
    ensure!(!files.is_empty(), "no sources in {}", sources.display());
    for (relative, path) in files {
        key.file(&format!("src/{relative}"), &path)?;
    }
    Ok(key.finish())
}

/// Hashes labelled fields, each length-prefixed so that no two sequences collide.
#[derive(Default)]
struct KeyHasher {
    bytes: Vec<u8>,
}

impl KeyHasher {
    fn field(&mut self, label: &str, value: &[u8]) {
        for part in [label.as_bytes(), value] {
            self.bytes
                .extend_from_slice(&(part.len() as u64).to_le_bytes());
            self.bytes.extend_from_slice(part);
        }
    }

    fn file(&mut self, label: &str, path: &Path) -> Result<()> {
        let contents =
            fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        self.field(label, &contents);
        Ok(())
    }

    fn finish(self) -> String {
        sha256_hex(&self.bytes)[..16].to_owned()
    }
}

/// Reads `NAME=value` from `scripts/wasm-tools.sh`.
fn pinned_version(layout: &Layout, variable: &str) -> Result<String> {
    let script = layout.tools_script();
    let text = fs::read_to_string(&script)
        .with_context(|| format!("failed to read {}", script.display()))?;
    let prefix = format!("{variable}=");
    text.lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
        .with_context(|| format!("{} does not set {variable}", script.display()))
}

/// Finds the WIT directory of the version of `wit.krate` that Cargo.lock names, in Cargo's
/// registry sources (`$CARGO_HOME/registry/src/<index>/<crate>-<version>/`).
fn wit_dir(wit: &Wit, layout: &Layout) -> Result<PathBuf> {
    let lock = layout.root.join("Cargo.lock");
    let text =
        fs::read_to_string(&lock).with_context(|| format!("failed to read {}", lock.display()))?;
    let version =
        locked_version(&text, wit.krate).with_context(|| format!("in {}", lock.display()))?;
    let registry = layout.cargo_home.join("registry/src");
    let crate_dir = format!("{}-{version}", wit.krate);
    let mut indexes: Vec<PathBuf> = fs::read_dir(&registry)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    indexes.sort();
    indexes
        .iter()
        .map(|index| index.join(&crate_dir).join(wit.dir))
        .find(|dir| dir.is_dir())
        .with_context(|| {
            format!(
                "the WIT files of {crate_dir} ({}) are not in {}/*/{crate_dir} \
                 (`cargo fetch` downloads the crate)",
                wit.dir,
                registry.display()
            )
        })
}

/// The one version of `name` in a Cargo.lock.
fn locked_version(lock: &str, name: &str) -> Result<String> {
    let mut versions = Vec::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            package.lines().find_map(|line| {
                let (k, v) = line.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        if field("name").as_deref() == Some(name) {
            versions.extend(field("version"));
        }
    }
    match versions.as_slice() {
        [version] => Ok(version.clone()),
        [] => bail!("no package {name}"),
        _ => bail!("several versions of {name}: {}", versions.join(", ")),
    }
}

/// Every file under `dir`, recursively, as (relative path with `/`, path), sorted by relative
/// path; Python's caches and hidden files are left out.
fn files_under(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let mut pending = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, current)) = pending.pop() {
        let entries = fs::read_dir(&current)
            .with_context(|| format!("failed to read {}", current.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("failed to read {}", current.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "__pycache__" || name.ends_with(".pyc") {
                continue;
            }
            let relative = format!("{prefix}{name}");
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push((format!("{relative}/"), path));
            } else {
                found.push((relative, path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Removes the program's outputs for other keys, which no current input can use.
fn prune(program: &Program, layout: &Layout, key: &str) {
    let Ok(entries) = fs::read_dir(layout.programs_dir()) else {
        return;
    };
    let prefix = format!("{}-", program.name);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(other) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".wasm"))
        else {
            continue;
        };
        let is_key = other.len() == key.len() && other.bytes().all(|b| b.is_ascii_hexdigit());
        if is_key && other != key {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[path = "programs_wasm_build.rs"]
mod build;

#[cfg(test)]
#[path = "programs_wasm_tests.rs"]
mod tests;
