//! The deliberately broken inputs of the `bad` image, which end-to-end tests use to check the
//! errors the shim reports for things that are not runnable WASI preview 1 commands.

use crate::wasm::NOSTART_WASM;

/// The image's entrypoint: a text file with a `.wasm` name.
pub const NOT_WASM_PATH: &str = "/notwasm.wasm";
/// A zero-length file with a `.wasm` name.
pub const EMPTY_WASM_PATH: &str = "/empty.wasm";
/// A valid WASI core module without a `_start` export ([`NOSTART_WASM`]).
pub const NOSTART_WASM_PATH: &str = "/nostart.wasm";
/// The header of a Wasm component, which a preview 1 shim cannot run.
pub const COMPONENT_WASM_PATH: &str = "/component.wasm";

/// The content of [`NOT_WASM_PATH`].
pub const NOT_WASM: &[u8] = b"this is not a wasm module\n";
/// The content of [`COMPONENT_WASM_PATH`]: the `\0asm` magic followed by the component
/// layer's version 0x0d and layer 1. A header alone is enough because the shim should refuse
/// a component before it parses any section.
pub const COMPONENT_WASM_HEADER: &[u8] = b"\0asm\x0d\x00\x01\x00";

/// The files the image carries beside its entrypoint, as (absolute path, bytes).
pub fn bad_extra_files() -> Vec<(String, Vec<u8>)> {
    [
        (EMPTY_WASM_PATH, &[][..]),
        (NOSTART_WASM_PATH, NOSTART_WASM),
        (COMPONENT_WASM_PATH, COMPONENT_WASM_HEADER),
    ]
    .into_iter()
    .map(|(path, bytes)| (path.to_owned(), bytes.to_vec()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_header_is_the_component_magic_and_version() {
        assert_eq!(COMPONENT_WASM_HEADER.len(), 8);
        assert_eq!(&COMPONENT_WASM_HEADER[..4], b"\0asm");
        assert_eq!(&COMPONENT_WASM_HEADER[4..], &[0x0d, 0x00, 0x01, 0x00]);
    }

    #[test]
    fn not_wasm_lacks_the_wasm_magic() {
        assert!(!NOT_WASM.starts_with(b"\0asm"));
    }
}
