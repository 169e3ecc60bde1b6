//! Compiles the test programs into OUT_DIR so the library can embed them with `include_bytes!`:
//! the hand-written WAT modules in `wat/` (with the `wat` crate, so nobody needs a Wasm
//! toolchain) and the C programs in `c/` (with the system's `cc`, which Rust's linking needs
//! anyway). For the dynamically linked program it also finds the libraries the image must carry.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

#[path = "src/ldd.rs"]
mod ldd;

/// One C program in `c/`.
struct Program {
    /// The output file in OUT_DIR.
    name: &'static str,
    /// The sources in `c/` (headers there are found by `#include "..."`).
    sources: &'static [&'static str],
    /// Static programs need nothing else in their images; the dynamic one is so on purpose.
    static_link: bool,
}

const PROGRAMS: &[Program] = &[
    Program {
        name: "probe",
        sources: &["probe.c", "probe_util.c", "probe_report.c", "probe_fs.c"],
        static_link: true,
    },
    Program {
        name: "pause",
        sources: &["pause.c"],
        static_link: true,
    },
    Program {
        name: "nnp",
        sources: &["nnp.c"],
        static_link: true,
    },
    Program {
        name: "attack",
        sources: &["attack.c"],
        static_link: true,
    },
    Program {
        name: DYNAMIC_PROGRAM,
        sources: &["dynhello.c"],
        static_link: false,
    },
];
/// The C program linked dynamically, whose libraries the image must carry.
const DYNAMIC_PROGRAM: &str = "dynhello";
/// The generated Rust slice of `(absolute path, bytes)` for each file DYNAMIC_PROGRAM needs.
const DYNAMIC_LIBS_RS: &str = "dynhello_libs.rs";

fn main() -> Result<()> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR is not set")?);
    compile_wat(&manifest_dir.join("wat"), &out_dir)?;
    compile_c(&manifest_dir.join("c"), &out_dir)
}

fn compile_wat(wat_dir: &Path, out_dir: &Path) -> Result<()> {
    // Watching the directory as well catches added or removed modules.
    println!("cargo:rerun-if-changed={}", wat_dir.display());
    for source in sources(wat_dir, "wat")? {
        println!("cargo:rerun-if-changed={}", source.display());
        let wasm = wat::parse_file(&source)
            .with_context(|| format!("failed to compile {}", source.display()))?;
        let target = out_dir.join(
            source
                .with_extension("wasm")
                .file_name()
                .unwrap_or_default(),
        );
        fs::write(&target, wasm)
            .with_context(|| format!("failed to write {}", target.display()))?;
    }
    Ok(())
}

/// Builds the native programs, which are x86_64 Linux only like the rest of the native images.
/// For other targets it writes empty stand-ins, so `include_bytes!` still works and the library
/// reports the images as unavailable instead of the build failing.
fn compile_c(c_dir: &Path, out_dir: &Path) -> Result<()> {
    // Watching the directory catches edited headers as well as sources.
    println!("cargo:rerun-if-changed={}", c_dir.display());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if arch != "x86_64" || os != "linux" {
        for program in PROGRAMS {
            write(&out_dir.join(program.name), b"")?;
        }
        return write(&out_dir.join(DYNAMIC_LIBS_RS), b"&[]\n");
    }

    for program in PROGRAMS {
        let target = out_dir.join(program.name);
        let sources: Vec<PathBuf> = program.sources.iter().map(|s| c_dir.join(s)).collect();
        for source in &sources {
            println!("cargo:rerun-if-changed={}", source.display());
        }
        // -s drops the symbol table, which would otherwise name the sources' absolute paths
        // and so make the bytes depend on where the checkout lives.
        let mut args: Vec<&OsStr> = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-s"]
            .map(OsStr::new)
            .to_vec();
        if program.static_link {
            args.push(OsStr::new("-static"));
        }
        args.extend([OsStr::new("-o"), target.as_os_str()]);
        args.extend(sources.iter().map(|source| source.as_os_str()));
        run_cc(&args, program.name)?;
    }

    let dynamic = out_dir.join(DYNAMIC_PROGRAM);
    let listing = run_ldd(&dynamic)?;
    let needed = ldd::needed_files(&listing)
        .with_context(|| format!("cannot tell what {} needs", dynamic.display()))?;
    let mut slice = String::from("&[\n");
    for path in &needed {
        // A library update on the host then rebuilds the image with the new file.
        println!("cargo:rerun-if-changed={path}");
        slice.push_str(&format!(
            "    ({path:?}, include_bytes!({path:?}) as &[u8]),\n"
        ));
    }
    slice.push_str("]\n");
    write(&out_dir.join(DYNAMIC_LIBS_RS), slice.as_bytes())
}

/// Runs `cc`, passing its warnings on to cargo and failing with its messages and a hint at
/// what to install.
fn run_cc(args: &[&OsStr], program: &str) -> Result<()> {
    let output = run("cc", args).map_err(|err| match err.kind() {
        ErrorKind::NotFound => anyhow::anyhow!(
            "cannot compile the test program {program}: there is no C compiler `cc`; install \
             gcc (on Debian: apt-get install gcc libc6-dev)"
        ),
        _ => anyhow::Error::new(err).context(format!("failed to run cc for {program}")),
    })?;
    let messages = String::from_utf8_lossy(&output.stderr);
    for line in messages.lines() {
        println!("cargo:warning={line}");
    }
    if !output.status.success() {
        bail!(
            "cc failed to compile the test program {program} ({}); it needs gcc with the \
             static C library (on Debian: apt-get install gcc libc6-dev):\n{messages}",
            output.status
        );
    }
    Ok(())
}

fn run_ldd(program: &Path) -> Result<String> {
    let output = run("ldd", &[program.as_os_str()]).map_err(|err| match err.kind() {
        ErrorKind::NotFound => anyhow::anyhow!(
            "cannot list the libraries of {}: there is no `ldd` (on Debian it is in libc-bin)",
            program.display()
        ),
        _ => anyhow::Error::new(err).context(format!("failed to run ldd {}", program.display())),
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "ldd {} failed ({}): {stdout}{}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

fn run(program: &str, args: &[&OsStr]) -> std::io::Result<Output> {
    Command::new(program).args(args).output()
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("failed to write {}", path.display()))
}

/// Lists the files in `dir` with the extension `ext`, sorted so build output does not depend
/// on directory order.
fn sources(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("failed to read {}", dir.display()))?;
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("failed to read an entry of {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|found| found == ext) {
            sources.push(path);
        }
    }
    sources.sort();
    Ok(sources)
}
