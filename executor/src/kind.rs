//! Tells what kind of workload a file holds from its first bytes.

/// What a container's args[0] turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A core Wasm module (`\0asm`, version 1).
    CoreModule,
    /// A Wasm component (`\0asm`, layer 1).
    Component,
    /// A native ELF executable or a `#!` script.
    Native,
    /// Anything else; the field says what was seen, for the error message.
    Unknown(&'static str),
}

pub fn detect(bytes: &[u8]) -> Kind {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.is_empty() {
        return Kind::Unknown("the file is empty");
    }
    if bytes.starts_with(MAGIC) {
        return match bytes.get(4..8) {
            Some([1, 0, 0, 0]) => Kind::CoreModule,
            Some([_, _, 1, 0]) => Kind::Component,
            _ => Kind::Unknown("it has the wasm magic but an unknown version"),
        };
    }
    if bytes.starts_with(b"\x7fELF") || bytes.starts_with(b"#!") {
        return Kind::Native;
    }
    Kind::Unknown("it is not a WebAssembly module (no \\0asm magic)")
}

/// Whether a component's exports make it an HTTP handler, from its bytes:
/// the engine depends on it, so this is known before compiling.
pub fn is_http_proxy(bytes: &[u8]) -> bool {
    use wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(Payload::ModuleSection { .. } | Payload::ComponentSection { .. }) => depth += 1,
            Ok(Payload::End(_)) => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Ok(Payload::ComponentExportSection(exports)) if depth == 0 => {
                let handler = exports.into_iter().flatten().any(|export| {
                    export
                        .name
                        .name
                        .starts_with("wasi:http/incoming-handler@0.2")
                });
                if handler {
                    return true;
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_kind() {
        assert_eq!(detect(b"\0asm\x01\0\0\0rest"), Kind::CoreModule);
        assert_eq!(detect(b"\0asm\x0d\0\x01\0"), Kind::Component);
        assert_eq!(detect(b"\x7fELF\x02\x01"), Kind::Native);
        assert_eq!(detect(b"#!/bin/sh\n"), Kind::Native);
        assert!(matches!(detect(b""), Kind::Unknown(r) if r.contains("empty")));
        assert!(matches!(detect(b"hello"), Kind::Unknown(r) if r.contains("not a WebAssembly")));
        assert!(matches!(detect(b"\0asm"), Kind::Unknown(r) if r.contains("version")));
    }
}
