//! Reads `ldd` output. build.rs includes this file (`#[path]`) to find what the dynamically
//! linked test program needs; the library uses it for the libraries of critest's nginx.

use anyhow::{Result, bail};

/// Returns the absolute paths of the shared libraries and the ELF interpreter in `ldd`'s output,
/// sorted and without repeats. Entries without a file, like the vDSO, are skipped; a library
/// that ldd could not find, or a program that is not dynamically linked, is an error because
/// the image would not run.
pub fn needed_files(output: &str) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for line in output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, or the interpreter's
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`, or the vDSO's `linux-vdso.so.1 (0x...)`.
        let file = match line.split_once("=>") {
            Some((name, found)) => {
                let found = found.trim();
                if found.starts_with("not found") {
                    bail!("ldd could not find {}", name.trim());
                }
                found
            }
            None if line.contains("not a dynamic executable") || line == "statically linked" => {
                bail!("ldd says the program is not dynamically linked: {line}")
            }
            None => line,
        };
        let path = file.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            paths.push(path.to_owned());
        }
    }
    if paths.is_empty() {
        bail!("ldd listed no library files in {output:?}");
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_and_interpreter_are_found_and_the_vdso_skipped() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd1b5f2000)\n\
            \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0e1c000000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1be00000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1c1f0000)\n";
        assert_eq!(
            needed_files(output).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn missing_libraries_and_static_programs_are_errors() {
        let missing = "\tlibnope.so.1 => not found\n\t/lib64/ld-linux-x86-64.so.2 (0x1)\n";
        let err = needed_files(missing).unwrap_err().to_string();
        assert!(err.contains("could not find libnope.so.1"), "{err}");
        for output in ["\tnot a dynamic executable\n", "\tstatically linked\n", ""] {
            assert!(needed_files(output).is_err(), "{output:?}");
        }
    }
}
