//! Writes the test image tarballs: `test-images <out-dir>`, `test-images --programs`,
//! `test-images --list` or `test-images --write-module <name> <file>`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

const USAGE: &str = "usage: test-images <out-dir>   build the missing toolchain-built programs,
                               then write <out-dir>/<name>.tar for every image
       test-images --programs  only build the missing toolchain-built programs into
                               .dev/programs (installing the toolchains if needed)
       test-images --list      print every image reference
       test-images --write-module <name> <file>
                               write the executable of image <name> (the module)
                               to <file>, for tools outside containerd";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(err) => {
            // The alternate form prints the whole context chain on one line, without the
            // backtrace that returning the error from main would add under RUST_BACKTRACE.
            eprintln!("test-images: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode> {
    match args {
        [flag] if flag == "--list" => {
            for image in test_images::all_images() {
                println!("{}", test_images::reference(&image.name));
            }
        }
        [flag] if flag == "-h" || flag == "--help" => println!("{USAGE}"),
        [flag, name, file] if flag == "--write-module" => {
            let image = test_images::image(name)?;
            std::fs::write(file, &image.executable)
                .with_context(|| format!("write the module of {name} to {file}"))?;
        }
        [flag] if flag == "--programs" => {
            for program in test_images::build_wasm_programs()? {
                println!("{}", program.path.display());
            }
        }
        [dir] if !dir.starts_with('-') => {
            test_images::build_wasm_programs()?;
            // Saying why an image is missing saves a confused search for it later.
            for (name, err) in test_images::unavailable_images() {
                eprintln!("skipping {name}: {err:#}");
            }
            for (path, reference) in test_images::write_all_images(Path::new(dir))? {
                println!("{} {reference}", path.display());
            }
        }
        _ => {
            eprintln!("{USAGE}");
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}
