//! Conversations: lookups, the shim's compiles, and what a broken or
//! hostile child sends.

use super::*;

#[test]
fn a_miss_is_compiled_by_the_shim_and_then_hits() {
    let (_temp, cache) = new_cache(1 << 20);
    let module = b"the module's bytes";
    let k = module_key(module);
    let fake = Fake::new(b"compiled code");
    let (stored, summary) = converse_with(Some(&cache), &fake, |link| {
        link.lookup(module, ENGINE, HOW).unwrap().unwrap()
    });
    assert_eq!(read(&stored), b"compiled code");
    assert_eq!(fake.modules.lock().unwrap().as_slice(), [module.to_vec()]);
    let mode = nix::fcntl::fcntl(&stored, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_eq!(mode & libc::O_ACCMODE, libc::O_RDONLY);
    // Whoever holds the entry (a child, or anyone who took its fd)
    // cannot reopen it for writing, whatever its capabilities.
    let reopen = std::fs::OpenOptions::new()
        .append(true)
        .open(fd_path(&stored).unwrap())
        .unwrap_err();
    assert_eq!(reopen.raw_os_error(), Some(Errno::EROFS as i32), "{reopen}");
    let summary = summary.unwrap();
    assert_eq!(summary.key.as_deref(), Some(k.as_str()));
    assert!(
        matches!(summary.outcome, Outcome::Stored { bytes: 13, .. }),
        "{summary}"
    );
    let meta = std::fs::metadata(cache.path(&entry_name(&k))).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    assert_eq!(names(&cache), files_of(&k));

    let (hit, summary) = converse_with(Some(&cache), &fake, |link| {
        link.lookup(module, ENGINE, HOW).unwrap().unwrap()
    });
    assert_eq!(read(&hit), b"compiled code");
    assert_eq!(summary.unwrap().outcome, Outcome::Hit);
    assert_eq!(fake.calls(), 1, "compiled once");
    assert_eq!(cache.size(), 13);
    assert_eq!(read(&cache.lookup(&k).unwrap().unwrap()), b"compiled code");
}

#[test]
fn no_cache_answers_off() {
    let fake = Fake::new(b"code");
    let (got, summary) = converse_with(None, &fake, |link| {
        link.lookup(b"module", ENGINE, HOW).unwrap()
    });
    assert!(got.is_none());
    assert_eq!(summary.unwrap().outcome, Outcome::Off);
    assert_eq!(fake.calls(), 0);
}

/// A child chooses nothing of the key: the entry it gets is named after
/// the bytes the shim read from the sealed memfd, and holds the shim's
/// compiler's output for them. A descriptor that is not sealed (the
/// child could change the bytes after the shim hashed them) is refused.
#[test]
fn entries_are_named_after_the_bytes_the_shim_read() {
    let (_temp, cache) = new_cache(1 << 20);
    let fake = Fake::new(b"code of the module");
    let module = b"a module";
    let (_, summary) = converse_with(Some(&cache), &fake, |link| {
        link.lookup(module, ENGINE, HOW).unwrap().unwrap()
    });
    assert_eq!(summary.unwrap().key, Some(module_key(module)));
    assert_eq!(names(&cache), files_of(&module_key(module)));

    let mut plain = tempfile::tempfile().unwrap();
    plain.write_all(b"another module").unwrap();
    let line = format!("lookup {ENGINE} module command 1\n");
    for fd in [Some(plain.as_raw_fd()), None] {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let (answer, result) = thread::scope(|s| {
            let server = s.spawn(|| serve_child(Some(&cache), &fake, theirs, "task test"));
            let answer = raw_exchange(&mut ours, line.as_bytes(), fd.as_ref());
            (answer, server.join().unwrap())
        });
        assert!(answer.starts_with("error "), "{fd:?}: {answer}");
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("memfd"), "{error}");
    }
    assert_eq!(fake.calls(), 1);
    assert_eq!(names(&cache), files_of(&module_key(module)));
}

/// Code the compiler made for another engine than the key names is not
/// stored under the key: the child compiles alone.
#[test]
fn code_for_another_engine_is_not_stored() {
    let (_temp, cache) = new_cache(1 << 20);
    let mut fake = Fake::new(b"code");
    fake.engine = "0000000000000bad".into();
    let (got, summary) = converse_with(Some(&cache), &fake, |link| {
        link.lookup(b"module", ENGINE, HOW).unwrap()
    });
    assert!(got.is_none());
    let summary = summary.unwrap();
    assert!(
        matches!(&summary.outcome, Outcome::NotCompiled(why) if why.contains("engine")),
        "{summary}"
    );
    assert!(temps(&cache).is_empty());
    assert!(!cache.path(&entry_name(&module_key(b"module"))).exists());
}

#[test]
fn corrupt_entries_are_compiled_again() {
    let (_temp, cache) = new_cache(1 << 20);
    let module = b"module three";
    let k = module_key(module);
    let code = b"the compiled code of a module".to_vec();
    let fake = Fake::new(&code);
    store_direct(&cache, &k, &code);
    let entry = cache.path(&entry_name(&k));
    let digest = cache.path(&digest_name(&k));
    let writable = |path: &Path| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap()
    };
    let corruptions: Vec<Corruption> = vec![
        (
            "truncated",
            Box::new(|| {
                writable(&entry);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&entry)
                    .unwrap()
                    .set_len(5)
                    .unwrap();
            }),
        ),
        (
            "a byte flipped",
            Box::new(|| {
                writable(&entry);
                let mut bytes = std::fs::read(&entry).unwrap();
                bytes[10] ^= 0x40;
                std::fs::write(&entry, bytes).unwrap();
            }),
        ),
        (
            "digest missing",
            Box::new(|| std::fs::remove_file(&digest).unwrap()),
        ),
        (
            "digest short",
            Box::new(|| {
                writable(&digest);
                std::fs::write(&digest, "0123\n").unwrap();
            }),
        ),
    ];
    for (n, (what, corrupt)) in corruptions.into_iter().enumerate() {
        corrupt();
        let (stored, summary) = converse_with(Some(&cache), &fake, |link| {
            link.lookup(module, ENGINE, HOW).unwrap().unwrap()
        });
        assert_eq!(read(&stored), code, "{what}");
        assert!(
            matches!(summary.unwrap().outcome, Outcome::Stored { .. }),
            "{what}"
        );
        assert_eq!(fake.calls(), n + 1, "{what}: compiled again");
        let (hit, _) = converse_with(Some(&cache), &fake, |link| {
            link.lookup(module, ENGINE, HOW).unwrap()
        });
        assert_eq!(read(&hit.unwrap()), code, "{what}: a hit again");
    }
}

#[test]
fn a_conversation_has_one_lookup() {
    let (_temp, cache) = new_cache(1 << 20);
    let fake = Fake::new(b"code");
    let (second, summary) = converse_with(Some(&cache), &fake, |link| {
        link.lookup(b"one", ENGINE, HOW).unwrap().unwrap();
        link.lookup(b"two", ENGINE, HOW)
    });
    assert!(second.is_err(), "the link refuses a second lookup");
    assert!(summary.is_ok());
    // A child that sends one anyway is refused by the shim.
    let module = sealed(b"one");
    let line = format!("lookup {ENGINE} module command 1\n");
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let (answers, result) = thread::scope(|s| {
        let server = s.spawn(|| serve_child(Some(&cache), &fake, theirs, "task test"));
        let first = raw_exchange(&mut ours, line.as_bytes(), Some(&module));
        let second = raw_exchange(&mut ours, line.as_bytes(), Some(&sealed(b"two")));
        ((first, second), server.join().unwrap())
    });
    assert_eq!(answers.0, "hit");
    assert!(answers.1.starts_with("error "), "{}", answers.1);
    assert!(format!("{:#}", result.unwrap_err()).contains("one lookup per conversation"));
    assert!(!cache.path(&entry_name(&module_key(b"two"))).exists());
    assert_eq!(fake.calls(), 1);
}

#[test]
fn a_lookup_stops_waiting_for_anothers_compile_and_compiles_alone() {
    let (_temp, mut cache) = new_cache(1 << 20);
    cache.wait_limit = Duration::from_millis(300);
    let module = b"module forty";
    // Another compile of the same module, which never ends.
    let _held = cache.lock(&module_key(module)).unwrap();
    let fake = Fake::new(b"code");
    let (got, summary) = converse_with(Some(&cache), &fake, |link| {
        link.lookup(module, ENGINE, HOW).unwrap()
    });
    assert!(got.is_none(), "no entry without the key's lock");
    assert_eq!(summary.unwrap().outcome, Outcome::WaitedTooLong);
    assert_eq!(fake.calls(), 0);
}

#[test]
fn a_full_disk_leaves_no_entry_and_no_half_written_file() {
    let Some(disk) = SmallDisk::new(1 << 20) else {
        return;
    };
    let mut cache = Cache::open(&disk.0.path().join("cache"), 1 << 30).unwrap();
    let k = key(41);
    let lock = cache.lock(&k).unwrap();
    // Refused before a byte is written: not enough room to spare.
    let error = cache.store(&k, &[7u8; 4096][..], 4096).unwrap_err();
    assert!(format!("{error:#}").contains("no room"), "{error:#}");
    // Without the reserve, an entry that fits is stored whole.
    cache.free_reserve = 0;
    let code = vec![7u8; 256 << 10];
    cache.store(&k, &code[..], code.len() as u64).unwrap();
    // One larger than what is left is refused, and the old one stays.
    let big = vec![8u8; 1 << 20];
    assert!(cache.store(&k, &big[..], big.len() as u64).is_err());
    assert!(temps(&cache).is_empty(), "{:?}", names(&cache));
    drop(lock);
    assert_eq!(read(&cache.lookup(&k).unwrap().unwrap()), code);
    // The shim's compile gets no more room than is left either.
    let fake = Fake::new(&big);
    let (got, summary) = converse_with(Some(&cache), &fake, |link| {
        link.lookup(b"a big module", ENGINE, HOW).unwrap()
    });
    assert!(got.is_none());
    let summary = summary.unwrap();
    assert!(
        matches!(&summary.outcome, Outcome::NotCompiled(why) if why.contains("entry bound")),
        "{summary}"
    );
    assert!(temps(&cache).is_empty(), "{:?}", names(&cache));
}

#[test]
fn concurrent_lookups_compile_once() {
    let (_temp, cache) = new_cache(1 << 20);
    let module = b"module thirty";
    let mut fake = Fake::new(b"compiled once");
    fake.delay = Duration::from_millis(400);
    let barrier = Barrier::new(2);
    let mut results: Vec<(Outcome, Vec<u8>, Duration)> = thread::scope(|s| {
        let children: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let (got, summary) = converse_with(Some(&cache), &fake, |link| {
                        barrier.wait();
                        let started = Instant::now();
                        let entry = link.lookup(module, ENGINE, HOW).unwrap().unwrap();
                        (read(&entry), started.elapsed())
                    });
                    (summary.unwrap().outcome, got.0, got.1)
                })
            })
            .collect();
        children.into_iter().map(|c| c.join().unwrap()).collect()
    });
    results.sort_by_key(|r| r.2);
    assert_eq!(fake.calls(), 1);
    assert!(matches!(
        results[1].0,
        Outcome::Stored { .. } | Outcome::Hit
    ));
    assert!(results.iter().all(|r| r.1 == b"compiled once"));
    assert!(
        results
            .iter()
            .any(|r| r.0 == Outcome::Hit && r.2 >= Duration::from_millis(250)),
        "the hit waited for the compile: {results:?}"
    );
}

#[test]
fn a_failed_compile_releases_the_lock() {
    let (_temp, cache) = new_cache(1 << 20);
    let module = b"module forty-one";
    let mut failing = Fake::new(b"");
    failing.fail = true;
    let (got, summary) = converse_with(Some(&cache), &failing, |link| {
        link.lookup(module, ENGINE, HOW).unwrap()
    });
    assert!(got.is_none());
    let summary = summary.unwrap();
    assert!(
        matches!(&summary.outcome, Outcome::NotCompiled(why) if why.contains("does not compile")),
        "{summary}"
    );
    let k = module_key(module);
    assert!(cache.acquire(&k, true, Wait::Never).unwrap().is_some());
    assert!(temps(&cache).is_empty());
    // The next child's lookup compiles it.
    let fake = Fake::new(b"x");
    let (stored, _) = converse_with(Some(&cache), &fake, |link| {
        link.lookup(module, ENGINE, HOW).unwrap()
    });
    assert!(stored.is_some());
}

#[test]
fn malformed_keys_and_requests_are_refused() {
    let (temp, cache) = new_cache(1 << 20);
    let k = key(50);
    let bad_keys = [
        "../x".to_string(),
        k.to_uppercase(),
        k[1..].to_string(),
        format!("{k}0"),
    ];
    for bad in &bad_keys {
        assert!(cache.lookup(bad).is_err(), "{bad}");
        assert!(cache.lock(bad).is_err(), "{bad}");
        assert!(cache.store(bad, &b"x"[..], 1).is_err(), "{bad}");
    }
    let fake = Fake::new(b"code");
    let module = sealed(b"module");
    let lines = [
        "lookup ../x module command 1\n".to_string(),
        format!("lookup {} module command 1\n", ENGINE.to_uppercase()),
        format!("lookup {ENGINE} wasm command 1\n"),
        format!("lookup {ENGINE} module serve 1\n"),
        format!("lookup {ENGINE} module command 0\n"),
        format!("lookup {ENGINE} module command 99999\n"),
        format!("lookup {ENGINE} module command -1\n"),
        format!("store {k} 1\n"),
        "hello\n".to_string(),
    ];
    for line in lines {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let (answer, result) = thread::scope(|s| {
            let server = s.spawn(|| serve_child(Some(&cache), &fake, theirs, "task test"));
            let answer = raw_exchange(&mut ours, line.as_bytes(), Some(&module));
            (answer, server.join().unwrap())
        });
        assert!(answer.starts_with("error "), "{line:?}: {answer}");
        assert!(result.is_err(), "{line:?}");
    }
    assert_eq!(fake.calls(), 0);
    assert!(!temp.path().join("x").exists());
    assert!(names(&cache).is_empty(), "{:?}", names(&cache));
}

/// The conversation shut down while the shim compiles (the child failed
/// or was deleted): the compile is given up, nothing is left.
#[test]
fn shutdown_during_a_compile_leaves_no_temp() {
    let (_temp, cache) = new_cache(1 << 20);
    let module = b"module sixty";
    let mut fake = Fake::new(&[7; 100_000]);
    fake.delay = Duration::from_secs(30);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let shim_end = theirs.try_clone().unwrap();
    let (got, result, waited) = thread::scope(|s| {
        let server = s.spawn(|| serve_child(Some(&cache), &fake, theirs, "task test"));
        let child = s.spawn(move || CacheLink::from_stream(ours).lookup(module, ENGINE, HOW));
        let deadline = Instant::now() + Duration::from_secs(10);
        while fake.calls() == 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(fake.calls(), 1, "the compile began");
        let started = Instant::now();
        shim_end.shutdown(Shutdown::Both).unwrap();
        let result = server.join().unwrap();
        (child.join().unwrap(), result, started.elapsed())
    });
    assert!(got.is_err());
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let summary = result.unwrap();
    assert!(
        matches!(&summary.outcome, Outcome::NotCompiled(why) if why.contains("given up")),
        "{summary}"
    );
    assert!(temps(&cache).is_empty(), "{:?}", names(&cache));
    let k = module_key(module);
    assert!(!cache.path(&entry_name(&k)).exists());
    assert!(cache.acquire(&k, true, Wait::Never).unwrap().is_some());
}

#[test]
fn a_waiting_lookup_ends_when_the_socket_is_shut_down() {
    let (_temp, cache) = new_cache(1 << 20);
    let module = b"module seventy";
    let held = cache.lock(&module_key(module)).unwrap();
    let fake = Fake::new(b"code");
    let (ours, theirs) = UnixStream::pair().unwrap();
    let shim_end = theirs.try_clone().unwrap();
    let (result, waited) = thread::scope(|s| {
        let server = s.spawn(|| serve_child(Some(&cache), &fake, theirs, "task test"));
        let child = s.spawn(move || CacheLink::from_stream(ours).lookup(module, ENGINE, HOW));
        thread::sleep(Duration::from_millis(300));
        assert!(!server.is_finished(), "the lookup waits for the lock");
        let started = Instant::now();
        shim_end.shutdown(Shutdown::Both).unwrap();
        let result = server.join().unwrap();
        assert!(child.join().unwrap().is_err());
        (result, started.elapsed())
    });
    assert_eq!(result.unwrap().outcome, Outcome::Interrupted);
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(fake.calls(), 0);
    drop(held);
}
