//! The runtime options of a task: the compiled-code cache's place and
//! size. containerd's CRI sends a non-runc runtime's `options` table as
//! `runtimeoptions.v1.Options { config_body }` (TOML); `ctr run
//! --runtime-config-path` and a `ConfigPath` option name a TOML file
//! instead.

use std::path::{Path, PathBuf};

use anyhow::Context;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use serde::Deserialize;

/// Where the cache lives when the options do not say: beside containerd's
/// task state (the bundle is `<state>/io.containerd.runtime.v2.task/<ns>/<id>`),
/// so each containerd has its own, unless that state is in memory.
const STATE_SUBDIR: &str = "io.containerd.wasmtime.v1";
/// The default when containerd's state is on a tmpfs, as /run/containerd
/// is on a default install: there every entry would be charged to the
/// memory of the shim that wrote it, and lost at reboot.
const DISK_DEFAULT: &str = "/var/lib/containerd-shim-wasmtime/cache";
/// The cache's default bound.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 2 << 30;

/// The options this shim takes, by the names containerd users write.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Table {
    /// The compiled-code cache's directory (root's alone).
    cache_dir: Option<PathBuf>,
    /// The cache's bound in bytes; 0 turns the cache off.
    cache_max_bytes: Option<u64>,
}

/// The cache settings of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    pub dir: PathBuf,
    /// None when the cache is off.
    pub max_bytes: Option<u64>,
}

/// `runtimeoptions.v1.Options`, as containerd's api/types defines it.
#[derive(Clone, PartialEq, prost::Message)]
struct RuntimeOptions {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(string, tag = "2")]
    config_path: String,
    #[prost(bytes = "vec", tag = "3")]
    config_body: Vec<u8>,
}

/// The cache settings for a task of `bundle` whose Create carried
/// `options`. Options of another type (runc's, say) carry nothing for
/// this shim; they are logged and left alone.
pub fn cache_settings(options: Option<&Any>, bundle: &Path) -> anyhow::Result<CacheSettings> {
    let table = match options {
        Some(any) if any.type_url.ends_with("runtimeoptions.v1.Options") => {
            parse_runtime_options(&any.value)?
        }
        Some(any) if !any.type_url.is_empty() => {
            log::debug!(
                "runtime options of type {} are not this shim's",
                any.type_url
            );
            Table::default()
        }
        _ => Table::default(),
    };
    let dir = match table.cache_dir {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => anyhow::bail!(
            "runtime option CacheDir {} is not an absolute path",
            dir.display()
        ),
        None => default_cache_dir(bundle),
    };
    let max_bytes = match table.cache_max_bytes {
        Some(0) => None,
        Some(n) => Some(n),
        None => Some(DEFAULT_CACHE_MAX_BYTES),
    };
    Ok(CacheSettings { dir, max_bytes })
}

fn parse_runtime_options(value: &[u8]) -> anyhow::Result<Table> {
    let options = <RuntimeOptions as prost::Message>::decode(value)
        .context("decode the runtime options (runtimeoptions.v1.Options)")?;
    let (body, source) = if !options.config_path.is_empty() {
        let body = std::fs::read(&options.config_path)
            .with_context(|| format!("read the runtime options file {}", options.config_path))?;
        (body, options.config_path)
    } else {
        (options.config_body, "config_body".to_string())
    };
    parse_table(&body).with_context(|| format!("runtime options ({source})"))
}

fn parse_table(body: &[u8]) -> anyhow::Result<Table> {
    let text = std::str::from_utf8(body).context("not UTF-8")?;
    Ok(toml::from_str(text)?)
}

/// `<containerd state>/io.containerd.wasmtime.v1/cache` for a bundle in
/// containerd's usual place on a disk, else [`DISK_DEFAULT`].
fn default_cache_dir(bundle: &Path) -> PathBuf {
    let tasks = bundle.parent().and_then(Path::parent);
    let state = tasks
        .filter(|t| {
            t.file_name()
                .is_some_and(|n| n == "io.containerd.runtime.v2.task")
        })
        .and_then(Path::parent);
    match state {
        Some(state) if !in_memory(state) => state.join(STATE_SUBDIR).join("cache"),
        _ => PathBuf::from(DISK_DEFAULT),
    }
}

/// Whether `path` is on a tmpfs or ramfs (false when it cannot be told).
fn in_memory(path: &Path) -> bool {
    use nix::sys::statfs::{FsType, TMPFS_MAGIC, statfs};
    // <linux/magic.h>; nix names no constant for it.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    statfs(path).is_ok_and(|s| [TMPFS_MAGIC, RAMFS_MAGIC].contains(&s.filesystem_type()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, options: &RuntimeOptions) -> Any {
        let mut any = Any::new();
        any.type_url = type_url.to_string();
        any.value = prost::Message::encode_to_vec(options);
        any
    }

    const BUNDLE: &str = "/run/ctrd/io.containerd.runtime.v2.task/k8s.io/abc";

    #[test]
    fn defaults_beside_containerds_state() {
        let got = cache_settings(None, Path::new(BUNDLE)).unwrap();
        assert_eq!(
            got.dir,
            Path::new("/run/ctrd/io.containerd.wasmtime.v1/cache")
        );
        assert_eq!(got.max_bytes, Some(DEFAULT_CACHE_MAX_BYTES));
        let elsewhere = cache_settings(None, Path::new("/tmp/b")).unwrap();
        assert_eq!(elsewhere.dir, Path::new(DISK_DEFAULT));
    }

    #[test]
    fn state_in_memory_puts_the_default_on_disk() {
        let temp = tempfile::tempdir_in("/dev/shm");
        let Some(state) = temp.ok().filter(|t| in_memory(t.path())) else {
            eprintln!("skipped: no tmpfs at /dev/shm");
            return;
        };
        let bundle = state
            .path()
            .join("io.containerd.runtime.v2.task/k8s.io/abc");
        let got = cache_settings(None, &bundle).unwrap();
        assert_eq!(got.dir, Path::new(DISK_DEFAULT));
        let on_disk = tempfile::tempdir().unwrap();
        if !in_memory(on_disk.path()) {
            let bundle = on_disk
                .path()
                .join("io.containerd.runtime.v2.task/k8s.io/abc");
            let got = cache_settings(None, &bundle).unwrap();
            assert_eq!(
                got.dir,
                on_disk.path().join("io.containerd.wasmtime.v1/cache")
            );
        }
    }

    #[test]
    fn reads_the_cri_config_body() {
        let options = RuntimeOptions {
            config_body: b"CacheDir = \"/var/cache/w\"\nCacheMaxBytes = 1000\n".to_vec(),
            ..Default::default()
        };
        let got = cache_settings(
            Some(&any("runtimeoptions.v1.Options", &options)),
            Path::new(BUNDLE),
        );
        let got = got.unwrap();
        assert_eq!(got.dir, Path::new("/var/cache/w"));
        assert_eq!(got.max_bytes, Some(1000));
        let off = RuntimeOptions {
            config_body: b"CacheMaxBytes = 0".to_vec(),
            ..Default::default()
        };
        let got = cache_settings(
            Some(&any("runtimeoptions.v1.Options", &off)),
            Path::new(BUNDLE),
        );
        assert_eq!(got.unwrap().max_bytes, None);
    }

    #[test]
    fn reads_a_config_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("opts.toml");
        std::fs::write(&file, "CacheDir = \"/x\"\n").unwrap();
        let options = RuntimeOptions {
            config_path: file.display().to_string(),
            ..Default::default()
        };
        let got = cache_settings(
            Some(&any("runtimeoptions.v1.Options", &options)),
            Path::new(BUNDLE),
        );
        assert_eq!(got.unwrap().dir, Path::new("/x"));
    }

    #[test]
    fn refuses_unknown_keys_and_relative_dirs() {
        let typo = RuntimeOptions {
            config_body: b"CacheDri = \"/x\"".to_vec(),
            ..Default::default()
        };
        let err = cache_settings(
            Some(&any("runtimeoptions.v1.Options", &typo)),
            Path::new(BUNDLE),
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("CacheDri"));
        let relative = RuntimeOptions {
            config_body: b"CacheDir = \"cache\"".to_vec(),
            ..Default::default()
        };
        let err = cache_settings(
            Some(&any("runtimeoptions.v1.Options", &relative)),
            Path::new(BUNDLE),
        );
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("not an absolute path")
        );
    }

    #[test]
    fn other_option_types_are_not_ours() {
        let mut runc = Any::new();
        runc.type_url = "containerd.runc.v1.Options".into();
        runc.value = vec![8, 1];
        let got = cache_settings(Some(&runc), Path::new(BUNDLE)).unwrap();
        assert_eq!(got.max_bytes, Some(DEFAULT_CACHE_MAX_BYTES));
    }
}
