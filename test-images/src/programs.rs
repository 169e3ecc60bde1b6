//! The native C test programs in `c/`, compiled by build.rs for x86_64 Linux and embedded here,
//! and their linux/amd64 images. On other targets the embedded bytes are empty and the images
//! are unavailable, as for the other native images.

use anyhow::{Result, bail};

use crate::entry::Entry;
use crate::{
    DATA_DIR, DYNAMIC_IMAGE_NAME, ImageSpec, PAUSE_IMAGE_NAME, PROBE_IMAGE_NAME, SECRET_CONTENT,
    SECRET_PATH, native_image,
};

/// Embeds a program that build.rs compiled from `c/<name>.c`.
macro_rules! compiled_program {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $name))
    };
}

/// The static conformance probe (`c/probe.c`). Without arguments it prints one `key: value`
/// line per fact about its sandbox (capabilities, ids, namespaces, mounts, masked paths,
/// rlimits, cgroups, hostname, umask, fds, /dev, ...); `probe alloc <MiB>`, `probe open
/// <path>...` and `probe sleep` serve other tests (see the source).
pub const PROBE_ELF: &[u8] = compiled_program!("probe");
/// The static pause program (`c/pause.c`): idles, exits 0 on SIGINT or SIGTERM, reaps children,
/// and prints [`PAUSE_VERSION_LINE`] for `-v`.
pub const PAUSE_ELF: &[u8] = compiled_program!("pause");
/// The static attack program (`c/attack.c`) of the busybox image: ptrace and pidfd_getfd
/// against every other process it sees, one line per attempt that worked.
pub const ATTACK_ELF: &[u8] = compiled_program!("attack");
/// A setuid-root program that prints `Effective uid: <euid>` (critest's `nonewprivs` image).
pub const NNP_ELF: &[u8] = compiled_program!("nnp");
/// The dynamically linked hello program (`c/dynhello.c`), which prints [`DYNHELLO_MESSAGE`].
pub const DYNHELLO_ELF: &[u8] = compiled_program!("dynhello");
/// Every file [`DYNHELLO_ELF`] needs to start, as (absolute path, bytes): its shared libraries
/// and its ELF interpreter, as `ldd` found them on the build host.
pub const DYNHELLO_LIBS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/dynhello_libs.rs"));

/// What `pause -v` prints before it exits with status 0.
pub const PAUSE_VERSION_LINE: &str = "pause (wasmtime-shim-test) 1.0\n";
/// What the dynamic program prints before it exits with status 0.
pub const DYNHELLO_MESSAGE: &[u8] = b"hello from a dynamic binary\n";

/// Where each program lives in its image; each is also the image's entrypoint.
pub const PROBE_PATH: &str = "/probe";
pub const PAUSE_PATH: &str = "/pause";
pub const DYNHELLO_PATH: &str = "/dynhello";
/// Where the busybox image carries [`ATTACK_ELF`].
pub const ATTACK_PATH: &str = "/bin/attack";

/// Returns the probe image: `/probe`, the root-only [`SECRET_PATH`] (0600, `secret\n`), `/tmp`
/// (1777) and the empty directory [`DATA_DIR`] (0755) for volumes.
pub fn probe_image() -> Result<ImageSpec> {
    let mut image = compiled_image(PROBE_IMAGE_NAME, PROBE_PATH, PROBE_ELF)?;
    image.entries = vec![
        Entry::file(SECRET_PATH, SECRET_CONTENT, 0o600),
        Entry::dir("/tmp", 0o1777),
        Entry::dir(DATA_DIR, 0o755),
    ];
    Ok(image)
}

/// Returns the pause image, `/pause`.
pub fn pause_image() -> Result<ImageSpec> {
    compiled_image(PAUSE_IMAGE_NAME, PAUSE_PATH, PAUSE_ELF)
}

/// Returns the dynamic image: `/dynhello` and every file of [`DYNHELLO_LIBS`] at its path.
pub fn dynamic_image() -> Result<ImageSpec> {
    let mut image = compiled_image(DYNAMIC_IMAGE_NAME, DYNHELLO_PATH, DYNHELLO_ELF)?;
    image.files = DYNHELLO_LIBS
        .iter()
        .map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec()))
        .collect();
    Ok(image)
}

/// Like [`native_image`], but also failing where build.rs compiled nothing (a target that is
/// x86_64 but not Linux), rather than making an image whose entrypoint is empty.
fn compiled_image(name: &str, entrypoint: &str, executable: &[u8]) -> Result<ImageSpec> {
    let image = native_image(name, entrypoint, executable.to_vec())?;
    if executable.is_empty() {
        bail!("cannot provide image {name}: its program is only built for x86_64 Linux");
    }
    Ok(image)
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
#[path = "programs_tests.rs"]
mod tests;
