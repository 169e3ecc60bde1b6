//! Writes Wasm images whose module is a layer of its own rather than a file in a rootfs layer,
//! in the two forms containerd meets:
//!
//! - the CNCF TAG Runtime "Wasm OCI artifact": config `application/vnd.wasm.config.v0+json`
//!   (`created`, `author`, `architecture: wasm`, `os: wasip1|wasip2`, `layerDigests`) and one
//!   `application/wasm` layer. containerd ≥ 1.7.7 imports it (`ctr images import
//!   --all-platforms`) and the CRI creates containers from it with an empty rootfs, but no `ctr`
//!   can run it: `ctr run` only reads OCI and Docker image configs ("unknown image config media
//!   type application/vnd.wasm.config.v0+json").
//! - runwasi's older form: an ordinary OCI image config (entrypoint, env, no rootfs diff IDs)
//!   over a Wasm layer, which `ctr run` of containerd ≥ 1.7.7 runs in an empty rootfs.
//!
//! containerd 1.6 (and 1.7 before 1.7.7) refuses to unpack either: "mismatched image rootfs and
//! manifest layers". Archives are reproducible, like those of [`crate::image_archive`].

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tar::Builder;

use crate::digest::{digest, sha256_hex};
use crate::oci::{
    CONFIG_MEDIA_TYPE, CREATED, MANIFEST_MEDIA_TYPE, OCI_LAYOUT, append_dir, append_file,
    descriptor, index_document, to_json,
};
use crate::wasm::{EXIT_WASM, HELLO_WASM};

/// The config media type of the CNCF Wasm OCI artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The layer media type of the CNCF Wasm OCI artifact: the module or component itself.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The older layer media type of runwasi's Wasm images (and of the artifact's drafts).
pub const WASM_LAYER_V0_MEDIA_TYPE: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

/// The hello module as a CNCF artifact with an `application/wasm` layer.
pub const HELLO_ARTIFACT_NAME: &str = "hello-artifact";
/// The exit module as a CNCF artifact with the older layer media type.
pub const EXIT_ARTIFACT_NAME: &str = "exit-artifact";
/// The hello module as an `application/wasm` layer under an OCI image config.
pub const HELLO_WASM_LAYER_NAME: &str = "hello-wasm-layer";
/// The exit module as a layer of the older media type under an OCI image config.
pub const EXIT_WASM_LAYER_NAME: &str = "exit-wasm-layer";

/// What describes the Wasm layer of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactConfig<'a> {
    /// The CNCF artifact's config, for `os` `wasip1` (a core module) or `wasip2` (a component).
    Wasm { os: &'a str },
    /// An OCI image config whose entrypoint (the guest's argv\[0\]) is `entrypoint`, platform
    /// wasip1/wasm, with no rootfs layers.
    Oci { entrypoint: &'a str },
}

/// One image of a Wasm layer: its name, module, layer media type and config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactImage {
    pub name: &'static str,
    pub wasm: &'static [u8],
    pub layer_media_type: &'static str,
    pub config: ArtifactConfig<'static>,
}

/// Every image of a Wasm layer that the tests import.
pub fn artifact_images() -> Vec<ArtifactImage> {
    vec![
        ArtifactImage {
            name: HELLO_ARTIFACT_NAME,
            wasm: HELLO_WASM,
            layer_media_type: WASM_LAYER_MEDIA_TYPE,
            config: ArtifactConfig::Wasm { os: "wasip1" },
        },
        ArtifactImage {
            name: EXIT_ARTIFACT_NAME,
            wasm: EXIT_WASM,
            layer_media_type: WASM_LAYER_V0_MEDIA_TYPE,
            config: ArtifactConfig::Wasm { os: "wasip1" },
        },
        ArtifactImage {
            name: HELLO_WASM_LAYER_NAME,
            wasm: HELLO_WASM,
            layer_media_type: WASM_LAYER_MEDIA_TYPE,
            config: ArtifactConfig::Oci {
                entrypoint: "/hello.wasm",
            },
        },
        ArtifactImage {
            name: EXIT_WASM_LAYER_NAME,
            wasm: EXIT_WASM,
            layer_media_type: WASM_LAYER_V0_MEDIA_TYPE,
            config: ArtifactConfig::Oci {
                entrypoint: "/exit.wasm",
            },
        },
    ]
}

/// Writes `<dir>/<name>.tar` for every image of [`artifact_images`] and returns each archive's
/// path with its image reference.
pub fn write_artifact_images(dir: &Path) -> Result<Vec<(std::path::PathBuf, String)>> {
    let mut written = Vec::new();
    for image in artifact_images() {
        let path = dir.join(format!("{}.tar", image.name));
        let archive =
            artifact_archive(image.name, image.wasm, image.layer_media_type, image.config)?;
        fs::write(&path, archive).with_context(|| format!("failed to write {}", path.display()))?;
        written.push((path, crate::reference(image.name)));
    }
    Ok(written)
}

/// Writes the OCI image layout tar of a CNCF Wasm OCI artifact holding `wasm` as its one layer
/// of `layer_media_type`, for `os` (`wasip1` or `wasip2`), as image
/// [`crate::reference`]`(name)`; replaces any file at `path`.
///
/// The config leaves out the optional `author` and the `component` description (the world's
/// imports and exports that the artifact guide asks of a `wasip2` component), which nothing
/// here reads.
pub fn write_artifact_image(
    path: &Path,
    name: &str,
    wasm: &[u8],
    layer_media_type: &str,
    os: &str,
) -> Result<()> {
    let archive = artifact_archive(name, wasm, layer_media_type, ArtifactConfig::Wasm { os })?;
    fs::write(path, archive).with_context(|| format!("failed to write {}", path.display()))
}

/// Writes the OCI image layout tar of an image whose OCI image config runs `entrypoint` and
/// whose one layer is `wasm`, of `layer_media_type`; replaces any file at `path`.
pub fn write_wasm_layer_image(
    path: &Path,
    name: &str,
    wasm: &[u8],
    layer_media_type: &str,
    entrypoint: &str,
) -> Result<()> {
    let config = ArtifactConfig::Oci { entrypoint };
    let archive = artifact_archive(name, wasm, layer_media_type, config)?;
    fs::write(path, archive).with_context(|| format!("failed to write {}", path.display()))
}

/// Builds the whole OCI layout tar of an image of one Wasm layer in memory.
pub fn artifact_archive(
    name: &str,
    wasm: &[u8],
    layer_media_type: &str,
    config: ArtifactConfig,
) -> Result<Vec<u8>> {
    let reference = crate::reference(name);
    if wasm.is_empty() {
        bail!("{reference}: the Wasm layer is empty");
    }
    let (config_media_type, config_document, os) = match config {
        ArtifactConfig::Wasm { os } => {
            if !matches!(os, "wasip1" | "wasip2") {
                bail!("{reference}: os {os:?} is neither wasip1 nor wasip2");
            }
            (WASM_CONFIG_MEDIA_TYPE, wasm_config(os, wasm), os)
        }
        ArtifactConfig::Oci { entrypoint } => {
            (CONFIG_MEDIA_TYPE, oci_config(name, entrypoint), "wasip1")
        }
    };
    let config = to_json(&config_document);
    let manifest = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(config_media_type, &config),
        "layers": [descriptor(layer_media_type, wasm)],
    }));
    let index = to_json(&index_document("wasm", os, &reference, &manifest));

    let mut archive = Builder::new(Vec::new());
    append_file(&mut archive, "oci-layout", OCI_LAYOUT)?;
    append_file(&mut archive, "index.json", &index)?;
    append_dir(&mut archive, "blobs/")?;
    append_dir(&mut archive, "blobs/sha256/")?;
    // The module may be the config's or the manifest's twin only by a sha256 collision.
    for blob in [wasm, &config, &manifest] {
        let path = format!("blobs/sha256/{}", sha256_hex(blob));
        append_file(&mut archive, &path, blob)?;
    }
    archive
        .into_inner()
        .with_context(|| format!("failed to finish the archive of {reference}"))
}

/// The CNCF artifact config: `layerDigests` lists the layers in the manifest's order.
fn wasm_config(os: &str, wasm: &[u8]) -> Value {
    json!({
        "created": CREATED,
        "architecture": "wasm",
        "os": os,
        "layerDigests": [digest(wasm)],
    })
}

/// An OCI image config with no rootfs layers: containerd ≥ 1.7.7 counts only tar layers
/// against `diff_ids`, so it prepares an empty snapshot for the container.
fn oci_config(name: &str, entrypoint: &str) -> Value {
    json!({
        "created": CREATED,
        "architecture": "wasm",
        "os": "wasip1",
        "config": {
            "Entrypoint": [entrypoint],
            "Env": ["PATH=/"],
            "WorkingDir": "/",
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": [],
        },
        "history": [{
            "created": CREATED,
            "created_by": format!("test-images: {name}, {entrypoint} in a Wasm layer"),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::INDEX_MEDIA_TYPE;
    use crate::testutil::{TarEntries, blob, entries, paths_in_order};

    /// The index's one entry, the manifest, and the config of an archive.
    fn documents(files: &TarEntries) -> (Value, Value, Value) {
        let index: Value = serde_json::from_slice(&files["index.json"].data).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], INDEX_MEDIA_TYPE);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1);
        let entry = manifests[0].clone();
        assert_eq!(entry["mediaType"], MANIFEST_MEDIA_TYPE);
        let manifest: Value = serde_json::from_slice(blob(files, &entry)).unwrap();
        let config: Value = serde_json::from_slice(blob(files, &manifest["config"])).unwrap();
        (entry, manifest, config)
    }

    #[test]
    fn cncf_artifact_has_the_wasm_config_and_the_module_as_its_layer() {
        let wasm = HELLO_WASM;
        let archive = artifact_archive(
            "hello-artifact",
            wasm,
            WASM_LAYER_MEDIA_TYPE,
            ArtifactConfig::Wasm { os: "wasip1" },
        )
        .unwrap();
        let files = entries(&archive);
        assert_eq!(files["oci-layout"].data, OCI_LAYOUT);
        let (entry, manifest, config) = documents(&files);
        assert_eq!(
            entry["platform"],
            json!({"architecture": "wasm", "os": "wasip1"})
        );
        assert_eq!(
            entry["annotations"],
            json!({
                "io.containerd.image.name": "docker.io/wasmtime-shim-test/hello-artifact:latest",
                "org.opencontainers.image.ref.name": "latest",
            })
        );
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], WASM_LAYER_MEDIA_TYPE);
        assert_eq!(layers[0]["digest"], digest(wasm));
        assert_eq!(
            blob(&files, &layers[0]),
            wasm,
            "the layer is the module itself"
        );
        assert_eq!(
            config,
            json!({
                "created": "2024-01-01T00:00:00Z",
                "architecture": "wasm",
                "os": "wasip1",
                "layerDigests": [digest(wasm)],
            })
        );
        let paths = paths_in_order(&archive);
        assert_eq!(
            &paths[..4],
            ["oci-layout", "index.json", "blobs/", "blobs/sha256/"]
        );
        assert_eq!(
            paths.len(),
            7,
            "one layer, one config, one manifest: {paths:?}"
        );
    }

    #[test]
    fn older_layer_type_and_wasip2_are_kept_as_given() {
        let archive = artifact_archive(
            "exit-artifact",
            EXIT_WASM,
            WASM_LAYER_V0_MEDIA_TYPE,
            ArtifactConfig::Wasm { os: "wasip2" },
        )
        .unwrap();
        let (entry, manifest, config) = documents(&entries(&archive));
        assert_eq!(entry["platform"]["os"], "wasip2");
        assert_eq!(config["os"], "wasip2");
        assert_eq!(manifest["layers"][0]["mediaType"], WASM_LAYER_V0_MEDIA_TYPE);
    }

    #[test]
    fn wasm_layer_image_has_an_oci_config_without_rootfs_layers() {
        let archive = artifact_archive(
            "exit-wasm-layer",
            EXIT_WASM,
            WASM_LAYER_V0_MEDIA_TYPE,
            ArtifactConfig::Oci {
                entrypoint: "/exit.wasm",
            },
        )
        .unwrap();
        let files = entries(&archive);
        let (entry, manifest, config) = documents(&files);
        assert_eq!(
            entry["platform"],
            json!({"architecture": "wasm", "os": "wasip1"})
        );
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(manifest["layers"][0]["mediaType"], WASM_LAYER_V0_MEDIA_TYPE);
        assert_eq!(blob(&files, &manifest["layers"][0]), EXIT_WASM);
        assert_eq!(config["config"]["Entrypoint"], json!(["/exit.wasm"]));
        assert_eq!(config["rootfs"], json!({"type": "layers", "diff_ids": []}));
        assert_eq!(
            (config["architecture"].as_str(), config["os"].as_str()),
            (Some("wasm"), Some("wasip1"))
        );
    }

    #[test]
    fn bad_inputs_are_refused_with_the_reference() {
        let err = artifact_archive(
            "x",
            b"",
            WASM_LAYER_MEDIA_TYPE,
            ArtifactConfig::Wasm { os: "wasip1" },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("wasmtime-shim-test/x:latest") && err.contains("empty"),
            "{err}"
        );
        let err = artifact_archive(
            "x",
            HELLO_WASM,
            WASM_LAYER_MEDIA_TYPE,
            ArtifactConfig::Wasm { os: "linux" },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"linux\""), "{err}");
    }

    #[test]
    fn archives_are_reproducible_and_written_where_asked() {
        let dir = std::env::temp_dir().join(format!(
            "test-images-artifacts-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        let written = write_artifact_images(&dir);
        let single = dir.join("single.tar");
        let one = write_artifact_image(
            &single,
            "hello-artifact",
            HELLO_WASM,
            WASM_LAYER_MEDIA_TYPE,
            "wasip1",
        )
        .map(|()| fs::read(&single).unwrap());
        let layer = dir.join("layer.tar");
        let two = write_wasm_layer_image(
            &layer,
            "exit-wasm-layer",
            EXIT_WASM,
            WASM_LAYER_V0_MEDIA_TYPE,
            "/exit.wasm",
        )
        .map(|()| fs::read(&layer).unwrap());
        let contents: Vec<_> = written
            .iter()
            .flatten()
            .map(|(path, _)| fs::read(path).unwrap())
            .collect();
        fs::remove_dir_all(&dir).unwrap();
        let written = written.unwrap();
        assert_eq!(written.len(), artifact_images().len());
        for ((path, reference), (image, bytes)) in
            written.iter().zip(artifact_images().iter().zip(&contents))
        {
            assert_eq!(*path, dir.join(format!("{}.tar", image.name)));
            assert_eq!(*reference, crate::reference(image.name));
            let again =
                artifact_archive(image.name, image.wasm, image.layer_media_type, image.config)
                    .unwrap();
            assert_eq!(*bytes, again, "{}", image.name);
        }
        assert_eq!(one.unwrap(), contents[0], "hello-artifact by hand");
        assert_eq!(two.unwrap(), contents[3], "exit-wasm-layer by hand");
    }
}
