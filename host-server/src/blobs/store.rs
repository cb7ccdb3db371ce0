//! Kept blobs: where an owner's files live in the object store, their
//! records, the quota they use, and reading them back.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::credentials::{new_id, sha256_hex};
use crate::error::{Error, Result};

use super::uploads::Upload;
use super::{BlobMeta, Blobs, PART_BYTES, READ_BYTES, ms, store_err};

/// An owner's folder in the store: a hash, so any owner id is a safe path.
pub(super) fn owner_prefix(owner: &str) -> ObjectPath {
    ObjectPath::from(format!("blobs/{}", &sha256_hex(owner)[..32]))
}

pub(super) fn data_path(owner: &str, blob_id: &str) -> ObjectPath {
    owner_prefix(owner).child(blob_id)
}

pub(super) fn meta_path(owner: &str, blob_id: &str) -> ObjectPath {
    owner_prefix(owner).child(format!("{blob_id}.json"))
}

impl Blobs {
    /// What `owner`'s blobs take now, deleting the expired ones on the way.
    pub(super) async fn used(&self, owner: &str, now: SystemTime) -> Result<u64> {
        let metas: Vec<object_store::ObjectMeta> = self
            .config
            .store
            .list(Some(&owner_prefix(owner)))
            .try_collect()
            .await
            .map_err(store_err)?;
        let mut used = 0;
        for m in metas.iter().filter(|m| m.location.as_ref().ends_with(".json")) {
            let Some(id) = m.location.filename().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            match self.stored_meta(owner, id).await? {
                Some(meta) if meta.expires_at <= now => self.delete(owner, id).await?,
                Some(meta) => used += meta.size,
                None => {}
            }
        }
        let staged: u64 = self
            .uploads()
            .values()
            .filter(|u| u.owner == owner)
            .map(|u| u.size)
            .sum();
        Ok(used + staged)
    }

    pub(super) async fn delete(&self, owner: &str, blob_id: &str) -> Result<()> {
        for path in [data_path(owner, blob_id), meta_path(owner, blob_id)] {
            match self.config.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(e)),
            }
        }
        Ok(())
    }

    /// The stored handle of `owner`'s blob, expired or not.
    pub(super) async fn stored_meta(&self, owner: &str, blob_id: &str) -> Result<Option<BlobMeta>> {
        match self.config.store.get(&meta_path(owner, blob_id)).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(store_err)?;
                let stored: StoredMeta = serde_json::from_slice(&bytes).map_err(store_err)?;
                Ok(stored.into_meta(owner))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(e)),
        }
    }

    pub(super) async fn store_upload(
        &self,
        upload: &Upload,
        sha256: &str,
        now: SystemTime,
    ) -> Result<BlobMeta> {
        // The digest was kept up as the chunks arrived.
        let actual = format!("{:x}", upload.hasher.clone().unwrap_or_default().finalize());
        if !actual.eq_ignore_ascii_case(sha256.trim()) {
            return Err(Error::DigestMismatch {
                expected: sha256.trim().to_lowercase(),
                actual,
            });
        }
        let blob_id = new_id("blob_");
        let target = data_path(&upload.owner, &blob_id);
        let staged_name = upload.file.file_name().map(|n| n.to_string_lossy().into_owned());
        match (&self.config.staging_in_store, staged_name) {
            // Staged inside the store: one rename.
            (Some(prefix), Some(name)) => {
                // Durable before it becomes the blob. A handle with write
                // access: Windows refuses to flush a read-only one.
                let file = upload.file.clone();
                tokio::task::spawn_blocking(move || {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&file)
                        .and_then(|f| f.sync_all())
                })
                .await
                .map_err(store_err)?
                .map_err(store_err)?;
                let staged = ObjectPath::from(prefix.as_str()).child(name);
                self.config
                    .store
                    .rename(&staged, &target)
                    .await
                    .map_err(store_err)?;
            }
            _ => self.copy_into_store(&upload.file, &target).await?,
        }
        let meta = BlobMeta {
            blob_id: blob_id.clone(),
            owner: upload.owner.clone(),
            name: upload.name.clone(),
            size: upload.size,
            sha256: actual,
            media_type: upload.media_type.clone(),
            created_at: now,
            expires_at: now + self.config.ttl,
        };
        let stored = StoredMeta::from(&meta);
        let json = serde_json::to_vec(&stored).map_err(store_err)?;
        self.config
            .store
            .put(&meta_path(&upload.owner, &blob_id), PutPayload::from(json))
            .await
            .map_err(store_err)?;
        tracing::info!(blob_id, size = meta.size, "blob stored");
        Ok(meta)
    }

    /// Streams a staged file into the store in parts, a few in memory. The
    /// file is read on a blocking thread, a chunk or two ahead of the upload.
    pub(super) async fn copy_into_store(&self, file: &std::path::Path, target: &ObjectPath) -> Result<()> {
        let multipart = self.config.store.put_multipart(target).await.map_err(store_err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(multipart, PART_BYTES);
        let (tx, mut chunks) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(2);
        let path = file.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let chunk = file.read(&mut buf).map(|n| {
                    buf.truncate(n);
                    buf
                });
                let last = !matches!(&chunk, Ok(b) if !b.is_empty());
                // The receiver gone means the copy failed; stop reading.
                if tx.blocking_send(chunk).is_err() || last {
                    return;
                }
            }
        });
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk.map_err(store_err)?;
            if chunk.is_empty() {
                break;
            }
            writer.wait_for_capacity(2).await.map_err(store_err)?;
            writer.write(&chunk);
        }
        writer.finish().await.map_err(store_err)?;
        Ok(())
    }

    /// `owner`'s blob, or `blob_not_found` (another owner's, expired, or none).
    pub async fn meta(&self, owner: &str, blob_id: &str, now: SystemTime) -> Result<BlobMeta> {
        // Only the shape `new_id` makes reaches the store: any other id
        // is unknown, whatever its length (an over-long key is not a 500).
        let well_formed = blob_id.len() == 5 + 32
            && blob_id.starts_with("blob_")
            && blob_id[5..]
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let not_found = || Error::BlobNotFound {
            blob_id: if well_formed {
                blob_id.to_string()
            } else {
                let mut shown: String = blob_id.chars().take(40).collect();
                if shown.len() < blob_id.len() {
                    shown.push('…');
                }
                shown
            },
        };
        if !well_formed {
            return Err(not_found());
        }
        let meta = self.stored_meta(owner, blob_id).await?.ok_or_else(not_found)?;
        if meta.expires_at <= now {
            self.delete(owner, blob_id).await?;
            return Err(not_found());
        }
        Ok(meta)
    }

    /// `owner`'s blob and its content as a stream of chunks.
    pub async fn open(
        &self,
        owner: &str,
        blob_id: &str,
        now: SystemTime,
    ) -> Result<(
        BlobMeta,
        impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + use<>,
    )> {
        let meta = self.meta(owner, blob_id, now).await?;
        // Ranges of a chunk each: large reads, and the next one read while
        // this one is on the wire (two chunks in memory).
        let (store, path, size) = (
            Arc::clone(&self.config.store),
            data_path(owner, blob_id),
            meta.size,
        );
        let ranges =
            (0..size.div_ceil(READ_BYTES)).map(move |i| i * READ_BYTES..((i + 1) * READ_BYTES).min(size));
        let stream = futures_util::stream::iter(ranges)
            .map(move |range| {
                let (store, path) = (Arc::clone(&store), path.clone());
                async move { store.get_range(&path, range).await.map_err(std::io::Error::other) }
            })
            .buffered(2);
        Ok((meta, stream))
    }
}

/// What the store keeps beside a blob (the owner is in its path, and is
/// kept here too so a copied file cannot change hands).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredMeta {
    pub(super) blob_id: String,
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha256: String,
    pub(super) media_type: String,
    pub(super) created_at_ms: u64,
    pub(super) expires_at_ms: u64,
}

impl From<&BlobMeta> for StoredMeta {
    fn from(m: &BlobMeta) -> Self {
        StoredMeta {
            blob_id: m.blob_id.clone(),
            owner: m.owner.clone(),
            name: m.name.clone(),
            size: m.size,
            sha256: m.sha256.clone(),
            media_type: m.media_type.clone(),
            created_at_ms: ms(m.created_at),
            expires_at_ms: ms(m.expires_at),
        }
    }
}

impl StoredMeta {
    pub(super) fn into_meta(self, owner: &str) -> Option<BlobMeta> {
        (self.owner == owner).then(|| BlobMeta {
            blob_id: self.blob_id,
            owner: self.owner,
            name: self.name,
            size: self.size,
            sha256: self.sha256,
            media_type: self.media_type,
            created_at: SystemTime::UNIX_EPOCH + Duration::from_millis(self.created_at_ms),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_millis(self.expires_at_ms),
        })
    }
}
