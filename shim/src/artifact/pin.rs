//! The image a container was made from, by digest. A container record names its image by a
//! mutable name: between CreateContainer and StartContainer (or a restart of the task) the name
//! may be retagged or re-pulled to other content. The CRI records the image's config digest
//! (its `ImageRef`, the node-local image ID) in the container's metadata extension at creation;
//! the lookup runs the Wasm layer of the image with that config, whatever the name now holds.
//! ctr and other clients record no digest: their name is resolved as it is, as ctr itself does
//! between its own container and task calls.

use anyhow::{Result, anyhow};
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{Container, ListImagesRequest};
use executor::image::{Descriptor, is_index, is_manifest, parse_index, parse_manifest};

use super::Api;

/// The extension in which containerd's CRI plugin keeps its metadata of a container
/// (`containerstore.Metadata`, JSON as `{"Version": "v1", "Metadata": {…}}`; the same key and
/// form from 1.6 to 2.x, since containerd reads it back after upgrades).
const CRI_METADATA: &str = "io.cri-containerd.container.metadata";
/// How many manifests of an index are read to find a config digest.
const MAX_INDEX_ENTRIES: usize = 64;
/// How many images are looked through for one whose config is the container's.
const MAX_IMAGES: usize = 4096;

/// The config digest (`sha256:<hex>`) of the image the CRI made `container` from; `None` for
/// a container of another client, or a CRI record without one.
pub fn cri_image_config(container: &Container) -> Option<String> {
    image_config_in(&container.extensions.get(CRI_METADATA)?.value)
}

/// `Metadata.ImageRef` of the CRI's metadata extension, when it is a sha256 digest.
fn image_config_in(metadata: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(metadata).ok()?;
    let config = value.get("Metadata")?.get("ImageRef")?.as_str()?;
    config.starts_with("sha256:").then(|| config.to_owned())
}

/// The error when no image holds the config a container was created from.
pub fn gone(config: &str) -> anyhow::Error {
    anyhow!(
        "it no longer names the image the container was created from (config {config}), and \
         no image in containerd does: it was retagged or removed since; create the container \
         again"
    )
}

impl Api {
    /// The Wasm layer of the image with config digest `config`, for a container whose image
    /// name `name` now names (as `target`) a Wasm layer of another config. `target` itself
    /// when it holds that config (a multi-platform index, whose config the CRI took from
    /// another entry), else the first image in the namespace that does (the name was retagged;
    /// a pulled image is kept under its ID and repo digest too). An error saying so when none
    /// does: the container must not run another image's module.
    pub(super) async fn pinned(
        &self,
        name: &str,
        target: Descriptor,
        config: &str,
    ) -> Result<Option<(String, Descriptor)>> {
        if self.holds_config(&target, config).await? {
            return self.wasm_layer_of(&target).await;
        }
        let Some((other_name, other)) = self.image_with_config(config).await? else {
            return Err(gone(config));
        };
        log::info!(
            "image {name} was retagged since the container was made from the image with \
             config {config}; running that image, now named {other_name}"
        );
        self.wasm_layer_of(&other).await
    }

    /// The name and target of the first image in the namespace that holds config digest
    /// `config`.
    pub(super) async fn image_with_config(
        &self,
        config: &str,
    ) -> Result<Option<(String, Descriptor)>> {
        let images = ImagesClient::new(self.channel.clone())
            .list(self.request(ListImagesRequest::default()))
            .await
            .map_err(super::rpc_error)
            .map_err(|e| e.context("failed to list images"))?
            .into_inner()
            .images;
        for image in images.into_iter().take(MAX_IMAGES) {
            let Some(target) = image.target.map(super::descriptor) else {
                continue;
            };
            if self.holds_config(&target, config).await? {
                return Ok(Some((image.name, target)));
            }
        }
        Ok(None)
    }

    /// Whether `target`, a manifest or an index of manifests, holds an image with config
    /// digest `config`. Entries of an index that were never fetched are passed over.
    async fn holds_config(&self, target: &Descriptor, config: &str) -> Result<bool> {
        if is_manifest(&target.media_type) {
            return self.manifest_config(target).await.map(|c| c == config);
        }
        if !is_index(&target.media_type) {
            return Ok(false);
        }
        let bytes = self.read_document(target).await?;
        let index = parse_index(&bytes).map_err(|e| anyhow!("index {}: {e}", target.digest))?;
        for entry in index.manifests.iter().take(MAX_INDEX_ENTRIES) {
            if !is_manifest(&entry.media_type) || !self.has_content(entry).await? {
                continue;
            }
            if self.manifest_config(entry).await? == config {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn manifest_config(&self, descriptor: &Descriptor) -> Result<String> {
        let bytes = self.read_document(descriptor).await?;
        let manifest =
            parse_manifest(&bytes).map_err(|e| anyhow!("manifest {}: {e}", descriptor.digest))?;
        Ok(manifest.config.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cri_image_config_is_read_from_the_metadata_extension() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let json = format!(r#"{{"Version":"v1","Metadata":{{"ID":"c","ImageRef":"{digest}"}}}}"#);
        assert_eq!(image_config_in(json.as_bytes()), Some(digest));
        assert_eq!(cri_image_config(&Container::default()), None);
        for bad in [
            &b"not json"[..],
            br#"{"Version":"v1","Metadata":{"ImageRef":""}}"#,
            br#"{"Version":"v1","Metadata":{"ImageRef":"docker.io/x:latest"}}"#,
            br#"{"Version":"v1","Metadata":{"ImageRef":7}}"#,
            br#"{"Version":"v1"}"#,
        ] {
            assert_eq!(image_config_in(bad), None);
        }
    }
}
