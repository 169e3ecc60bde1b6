//! The `busybox` image: the host's static busybox (Debian's busybox-static) at `/bin/busybox`
//! with a few applet symlinks, for tests that need a shell and basic tools in a native
//! container. The binary is read when the image is made, not embedded at build time, so that
//! building the crate does not need busybox installed.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::entry::Entry;
use crate::{BUSYBOX_IMAGE_NAME, ImageSpec, native_image};

/// Where the image's busybox comes from on the host, and where it goes in the image.
pub const BUSYBOX_PATH: &str = "/bin/busybox";
/// The applets that get a symlink `/bin/<applet>` → `busybox`; `/bin/sh` is the entrypoint.
pub const BUSYBOX_APPLETS: &[&str] = &["sh", "echo", "cat", "sleep", "ls"];

/// Returns the busybox image, failing when the host has no static `/bin/busybox`.
pub fn busybox_image() -> Result<ImageSpec> {
    busybox_image_from(Path::new(BUSYBOX_PATH))
}

fn busybox_image_from(host_path: &Path) -> Result<ImageSpec> {
    // The entrypoint is a symlink, so the executable stays empty and the entries provide
    // both busybox and the `/bin/sh` link to it. Made first, to report an unsupported
    // architecture before a missing file.
    let mut image = native_image(BUSYBOX_IMAGE_NAME, "/bin/sh", Vec::new())?;
    let busybox = match std::fs::read(host_path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "cannot provide image {BUSYBOX_IMAGE_NAME}: {} is missing; install busybox-static \
             (scripts/deps.sh does)",
            host_path.display()
        ),
        Err(err) => {
            return Err(err).with_context(|| {
                format!(
                    "cannot provide image {BUSYBOX_IMAGE_NAME}: failed to read {}",
                    host_path.display()
                )
            });
        }
    };
    // Debian's plain `busybox` package also installs /bin/busybox, linked dynamically; in an
    // image without libraries it would not start, so say which package is needed.
    let interpreter = crate::elf::interpreter(&busybox).with_context(|| {
        format!(
            "cannot provide image {BUSYBOX_IMAGE_NAME}: {} is not an executable",
            host_path.display()
        )
    })?;
    if let Some(interpreter) = interpreter {
        bail!(
            "cannot provide image {BUSYBOX_IMAGE_NAME}: {} is linked dynamically (it needs \
             {interpreter}); install busybox-static instead",
            host_path.display()
        );
    }

    image.entries = std::iter::once(Entry::file(BUSYBOX_PATH, busybox, 0o755))
        .chain(
            BUSYBOX_APPLETS
                .iter()
                .map(|applet| Entry::symlink(&format!("/bin/{applet}"), "busybox")),
        )
        .chain(std::iter::once(Entry::file(
            crate::ATTACK_PATH,
            crate::ATTACK_ELF.to_vec(),
            0o755,
        )))
        .collect();
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_busybox_asks_for_busybox_static() {
        let err = busybox_image_from(Path::new("/nonexistent/busybox")).unwrap_err();
        let err = format!("{err:#}");
        if cfg!(target_arch = "x86_64") {
            assert!(err.contains("/nonexistent/busybox is missing"), "{err}");
            assert!(err.contains("install busybox-static"), "{err}");
        }
        assert!(err.contains("cannot provide image busybox"), "{err}");
    }

    /// Writes `bytes` to a fresh temp file standing in for the host's busybox.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn fake_busybox(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "test-images-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn a_static_busybox_goes_in_with_applet_links_and_sh_as_the_entrypoint() {
        // Any static executable will do; the compiled pause program is one.
        let path = fake_busybox("busybox-static", crate::PAUSE_ELF);
        let image = busybox_image_from(&path);
        std::fs::remove_file(&path).unwrap();
        let image = image.unwrap();
        assert_eq!(image.entrypoint, "/bin/sh");
        assert!(image.executable.is_empty());
        assert_eq!(
            image.entries[0],
            Entry::file("/bin/busybox", crate::PAUSE_ELF, 0o755)
        );
        let links: Vec<&Entry> = image.entries[1..=BUSYBOX_APPLETS.len()].iter().collect();
        assert_eq!(
            image.entries.last(),
            Some(&Entry::file(
                crate::ATTACK_PATH,
                crate::ATTACK_ELF.to_vec(),
                0o755
            ))
        );
        for (link, applet) in links.iter().zip(BUSYBOX_APPLETS) {
            assert_eq!(**link, Entry::symlink(&format!("/bin/{applet}"), "busybox"));
        }
        assert!(crate::image_archive(&image).is_ok());
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn a_dynamic_busybox_asks_for_busybox_static() {
        let path = fake_busybox("busybox-dynamic", crate::DYNHELLO_ELF);
        let err = busybox_image_from(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        let err = format!("{err:#}");
        assert!(err.contains("is linked dynamically"), "{err}");
        assert!(err.contains("install busybox-static"), "{err}");
    }
}
