//! Writes the test image tarballs: `test-images <out-dir>` or `test-images --list`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

const USAGE: &str = "usage: test-images <out-dir>   write <out-dir>/<name>.tar for every image
       test-images --list      print every image reference";

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
        [dir] if !dir.starts_with('-') => {
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
