//! The directory: stores, eviction, locks, leftovers, unsafe directories.

use super::*;

#[test]
fn eviction_drops_least_recently_used_and_keeps_the_new_entry() {
    let (_temp, cache) = new_cache(250);
    let (a, b, c) = (key(10), key(11), key(12));
    store_direct(&cache, &a, &[1; 100]);
    store_direct(&cache, &b, &[2; 100]);
    set_mtime(&cache, &a, 300);
    set_mtime(&cache, &b, 200);
    // A hit makes `a` the most recently used.
    assert!(cache.lookup(&a).unwrap().is_some());
    store_direct(&cache, &c, &[3; 100]);
    let left = names(&cache);
    assert!(
        left.contains(&entry_name(&a)) && left.contains(&entry_name(&c)),
        "{left:?}"
    );
    assert!(!left.iter().any(|n| n.starts_with(&b)), "{left:?}");
    assert_eq!(cache.size(), 200);

    // An entry larger than the bound is not stored: the bound holds.
    let small = Cache::open(&cache.dir, 50).unwrap();
    let d = key(13);
    let _lock = small.lock(&d).unwrap();
    let error = small.store(&d, &[4u8; 100][..], 100).unwrap_err();
    assert!(
        format!("{error:#}").contains("over the limit of 50"),
        "{error:#}"
    );
    let left = names(&small);
    assert!(
        !left
            .iter()
            .any(|n| n.starts_with(&d) && !n.ends_with(".lock")),
        "{left:?}"
    );
}

#[test]
fn eviction_spares_entries_in_use() {
    let (_temp, cache) = new_cache(150);
    let (a, b) = (key(20), key(21));
    store_direct(&cache, &a, &[1; 100]);
    set_mtime(&cache, &a, 100);
    let reading = cache.acquire(&a, false, Wait::Block).unwrap().unwrap();
    store_direct(&cache, &b, &[2; 100]);
    assert!(cache.path(&entry_name(&a)).exists());
    drop(reading);
    let c = key(22);
    store_direct(&cache, &c, &[3; 100]);
    assert!(!cache.path(&entry_name(&a)).exists());
    assert!(!cache.path(&entry_name(&b)).exists());
}

#[test]
fn a_store_needs_the_lock() {
    let (_temp, cache) = new_cache(1 << 20);
    let k = key(80);
    let error = cache.store(&k, &b"x"[..], 1).unwrap_err();
    assert!(error.to_string().contains("without its lock"), "{error}");
    assert!(temps(&cache).is_empty());
}

#[test]
fn leftovers_of_crashed_writers_are_removed() {
    let (_temp, cache) = new_cache(1 << 20);
    let (stale, fresh) = (key(90), key(91));
    std::fs::write(cache.path(&format!("{stale}.tmp.1.1")), b"half").unwrap();
    std::fs::write(cache.path(&lock_name(&stale)), b"").unwrap();
    store_direct(&cache, &fresh, b"code");
    assert_eq!(names(&cache), files_of(&fresh));
}

#[test]
fn unsafe_directories_are_refused() {
    let temp = tempfile::tempdir().unwrap();
    let open = temp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let error = Cache::open(&open, 1).unwrap_err().to_string();
    assert!(
        error.contains(&open.display().to_string()) && error.contains("0777"),
        "{error}"
    );

    let link = temp.path().join("link");
    let real = temp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let error = format!("{:#}", Cache::open(&link, 1).unwrap_err());
    assert!(error.contains(&link.display().to_string()), "{error}");

    if geteuid().is_root() {
        let theirs = temp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let error = Cache::open(&theirs, 1).unwrap_err().to_string();
        assert!(error.contains("owned by uid 65534"), "{error}");
    }

    let made = temp.path().join("a/b/cache");
    Cache::open(&made, 1).unwrap();
    let mode = std::fs::metadata(&made).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o700);
}
