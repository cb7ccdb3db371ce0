//! Uploads in progress: staged files with a record beside each, written
//! in order, resumed after a restart, completed into the store.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::credentials::new_id;
use crate::error::{Error, Result};

use super::{BeginUpload, BlobConfig, BlobMeta, Blobs, UploadStatus, ms, store_err};

pub(super) struct Upload {
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) media_type: String,
    pub(super) size: u64,
    pub(super) received: u64,
    pub(super) file: PathBuf,
    /// SHA-256 of the bytes received so far, in order; `None` for an
    /// upload found on disk at start-up, hashed again when it goes on.
    pub(super) hasher: Option<Sha256>,
    /// A `PUT` is writing: a second one at the same time is refused.
    pub(super) writing: bool,
}

/// What is kept beside a staged upload (`<staging>/<upload_id>.json`), so a
/// restarted server knows whose it is and what it will be.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StagedUpload {
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) media_type: String,
    pub(super) size: u64,
    pub(super) created_at_ms: u64,
}

impl Blobs {
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
        let json = serde_json::to_vec(&record).map_err(store_err)?;
        let staged = file.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::File::create(&staged)?;
            // The record appears whole or not at all.
            let record_path = record_path(&staged);
            let partial = record_path.with_extension("json.partial");
            std::fs::write(&partial, json).and_then(|()| std::fs::rename(&partial, &record_path))
        })
        .await
        .map_err(store_err)?
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
    pub(super) async fn append<S, E>(
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
}

pub(super) fn record_path(staged: &std::path::Path) -> PathBuf {
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
pub(super) fn resume_staged(config: &BlobConfig, now: SystemTime) -> HashMap<String, Upload> {
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
pub(super) fn owned_upload<'a>(
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
