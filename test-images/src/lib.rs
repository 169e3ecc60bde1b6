//! Builds the OCI image tarballs that the shim's tests, demo and benchmarks import into
//! containerd with `ctr images import --all-platforms <tar>`.
//!
//! There is one image per runnable WASI preview 1 test module (`wat/*.wat`, compiled by
//! build.rs), one `bad` image of inputs the shim must reject, one `big` slow-to-compile module,
//! and linux/amd64 images for comparing against runc: two generated static executables (one
//! that prints and exits, one that idles), C programs that build.rs compiles (the `probe`
//! conformance probe, a `pause` like Kubernetes', a `dynamic`ally linked hello with its
//! libraries) and the host's static `busybox`. Every archive is byte-for-byte reproducible
//! from the same build and host. Three more images hold programs that real toolchains built
//! (a C module, two Python components; see `programs_wasm.rs`), once `make programs` has put
//! them in `.dev/programs`. `critest_images` makes stand-ins for the images critest pulls.

mod artifact;
mod bad;
mod big;
mod busybox;
mod critest;
mod digest;
mod elf;
mod entry;
mod layer;
mod ldd;
mod native;
mod oci;
mod programs;
mod programs_wasm;
#[cfg(test)]
mod testutil;
mod wasm;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use artifact::{
    ArtifactConfig, ArtifactImage, EXIT_ARTIFACT_NAME, EXIT_WASM_LAYER_NAME, HELLO_ARTIFACT_NAME,
    HELLO_WASM_LAYER_NAME, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, WASM_LAYER_V0_MEDIA_TYPE,
    artifact_archive, artifact_images, write_artifact_image, write_wasm_layer_image,
};
pub use bad::{
    COMPONENT_WASM_HEADER, COMPONENT_WASM_PATH, EMPTY_WASM_PATH, NOSTART_WASM_PATH, NOT_WASM,
    NOT_WASM_PATH,
};
pub use big::big_module;
pub use busybox::{BUSYBOX_APPLETS, BUSYBOX_PATH, busybox_image};
pub use critest::critest_images;
pub use digest::{digest, sha256_hex};
pub use entry::{Entry, EntryKind};
pub use native::{
    NATIVE_HELLO_MESSAGE, NATIVE_SLEEP_MESSAGE, ensure_native_supported, native_hello_elf,
    native_sleep_elf,
};
pub use oci::{
    CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, TAG, image_archive,
    image_archive_as, write_image,
};
pub use programs::{
    ATTACK_ELF, ATTACK_PATH, DYNHELLO_ELF, DYNHELLO_LIBS, DYNHELLO_MESSAGE, DYNHELLO_PATH, NNP_ELF,
    PAUSE_ELF, PAUSE_PATH, PAUSE_VERSION_LINE, PROBE_ELF, PROBE_PATH, dynamic_image, pause_image,
    probe_image,
};
pub use programs_wasm::{
    BuiltProgram, C_HELLO_IMAGE_NAME, C_HELLO_MESSAGE, C_HELLO_PATH, PYTHON_CLI_IMAGE_NAME,
    PYTHON_CLI_MESSAGE, PYTHON_CLI_PATH, PYTHON_HTTP_BODY_PREFIX, PYTHON_HTTP_IMAGE_NAME,
    PYTHON_HTTP_PATH, WASM_PROGRAM_IMAGES, build_wasm_programs, missing_wasm_programs,
    require_wasm_programs, wasm_program_image,
};
pub use wasm::{
    ARGS_WASM, CAT_WASM, COUNT_WASM, EXIT_WASM, FILE_WASM, HELLO_WASM, LOOP_WASM, MEMGROW_WASM,
    NOSTART_WASM, OPEN_WASM, SLEEP_WASM, TRAP_WASM, TTY_WASM, WASM_MODULES, open_image_entries,
    wasm_module, wasm_module_entries,
};

/// Every image reference is `<REPOSITORY_PREFIX><name>:latest`.
pub const REPOSITORY_PREFIX: &str = "docker.io/wasmtime-shim-test/";

/// The name of the static native image that runc runs to time a start-to-exit.
pub const NATIVE_HELLO_NAME: &str = "native-hello";

/// The name of the static native image that runc keeps idle for memory measurements.
pub const NATIVE_SLEEP_NAME: &str = "native-sleep";

/// The name of the image of bad inputs (see [`bad_image`]).
pub const BAD_IMAGE_NAME: &str = "bad";

/// The name of the image of the large, slow-to-compile module (see [`big_module`]).
pub const BIG_IMAGE_NAME: &str = "big";

/// The name of the conformance probe's image (see [`probe_image`]).
pub const PROBE_IMAGE_NAME: &str = "probe";

/// The name of the pause program's image (see [`pause_image`]).
pub const PAUSE_IMAGE_NAME: &str = "pause";

/// The name of the dynamically linked program's image (see [`dynamic_image`]).
pub const DYNAMIC_IMAGE_NAME: &str = "dynamic";

/// The name of the busybox image (see [`busybox_image`]).
pub const BUSYBOX_IMAGE_NAME: &str = "busybox";

/// The images that only some hosts can provide, each failing with the reason elsewhere.
pub const HOST_DEPENDENT_IMAGES: &[&str] = &[
    NATIVE_HELLO_NAME,
    NATIVE_SLEEP_NAME,
    PROBE_IMAGE_NAME,
    PAUSE_IMAGE_NAME,
    DYNAMIC_IMAGE_NAME,
    BUSYBOX_IMAGE_NAME,
];

/// A root-owned 0600 file in the `open` and `probe` images, which only root (or
/// CAP_DAC_OVERRIDE) can read.
pub const SECRET_PATH: &str = "/secret";
/// The content of [`SECRET_PATH`].
pub const SECRET_CONTENT: &[u8] = b"secret\n";
/// An empty 0755 directory in the `open` and `probe` images, for tests to mount volumes on.
pub const DATA_DIR: &str = "/data";

/// Everything needed to write one single-layer image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// The short name: the last part of the image reference and the tarball's file stem.
    pub name: String,
    /// The OCI platform architecture, `wasm` or `amd64`.
    pub architecture: String,
    /// The OCI platform OS: `wasip1` (a core module), `wasip2` (a component) or `linux`.
    pub os: String,
    /// The absolute path of the executable in the rootfs, which is also the entrypoint.
    pub entrypoint: String,
    /// The executable's bytes: a Wasm module or an ELF file (or, in the `bad` image, text).
    pub executable: Vec<u8>,
    /// Further regular files as (absolute path, bytes), installed with the executable's mode.
    /// Their order does not matter: the layer sorts them by path together with the executable.
    pub files: Vec<(String, Vec<u8>)>,
    /// Further entries of any kind (directories, symlinks, device nodes, files with their own
    /// mode and owner), likewise sorted by path. Missing parent directories are added (root,
    /// 0755), and an own `/tmp` directory replaces the default 1777 one. An entry may stand at
    /// the entrypoint's path (a symlink, say) when `executable` is empty.
    pub entries: Vec<Entry>,
    /// How the image's config starts its process, where that is more than the entrypoint.
    pub process: Process,
}

/// The process fields of an image's config beyond the default, which is `Entrypoint`
/// `[entrypoint]` alone, run as root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// `Entrypoint`: `None` for `[entrypoint]`, an empty list for none (the `Cmd` runs).
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`, left out when empty.
    pub cmd: Vec<String>,
    /// `User` (`uid`, `name`, `uid:gid` or `name:gid`), left out when empty.
    pub user: String,
}

/// Returns the full image reference for an image name, e.g.
/// `docker.io/wasmtime-shim-test/hello:latest`.
pub fn reference(name: &str) -> String {
    format!("{REPOSITORY_PREFIX}{name}:{TAG}")
}

/// Returns the image of every Wasm test module, with the module at `/<name>.wasm`.
pub fn wasm_images() -> Vec<ImageSpec> {
    WASM_MODULES
        .iter()
        .map(|(name, module)| ImageSpec {
            name: (*name).to_owned(),
            architecture: "wasm".to_owned(),
            os: "wasip1".to_owned(),
            entrypoint: format!("/{name}.wasm"),
            executable: module.to_vec(),
            files: Vec::new(),
            entries: wasm_module_entries(name),
            process: Process::default(),
        })
        .collect()
}

/// Returns the native hello image (`/hello`, linux/amd64), or an error on hosts that are not
/// x86_64 because nothing there could run it.
pub fn native_hello_image() -> Result<ImageSpec> {
    native_image(NATIVE_HELLO_NAME, "/hello", native_hello_elf())
}

/// Returns the native sleep image (`/sleep`, linux/amd64), or an error on hosts that are not
/// x86_64 because nothing there could run it.
pub fn native_sleep_image() -> Result<ImageSpec> {
    native_image(NATIVE_SLEEP_NAME, "/sleep", native_sleep_elf())
}

/// Returns the linux/amd64 image of a native executable, failing on hosts that are not x86_64.
pub(crate) fn native_image(name: &str, entrypoint: &str, executable: Vec<u8>) -> Result<ImageSpec> {
    ensure_native_supported().with_context(|| format!("cannot provide image {name}"))?;
    Ok(ImageSpec {
        name: name.to_owned(),
        architecture: "amd64".to_owned(),
        os: "linux".to_owned(),
        entrypoint: entrypoint.to_owned(),
        executable,
        files: Vec::new(),
        entries: Vec::new(),
        process: Process::default(),
    })
}

/// Returns the wasip1/wasm image of inputs the shim must reject: a text file as the
/// entrypoint, plus an empty file, a module without `_start` and a component header that
/// tests can select by passing their path as the command.
pub fn bad_image() -> ImageSpec {
    ImageSpec {
        name: BAD_IMAGE_NAME.to_owned(),
        architecture: "wasm".to_owned(),
        os: "wasip1".to_owned(),
        entrypoint: NOT_WASM_PATH.to_owned(),
        executable: NOT_WASM.to_vec(),
        files: bad::bad_extra_files(),
        entries: Vec::new(),
        process: Process::default(),
    }
}

/// Returns the image of the large module, at `/big.wasm`.
pub fn big_image() -> ImageSpec {
    ImageSpec {
        name: BIG_IMAGE_NAME.to_owned(),
        architecture: "wasm".to_owned(),
        os: "wasip1".to_owned(),
        entrypoint: "/big.wasm".to_owned(),
        executable: big_module(),
        files: Vec::new(),
        entries: Vec::new(),
        process: Process::default(),
    }
}

/// Returns every image this host can use: all Wasm images, the bad and big images, plus those
/// of [`HOST_DEPENDENT_IMAGES`] that this host can provide (on x86_64; busybox only when the
/// host has it) and those of [`WASM_PROGRAM_IMAGES`] whose toolchain-built programs are in
/// `.dev/programs` for the current sources. [`unavailable_images`] says why the others are
/// missing.
pub fn all_images() -> Vec<ImageSpec> {
    let mut images = wasm_images();
    images.push(bad_image());
    images.push(big_image());
    images.extend(
        HOST_DEPENDENT_IMAGES
            .iter()
            .filter_map(|name| image(name).ok()),
    );
    images.extend(
        WASM_PROGRAM_IMAGES
            .iter()
            .filter_map(|name| wasm_program_image(name).ok()),
    );
    images
}

/// Returns each image of [`HOST_DEPENDENT_IMAGES`] that this host cannot provide and each of
/// [`WASM_PROGRAM_IMAGES`] whose program is not built, with the reason (an unsupported
/// architecture, busybox-static not installed, `make programs` not run since a source changed).
pub fn unavailable_images() -> Vec<(&'static str, anyhow::Error)> {
    let mut missing: Vec<_> = HOST_DEPENDENT_IMAGES
        .iter()
        .filter_map(|name| image(name).err().map(|err| (*name, err)))
        .collect();
    missing.extend(missing_wasm_programs());
    missing
}

/// Returns the image called `name`, failing for unknown names and for the host-dependent
/// images on hosts that cannot provide them.
pub fn image(name: &str) -> Result<ImageSpec> {
    match name {
        NATIVE_HELLO_NAME => native_hello_image(),
        NATIVE_SLEEP_NAME => native_sleep_image(),
        PROBE_IMAGE_NAME => probe_image(),
        PAUSE_IMAGE_NAME => pause_image(),
        DYNAMIC_IMAGE_NAME => dynamic_image(),
        BUSYBOX_IMAGE_NAME => busybox_image(),
        BAD_IMAGE_NAME => Ok(bad_image()),
        BIG_IMAGE_NAME => Ok(big_image()),
        C_HELLO_IMAGE_NAME | PYTHON_CLI_IMAGE_NAME | PYTHON_HTTP_IMAGE_NAME => {
            wasm_program_image(name)
        }
        _ => match wasm_images().into_iter().find(|image| image.name == name) {
            Some(image) => Ok(image),
            None => bail!("unknown test image {name}"),
        },
    }
}

/// Writes `<dir>/<name>.tar` for every image of [`all_images`] and then of
/// [`artifact_images`] (the Wasm-layer images), creating `dir` first, and returns each
/// archive's path with its image reference.
pub fn write_all_images(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let mut written = Vec::new();
    for image in all_images() {
        let path = dir.join(format!("{}.tar", image.name));
        write_image(&path, &image)?;
        written.push((path, reference(&image.name)));
    }
    written.extend(artifact::write_artifact_images(dir)?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_follow_the_documented_form() {
        assert_eq!(
            reference("hello"),
            "docker.io/wasmtime-shim-test/hello:latest"
        );
        assert_eq!(
            reference(NATIVE_HELLO_NAME),
            "docker.io/wasmtime-shim-test/native-hello:latest"
        );
        assert_eq!(
            reference(NATIVE_SLEEP_NAME),
            "docker.io/wasmtime-shim-test/native-sleep:latest"
        );
    }

    #[test]
    fn all_images_has_every_module_and_native_where_supported() {
        let names: Vec<String> = all_images().into_iter().map(|image| image.name).collect();
        let mut expected = vec![
            "hello",
            "exit",
            "trap",
            "loop",
            "sleep",
            "args",
            "cat",
            "file",
            "open",
            "memgrow",
            "count",
            "tty",
            "component",
            "bad",
            "big",
        ];
        if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            expected.extend([
                NATIVE_HELLO_NAME,
                NATIVE_SLEEP_NAME,
                PROBE_IMAGE_NAME,
                PAUSE_IMAGE_NAME,
                DYNAMIC_IMAGE_NAME,
            ]);
            // busybox depends on the host having busybox-static installed.
            if busybox_image().is_ok() {
                expected.push(BUSYBOX_IMAGE_NAME);
            }
        }
        // The toolchain-built programs, once `make programs` built them.
        expected.extend(
            WASM_PROGRAM_IMAGES
                .iter()
                .filter(|name| wasm_program_image(name).is_ok()),
        );
        assert_eq!(names, expected);
        // Each host-dependent image is either written or reported as skipped, never both.
        let unavailable: Vec<&str> = unavailable_images().iter().map(|(n, _)| *n).collect();
        for name in HOST_DEPENDENT_IMAGES.iter().chain(WASM_PROGRAM_IMAGES) {
            let provided = names.iter().any(|found| found == name);
            assert_ne!(provided, unavailable.contains(name), "{name}");
        }
    }

    #[test]
    fn images_are_found_by_name() {
        let file = image("file").unwrap();
        assert_eq!(file.entrypoint, "/file.wasm");
        assert_eq!(file.executable, FILE_WASM);
        assert!(file.files.is_empty());
        let bad = image("bad").unwrap();
        assert_eq!(bad, bad_image());
        assert_eq!(bad.entrypoint, "/notwasm.wasm");
        assert_eq!(bad.executable, b"this is not a wasm module\n");
        assert_eq!(
            (bad.architecture.as_str(), bad.os.as_str()),
            ("wasm", "wasip1")
        );
        let err = image("nope").unwrap_err().to_string();
        assert!(err.contains("unknown test image nope"), "{err}");
    }

    #[test]
    fn new_images_are_found_by_name() {
        let open = image("open").unwrap();
        assert_eq!(open.entrypoint, "/open.wasm");
        assert_eq!(open.entries, open_image_entries());
        assert_eq!(image("memgrow").unwrap().executable, MEMGROW_WASM);
        assert_eq!(image("count").unwrap().executable, COUNT_WASM);
        let native = [
            (PROBE_IMAGE_NAME, PROBE_PATH),
            (PAUSE_IMAGE_NAME, PAUSE_PATH),
            (DYNAMIC_IMAGE_NAME, DYNHELLO_PATH),
            (BUSYBOX_IMAGE_NAME, "/bin/sh"),
        ];
        for (name, entrypoint) in native {
            match image(name) {
                Ok(found) => assert_eq!(
                    (found.entrypoint.as_str(), found.architecture.as_str()),
                    (entrypoint, "amd64")
                ),
                Err(err) => assert!(format!("{err:#}").contains("cannot provide image")),
            }
        }
    }

    #[test]
    fn native_sleep_is_found_by_name_where_supported() {
        let found = image(NATIVE_SLEEP_NAME);
        if !cfg!(target_arch = "x86_64") {
            let err = format!("{:#}", found.unwrap_err());
            assert!(err.contains("cannot provide image native-sleep"), "{err}");
            assert!(err.contains("unsupported architecture"), "{err}");
            return;
        }
        let sleep = found.unwrap();
        assert_eq!(sleep, native_sleep_image().unwrap());
        assert_eq!(sleep.name, "native-sleep");
        assert_eq!(sleep.entrypoint, "/sleep");
        assert_eq!(sleep.executable, native_sleep_elf());
        assert_eq!(
            (sleep.architecture.as_str(), sleep.os.as_str()),
            ("amd64", "linux")
        );
        assert!(sleep.files.is_empty());
    }

    #[test]
    fn write_all_images_creates_the_directory_and_every_tarball() {
        let dir = std::env::temp_dir().join(format!(
            "test-images-all-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let written = write_all_images(&dir.join("nested"));
        let listing: Vec<_> = written
            .iter()
            .flatten()
            .map(|(path, _)| path.exists())
            .collect();
        fs::remove_dir_all(&dir).unwrap();
        let written = written.unwrap();
        assert_eq!(written.len(), all_images().len() + artifact_images().len());
        assert!(listing.iter().all(|exists| *exists));
        assert_eq!(written[0].0, dir.join("nested").join("hello.tar"));
        assert_eq!(written[0].1, reference("hello"));
        assert!(
            written
                .iter()
                .any(|(path, name)| path.ends_with("bad.tar") && *name == reference("bad"))
        );
        assert!(written.iter().any(|(path, name)| {
            path.ends_with("hello-artifact.tar") && *name == reference(HELLO_ARTIFACT_NAME)
        }));
    }
}
