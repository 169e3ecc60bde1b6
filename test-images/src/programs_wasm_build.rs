//! Building one toolchain program: installing the pinned toolchains, staging the sources,
//! running the tool and moving its checked output into place.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

use super::{
    Layout, PYTHON_APP_MODULE, Program, Toolchain, ZIG_CC_FLAGS, files_under, valid_output, wit_dir,
};

/// The installed toolchains.
pub(super) struct Tools {
    /// The venv's python (runs `-m ziglang`).
    python: PathBuf,
    componentize_py: PathBuf,
}

impl Tools {
    /// Runs `scripts/wasm-tools.sh <venv>`, which installs the pinned versions unless the venv
    /// has them already and prints the venv's python.
    pub(super) fn install(layout: &Layout) -> Result<Self> {
        let script = layout.tools_script();
        let venv = layout.venv();
        let output = Command::new("bash")
            .arg(&script)
            .arg(&venv)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("failed to run {}", script.display()))?;
        ensure!(
            output.status.success(),
            "{} {} failed with {}",
            script.display(),
            venv.display(),
            output.status
        );
        let python = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let componentize_py = venv.join("bin/componentize-py");
        for tool in [&python, &componentize_py] {
            ensure!(
                tool.is_file(),
                "{} did not install {}",
                script.display(),
                tool.display()
            );
        }
        Ok(Self {
            python,
            componentize_py,
        })
    }
}

/// Builds one program into `out`: its sources are copied into a private staging directory
/// (so that no tool writes next to them, and only what the key hashed goes in), the tool
/// writes there, and the checked output is renamed into place.
pub(super) fn build(program: &Program, layout: &Layout, tools: &Tools, out: &Path) -> Result<()> {
    let dir = layout.programs_dir();
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let stage = Stage::new(dir.join(format!(".build-{}-{}", program.name, std::process::id())))?;
    let sources = stage.path.join("src");
    let files = files_under(&layout.sources(program))?;
    for (relative, path) in &files {
        let target = sources.join(relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("failed to create {}", parent.display()))?;
        }
        fs::copy(path, &target).with_context(|| format!("failed to copy {}", path.display()))?;
    }
    let staged_out = stage.path.join("out.wasm");
    let mut command = match &program.toolchain {
        Toolchain::ZigCc => {
            let mut command = Command::new(&tools.python);
            command
                .args(["-m", "ziglang", "cc"])
                .args(ZIG_CC_FLAGS)
                .arg("-o")
                .arg(&staged_out)
                .args(
                    files
                        .iter()
                        .map(|(relative, _)| relative)
                        .filter(|relative| relative.ends_with(".c")),
                )
                .current_dir(&sources)
                .env("ZIG_GLOBAL_CACHE_DIR", layout.zig_cache())
                .env("ZIG_LOCAL_CACHE_DIR", layout.zig_cache());
            command
        }
        Toolchain::ComponentizePy { wit, world } => {
            let mut command = Command::new(&tools.componentize_py);
            command
                .arg("--quiet")
                .arg("--wit-path")
                .arg(wit_dir(wit, layout)?)
                .args(["--world", world, "componentize", "--python-path"])
                .arg(&sources)
                .arg(PYTHON_APP_MODULE)
                .arg("--output")
                .arg(&staged_out)
                .current_dir(&stage.path)
                // Only the staged sources and the Python standard library go in.
                .env_remove("VIRTUAL_ENV")
                .env_remove("PYTHONPATH")
                .env_remove("PYTHONHOME")
                .env("PYTHONDONTWRITEBYTECODE", "1");
            command
        }
    };
    run(&mut command)?;
    valid_output(program, &staged_out)?;
    fs::rename(&staged_out, out).with_context(|| {
        format!(
            "failed to move {} to {}",
            staged_out.display(),
            out.display()
        )
    })
}

/// Runs a tool, failing with its command line and output if it fails.
fn run(command: &mut Command) -> Result<()> {
    let line = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {line}"))?;
    if !output.status.success() {
        bail!(
            "{line} failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A staging directory, removed when dropped.
struct Stage {
    path: PathBuf,
}

impl Stage {
    fn new(path: PathBuf) -> Result<Self> {
        // A directory left by a killed build with a recycled pid.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
