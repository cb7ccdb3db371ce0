//! Files by handle: a device uploads a file in chunks (resumable: a dropped
//! connection keeps what arrived, and the device asks where to go on), the
//! server checks its SHA-256 and keeps it in an object store (`object_store`:
//! the local filesystem, or any store the app configures), and answers a
//! handle. A device downloads a blob by id. Blobs are scoped to their
//! owner (another user's blob is not found), bounded in size and per-owner
//! total, and expire. An upload in progress is a staged file with a small
//! JSON record beside it, so a restarted server resumes it where its file
//! ends.

mod store;
mod uploads;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use uploads::{Upload, resume_staged};

/// Bytes a device sends per `PUT` by default; the last chunk may be
/// shorter. See [`BlobConfig::chunk_bytes`].
pub const CHUNK_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes read from the store at a time when a blob is downloaded.
pub(super) const READ_BYTES: u64 = 4 * 1024 * 1024;

/// Parts of a blob copied into a remote store: S3 refuses parts under
/// 5 MiB (but the last).
pub(super) const PART_BYTES: usize = 8 * 1024 * 1024;

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
}

/// An object store's failure, as the dispatcher's error.
fn store_err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::BlobStore(crate::StoreError::new(e))
}

/// Milliseconds since the Unix epoch, as blob records keep time.
fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use futures_util::Stream;
    use sha2::{Digest, Sha256};

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
