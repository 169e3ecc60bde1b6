//! Programs the suites take from outside the build: cri-tools' `crictl`
//! and `critest`, and what scripts/containerd-versions.sh unpacks into
//! `.dev/versions` (Debian's docker-registry and nginx). Under `make test`
//! (REQUIRE_MATRIX) a missing one fails the suite; elsewhere it is skipped
//! with the reason.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace's checkout.
fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `.dev/versions/<what>` of the checkout, where containerd-versions.sh
/// unpacks Debian's packages.
pub fn unpacked(what: &str) -> PathBuf {
    workspace().join(".dev/versions").join(what)
}

/// cri-tools' `name` (`crictl`, `critest`): the path in the environment
/// variable of its name in capitals, else the machine's tools beside the
/// checkout (`../shared/tools`, as on the machines this project is built
/// on) or under /work/shared.
pub fn cri_tool(name: &str) -> Option<PathBuf> {
    let tool = format!("shared/tools/cri-tools-1.34.0/{name}");
    let candidates: Vec<PathBuf> = match std::env::var_os(name.to_uppercase()) {
        Some(path) => vec![path.into()],
        None => vec![
            workspace().join("..").join(&tool),
            Path::new("/work").join(&tool),
        ],
    };
    let why = format!(
        "{name} is missing (looked at {candidates:?}; set {})",
        name.to_uppercase()
    );
    found(candidates.into_iter().find(|p| p.exists()), &why)
}

/// `path` if it exists, else `None` after saying `why`, or a failure under
/// `make test`.
pub fn required(path: PathBuf, why: &str) -> Option<PathBuf> {
    let exists = path.exists();
    found(exists.then_some(path), why)
}

fn found(path: Option<PathBuf>, why: &str) -> Option<PathBuf> {
    if path.is_none() {
        assert!(std::env::var_os("REQUIRE_MATRIX").is_none(), "{why}");
        eprintln!("skipping: {why}");
    }
    path
}
