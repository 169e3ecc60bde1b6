//! A large module, written byte by byte: a `_start` that returns at once
//! and many filler functions that only make it slow to compile (about
//! 13 MB; cranelift needs seconds for it). Tests use it for a Create that
//! outlasts its caller; it is generated rather than written as WAT because
//! parsing tens of MB of text would slow every build.

/// Filler functions after `_start`.
const FILLERS: u32 = 32_000;

/// Each filler's arithmetic, repeated: local.get 0, i32.const 7, i32.mul,
/// i32.const 3, i32.add, local.set 0.
const STEP: [u8; 10] = [0x20, 0x00, 0x41, 0x07, 0x6c, 0x41, 0x03, 0x6a, 0x21, 0x00];
const STEPS: usize = 40;

/// The module's bytes.
pub fn big_module() -> Vec<u8> {
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 is [] -> [], 1 is [i32] -> [i32].
    section(
        &mut module,
        1,
        &[0x02, 0x60, 0x00, 0x00, 0x60, 0x01, 0x7f, 0x01, 0x7f],
    );
    let mut functions = Vec::new();
    leb(&mut functions, FILLERS + 1);
    functions.push(0x00);
    functions.extend(std::iter::repeat_n(0x01, FILLERS as usize));
    section(&mut module, 3, &functions);
    let mut exports = vec![0x01];
    leb(&mut exports, 6);
    exports.extend_from_slice(b"_start");
    exports.extend_from_slice(&[0x00, 0x00]);
    section(&mut module, 7, &exports);
    let mut filler = vec![0x00];
    for _ in 0..STEPS {
        filler.extend_from_slice(&STEP);
    }
    filler.extend_from_slice(&[0x20, 0x00, 0x0b]);
    let mut code = Vec::new();
    leb(&mut code, FILLERS + 1);
    code.extend_from_slice(&[0x02, 0x00, 0x0b]);
    for _ in 0..FILLERS {
        leb(&mut code, filler.len() as u32);
        code.extend_from_slice(&filler);
    }
    section(&mut module, 10, &code);
    module
}

fn section(module: &mut Vec<u8>, id: u8, body: &[u8]) {
    module.push(id);
    leb(module, body.len() as u32);
    module.extend_from_slice(body);
}

/// Unsigned LEB128, as the binary format writes sizes and counts.
fn leb(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128() {
        let encode = |value| {
            let mut out = Vec::new();
            leb(&mut out, value);
            out
        };
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(127), [0x7f]);
        assert_eq!(encode(128), [0x80, 0x01]);
        assert_eq!(encode(624_485), [0xe5, 0x8e, 0x26]);
    }

    #[test]
    fn big_module_is_large_and_starts_as_wasm() {
        let module = big_module();
        assert!(module.starts_with(b"\0asm\x01\0\0\0"));
        assert!(module.len() > 12_000_000, "{}", module.len());
    }
}
