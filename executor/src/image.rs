//! OCI image documents as the shim reads them from containerd's content
//! store to find a container's Wasm layer: indexes, manifests and their
//! descriptors, the entry of an index to follow, the Wasm layer of a
//! manifest. Pure functions of untrusted bytes (an image comes from any
//! registry), kept here beside the runtime spec's parser so that the
//! fuzz targets reach them without the shim's gRPC stack.

use serde::Deserialize;

use crate::error::{Error, Result};

/// The config media type of the CNCF Wasm OCI artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The layer media types of a Wasm module or component: the artifact's, and the older one of
/// runwasi's images and the artifact's drafts.
pub const WASM_LAYER_MEDIA_TYPES: [&str; 2] = [
    "application/wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_INDEX: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The OS names of Wasm platforms in indexes: the artifact's, and `wasi` of older images.
pub const WASM_OSES: [&str; 3] = ["wasip1", "wasip2", "wasi"];

/// An OCI content descriptor, as far as the shim reads one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Debug, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_INDEX)
}

pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

pub fn is_wasm_layer(media_type: &str) -> bool {
    WASM_LAYER_MEDIA_TYPES.contains(&media_type)
}

/// The entry of an index to follow: the first one for a Wasm platform (architecture `wasm`, OS
/// wasip1, wasip2 or wasi), else the only entry; `None` for an index of several entries none of
/// which is Wasm (an ordinary multi-platform image, whose container runs from its rootfs).
pub fn select_manifest(index: &Index) -> Option<&Descriptor> {
    let wasm = index.manifests.iter().find(|entry| {
        entry.platform.as_ref().is_some_and(|platform| {
            platform.architecture == "wasm" && WASM_OSES.contains(&platform.os.as_str())
        })
    });
    match (wasm, index.manifests.as_slice()) {
        (Some(entry), _) => Some(entry),
        (None, [only]) => Some(only),
        (None, _) => None,
    }
}

/// The Wasm layer of a manifest, `None` for an ordinary image (an OCI or Docker config with no
/// Wasm layer), or why the image cannot run.
///
/// A CNCF artifact (the Wasm config) must hold exactly one layer, a Wasm one; an OCI or Docker
/// image config may hold one Wasm layer beside its tar layers (which containerd ≥ 1.7.7 unpacks
/// as the rootfs and the Wasm layer it skips).
pub fn wasm_layer(manifest: &Manifest) -> Result<Option<&Descriptor>> {
    let config = manifest.config.media_type.as_str();
    let wasm: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|layer| is_wasm_layer(&layer.media_type))
        .collect();
    if config == WASM_CONFIG_MEDIA_TYPE {
        if let Some(other) = manifest
            .layers
            .iter()
            .find(|layer| !is_wasm_layer(&layer.media_type))
        {
            return Err(image_error(format!(
                "Wasm OCI artifact layer {} has media type {:?}, not application/wasm",
                other.digest, other.media_type
            )));
        }
    } else if !wasm.is_empty() && !matches!(config, OCI_CONFIG | DOCKER_CONFIG) {
        return Err(image_error(format!(
            "it has a Wasm layer but its config has media type {config:?}, neither \
             {WASM_CONFIG_MEDIA_TYPE} nor an OCI image config"
        )));
    }
    match wasm.as_slice() {
        [] if config == WASM_CONFIG_MEDIA_TYPE => Err(image_error(
            "the Wasm OCI artifact has no layer".to_string(),
        )),
        [] => Ok(None),
        [layer] => Ok(Some(layer)),
        layers => Err(image_error(format!(
            "it has {} Wasm layers ({}); the shim runs one module per container",
            layers.len(),
            layers
                .iter()
                .map(|layer| layer.digest.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Refuses a blob over `limit` bytes before reading any of it.
pub fn check_size(descriptor: &Descriptor, limit: u64) -> Result<()> {
    if descriptor.size > limit {
        return Err(image_error(format!(
            "{} {} is {} bytes, over the shim's limit of {limit} bytes",
            descriptor.media_type, descriptor.digest, descriptor.size
        )));
    }
    Ok(())
}

/// The lowercase hex of a `sha256:<hex>` digest, the only algorithm the shim checks.
pub fn sha256_of(digest: &str) -> Result<String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        image_error(format!(
            "digest {digest:?} is not sha256, the only algorithm supported"
        ))
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(image_error(format!(
            "digest {digest:?} is not 64 lowercase hex digits"
        )));
    }
    Ok(hex.to_owned())
}

/// Parses an index document.
pub fn parse_index(bytes: &[u8]) -> Result<Index> {
    serde_json::from_slice(bytes).map_err(|e| image_error(format!("not a valid index: {e}")))
}

/// Parses a manifest document.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest> {
    serde_json::from_slice(bytes).map_err(|e| image_error(format!("not a valid manifest: {e}")))
}

fn image_error(message: String) -> Error {
    Error::Image(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 1 << 30;

    const DIGEST_A: &str =
        "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DIGEST_B: &str =
        "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn manifest(config: &str, layers: &[(&str, &str)]) -> Manifest {
        let layers: Vec<_> = layers
            .iter()
            .map(|(media_type, digest)| {
                serde_json::json!({"mediaType": media_type, "digest": digest, "size": 10})
            })
            .collect();
        let document = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config, "digest": DIGEST_B, "size": 2},
            "layers": layers,
        });
        serde_json::from_value(document).unwrap()
    }

    fn index(entries: serde_json::Value) -> Index {
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": entries}))
            .unwrap()
    }

    fn entry(digest: &str, platform: Option<(&str, &str)>) -> serde_json::Value {
        let mut entry = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 5});
        if let Some((architecture, os)) = platform {
            entry["platform"] = serde_json::json!({"architecture": architecture, "os": os});
        }
        entry
    }

    #[test]
    fn cncf_artifact_gives_its_one_layer_of_either_media_type() {
        for media_type in WASM_LAYER_MEDIA_TYPES {
            let manifest = manifest(WASM_CONFIG_MEDIA_TYPE, &[(media_type, DIGEST_A)]);
            let layer = wasm_layer(&manifest).unwrap().unwrap();
            assert_eq!((layer.digest.as_str(), layer.size), (DIGEST_A, 10));
            assert_eq!(layer.media_type, media_type);
        }
    }

    #[test]
    fn ordinary_images_have_no_wasm_layer() {
        for config in [OCI_CONFIG, DOCKER_CONFIG, "application/vnd.example+json"] {
            let tar = "application/vnd.oci.image.layer.v1.tar+gzip";
            let manifest = manifest(config, &[(tar, DIGEST_A)]);
            assert!(wasm_layer(&manifest).unwrap().is_none(), "{config}");
        }
        let empty = manifest(OCI_CONFIG, &[]);
        assert!(wasm_layer(&empty).unwrap().is_none());
    }

    #[test]
    fn an_oci_config_may_carry_one_wasm_layer_beside_tar_layers() {
        let tar = "application/vnd.oci.image.layer.v1.tar";
        let manifest = manifest(
            OCI_CONFIG,
            &[(tar, DIGEST_B), ("application/wasm", DIGEST_A)],
        );
        assert_eq!(wasm_layer(&manifest).unwrap().unwrap().digest, DIGEST_A);
    }

    #[test]
    fn bad_artifacts_are_refused_with_the_reason() {
        let cases: [(Manifest, &str); 5] = [
            (
                manifest(
                    WASM_CONFIG_MEDIA_TYPE,
                    &[
                        ("application/wasm", DIGEST_A),
                        ("application/wasm", DIGEST_B),
                    ],
                ),
                "2 Wasm layers",
            ),
            (
                manifest(
                    OCI_CONFIG,
                    &[
                        ("application/wasm", DIGEST_A),
                        ("application/wasm", DIGEST_B),
                    ],
                ),
                "one module per container",
            ),
            (
                manifest(
                    WASM_CONFIG_MEDIA_TYPE,
                    &[("application/vnd.oci.image.layer.v1.tar", DIGEST_A)],
                ),
                "not application/wasm",
            ),
            (manifest(WASM_CONFIG_MEDIA_TYPE, &[]), "has no layer"),
            (
                manifest(
                    "application/vnd.example+json",
                    &[("application/wasm", DIGEST_A)],
                ),
                "application/vnd.example+json",
            ),
        ];
        for (manifest, expected) in cases {
            let err = format!("{:#}", wasm_layer(&manifest).unwrap_err());
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn an_index_is_followed_to_its_wasm_entry_or_its_only_one() {
        let wasm = index(serde_json::json!([
            entry(DIGEST_B, Some(("amd64", "linux"))),
            entry(DIGEST_A, Some(("wasm", "wasip1"))),
        ]));
        assert_eq!(select_manifest(&wasm).unwrap().digest, DIGEST_A);
        for os in ["wasip2", "wasi"] {
            let wasm = index(serde_json::json!([entry(DIGEST_A, Some(("wasm", os)))]));
            assert_eq!(select_manifest(&wasm).unwrap().digest, DIGEST_A, "{os}");
        }
        let only = index(serde_json::json!([entry(DIGEST_B, None)]));
        assert_eq!(select_manifest(&only).unwrap().digest, DIGEST_B);
        let native = index(serde_json::json!([
            entry(DIGEST_A, Some(("amd64", "linux"))),
            entry(DIGEST_B, Some(("arm64", "linux"))),
        ]));
        assert!(select_manifest(&native).is_none());
        assert!(select_manifest(&index(serde_json::json!([]))).is_none());
        // wasm32 was never an OCI architecture name; such an entry is not chosen over others.
        let wasm32 = index(serde_json::json!([
            entry(DIGEST_A, Some(("wasm32", "wasi"))),
            entry(DIGEST_B, Some(("amd64", "linux"))),
        ]));
        assert!(select_manifest(&wasm32).is_none());
    }

    #[test]
    fn media_types_are_told_apart() {
        assert!(is_index(OCI_INDEX) && is_index(DOCKER_INDEX) && !is_index(OCI_MANIFEST));
        assert!(is_manifest(OCI_MANIFEST) && is_manifest(DOCKER_MANIFEST));
        assert!(!is_manifest(OCI_INDEX) && !is_manifest(""));
        assert!(!is_wasm_layer("application/vnd.oci.image.layer.v1.tar"));
    }

    #[test]
    fn sizes_over_the_limit_are_refused_before_reading() {
        let layer = Descriptor {
            media_type: "application/wasm".into(),
            digest: DIGEST_A.into(),
            size: LIMIT + 1,
            platform: None,
        };
        let err = check_size(&layer, LIMIT).unwrap_err().to_string();
        assert!(
            err.contains("1073741825 bytes") && err.contains("limit of 1073741824"),
            "{err}"
        );
        check_size(
            &Descriptor {
                size: LIMIT,
                ..layer
            },
            LIMIT,
        )
        .unwrap();
    }

    #[test]
    fn only_well_formed_sha256_digests_are_accepted() {
        assert_eq!(sha256_of(DIGEST_A).unwrap(), &DIGEST_A[7..]);
        for bad in [
            "sha512:aa",
            "sha256:AA",
            "sha256:abc",
            DIGEST_A.trim_start_matches("sha256:"),
        ] {
            assert!(sha256_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn descriptors_parse_without_optional_fields() {
        let d: Descriptor = serde_json::from_str(&format!(
            r#"{{"digest":"{DIGEST_A}","size":3,"annotations":{{"a":"b"}}}}"#
        ))
        .unwrap();
        assert_eq!((d.media_type.as_str(), d.size, d.platform), ("", 3, None));
    }
}
