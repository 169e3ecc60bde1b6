//! The containerd release the tests run against.

use std::process::Command;
use std::sync::OnceLock;

use super::containerd_bin;

/// The full version of the containerd under test, (major, minor, patch),
/// from `containerd --version` ("1.6.20~ds1", "v2.1.9+unknown").
pub fn containerd_version() -> (u32, u32, u32) {
    static VERSION: OnceLock<(u32, u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = Command::new(containerd_bin("containerd"))
            .arg("--version")
            .output()
            .expect("containerd --version");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        parse_containerd_version(&text).unwrap_or_else(|| panic!("no version in {text:?}"))
    })
}

/// The (major, minor, patch) of `containerd --version`'s output: its third
/// word, a leading `v` and any `~`, `+` or `-` suffix dropped.
pub fn parse_containerd_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text.split_whitespace().nth(2)?.trim_start_matches('v');
    let end = word.find(['~', '+', '-']).unwrap_or(word.len());
    let mut parts = word[..end].split('.').map(|part| part.parse().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}
