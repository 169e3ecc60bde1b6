//! The cache's unit tests: a real directory, real locks (`store.rs`),
//! conversations over socket pairs with a stand-in for the shim's
//! compiler (`server.rs`); the helpers both use are here.

mod server;
mod store;

pub(super) use super::compiler::{Compiles, Job};
pub(super) use super::server::Outcome;
pub(super) use super::*;
pub(super) use executor::cache::{CacheLink, Compile, fd_path};
use std::io::Write;
pub(super) use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

/// What a test does to an entry, named for its messages.
pub(super) type Corruption<'a> = (&'a str, Box<dyn Fn() + 'a>);

/// The engine part of every key the stand-in compiles for.
pub(super) const ENGINE: &str = "000000000000feed";
pub(super) const HOW: Compile = Compile {
    component: false,
    http: false,
    threads: 1,
};

pub(super) fn key(n: u8) -> String {
    format!("{n:064x}-{ENGINE}")
}

/// The key the shim gives the module `bytes`.
pub(super) fn module_key(bytes: &[u8]) -> String {
    wire::key_of(&wire::hex(&Sha256::digest(bytes)), ENGINE)
}

pub(super) fn new_cache(max_bytes: u64) -> (tempfile::TempDir, Cache) {
    let temp = tempfile::tempdir().unwrap();
    let cache = Cache::open(&temp.path().join("cache"), max_bytes).unwrap();
    (temp, cache)
}

pub(super) fn read(file: &File) -> Vec<u8> {
    std::fs::read(fd_path(file).unwrap()).unwrap()
}

pub(super) fn names(cache: &Cache) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&cache.dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The files of one stored key, in the order `names` lists them.
pub(super) fn files_of(key: &str) -> [String; 3] {
    [entry_name(key), lock_name(key), digest_name(key)]
}

pub(super) fn temps(cache: &Cache) -> Vec<String> {
    names(cache)
        .into_iter()
        .filter(|n| n.contains(".tmp."))
        .collect()
}

/// The shim's compiler as the tests need it: writes `code` after
/// `delay` (giving up as the real one does when the child hangs up or the
/// deadline passes), reports `engine`, and keeps what it was given.
pub(super) struct Fake {
    pub(super) code: Vec<u8>,
    pub(super) engine: String,
    pub(super) delay: Duration,
    pub(super) fail: bool,
    pub(super) calls: AtomicUsize,
    pub(super) modules: Mutex<Vec<Vec<u8>>>,
}

impl Fake {
    fn new(code: &[u8]) -> Fake {
        Fake {
            code: code.to_vec(),
            engine: ENGINE.to_string(),
            delay: Duration::ZERO,
            fail: false,
            calls: AtomicUsize::new(0),
            modules: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Compiles for Fake {
    fn compile(&self, job: &Job) -> Result<String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let module = std::fs::read(format!("/proc/self/fd/{}", job.module.as_raw_fd()))?;
        self.modules.lock().unwrap().push(module);
        let started = Instant::now();
        while started.elapsed() < self.delay {
            if hung_up(job.socket) || Instant::now() >= job.deadline {
                bail!("given up");
            }
        }
        if self.fail {
            bail!("the module does not compile");
        }
        if self.code.len() as u64 > job.max_bytes {
            bail!("over the entry bound of {}", job.max_bytes);
        }
        (&*job.out).write_all(&self.code)?;
        Ok(self.engine.clone())
    }
}

/// Runs `child` on a link to a server thread; returns both results.
pub(super) fn converse_with<T>(
    cache: Option<&Cache>,
    compiler: &dyn Compiles,
    child: impl FnOnce(&mut CacheLink) -> T,
) -> (T, Result<Summary>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    thread::scope(|s| {
        let server = s.spawn(move || serve_child(cache, compiler, theirs, "task test"));
        let mut link = CacheLink::from_stream(ours);
        let got = child(&mut link);
        drop(link);
        (got, server.join().unwrap())
    })
}

pub(super) fn store_direct(cache: &Cache, key: &str, bytes: &[u8]) -> File {
    let _lock = cache.lock(key).unwrap();
    cache.store(key, bytes, bytes.len() as u64).unwrap()
}

pub(super) fn set_mtime(cache: &Cache, key: &str, ago: u64) {
    let file = File::open(cache.path(&entry_name(key))).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(ago))
        .unwrap();
}

/// Sends a raw line, with `fd` attached, as a broken or hostile child
/// would, and reads the reply line.
pub(super) fn raw_exchange(
    stream: &mut UnixStream,
    line: &[u8],
    fd: Option<&impl AsRawFd>,
) -> String {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fds: Vec<i32> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let iov = [std::io::IoSlice::new(line)];
    sendmsg::<()>(stream.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8];
    while stream.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap()
}

pub(super) fn sealed(bytes: &[u8]) -> std::os::fd::OwnedFd {
    executor::readonly::sealed(c"test", &mut &bytes[..], "test module").unwrap()
}

/// A tmpfs of `bytes` mounted on a new directory, unmounted on drop.
pub(super) struct SmallDisk(pub(super) tempfile::TempDir);

impl SmallDisk {
    pub(super) fn new(bytes: u64) -> Option<SmallDisk> {
        if !geteuid().is_root() {
            eprintln!("skipped: mounting a small filesystem needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = format!("size={bytes},mode=0700");
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .unwrap();
        Some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}
