//! The Wasm module of a container whose image carries it as a layer of its own: a CNCF "Wasm
//! OCI artifact" (config `application/vnd.wasm.config.v0+json`, one `application/wasm` layer)
//! or runwasi's older form (an OCI image config over a Wasm layer). containerd does not unpack
//! such a layer (since 1.7.7 it skips non-tar layers; the container gets an empty snapshot), so
//! the shim reads it from containerd's content store through the gRPC API:
//! Containers.Get → Images.Get → Content.Read of the manifest (and of an index first, if the
//! image is one) → Content.Read of the layer into a sealed memfd, its sha256 checked on the way.
//!
//! That is three RPCs for a container of an ordinary image (Containers.Get, Images.Get, the
//! manifest) and one more for the layer; nothing is cached. A container the CRI made is held to
//! the image it was made from, by its config digest, even when the name now names another
//! (`pin.rs`).

mod pin;

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    GetContainerRequest, GetImageRequest, InfoRequest, ReadContentRequest,
};
use containerd_client::tonic::metadata::AsciiMetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use executor::image::{
    Descriptor, check_size, is_index, is_manifest, parse_index, parse_manifest, select_manifest,
    sha256_of, wasm_layer,
};
use nix::sys::memfd::{MFdFlags, memfd_create};
use sha2::{Digest, Sha256};

/// The largest Wasm layer the shim reads into memory.
pub const MAX_LAYER_SIZE: u64 = 1 << 30;
/// The largest manifest or index the shim reads (the limit registries apply to manifests).
const MAX_DOCUMENT_SIZE: u64 = 4 << 20;
/// How deep indexes may nest before the image is refused.
const MAX_INDEX_DEPTH: usize = 4;
/// How long the whole lookup may take, the layer's transfer included.
const LOOKUP_LIMIT: Duration = Duration::from_secs(120);

/// The Wasm module of an OCI Wasm artifact image, when the container's image is one.
#[derive(Debug)]
pub struct Artifact {
    /// `sha256:<hex>` of the layer, checked against its content.
    pub digest: String,
    /// The layer's media type.
    pub media_type: String,
    /// A memfd holding the layer, sealed against writes, growing and shrinking, its offset at 0.
    pub module: OwnedFd,
    /// The layer's size in bytes.
    pub size: u64,
}

impl std::fmt::Display for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Wasm layer {} ({}, {} bytes)",
            self.digest, self.media_type, self.size
        )
    }
}

/// Looks up the Wasm layer of container `container_id`'s image in the containerd at
/// `grpc_address` (its socket path, as the shim's `-address` flag gives it), in `namespace`.
///
/// `None` when the container has no image (or no container record) or its image is an ordinary
/// (rootfs) image; an error naming the image and the problem otherwise: two or more Wasm
/// layers, a CNCF artifact layer that is not Wasm, a digest or size mismatch, missing content,
/// a layer over [`MAX_LAYER_SIZE`].
///
/// A containerd too old for artifacts never gets here with one: before 1.7.7 every client
/// (ctr, the CRI) fails to unpack an image with a non-tar layer ("mismatched image rootfs and
/// manifest layers") and so never creates the container, so there is no version to check.
pub async fn lookup(
    grpc_address: &str,
    namespace: &str,
    container_id: &str,
) -> Result<Option<Artifact>> {
    let lookup = lookup_unbounded(grpc_address, namespace, container_id);
    tokio::time::timeout(LOOKUP_LIMIT, lookup)
        .await
        .map_err(|_| {
            anyhow!(
                "containerd at {grpc_address} did not answer the image lookup of container \
                 {container_id} within {LOOKUP_LIMIT:?}"
            )
        })?
}

async fn lookup_unbounded(
    grpc_address: &str,
    namespace: &str,
    container_id: &str,
) -> Result<Option<Artifact>> {
    let path = grpc_address.strip_prefix("unix://").unwrap_or(grpc_address);
    let channel = containerd_client::connect(path)
        .await
        .with_context(|| format!("failed to connect to containerd's API at {grpc_address}"))?;
    let api = Api {
        channel,
        namespace: AsciiMetadataValue::try_from(namespace)
            .with_context(|| format!("namespace {namespace:?} is no gRPC header value"))?,
    };

    let request = GetContainerRequest {
        id: container_id.to_owned(),
    };
    let container = match ContainersClient::new(api.channel.clone())
        .get(api.request(request))
        .await
    {
        Ok(reply) => reply.into_inner().container,
        // A task created without a container record (straight through the Task API) has no
        // image to read.
        Err(status) if status.code() == Code::NotFound => return Ok(None),
        Err(status) => {
            return Err(rpc_error(status)).with_context(|| {
                format!("failed to get container {container_id} from containerd")
            });
        }
    };
    let Some(container) = container.filter(|c| !c.image.is_empty()) else {
        return Ok(None);
    };
    let pin = pin::cri_image_config(&container);
    api.artifact_of(&container.image, pin.as_deref())
        .await
        .with_context(|| format!("image {} of container {container_id}", container.image))
}

/// A connection to containerd's API in one namespace.
struct Api {
    channel: Channel,
    namespace: AsciiMetadataValue,
}

impl Api {
    /// `message` with the namespace header every containerd request carries.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        request
    }

    /// The Wasm layer of image `image`. With `pin`, the config digest the CRI recorded when
    /// it made the container, a layer is taken only from the image with that config: from
    /// what the name names when that holds it, else from the image that does (`pin.rs`). Only
    /// a layer needs the check (the rootfs is the container's own snapshot of its image), so
    /// an image that has none costs no extra read.
    async fn artifact_of(&self, image: &str, pin: Option<&str>) -> Result<Option<Artifact>> {
        let request = GetImageRequest {
            name: image.to_owned(),
        };
        let reply = ImagesClient::new(self.channel.clone())
            .get(self.request(request))
            .await;
        let target = match reply {
            Ok(reply) => {
                let target = reply.into_inner().image.and_then(|image| image.target);
                let target = target.ok_or_else(|| anyhow!("containerd lists no target for it"))?;
                descriptor(target)
            }
            Err(status) if status.code() == Code::NotFound => {
                return self.removed(image, pin).await;
            }
            Err(status) => return Err(rpc_error(status)).context("failed to get the image"),
        };
        let layer = match (self.wasm_layer_of(&target).await?, pin) {
            (None, _) => return Ok(None),
            (Some((_, layer)), None) => layer,
            (Some((config, layer)), Some(pin)) if config == pin => layer,
            (Some(_), Some(pin)) => {
                let Some((_, layer)) = self.pinned(image, target, pin).await? else {
                    return Ok(None);
                };
                layer
            }
        };
        self.read_layer(&layer).await.map(Some)
    }

    /// The Wasm layer of a container whose image's name is gone. Without a pin the container
    /// runs from its own snapshot; with one, from the image that holds the pinned config, and
    /// when none does Start fails saying so (the image may have been an artifact, whose
    /// module is not in the snapshot).
    async fn removed(&self, image: &str, pin: Option<&str>) -> Result<Option<Artifact>> {
        let Some(config) = pin else {
            log::warn!(
                "image {image} is no longer in containerd; running the container from its rootfs"
            );
            return Ok(None);
        };
        let Some((_, target)) = self.image_with_config(config).await? else {
            return Err(pin::gone(config));
        };
        match self.wasm_layer_of(&target).await? {
            Some((_, layer)) => self.read_layer(&layer).await.map(Some),
            None => Ok(None),
        }
    }

    /// The Wasm layer that image target `descriptor` (a manifest, or an index of them) holds,
    /// with the config digest of its manifest; `None` for an image of no Wasm layer.
    async fn wasm_layer_of(&self, descriptor: &Descriptor) -> Result<Option<(String, Descriptor)>> {
        let mut descriptor = descriptor.clone();
        for _ in 0..MAX_INDEX_DEPTH {
            if is_index(&descriptor.media_type) {
                let bytes = self.read_document(&descriptor).await?;
                let index =
                    parse_index(&bytes).with_context(|| format!("index {}", descriptor.digest))?;
                match select_manifest(&index) {
                    Some(chosen) => descriptor = chosen.clone(),
                    None => return Ok(None),
                }
            } else if is_manifest(&descriptor.media_type) {
                let bytes = self.read_document(&descriptor).await?;
                let manifest = parse_manifest(&bytes)
                    .with_context(|| format!("manifest {}", descriptor.digest))?;
                let layer = wasm_layer(&manifest)
                    .with_context(|| format!("manifest {}", descriptor.digest))?;
                return Ok(layer.map(|layer| (manifest.config.digest.clone(), layer.clone())));
            } else {
                // Docker schema 1 and the like: not an image of a Wasm layer.
                log::debug!(
                    "image target {} {} is no manifest or index",
                    descriptor.media_type,
                    descriptor.digest
                );
                return Ok(None);
            }
        }
        bail!("its indexes nest more than {MAX_INDEX_DEPTH} deep")
    }

    /// Whether the content store holds blob `descriptor`.
    async fn has_content(&self, descriptor: &Descriptor) -> Result<bool> {
        let request = InfoRequest {
            digest: descriptor.digest.clone(),
        };
        match ContentClient::new(self.channel.clone())
            .info(self.request(request))
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(content_error(status, descriptor)),
        }
    }

    /// Reads a manifest or index, checking its size and digest.
    async fn read_document(&self, descriptor: &Descriptor) -> Result<Vec<u8>> {
        check_size(descriptor, MAX_DOCUMENT_SIZE)?;
        let mut bytes = Vec::with_capacity(usize::try_from(descriptor.size).unwrap_or(0));
        self.read_blob(descriptor, &mut bytes).await?;
        Ok(bytes)
    }

    /// Reads a Wasm layer into a sealed memfd.
    async fn read_layer(&self, layer: &Descriptor) -> Result<Artifact> {
        check_size(layer, MAX_LAYER_SIZE)?;
        let mut file = new_memfd()?;
        self.read_blob(layer, &mut file)
            .await
            .with_context(|| format!("Wasm layer {}", layer.digest))?;
        let module = seal(file)?;
        log::debug!(
            "Wasm layer {} ({}, {} bytes) read from containerd",
            layer.digest,
            layer.media_type,
            layer.size
        );
        Ok(Artifact {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            module,
            size: layer.size,
        })
    }

    /// Streams blob `descriptor` from the content store into `sink`, checking that it has the
    /// descriptor's size and sha256.
    async fn read_blob(&self, descriptor: &Descriptor, sink: &mut impl Write) -> Result<()> {
        let mut check = Check::new(descriptor)?;
        let request = ReadContentRequest {
            digest: descriptor.digest.clone(),
            offset: 0,
            size: 0,
        };
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.request(request))
            .await
            .map_err(|status| content_error(status, descriptor))?
            .into_inner();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|status| content_error(status, descriptor))?
        {
            check.chunk(chunk.offset, &chunk.data)?;
            sink.write_all(&chunk.data)
                .context("failed to store the content")?;
        }
        check.finish()
    }
}

/// The checks on a blob streamed in chunks: each at the offset where the last one ended, no
/// more bytes than the descriptor's size, exactly that many in the end, and its sha256.
struct Check<'a> {
    descriptor: &'a Descriptor,
    expected: String,
    hasher: Sha256,
    read: u64,
}

impl<'a> Check<'a> {
    fn new(descriptor: &'a Descriptor) -> Result<Self> {
        Ok(Self {
            descriptor,
            expected: sha256_of(&descriptor.digest)?,
            hasher: Sha256::new(),
            read: 0,
        })
    }

    /// Takes the next chunk, at `offset`, before it is stored.
    fn chunk(&mut self, offset: i64, data: &[u8]) -> Result<()> {
        if u64::try_from(offset).ok() != Some(self.read) {
            bail!(
                "containerd sent bytes at offset {offset} where {} was next",
                self.read
            );
        }
        self.read += data.len() as u64;
        if self.read > self.descriptor.size {
            bail!(
                "the content is larger than its {} bytes",
                self.descriptor.size
            );
        }
        self.hasher.update(data);
        Ok(())
    }

    /// Checks the size and digest once the stream has ended.
    fn finish(self) -> Result<()> {
        if self.read != self.descriptor.size {
            bail!(
                "the content is {} bytes, not the {} of its descriptor",
                self.read,
                self.descriptor.size
            );
        }
        let actual = hex(&self.hasher.finalize());
        if actual != self.expected {
            bail!(
                "the content's digest is sha256:{actual}, not {}",
                self.descriptor.digest
            );
        }
        Ok(())
    }
}

/// An empty memfd that can be sealed, closed on exec (the shim hands it to the child itself).
fn new_memfd() -> Result<File> {
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let memfd = memfd_create(c"wasm-layer", flags)
        .context("failed to create a memfd for the Wasm layer")?;
    Ok(File::from(memfd))
}

/// Rewinds a filled memfd and seals it: no writes, no growing or shrinking, no further seals.
fn seal(mut file: File) -> Result<OwnedFd> {
    file.rewind()
        .context("failed to rewind the memfd of the Wasm layer")?;
    executor::readonly::seal(&file, "the Wasm layer").map_err(|e| anyhow!(e.chain()))?;
    Ok(OwnedFd::from(file))
}

/// An image's target as the descriptor the image parsers take.
fn descriptor(target: containerd_client::types::Descriptor) -> Descriptor {
    Descriptor {
        media_type: target.media_type,
        digest: target.digest,
        size: u64::try_from(target.size).unwrap_or(u64::MAX),
        platform: None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A failed RPC as an error that keeps containerd's message.
fn rpc_error(status: Status) -> anyhow::Error {
    anyhow!("{:?}: {}", status.code(), status.message())
}

fn content_error(status: Status, descriptor: &Descriptor) -> anyhow::Error {
    match status.code() {
        Code::NotFound => anyhow!(
            "{} {} is missing from containerd's content store",
            descriptor.media_type,
            descriptor.digest
        ),
        _ => rpc_error(status).context(format!("failed to read {}", descriptor.digest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor_of(data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: "application/wasm".into(),
            digest: format!("sha256:{}", hex(&Sha256::digest(data))),
            size: data.len() as u64,
            platform: None,
        }
    }

    #[test]
    fn chunks_are_checked_for_order_size_and_digest() {
        let data = b"\0asm\x01\0\0\0";
        let descriptor = descriptor_of(data);
        let mut check = Check::new(&descriptor).unwrap();
        check.chunk(0, &data[..3]).unwrap();
        check.chunk(3, &data[3..]).unwrap();
        check.chunk(8, b"").unwrap();
        check.finish().unwrap();

        let err = |steps: &[(i64, &[u8])], descriptor: &Descriptor| {
            let mut check = Check::new(descriptor).unwrap();
            for (offset, chunk) in steps {
                if let Err(e) = check.chunk(*offset, chunk) {
                    return e.to_string();
                }
            }
            check.finish().unwrap_err().to_string()
        };
        let gap = err(&[(0, &data[..3]), (4, &data[4..])], &descriptor);
        assert!(gap.contains("offset 4 where 3 was next"), "{gap}");
        let long = err(&[(0, data), (8, b"x")], &descriptor);
        assert!(long.contains("larger than its 8 bytes"), "{long}");
        let short = err(&[(0, &data[..5])], &descriptor);
        assert!(short.contains("5 bytes, not the 8"), "{short}");
        let mut other = data.to_vec();
        other[7] = 1;
        let wrong = err(&[(0, &other)], &descriptor);
        assert!(
            wrong.contains("digest is sha256:") && wrong.contains(&descriptor.digest),
            "{wrong}"
        );
        let bad = Descriptor {
            digest: "sha512:00".into(),
            ..descriptor
        };
        assert!(Check::new(&bad).is_err());
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }

    #[test]
    fn a_sealed_memfd_reads_from_the_start_and_cannot_change() {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        use std::io::Read;
        let mut file = new_memfd().unwrap();
        file.write_all(b"\0asm\x01\0\0\0").unwrap();
        let mut sealed = File::from(seal(file).unwrap());
        let mut read = Vec::new();
        sealed.read_to_end(&mut read).unwrap();
        assert_eq!(read, b"\0asm\x01\0\0\0");
        assert!(sealed.write_all(b"x").is_err(), "write after F_SEAL_WRITE");
        assert!(sealed.set_len(1).is_err(), "shrink after F_SEAL_SHRINK");
        assert!(sealed.set_len(100).is_err(), "grow after F_SEAL_GROW");
        let seals = fcntl(&sealed, FcntlArg::F_GET_SEALS).unwrap();
        assert_eq!(
            SealFlag::from_bits_truncate(seals),
            SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_SEAL
        );
        let flags = fcntl(&sealed, FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "close-on-exec");
    }
}
