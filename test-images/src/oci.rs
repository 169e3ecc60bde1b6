//! Writes an image as an OCI image layout packed into one uncompressed tar, the form that
//! `ctr images import --all-platforms` reads.
//!
//! Every byte is reproducible: JSON objects are built with `json!` (whose maps have a fixed
//! order), tar headers carry fixed owners, modes and times, and `created` is a constant. That
//! lets tests compare digests and lets containerd skip content it already has.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tar::{Builder, EntryType};

use crate::ImageSpec;
use crate::digest::{digest, sha256_hex};
use crate::layer::{header, layer_tar};

pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// The tag every image gets; it is also the `org.opencontainers.image.ref.name` annotation.
pub const TAG: &str = "latest";

/// The image creation time, fixed so the config blob (and so every digest) never changes.
pub(crate) const CREATED: &str = "2024-01-01T00:00:00Z";
pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Builds the image archive (the whole OCI layout tar) in memory.
pub fn image_archive(image: &ImageSpec) -> Result<Vec<u8>> {
    image_archive_as(image, &crate::reference(&image.name))
}

/// Builds the image archive of `image` under the name `reference` (what `ctr images import`
/// names it), for images that stand in for others' references.
pub fn image_archive_as(image: &ImageSpec, reference: &str) -> Result<Vec<u8>> {
    let layer =
        layer_tar(image).with_context(|| format!("failed to build the layer of {reference}"))?;
    let config = to_json(&config_document(image, &digest(&layer)));
    let manifest = to_json(&manifest_document(&config, &layer));
    let index = to_json(&index_document(
        &image.architecture,
        &image.os,
        reference,
        &manifest,
    ));

    let mut archive = Builder::new(Vec::new());
    append_file(&mut archive, "oci-layout", OCI_LAYOUT)?;
    append_file(&mut archive, "index.json", &index)?;
    append_dir(&mut archive, "blobs/")?;
    append_dir(&mut archive, "blobs/sha256/")?;
    for blob in [&layer, &config, &manifest] {
        append_file(
            &mut archive,
            &format!("blobs/sha256/{}", sha256_hex(blob)),
            blob,
        )?;
    }
    archive
        .into_inner()
        .with_context(|| format!("failed to finish the archive of {reference}"))
}

/// Writes the image archive to `out`, replacing any file there.
pub fn write_image(out: &Path, image: &ImageSpec) -> Result<()> {
    let archive = image_archive(image)?;
    fs::write(out, archive).with_context(|| format!("failed to write {}", out.display()))
}

/// The PATH of an image's config: the usual one for Linux images, whose
/// programs (busybox's `sh`) are found through it, and `/` for Wasm ones.
fn path_env(image: &ImageSpec) -> &'static str {
    match image.os.as_str() {
        "linux" => "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        _ => "PATH=/",
    }
}

/// The `config` part of an image's config: its process as [`crate::Process`] says.
fn process_config(image: &ImageSpec) -> Value {
    let process = &image.process;
    let mut config = json!({
        "Env": [path_env(image)],
        "WorkingDir": "/",
    });
    match &process.entrypoint {
        None => config["Entrypoint"] = json!([image.entrypoint]),
        Some(entrypoint) if entrypoint.is_empty() => {}
        Some(entrypoint) => config["Entrypoint"] = json!(entrypoint),
    }
    if !process.cmd.is_empty() {
        config["Cmd"] = json!(process.cmd);
    }
    if !process.user.is_empty() {
        config["User"] = json!(process.user);
    }
    config
}

fn config_document(image: &ImageSpec, layer_digest: &str) -> Value {
    json!({
        "created": CREATED,
        "architecture": image.architecture,
        "os": image.os,
        "config": process_config(image),
        // The layer is uncompressed, so its diff ID is its digest.
        "rootfs": {
            "type": "layers",
            "diff_ids": [layer_digest],
        },
        "history": [{
            "created": CREATED,
            "created_by": format!("test-images: {} at {}", image.name, image.entrypoint),
        }],
    })
}

fn manifest_document(config: &[u8], layer: &[u8]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(CONFIG_MEDIA_TYPE, config),
        "layers": [descriptor(LAYER_MEDIA_TYPE, layer)],
    })
}

/// The index lists the manifest itself rather than a nested index. containerd 1.6 then makes
/// the manifest the image target, and for a manifest target it skips the platform check; that
/// is what lets `ctr run` unpack a wasip1/wasm image on a linux/amd64 host.
/// Artifacts use it too, with their own platform.
pub(crate) fn index_document(
    architecture: &str,
    os: &str,
    reference: &str,
    manifest: &[u8],
) -> Value {
    let mut entry = descriptor(MANIFEST_MEDIA_TYPE, manifest);
    entry["platform"] = json!({
        "architecture": architecture,
        "os": os,
    });
    entry["annotations"] = json!({
        "io.containerd.image.name": reference,
        "org.opencontainers.image.ref.name": TAG,
    });
    json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [entry],
    })
}

pub(crate) fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": digest(blob),
        "size": blob.len(),
    })
}

pub(crate) fn to_json(document: &Value) -> Vec<u8> {
    // Serialising a Value built from strings and numbers cannot fail.
    serde_json::to_vec(document).expect("a json value always serialises")
}

pub(crate) fn append_file(archive: &mut Builder<Vec<u8>>, path: &str, data: &[u8]) -> Result<()> {
    append_entry(archive, path, EntryType::Regular, 0o644, data)
}

pub(crate) fn append_dir(archive: &mut Builder<Vec<u8>>, path: &str) -> Result<()> {
    append_entry(archive, path, EntryType::Directory, 0o755, &[])
}

/// Appends one entry of the archive (not of the layer) with the layer's deterministic header.
fn append_entry(
    archive: &mut Builder<Vec<u8>>,
    path: &str,
    kind: EntryType,
    mode: u32,
    data: &[u8],
) -> Result<()> {
    let mut header = header(kind, mode, data.len() as u64);
    archive
        .append_data(&mut header, path, data)
        .with_context(|| format!("failed to add {path} to a tar"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::MTIME;
    use crate::testutil::{blob, entries, paths_in_order};

    fn hello() -> ImageSpec {
        crate::image("hello").unwrap()
    }

    #[test]
    fn archive_is_an_oci_layout_whose_index_names_the_manifest() {
        let archive = image_archive(&hello()).unwrap();
        let files = entries(&archive);
        assert_eq!(
            files["oci-layout"].data,
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );
        assert_eq!(files["blobs/"].kind, EntryType::Directory);
        let blob_count = files
            .keys()
            .filter(|path| path.starts_with("blobs/sha256/") && path.len() > 13)
            .count();
        assert_eq!(blob_count, 3, "one layer, one config, one manifest");

        let index: Value = serde_json::from_slice(&files["index.json"].data).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], INDEX_MEDIA_TYPE);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1);
        let entry = &manifests[0];
        assert_eq!(entry["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(
            entry["platform"],
            json!({"architecture": "wasm", "os": "wasip1"})
        );
        assert_eq!(
            entry["annotations"]["io.containerd.image.name"],
            "docker.io/wasmtime-shim-test/hello:latest"
        );
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            "latest"
        );

        let manifest: Value = serde_json::from_slice(blob(&files, entry)).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], LAYER_MEDIA_TYPE);

        let config: Value = serde_json::from_slice(blob(&files, &manifest["config"])).unwrap();
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["config"]["Entrypoint"], json!(["/hello.wasm"]));
        assert_eq!(config["config"]["Env"], json!(["PATH=/"]));
        assert_eq!(config["config"]["WorkingDir"], "/");
        assert_eq!(config["created"], CREATED);
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(config["rootfs"]["diff_ids"], json!([layers[0]["digest"]]));

        let layer = entries(blob(&files, &layers[0]));
        assert_eq!(layer.keys().collect::<Vec<_>>(), ["hello.wasm", "tmp/"]);
        let module = &layer["hello.wasm"];
        assert_eq!(
            (
                module.kind,
                module.mode,
                module.uid,
                module.gid,
                module.mtime
            ),
            (EntryType::Regular, 0o755, 0, 0, MTIME)
        );
        assert_eq!(module.data, crate::HELLO_WASM);
        let tmp = &layer["tmp/"];
        assert_eq!(
            (tmp.kind, tmp.mode, tmp.uid, tmp.gid, tmp.mtime),
            (EntryType::Directory, 0o1777, 0, 0, MTIME)
        );
    }

    /// Checks that a native image is linux/amd64, named `reference`, and runs `entrypoint`,
    /// which holds `elf` with mode 0755.
    fn assert_native_image(image: &ImageSpec, reference: &str, entrypoint: &str, elf: &[u8]) {
        let files = entries(&image_archive(image).unwrap());
        let index: Value = serde_json::from_slice(&files["index.json"].data).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(
            entry["platform"],
            json!({"architecture": "amd64", "os": "linux"})
        );
        assert_eq!(entry["annotations"]["io.containerd.image.name"], reference);
        let manifest: Value = serde_json::from_slice(blob(&files, entry)).unwrap();
        let config: Value = serde_json::from_slice(blob(&files, &manifest["config"])).unwrap();
        assert_eq!(config["config"]["Entrypoint"], json!([entrypoint]));
        let layer = entries(blob(&files, &manifest["layers"][0]));
        let path = entrypoint.trim_start_matches('/');
        assert_eq!(layer[path].mode, 0o755);
        assert_eq!(layer[path].data, elf);
    }

    #[test]
    fn native_image_is_linux_amd64_with_hello_at_the_root() {
        let image = match crate::native_hello_image() {
            Ok(image) => image,
            Err(e) => return eprintln!("skipping: {e:#}"),
        };
        assert_native_image(
            &image,
            "docker.io/wasmtime-shim-test/native-hello:latest",
            "/hello",
            &crate::native_hello_elf(),
        );
    }

    #[test]
    fn native_sleep_image_is_linux_amd64_with_sleep_at_the_root() {
        let image = match crate::native_sleep_image() {
            Ok(image) => image,
            Err(e) => return eprintln!("skipping: {e:#}"),
        };
        assert_native_image(
            &image,
            "docker.io/wasmtime-shim-test/native-sleep:latest",
            "/sleep",
            &crate::native_sleep_elf(),
        );
    }

    #[test]
    fn bad_image_layer_holds_the_bad_inputs_sorted_by_path() {
        let files = entries(&image_archive(&crate::bad_image()).unwrap());
        let index: Value = serde_json::from_slice(&files["index.json"].data).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(
            entry["platform"],
            json!({"architecture": "wasm", "os": "wasip1"})
        );
        assert_eq!(
            entry["annotations"]["io.containerd.image.name"],
            "docker.io/wasmtime-shim-test/bad:latest"
        );
        let manifest: Value = serde_json::from_slice(blob(&files, entry)).unwrap();
        let config: Value = serde_json::from_slice(blob(&files, &manifest["config"])).unwrap();
        assert_eq!(config["config"]["Entrypoint"], json!(["/notwasm.wasm"]));

        let layer_bytes = blob(&files, &manifest["layers"][0]);
        assert_eq!(
            paths_in_order(layer_bytes),
            [
                "component.wasm",
                "empty.wasm",
                "nostart.wasm",
                "notwasm.wasm",
                "tmp/"
            ]
        );
        let layer = entries(layer_bytes);
        let expected: [(&str, &[u8]); 4] = [
            ("notwasm.wasm", b"this is not a wasm module\n"),
            ("empty.wasm", b""),
            ("nostart.wasm", crate::NOSTART_WASM),
            ("component.wasm", b"\0asm\x0d\x00\x01\x00"),
        ];
        for (path, data) in expected {
            let file = &layer[path];
            assert_eq!(
                (file.kind, file.mode, file.uid, file.gid, file.mtime),
                (EntryType::Regular, 0o755, 0, 0, MTIME),
                "{path}"
            );
            assert_eq!(file.data, data, "{path}");
        }
        let tmp = &layer["tmp/"];
        assert_eq!((tmp.kind, tmp.mode), (EntryType::Directory, 0o1777));
    }

    #[test]
    fn extra_file_order_does_not_change_the_archive() {
        let bad = crate::bad_image();
        let mut reversed = bad.clone();
        reversed.files.reverse();
        assert_ne!(bad.files, reversed.files);
        assert_eq!(
            image_archive(&bad).unwrap(),
            image_archive(&reversed).unwrap()
        );
    }

    #[test]
    fn layer_paths_must_be_unique() {
        for clash in ["/hello.wasm", "/tmp"] {
            let mut image = hello();
            image.files.push((clash.to_owned(), b"clash".to_vec()));
            let err = format!("{:#}", image_archive(&image).unwrap_err());
            assert!(err.contains(&format!("{clash} twice")), "{err}");
            assert!(err.contains("wasmtime-shim-test/hello:latest"), "{err}");
        }
    }

    #[test]
    fn archives_are_reproducible() {
        for image in crate::all_images() {
            assert_eq!(
                image_archive(&image).unwrap(),
                image_archive(&image).unwrap(),
                "{}",
                image.name
            );
        }
    }

    #[test]
    fn write_image_reports_the_path_it_could_not_write() {
        let out = Path::new("/nonexistent-test-images-dir/hello.tar");
        let err = write_image(out, &hello()).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent-test-images-dir/hello.tar"),
            "{err:#}"
        );
    }
}
