//! The compiled-code cache as a container's child sees it (`link.rs`),
//! and the wire format the child and the shim speak about it (`wire.rs`).
//!
//! The shim keeps the cache (its `cache/`): a directory only root can
//! write, which the pivot_rooted child cannot even see, and only the
//! shim's own compiler (`crate::compiler`, a process no container can
//! reach) writes entries. The child talks to it over a unix stream socket
//! at [`CACHE_FD`]; a conversation is one request and one reply, a line
//! each:
//!
//! - `lookup <engine> <module|component> <command|http> <threads>`, with
//!   the module's bytes attached as a sealed memfd: `<engine>` is the
//!   child's engine's compatibility hash (16 hex), the rest says how to
//!   compile the bytes. The shim hashes the memfd itself, so the key of
//!   an entry is always that of the bytes it was compiled from.
//! - It is answered `hit` or `stored` (the shim compiled the module just
//!   now) with the entry's descriptor attached, `off` (no entry: compile
//!   without the cache), or `error <message>`.
//!
//! A key is `<sha256 of the module, 64 hex>-<engine compatibility, 16 hex>`,
//! lowercase: nothing else is accepted, so a key never names a path outside
//! the cache directory.

mod link;
#[cfg(test)]
mod tests;
mod wire;

pub use link::{CacheLink, fd_path};
pub use wire::{
    decode_reply, decode_request, encode_reply, encode_request, recv_request, send_reply,
};

#[cfg(feature = "runtime")]
use std::hash::{DefaultHasher, Hash, Hasher};

#[cfg(feature = "runtime")]
use sha2::{Digest, Sha256};

/// The largest compiled module the shim accepts, far above any real one.
pub const MAX_ENTRY_BYTES: u64 = 4 << 30;
/// The largest module the shim compiles for the cache.
pub const MAX_MODULE_BYTES: u64 = 1 << 30;
/// The most compile threads a child may ask for.
pub const MAX_THREADS: u16 = 1024;
/// The longest line either side sends; longer means a broken peer.
const MAX_LINE: usize = 4096;
const DIGEST_HEX: usize = 64;
pub const ENGINE_HEX: usize = 16;
/// The length of a key: both hex parts and the dash between them.
pub const KEY_LEN: usize = DIGEST_HEX + 1 + ENGINE_HEX;

/// How the shim's compiler is to compile a module: the wasmtime type of
/// its code, the engine it is for, and the threads of its compile pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compile {
    pub component: bool,
    pub http: bool,
    pub threads: u16,
}

/// What the child asks: the module itself travels as a sealed memfd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Lookup { engine: String, compile: Compile },
}

/// What the shim answers. `Hit` and `Stored` travel with a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Hit,
    Stored,
    Off,
    Error(String),
}

/// The cache key of a module's bytes for this engine: the module's sha256
/// and a hash of everything that makes compiled code fit an engine.
#[cfg(feature = "runtime")]
pub fn key(wasm: &[u8], engine: &wasmtime::Engine) -> String {
    key_of(&hex(&Sha256::digest(wasm)), &engine_part(engine))
}

/// The key of a module whose sha256 is `digest` (hex) for the engine
/// whose [`engine_part`] is `engine`.
pub fn key_of(digest: &str, engine: &str) -> String {
    format!("{digest}-{engine}")
}

/// The engine's part of a key: a hash of everything that makes compiled
/// code fit an engine, 16 hex digits.
#[cfg(feature = "runtime")]
pub fn engine_part(engine: &wasmtime::Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Lowercase hex of `bytes`, the form of keys and of recorded digests.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    text
}

/// True for lowercase hex of exactly `len` digits.
pub fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// True when `key` has exactly the shape [`key`] produces, so it can be
/// used as a file name in the cache directory.
pub fn valid_key(key: &str) -> bool {
    key.len() == KEY_LEN
        && key.as_bytes()[DIGEST_HEX] == b'-'
        && is_hex(&key[..DIGEST_HEX], DIGEST_HEX)
        && is_hex(&key[DIGEST_HEX + 1..], ENGINE_HEX)
}
