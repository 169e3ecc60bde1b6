//! Mounts a test makes on the host, undone when dropped.

use std::path::PathBuf;

use nix::mount::{MsFlags, mount};

/// A tmpfs a test mounted, unmounted with whatever was mounted or carried
/// into it when dropped (before the fixture's directory is removed).
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(path: PathBuf) -> Tmpfs {
        Self::with_options(path, None)
    }

    /// A tmpfs with mount `options` (`size=1m`).
    pub fn with_options(path: PathBuf, options: Option<&str>) -> Tmpfs {
        std::fs::create_dir_all(&path).unwrap();
        mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            MsFlags::empty(),
            options,
        )
        .unwrap_or_else(|e| panic!("mount a tmpfs on {}: {e}", path.display()));
        Tmpfs(path)
    }

    /// The same, a shared mount: what a Bidirectional volume's host path
    /// must be (the CRI checks).
    pub fn shared(path: PathBuf) -> Tmpfs {
        let tmpfs = Tmpfs::mount(path);
        mount(
            None::<&str>,
            &tmpfs.0,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("make {} shared: {e}", tmpfs.0.display()));
        tmpfs
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = std::process::Command::new("umount")
            .args(["-R", "-l"])
            .arg(&self.0)
            .status();
        assert!(status.is_ok_and(|s| s.success()), "umount {:?}", self.0);
    }
}
