//! Files by handle: a device uploads a file in chunks (resumable: a dropped
//! connection keeps what arrived, and the device asks where to go on), the
//! server checks its SHA-256 and keeps it in an object store (`object_store`:
//! the local filesystem, or any store the app configures), and answers a
//! handle. A device downloads a blob by id. Blobs are scoped to their
//! owner (another user's blob is not found), bounded in size and per-owner
//! total, and expire. An upload in progress is a staged file with a small
//! JSON record beside it, so a restarted server resumes it where its file
//! ends.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::credentials::{new_id, sha256_hex};
use crate::error::{Error, Result};

/// Bytes a device sends per `PUT` by default; the last chunk may be
/// shorter. See [`BlobConfig::chunk_bytes`].
pub const CHUNK_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes read from the store at a time when a blob is downloaded.
const READ_BYTES: u64 = 4 * 1024 * 1024;

/// Parts of a blob copied into a remote store: S3 refuses parts under
/// 5 MiB (but the last).
const PART_BYTES: usize = 8 * 1024 * 1024;

/// How the blob store behaves.
#[derive(Clone)]
pub struct BlobConfig {
    /// Where finished blobs live.
    pub store: Arc<dyn ObjectStore>,
    /// A local folder for uploads in progress.
    pub staging: PathBuf,
    /// Where `staging` is in `store`, when it is inside it (a local store):
    /// a finished upload is then renamed into place, not copied.
    pub staging_in_store: Option<String>,
    /// The largest blob. Default 20 GiB.
    pub max_blob_bytes: u64,
    /// What one owner's blobs (and uploads in progress) may add up to.
    /// Default 100 GiB.
    pub owner_quota_bytes: u64,
    /// How long a blob is kept. Default 7 days.
    pub ttl: Duration,
    /// What a device sends per `PUT` ([`CHUNK_BYTES`] by default, at least
    /// 64 KiB): lower it to fit under a proxy's request body limit. Larger
    /// chunks mean fewer round trips; nothing is held in memory per chunk.
    pub chunk_bytes: u64,
}

impl BlobConfig {
    /// Blobs in `dir` on the local filesystem (created if missing), uploads
    /// in progress in `dir/uploads` (renamed into place when finished), with
    /// the default bounds.
    pub fn local(dir: impl Into<PathBuf>) -> Result<BlobConfig> {
        let dir = dir.into();
        let staging = dir.join("uploads");
        std::fs::create_dir_all(&staging).map_err(store_err)?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(store_err)?;
        Ok(BlobConfig {
            store: Arc::new(store),
            staging,
            staging_in_store: Some("uploads".into()),
            ..BlobConfig::defaults()
        })
    }
}

impl BlobConfig {
    /// Blobs in an S3 bucket, or an S3-compatible store: `url` is
    /// `s3://bucket` or `s3://bucket/prefix`; credentials, region and an
    /// endpoint other than AWS's come from the usual `AWS_*` variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`), never from arguments. Uploads in
    /// progress are staged in the local folder `staging` (created if
    /// missing) and copied into the bucket in parts when finished.
    pub fn s3(url: &str, staging: impl Into<PathBuf>) -> Result<BlobConfig> {
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(Error::InvalidRequest(format!(
                "{url} is not an S3 URL; write s3://bucket or s3://bucket/prefix"
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(store_err)?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        };
        BlobConfig::remote(store, staging)
    }

    /// Blobs in any object store the app configured (S3 with its own
    /// settings, GCS, Azure…), uploads staged in the local folder `staging`
    /// (created if missing) and copied into the store in parts when
    /// finished.
    pub fn remote(store: Arc<dyn ObjectStore>, staging: impl Into<PathBuf>) -> Result<BlobConfig> {
        let staging = staging.into();
        std::fs::create_dir_all(&staging).map_err(store_err)?;
        Ok(BlobConfig {
            store,
            staging,
            staging_in_store: None,
            ..BlobConfig::defaults()
        })
    }

    /// The bounds every store gets by default, around a placeholder store.
    fn defaults() -> BlobConfig {
        BlobConfig {
            store: Arc::new(object_store::memory::InMemory::new()),
            staging: PathBuf::new(),
            staging_in_store: None,
            max_blob_bytes: 20 << 30,
            owner_quota_bytes: 100 << 30,
            ttl: Duration::from_secs(7 * 24 * 3600),
            chunk_bytes: CHUNK_BYTES,
        }
    }
}

impl std::fmt::Debug for BlobConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobConfig")
            .field("store", &self.store.to_string())
            .field("staging", &self.staging)
            .field("max_blob_bytes", &self.max_blob_bytes)
            .field("owner_quota_bytes", &self.owner_quota_bytes)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// A finished blob, as a handle names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    /// `blob_` + 32 hex characters.
    pub blob_id: String,
    /// Whose it is.
    #[serde(skip_serializing)]
    pub owner: String,
    /// The file name it was uploaded from.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content, lowercase hex.
    pub sha256: String,
    /// Its media type, as the uploader said (`application/octet-stream` if not).
    pub media_type: String,
    /// When it was stored.
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: SystemTime,
    /// When it is deleted.
    #[serde(with = "crate::time::rfc3339")]
    pub expires_at: SystemTime,
}

/// Where an upload is: `received` of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// `upl_` + 32 hex characters.
    pub upload_id: String,
    /// The size the device declared.
    pub size: u64,
    /// Bytes stored so far: the next `PUT` starts here.
    pub received: u64,
    /// The chunk size to send.
    pub chunk_bytes: u64,
}

/// `POST /uploads`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BeginUpload {
    /// The file's name (for the handle and downloads).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, if the device knows it.
    #[serde(default)]
    pub media_type: Option<String>,
}

struct Upload {
    owner: String,
    name: String,
    media_type: String,
    size: u64,
    received: u64,
    file: PathBuf,
    /// SHA-256 of the bytes received so far, in order; `None` for an
    /// upload found on disk at start-up, hashed again when it goes on.
    hasher: Option<Sha256>,
    /// A `PUT` is writing: a second one at the same time is refused.
    writing: bool,
}

/// The blob store. Cheap to clone.
#[derive(Clone)]
pub struct Blobs {
    config: Arc<BlobConfig>,
    uploads: Arc<Mutex<HashMap<String, Upload>>>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.config.fmt(f)
    }
}

fn store_err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::BlobStore(crate::StoreError::new(e))
}

/// An owner's folder in the store: a hash, so any owner id is a safe path.
fn owner_prefix(owner: &str) -> ObjectPath {
    ObjectPath::from(format!("blobs/{}", &sha256_hex(owner)[..32]))
}

fn data_path(owner: &str, blob_id: &str) -> ObjectPath {
    owner_prefix(owner).child(blob_id)
}

fn meta_path(owner: &str, blob_id: &str) -> ObjectPath {
    owner_prefix(owner).child(format!("{blob_id}.json"))
}

/// What is kept beside a staged upload (`<staging>/<upload_id>.json`), so a
/// restarted server knows whose it is and what it will be.
#[derive(Debug, Serialize, Deserialize)]
struct StagedUpload {
    owner: String,
    name: String,
    media_type: String,
    size: u64,
    created_at_ms: u64,
}

impl Blobs {
    /// A store with `config`. Uploads staged by an earlier run go on where
    /// their files end; those older than the blob TTL, and staged files
    /// without their record, are deleted.
    pub fn new(config: BlobConfig) -> Blobs {
        let uploads = resume_staged(&config, SystemTime::now());
        Blobs {
            config: Arc::new(config),
            uploads: Arc::new(Mutex::new(uploads)),
        }
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `owner`'s blobs take now, deleting the expired ones on the way.
    async fn used(&self, owner: &str, now: SystemTime) -> Result<u64> {
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

    async fn delete(&self, owner: &str, blob_id: &str) -> Result<()> {
        for path in [data_path(owner, blob_id), meta_path(owner, blob_id)] {
            match self.config.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(e)),
            }
        }
        Ok(())
    }

    /// The stored handle of `owner`'s blob, expired or not.
    async fn stored_meta(&self, owner: &str, blob_id: &str) -> Result<Option<BlobMeta>> {
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

    /// Starts an upload of `req.size` bytes for `owner`.
    pub(crate) async fn begin(&self, owner: &str, req: BeginUpload, now: SystemTime) -> Result<UploadStatus> {
        let name = req.name.trim();
        if name.is_empty() || name.len() > 255 || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(Error::InvalidRequest(
                "name must be a file name of 1 to 255 characters, without a folder, and not . or ..".into(),
            ));
        }
        if req.size > self.config.max_blob_bytes {
            return Err(Error::BlobTooLarge {
                size: req.size,
                limit: self.config.max_blob_bytes,
            });
        }
        let used = self.used(owner, now).await?;
        if used + req.size > self.config.owner_quota_bytes {
            return Err(Error::QuotaExceeded {
                used,
                quota: self.config.owner_quota_bytes,
            });
        }
        let upload_id = new_id("upl_");
        let file = self.config.staging.join(&upload_id);
        let media_type = req
            .media_type
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| "application/octet-stream".into());
        let record = StagedUpload {
            owner: owner.to_string(),
            name: name.to_string(),
            media_type: media_type.clone(),
            size: req.size,
            created_at_ms: ms(now),
        };
        std::fs::File::create(&file).map_err(store_err)?;
        // The record appears whole or not at all.
        let record_path = record_path(&file);
        let partial = record_path.with_extension("json.partial");
        std::fs::write(&partial, serde_json::to_vec(&record).map_err(store_err)?)
            .and_then(|()| std::fs::rename(&partial, &record_path))
            .map_err(store_err)?;
        self.uploads().insert(
            upload_id.clone(),
            Upload {
                owner: owner.to_string(),
                name: name.to_string(),
                media_type,
                size: req.size,
                received: 0,
                file,
                hasher: Some(Sha256::new()),
                writing: false,
            },
        );
        Ok(UploadStatus {
            upload_id,
            size: req.size,
            received: 0,
            chunk_bytes: self.config.chunk_bytes.max(64 * 1024),
        })
    }

    /// Where `owner`'s upload is.
    pub(crate) fn status(&self, owner: &str, upload_id: &str) -> Result<UploadStatus> {
        let mut uploads = self.uploads();
        let u = owned_upload(&mut uploads, owner, upload_id)?;
        Ok(UploadStatus {
            upload_id: upload_id.to_string(),
            size: u.size,
            received: u.received,
            chunk_bytes: self.config.chunk_bytes.max(64 * 1024),
        })
    }

    /// Appends `body` at `offset`, which must be where the upload is. What
    /// arrives is kept even if the body breaks off: the device asks
    /// [`Blobs::status`] and goes on from there.
    pub(crate) async fn write<S, E>(
        &self,
        owner: &str,
        upload_id: &str,
        offset: u64,
        body: S,
    ) -> Result<UploadStatus>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let (path, size, hasher) = {
            let mut uploads = self.uploads();
            let u = owned_upload(&mut uploads, owner, upload_id)?;
            if u.writing {
                return Err(Error::UploadOffset {
                    received: u.received,
                    message: "another chunk of this upload is being written".into(),
                });
            }
            if offset != u.received {
                return Err(Error::UploadOffset {
                    received: u.received,
                    message: format!("this chunk starts at {offset}"),
                });
            }
            u.writing = true;
            (u.file.clone(), u.size, u.hasher.clone())
        };
        let mut at = offset;
        let (result, hasher) = match staged_hasher(hasher, &path, offset).await {
            Ok(kept) => {
                let mut hasher = Some(kept);
                let result = self
                    .append(upload_id, &path, size, body, &mut at, &mut hasher)
                    .await;
                (result, hasher)
            }
            Err(e) => (Err(e), None),
        };
        // What reached the file counts, whatever ended the body.
        let mut uploads = self.uploads();
        if let Some(u) = uploads.get_mut(upload_id) {
            u.writing = false;
            u.received = at;
            u.hasher = hasher;
        }
        drop(uploads);
        result?;
        self.status(owner, upload_id)
    }

    /// Writes `body` at `at`, advancing `at` past every byte that reached
    /// the file and `hasher` to their digest (`None` after a failed write:
    /// it is taken again from the file). The body is received here; a
    /// blocking thread writes it while another hashes it, so the network,
    /// the disk and SHA-256 overlap.
    async fn append<S, E>(
        &self,
        upload_id: &str,
        path: &PathBuf,
        size: u64,
        body: S,
        at: &mut u64,
        hasher: &mut Option<Sha256>,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(store_err)?;
        file.seek(SeekFrom::Start(*at)).map_err(store_err)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
        let before = hasher.take().unwrap_or_default();
        // No fsync per chunk: after a crash the upload goes on where its
        // file ends, and the digest on completion catches a torn tail; the
        // blob is made durable on completion.
        let writer = tokio::task::spawn_blocking(move || {
            fusion_protocol::write_hashing(&mut file, before, std::iter::from_fn(|| rx.blocking_recv()))
        });
        let mut sent = *at;
        let mut gather = fusion_protocol::Gather::new(1 << 20);
        let mut body = std::pin::pin!(body);
        let mut result = Ok(());
        while let Some(frame) = body.next().await {
            let bytes = match frame {
                Ok(b) => b,
                // The connection broke: keep what arrived.
                Err(e) => {
                    tracing::info!(upload_id, at = sent, error = %e, "upload chunk cut short");
                    break;
                }
            };
            sent += bytes.len() as u64;
            if sent > size {
                result = Err(Error::BlobTooLarge {
                    size: sent,
                    limit: size,
                });
                break;
            }
            if let Some(piece) = gather.push(&bytes)
                && tx.send(piece.into()).await.is_err()
            {
                // The writer stopped on an error; it reports it below.
                break;
            }
        }
        if let Some(piece) = gather.finish() {
            let _ = tx.send(piece.into()).await;
        }
        drop(tx);
        let written = writer.await.map_err(store_err)?;
        *at += written.bytes;
        *hasher = written.hasher;
        match written.error {
            Some(e) => Err(store_err(e)),
            None => result,
        }
    }

    /// Discards `owner`'s upload in progress: what it staged is deleted and
    /// stops counting against the quota. A chunk still being written ends
    /// on its own (its bytes go nowhere).
    pub(crate) fn discard(&self, owner: &str, upload_id: &str) -> Result<()> {
        let upload = {
            let mut uploads = self.uploads();
            owned_upload(&mut uploads, owner, upload_id)?;
            uploads.remove(upload_id)
        };
        if let Some(u) = upload {
            // The record first: a staged file without one is swept at start
            // even where an open handle keeps the file itself (Windows).
            let _ = std::fs::remove_file(record_path(&u.file));
            let _ = std::fs::remove_file(&u.file);
            tracing::info!(upload_id, "upload discarded");
        }
        Ok(())
    }

    /// Finishes `owner`'s upload: every byte arrived and its SHA-256 is
    /// `sha256`; the blob is stored and its handle returned. A wrong digest
    /// discards the upload.
    pub(crate) async fn complete(
        &self,
        owner: &str,
        upload_id: &str,
        sha256: &str,
        now: SystemTime,
    ) -> Result<BlobMeta> {
        let mut upload = {
            let mut uploads = self.uploads();
            let u = owned_upload(&mut uploads, owner, upload_id)?;
            if u.writing || u.received != u.size {
                return Err(Error::UploadIncomplete {
                    received: u.received,
                    size: u.size,
                });
            }
            uploads.remove(upload_id).ok_or_else(|| Error::UploadNotFound {
                upload_id: upload_id.to_string(),
            })?
        };
        let result = match staged_hasher(upload.hasher.take(), &upload.file, upload.size).await {
            Ok(hasher) => {
                upload.hasher = Some(hasher);
                self.store_upload(&upload, sha256, now).await
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&upload.file);
        let _ = std::fs::remove_file(record_path(&upload.file));
        result
    }

    async fn store_upload(&self, upload: &Upload, sha256: &str, now: SystemTime) -> Result<BlobMeta> {
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
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&upload.file)
                    .and_then(|f| f.sync_all())
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

    /// Streams a staged file into the store in parts, a few in memory.
    async fn copy_into_store(&self, file: &std::path::Path, target: &ObjectPath) -> Result<()> {
        let multipart = self.config.store.put_multipart(target).await.map_err(store_err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(multipart, PART_BYTES);
        let mut file = std::fs::File::open(file).map_err(store_err)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(store_err)?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(2).await.map_err(store_err)?;
            writer.write(&buf[..n]);
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
struct StoredMeta {
    blob_id: String,
    owner: String,
    name: String,
    size: u64,
    sha256: String,
    media_type: String,
    created_at_ms: u64,
    expires_at_ms: u64,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    fn into_meta(self, owner: &str) -> Option<BlobMeta> {
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

fn record_path(staged: &std::path::Path) -> PathBuf {
    staged.with_extension("json")
}

/// The running digest of a staged file's first `len` bytes: the one kept,
/// or (an upload resumed after a restart) read again from the file.
async fn staged_hasher(kept: Option<Sha256>, file: &std::path::Path, len: u64) -> Result<Sha256> {
    if let Some(hasher) = kept {
        return Ok(hasher);
    }
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        let mut reader = std::fs::File::open(&file)?.take(len);
        std::io::copy(&mut reader, &mut hasher)?;
        Ok::<_, std::io::Error>(hasher)
    })
    .await
    .map_err(store_err)?
    .map_err(store_err)
}

/// The uploads an earlier run staged, each received up to where its file
/// ends (bytes count once they are in the file). Deletes what is older than
/// the blob TTL and staged files without a record.
fn resume_staged(config: &BlobConfig, now: SystemTime) -> HashMap<String, Upload> {
    let mut uploads = HashMap::new();
    let Ok(entries) = std::fs::read_dir(&config.staging) else {
        return uploads;
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for name in &names {
        if !name.starts_with("upl_") || name.contains('.') {
            continue;
        }
        let file = config.staging.join(name);
        let record = std::fs::read(record_path(&file))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<StagedUpload>(&bytes).ok());
        let received = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let fresh = record.filter(|r| {
            SystemTime::UNIX_EPOCH + Duration::from_millis(r.created_at_ms) + config.ttl > now
                && received <= r.size
        });
        let Some(record) = fresh else {
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(record_path(&file));
            continue;
        };
        tracing::info!(upload_id = %name, received, size = record.size, "upload resumed from an earlier run");
        uploads.insert(
            name.clone(),
            Upload {
                owner: record.owner,
                name: record.name,
                media_type: record.media_type,
                size: record.size,
                received,
                file,
                hasher: None,
                writing: false,
            },
        );
    }
    // Records whose staged file is gone, and half-written records.
    for name in names
        .iter()
        .filter(|n| n.ends_with(".json") || n.ends_with(".partial"))
    {
        let id = name.split('.').next().unwrap_or_default();
        if !uploads.contains_key(id) {
            let _ = std::fs::remove_file(config.staging.join(name));
        }
    }
    uploads
}

/// `owner`'s upload in progress, or `upload_not_found` (anyone else's too).
fn owned_upload<'a>(
    uploads: &'a mut HashMap<String, Upload>,
    owner: &str,
    id: &str,
) -> Result<&'a mut Upload> {
    uploads
        .get_mut(id)
        .filter(|u| u.owner == owner)
        .ok_or_else(|| Error::UploadNotFound {
            upload_id: id.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(bytes: &[u8]) -> impl Stream<Item = std::result::Result<bytes::Bytes, std::io::Error>> + Send {
        futures_util::stream::iter([Ok(bytes::Bytes::copy_from_slice(bytes))])
    }

    /// Only `s3://bucket[/prefix]` is an S3 store; anything else is refused
    /// saying what to write, and nothing is staged.
    #[test]
    fn an_s3_store_needs_an_s3_url() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["https://bucket.example.com", "bucket", "file:///srv/blobs"] {
            let Err(Error::InvalidRequest(message)) = BlobConfig::s3(url, dir.path().join("staging")) else {
                panic!("{url} was taken as an S3 store");
            };
            assert!(message.contains("s3://bucket or s3://bucket/prefix"), "{message}");
        }
        assert!(!dir.path().join("staging").exists());
    }

    /// A server restarted mid-upload (a deploy, a crash) goes on where the
    /// staged file ends; the digest covers the bytes of both runs.
    #[tokio::test]
    async fn an_upload_goes_on_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..250_000u32).map(|i| (i % 251) as u8).collect();
        let now = SystemTime::now();
        let first = Blobs::new(BlobConfig::local(dir.path()).unwrap());
        let begin = BeginUpload {
            name: "north.e57".into(),
            size: content.len() as u64,
            media_type: None,
        };
        let up = first.begin("alice", begin, now).await.unwrap();
        let st = first
            .write("alice", &up.upload_id, 0, chunk(&content[..100_000]))
            .await
            .unwrap();
        assert_eq!(st.received, 100_000);
        // An upload that never got a record (a crash inside `begin`).
        std::fs::write(dir.path().join("uploads/upl_orphan"), b"x").unwrap();
        drop(first);

        let second = Blobs::new(BlobConfig::local(dir.path()).unwrap());
        assert!(!dir.path().join("uploads/upl_orphan").exists());
        let st = second.status("alice", &up.upload_id).unwrap();
        assert_eq!((st.received, st.size), (100_000, content.len() as u64));
        assert!(matches!(
            second.status("bob", &up.upload_id),
            Err(Error::UploadNotFound { .. })
        ));
        // It still counts against its owner's quota.
        assert_eq!(second.used("alice", now).await.unwrap(), content.len() as u64);
        second
            .write("alice", &up.upload_id, 100_000, chunk(&content[100_000..]))
            .await
            .unwrap();
        let digest = format!("{:x}", Sha256::digest(&content));
        let meta = second
            .complete("alice", &up.upload_id, &digest, now)
            .await
            .unwrap();
        assert_eq!(
            (meta.size, meta.sha256.as_str()),
            (content.len() as u64, digest.as_str())
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("uploads")).unwrap().count(),
            0,
            "nothing staged is left behind"
        );

        // A staged upload older than the blob TTL is deleted at start-up.
        let third = Blobs::new(BlobConfig::local(dir.path()).unwrap());
        let old = third
            .begin(
                "alice",
                BeginUpload {
                    name: "old.e57".into(),
                    size: 10,
                    media_type: None,
                },
                now - Duration::from_secs(8 * 24 * 3600),
            )
            .await
            .unwrap();
        drop(third);
        let fourth = Blobs::new(BlobConfig::local(dir.path()).unwrap());
        assert!(matches!(
            fourth.status("alice", &old.upload_id),
            Err(Error::UploadNotFound { .. })
        ));
        assert_eq!(std::fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
    }
}
