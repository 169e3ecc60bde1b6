//! Just enough ELF reading to tell a static executable from a dynamic one: an image that gets a
//! host binary (busybox) must not get one that needs libraries the image lacks.

use anyhow::{Result, bail};

/// The program header type that names the dynamic loader.
const PT_INTERP: u32 = 3;

/// Returns the interpreter (dynamic loader) path of a 64-bit little-endian ELF executable, or
/// `None` for a static one.
pub fn interpreter(elf: &[u8]) -> Result<Option<String>> {
    if elf.get(..4) != Some(b"\x7fELF") {
        bail!("not an ELF file");
    }
    if elf.get(4..6) != Some(&[2, 1]) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let phoff = usize::try_from(u64_at(elf, 32)?)?;
    let phentsize = usize::from(u16_at(elf, 54)?);
    let phnum = usize::from(u16_at(elf, 56)?);
    for index in 0..phnum {
        let header = phoff + index * phentsize;
        if u32_at(elf, header)? != PT_INTERP {
            continue;
        }
        let offset = usize::try_from(u64_at(elf, header + 8)?)?;
        let size = usize::try_from(u64_at(elf, header + 32)?)?;
        let Some(name) = elf.get(offset..offset + size) else {
            bail!("the interpreter name lies outside the file");
        };
        let name = name.split(|byte| *byte == 0).next().unwrap_or_default();
        return Ok(Some(String::from_utf8_lossy(name).into_owned()));
    }
    Ok(None)
}

fn bytes_at<const N: usize>(elf: &[u8], offset: usize) -> Result<[u8; N]> {
    match elf.get(offset..offset + N) {
        Some(bytes) => Ok(bytes.try_into()?),
        None => bail!("the ELF file is truncated"),
    }
}

fn u16_at(elf: &[u8], offset: usize) -> Result<u16> {
    bytes_at(elf, offset).map(u16::from_le_bytes)
}

fn u32_at(elf: &[u8], offset: usize) -> Result<u32> {
    bytes_at(elf, offset).map(u32::from_le_bytes)
}

fn u64_at(elf: &[u8], offset: usize) -> Result<u64> {
    bytes_at(elf, offset).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_executables_are_static() {
        assert_eq!(interpreter(&crate::native_hello_elf()).unwrap(), None);
    }

    #[test]
    fn non_elf_and_truncated_input_are_errors() {
        assert!(interpreter(b"#!/bin/sh\n").is_err());
        assert!(interpreter(b"\x7fELF\x02\x01").is_err());
        assert!(interpreter(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0").is_err());
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn compiled_programs_are_static_or_name_their_loader() {
        assert_eq!(interpreter(crate::PROBE_ELF).unwrap(), None);
        assert_eq!(interpreter(crate::PAUSE_ELF).unwrap(), None);
        let loader = interpreter(crate::DYNHELLO_ELF).unwrap().unwrap();
        assert!(
            loader.starts_with('/') && loader.contains("ld-"),
            "{loader}"
        );
    }
}
