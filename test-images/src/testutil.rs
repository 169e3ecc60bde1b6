//! Helpers for the unit tests: reading tars back and running embedded executables.

use std::collections::BTreeMap;
use std::io::Read;

use tar::EntryType;

/// The header fields the tests care about, with the entry's data.
#[derive(Debug)]
pub struct TarEntry {
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub data: Vec<u8>,
    /// The target of a symlink.
    pub link: Option<String>,
    /// The major and minor numbers of a device node.
    pub device: Option<(u32, u32)>,
}

pub type TarEntries = BTreeMap<String, TarEntry>;

/// The blob of an OCI layout that a descriptor names, checked against the
/// descriptor's digest and size.
pub fn blob<'a>(files: &'a TarEntries, descriptor: &serde_json::Value) -> &'a [u8] {
    let named = descriptor["digest"].as_str().unwrap();
    let hex = named.strip_prefix("sha256:").unwrap();
    let data = &files[&format!("blobs/sha256/{hex}")].data;
    assert_eq!(
        crate::digest::digest(data),
        named,
        "blob content matches its name"
    );
    assert_eq!(descriptor["size"].as_u64(), Some(data.len() as u64));
    data
}

/// Reads every entry of a tar, keyed by path, checking that none carries a user or group name.
pub fn entries(tar_bytes: &[u8]) -> TarEntries {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut found = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let link = entry
            .link_name_bytes()
            .map(|bytes| String::from_utf8(bytes.into_owned()).unwrap());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        assert!(
            header.username().unwrap().unwrap_or("").is_empty(),
            "{path}"
        );
        assert!(
            header.groupname().unwrap().unwrap_or("").is_empty(),
            "{path}"
        );
        let kind = header.entry_type();
        let device = matches!(kind, EntryType::Char | EntryType::Block).then(|| {
            (
                header.device_major().unwrap().unwrap(),
                header.device_minor().unwrap().unwrap(),
            )
        });
        let fields = TarEntry {
            kind,
            mode: header.mode().unwrap(),
            uid: header.uid().unwrap(),
            gid: header.gid().unwrap(),
            mtime: header.mtime().unwrap(),
            data,
            link,
            device,
        };
        assert!(found.insert(path.clone(), fields).is_none(), "{path} twice");
    }
    found
}

/// Lists the paths of a tar's entries in archive order, which `entries` does not keep.
pub fn paths_in_order(tar_bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| String::from_utf8(entry.unwrap().path_bytes().into_owned()).unwrap())
        .collect()
}

/// Writes `elf` to a fresh temp file, starts it with `args`, null stdin and piped stdout and
/// stderr, and deletes the file again, which Linux allows while it runs.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub fn spawn_program(name: &str, elf: &[u8], args: &[&str]) -> std::process::Child {
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    /// errno of exec on a file that some process holds open for writing.
    const ETXTBSY: i32 = 26;

    let path = std::env::temp_dir().join(format!(
        "test-images-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&path, elf).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A child forked by a concurrent test can briefly inherit the descriptor that wrote the
    // file, until it execs; exec fails with ETXTBSY meanwhile, so retry a few times.
    let mut attempts = 0;
    let child = loop {
        let spawned = Command::new(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Err(err) if err.raw_os_error() == Some(ETXTBSY) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other,
        }
    };
    // Removing first keeps the temp dir clean even when the spawn or a later assertion fails.
    std::fs::remove_file(&path).unwrap();
    child.unwrap()
}

/// Reads the first line of a child's stdout on another thread, giving up after 10 s, so that
/// a program that idles without writing fails the test instead of hanging it.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub fn first_line(child: &mut std::process::Child) -> Option<String> {
    use std::io::BufRead;

    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(read.map(|_| line));
    });
    receiver
        .recv_timeout(std::time::Duration::from_secs(10))
        .ok()
        .and_then(Result::ok)
}
