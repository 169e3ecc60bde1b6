//! Unit tests of the key, the wire format and the link.

use super::link::{fd_path_in, is_unix_socket};
use super::*;
use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;

const KEY: &str =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-0011223344556677";

fn temp_file(bytes: &[u8]) -> File {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(bytes).unwrap();
    file.rewind().unwrap();
    file
}

#[test]
#[cfg(feature = "runtime")]
fn key_has_its_shape_and_follows_module_and_engine() {
    let engine = wasmtime::Engine::default();
    let a = key(b"\0asm\x01\0\0\0", &engine);
    assert!(valid_key(&a), "{a}");
    assert_eq!(a, key(b"\0asm\x01\0\0\0", &engine));
    assert_ne!(a, key(b"\0asm\x01\0\0\0 ", &engine));
    assert!(a.starts_with("93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476-"));
    let mut config = wasmtime::Config::new();
    config.consume_fuel(true);
    let other = wasmtime::Engine::new(&config).unwrap();
    assert_eq!(
        a[..DIGEST_HEX],
        key(b"\0asm\x01\0\0\0", &other)[..DIGEST_HEX]
    );
    assert_ne!(a, key(b"\0asm\x01\0\0\0", &other));
}

#[test]
fn malformed_keys_are_rejected() {
    assert!(valid_key(KEY));
    for bad in [
        "../x",
        "",
        &KEY.to_uppercase(),
        &KEY[1..],
        &format!("{KEY}0"),
        &KEY.replace('-', "0"),
        &format!("../{}", &KEY[3..]),
        &KEY.replacen('0', "/", 1),
        &KEY.replacen('a', "g", 1),
    ] {
        assert!(!valid_key(bad), "{bad}");
    }
}

const ENGINE: &str = "00112233aabbccdd";
const HOW: Compile = Compile {
    component: true,
    http: false,
    threads: 4,
};

#[test]
fn requests_and_replies_round_trip() {
    for compile in [
        HOW,
        Compile {
            component: false,
            http: true,
            threads: MAX_THREADS,
        },
    ] {
        let request = Request::Lookup {
            engine: ENGINE.into(),
            compile,
        };
        let bytes = encode_request(&request);
        assert_eq!(decode_request(&bytes[..bytes.len() - 1]).unwrap(), request);
    }
    for reply in [
        Reply::Hit,
        Reply::Stored,
        Reply::Off,
        Reply::Error("x y".into()),
    ] {
        let bytes = encode_reply(&reply);
        assert_eq!(decode_reply(&bytes[..bytes.len() - 1]).unwrap(), reply);
    }
    let multi = encode_reply(&Reply::Error("a\nb".into()));
    assert_eq!(multi, b"error a b\n");
}

#[test]
fn malformed_requests_are_rejected() {
    for line in [
        format!("lookup {ENGINE} component command 4 extra"),
        format!("lookup {ENGINE} component command"),
        format!("lookup {} component command 4", ENGINE.to_uppercase()),
        format!("lookup {ENGINE}0 component command 4"),
        format!("lookup {KEY} component command 4"),
        format!("lookup {ENGINE} wasm command 4"),
        format!("lookup {ENGINE} module serve 4"),
        format!("lookup {ENGINE} module command 0"),
        format!("lookup {ENGINE} module command +4"),
        format!("lookup {ENGINE} module command {}", MAX_THREADS + 1),
        format!("lookup  {ENGINE} module command 4"),
        format!("store {KEY} 5"),
        "lookup".to_string(),
    ] {
        assert!(decode_request(line.as_bytes()).is_err(), "{line}");
    }
}

#[test]
fn lines_that_never_end_are_refused() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    ours.write_all(format!("lookup {ENGINE}").as_bytes())
        .unwrap();
    drop(ours);
    assert!(recv_request(&theirs).is_err(), "ended before its newline");
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let writer = thread::spawn(move || {
        let _ = ours.write_all(&vec![b'a'; MAX_LINE * 2]);
    });
    assert!(recv_request(&theirs).is_err(), "too long");
    drop(theirs);
    writer.join().unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    drop(ours);
    assert!(recv_request(&theirs).unwrap().is_none(), "nothing asked");
}

#[test]
fn fd_path_names_the_descriptor() {
    let file = temp_file(b"abc");
    let path = fd_path(&file).unwrap();
    assert_eq!(
        path,
        PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
    );
    assert_eq!(std::fs::read(path).unwrap(), b"abc");
}

#[test]
fn fd_path_refuses_a_proc_that_is_not_procfs() {
    // An image could ship proc/self/fd/<n> with bytes of its own.
    let file = temp_file(b"compiled");
    let fake = std::env::temp_dir().join(format!("fake-proc-{}", std::process::id()));
    let fds = fake.join("self/fd");
    std::fs::create_dir_all(&fds).unwrap();
    std::fs::write(fds.join(file.as_raw_fd().to_string()), b"from the image").unwrap();
    let refused = fd_path_in(&fake, &file).unwrap_err();
    std::fs::remove_dir_all(&fake).unwrap();
    assert!(refused.to_string().contains("is not procfs"), "{refused}");
}

#[test]
fn only_unix_sockets_are_inherited() {
    let (a, _b) = UnixStream::pair().unwrap();
    assert!(is_unix_socket(a.as_raw_fd()));
    let (r, _w) = nix::unistd::pipe().unwrap();
    assert!(!is_unix_socket(r.as_raw_fd()));
}

/// A scripted shim: reads the one request and answers `reply`; returns
/// the request and the module's bytes it came with.
fn fake_shim(
    socket: UnixStream,
    reply: Reply,
    entry: Option<File>,
) -> thread::JoinHandle<Option<(Request, Vec<u8>, bool)>> {
    thread::spawn(move || {
        let (request, module) = recv_request(&socket).unwrap()?;
        let module = File::from(module.unwrap());
        let sealed = crate::readonly::is_sealed(&module);
        let bytes = std::fs::read(format!("/proc/self/fd/{}", module.as_raw_fd())).unwrap();
        send_reply(&socket, &reply, entry.as_ref()).unwrap();
        Some((request, bytes, sealed))
    })
}

#[test]
fn a_lookup_sends_the_module_sealed_and_gets_the_entry() {
    let (child, shim) = UnixStream::pair().unwrap();
    let stored = temp_file(b"compiled");
    let inode = stored.metadata().unwrap().ino();
    let server = fake_shim(shim, Reply::Stored, Some(stored));
    let mut link = CacheLink::from_stream(child);
    let entry = link.lookup(b"module bytes", ENGINE, HOW).unwrap().unwrap();
    assert_eq!(entry.metadata().unwrap().ino(), inode);
    let flags = nix::fcntl::fcntl(&entry, nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert_ne!(flags & libc::FD_CLOEXEC, 0, "received close-on-exec");
    let error = link.lookup(b"module bytes", ENGINE, HOW).unwrap_err();
    assert!(error.to_string().contains("one lookup"), "{error}");
    let (request, module, sealed) = server.join().unwrap().unwrap();
    assert_eq!(
        request,
        Request::Lookup {
            engine: ENGINE.into(),
            compile: HOW
        }
    );
    assert_eq!(module, b"module bytes");
    assert!(sealed, "the module's memfd is sealed");
}

#[test]
fn off_means_no_entry() {
    let (child, shim) = UnixStream::pair().unwrap();
    let server = fake_shim(shim, Reply::Off, None);
    let mut link = CacheLink::from_stream(child);
    assert!(link.lookup(b"m", ENGINE, HOW).unwrap().is_none());
    assert!(server.join().unwrap().is_some());
}

#[test]
fn errors_and_broken_replies_are_errors() {
    let (child, shim) = UnixStream::pair().unwrap();
    let server = fake_shim(shim, Reply::Error("no space".into()), None);
    let mut link = CacheLink::from_stream(child);
    let error = link.lookup(b"m", ENGINE, HOW).unwrap_err().to_string();
    assert!(error.contains("no space"), "{error}");
    server.join().unwrap();

    let (child, shim) = UnixStream::pair().unwrap();
    let server = fake_shim(shim, Reply::Hit, None);
    let mut link = CacheLink::from_stream(child);
    assert!(
        link.lookup(b"m", ENGINE, HOW).is_err(),
        "a hit without a descriptor"
    );
    server.join().unwrap();

    let (child, shim) = UnixStream::pair().unwrap();
    drop(shim);
    let mut link = CacheLink::from_stream(child);
    assert!(link.lookup(b"m", ENGINE, HOW).is_err(), "the shim is gone");

    let (child, _shim) = UnixStream::pair().unwrap();
    let mut link = CacheLink::from_stream(child);
    assert!(link.lookup(b"m", "../x", HOW).is_err());
}
