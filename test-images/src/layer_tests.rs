use tar::EntryType;

use super::*;
use crate::testutil::{entries, paths_in_order};

/// A wasm image at `/x.wasm` with the given extra entries.
fn with_entries(entries: Vec<Entry>) -> ImageSpec {
    ImageSpec {
        name: "x".to_owned(),
        architecture: "wasm".to_owned(),
        os: "wasip1".to_owned(),
        entrypoint: "/x.wasm".to_owned(),
        executable: b"module".to_vec(),
        files: Vec::new(),
        entries,
        process: crate::Process::default(),
    }
}

fn error(image: &ImageSpec) -> String {
    format!("{:#}", layer_tar(image).unwrap_err())
}

#[test]
fn tmp_stays_the_last_entry_even_when_the_executable_sorts_after_it() {
    let trap = crate::image("trap").unwrap();
    let layer = layer_tar(&trap).unwrap();
    assert_eq!(paths_in_order(&layer), ["trap.wasm", "tmp/"]);
}

#[test]
fn entries_of_every_kind_get_their_tar_type_mode_and_owner() {
    let image = with_entries(vec![
        Entry::block_device("/blk", 7, 0, 0o660),
        Entry::char_device("/chr", 1, 3, 0o666),
        Entry::file("/secret", "secret\n", 0o600),
        Entry::file("/owned", "mine", 0o640).owned_by(1000, 100),
        Entry::dir("/data", 0o755),
        Entry::symlink("/abs-link", "/secret"),
        Entry::symlink("/escape", "../../../../etc/hostname"),
    ]);
    let layer = entries(&layer_tar(&image).unwrap());
    let blk = &layer["blk"];
    assert_eq!(
        (blk.kind, blk.mode, blk.data.len()),
        (EntryType::Block, 0o660, 0)
    );
    assert_eq!(blk.device, Some((7, 0)));
    let chr = &layer["chr"];
    assert_eq!((chr.kind, chr.mode), (EntryType::Char, 0o666));
    assert_eq!(chr.device, Some((1, 3)));
    let secret = &layer["secret"];
    assert_eq!(
        (secret.kind, secret.mode, secret.uid, secret.gid),
        (EntryType::Regular, 0o600, 0, 0)
    );
    assert_eq!(secret.data, b"secret\n");
    let owned = &layer["owned"];
    assert_eq!((owned.mode, owned.uid, owned.gid), (0o640, 1000, 100));
    let data = &layer["data/"];
    assert_eq!((data.kind, data.mode), (EntryType::Directory, 0o755));
    let abs = &layer["abs-link"];
    assert_eq!(abs.kind, EntryType::Symlink);
    assert_eq!(abs.link.as_deref(), Some("/secret"));
    let escape = &layer["escape"];
    assert_eq!(escape.link.as_deref(), Some("../../../../etc/hostname"));
    assert!(layer.values().all(|entry| entry.mtime == MTIME));
    assert_eq!(layer["x.wasm"].device, None);
}

#[test]
fn missing_parents_are_added_before_their_children() {
    let mut image = with_entries(vec![Entry::symlink("/bin/sh", "busybox")]);
    image.files = vec![
        ("/lib64/ld.so".to_owned(), b"ld".to_vec()),
        (
            "/lib/x86_64-linux-gnu/libc.so.6".to_owned(),
            b"libc".to_vec(),
        ),
        ("/lib.txt".to_owned(), b"text".to_vec()),
    ];
    let layer = layer_tar(&image).unwrap();
    assert_eq!(
        paths_in_order(&layer),
        [
            "bin/",
            "bin/sh",
            "lib/",
            // "." sorts before "/": byte order only has to put each parent before its children.
            "lib.txt",
            "lib/x86_64-linux-gnu/",
            "lib/x86_64-linux-gnu/libc.so.6",
            "lib64/",
            "lib64/ld.so",
            "x.wasm",
            "tmp/"
        ]
    );
    let lib = &entries(&layer)["lib/x86_64-linux-gnu/"];
    assert_eq!(
        (lib.kind, lib.mode, lib.uid),
        (EntryType::Directory, 0o755, 0)
    );
}

#[test]
fn an_own_tmp_replaces_the_default_and_joins_the_sort() {
    let image = with_entries(vec![Entry::dir("/tmp/", 0o1770), Entry::dir("/a", 0o700)]);
    let layer = layer_tar(&image).unwrap();
    assert_eq!(paths_in_order(&layer), ["a/", "tmp/", "x.wasm"]);
    assert_eq!(entries(&layer)["tmp/"].mode, 0o1770);
}

#[test]
fn the_default_tmp_comes_before_what_is_put_in_it() {
    let image = with_entries(vec![Entry::file("/tmp/note", "n", 0o644)]);
    let layer = layer_tar(&image).unwrap();
    assert_eq!(paths_in_order(&layer), ["tmp/", "tmp/note", "x.wasm"]);
    assert_eq!(entries(&layer)["tmp/"].mode, 0o1777);
}

#[test]
fn entries_must_not_clash_or_live_below_a_non_directory() {
    let twice = with_entries(vec![Entry::dir("/d", 0o755), Entry::file("/d/", "", 0o644)]);
    assert!(error(&twice).contains("/d twice"), "{}", error(&twice));
    let exe = with_entries(vec![Entry::symlink("/x.wasm", "y")]);
    assert!(error(&exe).contains("/x.wasm twice"), "{}", error(&exe));
    let tmp_file = with_entries(vec![Entry::file("/tmp", "", 0o644)]);
    assert!(
        error(&tmp_file).contains("/tmp twice"),
        "{}",
        error(&tmp_file)
    );
    let below = with_entries(vec![Entry::file("/x.wasm/inner", "", 0o644)]);
    assert!(
        error(&below).contains("/x.wasm/inner needs /x.wasm to be a directory"),
        "{}",
        error(&below)
    );
}

#[test]
fn an_entry_can_stand_at_the_entrypoint_instead_of_an_empty_executable() {
    let mut image = with_entries(vec![
        Entry::file("/bin/busybox", "elf", 0o755),
        Entry::symlink("/bin/sh", "busybox"),
    ]);
    image.entrypoint = "/bin/sh".to_owned();
    image.executable.clear();
    let layer = layer_tar(&image).unwrap();
    assert_eq!(
        paths_in_order(&layer),
        ["bin/", "bin/busybox", "bin/sh", "tmp/"]
    );
    assert_eq!(entries(&layer)["bin/sh"].kind, EntryType::Symlink);
    image.executable = b"not empty".to_vec();
    assert!(error(&image).contains("/bin/sh twice"), "{}", error(&image));
}

#[test]
fn paths_and_modes_are_checked() {
    for bad in ["/", "", "/a/../b", "/a//b", "/./a"] {
        let image = with_entries(vec![Entry::dir(bad, 0o755)]);
        let err = error(&image);
        assert!(err.contains("is not a plain path"), "{bad}: {err}");
    }
    let typed = with_entries(vec![Entry::file("/f", "", 0o100644)]);
    assert!(
        error(&typed).contains("only permission bits"),
        "{}",
        error(&typed)
    );
}

#[test]
fn open_image_carries_devices_a_root_only_file_and_escaping_links() {
    let layer = entries(&layer_tar(&crate::image("open").unwrap()).unwrap());
    let expect_device = |path: &str, kind, device| {
        let entry = &layer[path];
        assert_eq!(
            (entry.kind, entry.mode, entry.device),
            (kind, 0o666, Some(device))
        );
    };
    expect_device("blk", EntryType::Block, (7, 0));
    expect_device("chr", EntryType::Char, (1, 1));
    let secret = &layer["secret"];
    assert_eq!((secret.mode, secret.uid, secret.gid), (0o600, 0, 0));
    assert_eq!(secret.data, b"secret\n");
    assert_eq!(layer["data/"].kind, EntryType::Directory);
    assert_eq!(layer["abs-link"].link.as_deref(), Some("/secret"));
    assert_eq!(
        layer["escape"].link.as_deref(),
        Some("../../../../etc/hostname")
    );
    assert_eq!(layer["open.wasm"].data, crate::OPEN_WASM);
}

#[test]
fn hard_links_follow_their_file_and_must_name_one() {
    let image = with_entries(vec![
        Entry::hard_link("/a/ash", "/b/busybox"),
        Entry::file("/b/busybox", b"bb".to_vec(), 0o755),
    ]);
    let tar = layer_tar(&image).unwrap();
    let order = paths_in_order(&tar);
    let file = order.iter().position(|p| p == "b/busybox").unwrap();
    let link = order.iter().position(|p| p == "a/ash").unwrap();
    assert!(file < link, "{order:?}");
    let layer = entries(&tar);
    assert_eq!(layer["a/ash"].kind, EntryType::Link);
    assert_eq!(layer["a/ash"].link.as_deref(), Some("b/busybox"));

    let dangling = with_entries(vec![Entry::hard_link("/a/ash", "/nope")]);
    assert!(
        error(&dangling).contains("links to /nope"),
        "{}",
        error(&dangling)
    );
}
