//! Compiles the hand-written WAT test modules in `wat/` to Wasm binaries in OUT_DIR, so the
//! library can embed them with `include_bytes!` and nobody needs a Wasm toolchain.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let wat_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("wat");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR is not set")?);
    // Watching the directory as well catches added or removed modules.
    println!("cargo:rerun-if-changed={}", wat_dir.display());

    for source in wat_sources(&wat_dir)? {
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

/// Lists the `.wat` files in `dir`, sorted so build output does not depend on directory order.
fn wat_sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("failed to read {}", dir.display()))?;
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("failed to read an entry of {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "wat") {
            sources.push(path);
        }
    }
    sources.sort();
    Ok(sources)
}
