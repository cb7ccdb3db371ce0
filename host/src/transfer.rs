//! Files by handle, on the device: `upload` sends a file inside the allowed
//! folders to the server in chunks and answers a handle; `download` writes
//! a server blob into the allowed folders through plan and apply. Both
//! check SHA-256 end to end and hold one chunk in memory, whatever the
//! file's size.
//!
//! The tools run on the runtime's blocking threads and drive the async
//! HTTP client from there.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use fusion_tools::{
    Context, Effect, EffectOp, Error as ToolError, Expectation, Location, MutateTool, PathState, Plan,
    Precondition, Result as ToolResult, Tool, ToolSpec, Toolbox,
};
use futures_util::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::client::Http;
use crate::error::Error;

/// How often one chunk is tried before the upload gives up.
const ATTEMPTS: u32 = 5;

/// A file on the server, as `upload` answers and `download` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BlobHandle {
    /// The blob's id: pass it to `download`.
    pub blob_id: String,
    /// The file name it was uploaded from.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// Media type.
    pub media_type: String,
}

#[derive(Debug, Deserialize)]
struct UploadStatus {
    upload_id: String,
    received: u64,
    chunk_bytes: u64,
}

/// The server connection the transfer tools use.
#[derive(Clone)]
struct Link {
    http: Http,
    token: String,
}

impl Link {
    fn fail(e: impl std::fmt::Display) -> ToolError {
        ToolError::TransferFailed {
            message: format!("the transfer failed: {e}"),
        }
    }

    /// Sends `request` with the device's token; the JSON answer, or the
    /// server's own error.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ToolError> {
        let response = request.bearer_auth(&self.token).send().await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return Err(Self::fail(self.http.explain(e).await)),
        };
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(Self::fail)?;
        if status != 200 {
            let e = Error::from_response(&self.http.base, status, &body);
            return Err(ToolError::TransferFailed {
                message: match e.code() {
                    Some(code) => format!("the server refused the transfer ({code}): {e}"),
                    None => format!("the server refused the transfer: {e}"),
                },
            });
        }
        serde_json::from_slice(&body).map_err(Self::fail)
    }
}

/// Adds `upload` and `download`, talking to the server `http` as the device
/// with `token`.
pub(crate) fn add_transfer_tools(toolbox: &mut Toolbox, http: &Http, token: &str) {
    let link = Link {
        http: http.clone(),
        token: token.to_string(),
    };
    toolbox.add(Upload(link.clone())).add_mutating(Download(link));
}

/// Runs `future` on the runtime from a tool's blocking thread.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(future)
}

/// Input of `upload`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadInput {
    /// The file to send, inside an allowed folder.
    pub path: String,
    /// Its media type; default `application/octet-stream`.
    #[serde(default)]
    pub media_type: Option<String>,
}

struct Upload(Link);

impl Tool for Upload {
    type Input = UploadInput;
    type Output = BlobHandle;

    fn spec(&self) -> ToolSpec {
        ToolSpec::read(
            "upload",
            "Send a file of any size to the server and get a handle `{blob_id, size, sha256, media_type}` \
             instead of its content: for scans and other large files `read_file` cannot return. The file is \
             sent in chunks, resumed where it broke off if the connection drops, and verified by SHA-256. \
             The handle can be given to `download` on any of the user's devices.",
        )
    }

    fn run(&self, cx: &Context<'_>, input: UploadInput) -> ToolResult<BlobHandle> {
        let loc = cx.scope().resolve(&input.path)?;
        let (mut file, size) = loc.open_file()?;
        let name = loc
            .rel()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        // A file still being written (a scanner's export) must not leave
        // as a silent snapshot: its size and mtime are checked again at
        // the end.
        let modified = |file: &std::fs::File| file.metadata().map(|m| (m.len(), m.modified().ok()));
        let before = modified(&file).map_err(|e| loc.err(e))?;
        let link = &self.0;
        block_on(async {
            let begin = serde_json::json!({ "name": name, "size": size, "media_type": input.media_type });
            let status: UploadStatus = link
                .json(link.http.client.post(link.http.url("/uploads")).json(&begin))
                .await?;
            let upload_id = status.upload_id.clone();
            let finished = async {
                let hasher = self.send(cx, &loc, &mut file, size, status).await?;
                let after = modified(&file).map_err(|e| loc.err(e))?;
                if after != before {
                    return Err(ToolError::TransferFailed {
                        message: format!(
                            "{} changed while it was being sent ({} bytes before, {} after); send it again \
                             once it is written completely",
                            loc.display(),
                            before.0,
                            after.0
                        ),
                    });
                }
                let sha256 = format!("{:x}", hasher.finalize());
                let url = link.http.url(&format!("/uploads/{upload_id}/complete"));
                let complete = serde_json::json!({ "sha256": sha256 });
                link.json::<BlobHandle>(link.http.client.post(url).json(&complete))
                    .await
            }
            .await;
            if finished.is_err() {
                // What was staged stops counting against the quota.
                let url = link.http.url(&format!("/uploads/{upload_id}"));
                let _ = link.http.client.delete(url).bearer_auth(&link.token).send().await;
            }
            finished
        })
    }
}

impl Upload {
    /// Sends `file` from where the server's upload (`status`) is to its end,
    /// resuming after failures; the SHA-256 of the whole file as the server
    /// has it.
    async fn send(
        &self,
        cx: &Context<'_>,
        loc: &Location<'_>,
        file: &mut std::fs::File,
        size: u64,
        mut status: UploadStatus,
    ) -> Result<Sha256, ToolError> {
        let link = &self.0;
        let chunk = status.chunk_bytes.clamp(64 * 1024, 64 * 1024 * 1024);
        let mut reader: Option<ReadAhead> = None;
        let mut failures = 0;
        while status.received < size {
            cx.checkpoint()?;
            let offset = status.received;
            let ahead = match reader.take() {
                Some(r) if r.at == offset => r,
                stale => {
                    // Where the server is now: the digest of what it
                    // has, then read on from there.
                    if let Some(r) = stale {
                        r.stop().await.map_err(|e| loc.err(e))?;
                    }
                    let mut hasher = Sha256::new();
                    hash_range(file, 0, offset, &mut hasher).map_err(|e| loc.err(e))?;
                    let copy = file.try_clone().map_err(|e| loc.err(e))?;
                    ReadAhead::start(copy, offset, size, chunk, hasher)
                }
            };
            let len = (size - offset).min(chunk);
            let url = link
                .http
                .url(&format!("/uploads/{}?offset={offset}", status.upload_id));
            let request = link
                .http
                .client
                .put(url)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(ahead.body(len));
            match link.json::<UploadStatus>(request).await {
                Ok(next) => {
                    failures = 0;
                    status = next;
                    reader = Some(ReadAhead {
                        at: offset + len,
                        ..ahead
                    });
                }
                Err(e) => {
                    // A file that cannot be read is not the network's fault.
                    ahead.stop().await.map_err(|e| loc.err(e))?;
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(e);
                    }
                    tracing::info!(error = %e, offset, "upload chunk failed; resuming");
                    tokio::time::sleep(Duration::from_millis(200 << failures)).await;
                    let url = link.http.url(&format!("/uploads/{}", status.upload_id));
                    if let Ok(now) = link.json::<UploadStatus>(link.http.client.get(url)).await {
                        status = now;
                    }
                }
            }
        }
        let hasher = match reader {
            // Everything the server has was read in one go.
            Some(r) if r.at == size => r.finish().map_err(|e| loc.err(e))?,
            stale => {
                if let Some(r) = stale {
                    r.stop().await.map_err(|e| loc.err(e))?;
                }
                let mut hasher = Sha256::new();
                hash_range(file, 0, size, &mut hasher).map_err(|e| loc.err(e))?;
                hasher
            }
        };
        Ok(hasher)
    }
}

/// Bytes read from the file per piece.
const PIECE: u64 = 1 << 20;

/// A thread reading the file ahead of the requests (a few pieces in memory)
/// and hashing what it reads, so the disk, SHA-256 and the network overlap.
/// Pieces never straddle a chunk's end, so each request takes whole pieces.
struct ReadAhead {
    pieces: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<bytes::Bytes>>>,
    thread: std::thread::JoinHandle<std::io::Result<Sha256>>,
    /// Where the next request's body starts.
    at: u64,
}

impl ReadAhead {
    /// Reads `file` from `from` to `size`, `hasher` holding the digest of
    /// the bytes before `from`.
    fn start(mut file: std::fs::File, from: u64, size: u64, chunk: u64, mut hasher: Sha256) -> ReadAhead {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let thread = std::thread::spawn(move || {
            file.seek(SeekFrom::Start(from))?;
            // Reading and hashing each get a thread.
            std::thread::scope(|threads| {
                let (to_hash, pieces) = std::sync::mpsc::sync_channel::<bytes::Bytes>(4);
                let digest = threads.spawn(move || {
                    for piece in pieces {
                        hasher.update(&piece);
                    }
                    hasher
                });
                let mut at = from;
                while at < size {
                    let chunk_end = from + ((at - from) / chunk + 1) * chunk;
                    let n = (size.min(chunk_end) - at).min(PIECE) as usize;
                    // Read into spare capacity: no zeroing first.
                    let mut piece = Vec::with_capacity(n);
                    if (&mut file).take(n as u64).read_to_end(&mut piece)? != n {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the file got shorter while it was being sent; send it again once it is complete",
                        ));
                    }
                    let piece = bytes::Bytes::from(piece);
                    at += n as u64;
                    let _ = to_hash.send(piece.clone());
                    if tx.blocking_send(piece).is_err() {
                        // The upload stopped reading: this digest is not used.
                        break;
                    }
                }
                drop(to_hash);
                digest
                    .join()
                    .map_err(|_| std::io::Error::other("the digest failed"))
            })
        });
        ReadAhead {
            pieces: Arc::new(tokio::sync::Mutex::new(rx)),
            thread,
            at: from,
        }
    }

    /// The next `len` bytes as a request body.
    fn body(&self, len: u64) -> reqwest::Body {
        let pieces = Arc::clone(&self.pieces);
        let stream = futures_util::stream::unfold(len, move |left| {
            let pieces = Arc::clone(&pieces);
            async move {
                if left == 0 {
                    return None;
                }
                match pieces.lock().await.recv().await {
                    Some(piece) => {
                        let rest = left.saturating_sub(piece.len() as u64);
                        Some((Ok(piece), rest))
                    }
                    None => Some((Err(std::io::Error::other("the file stopped being read")), 0)),
                }
            }
        });
        reqwest::Body::wrap_stream(stream)
    }

    /// The digest of the whole file, once every piece was sent.
    fn finish(self) -> std::io::Result<Sha256> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the file reader failed")))
    }

    /// Stops reading; a read error the thread met is returned. A body that
    /// is still held somewhere cannot keep the thread waiting: the channel
    /// is closed, not just dropped.
    async fn stop(self) -> std::io::Result<()> {
        self.pieces.lock().await.close();
        self.finish().map(drop)
    }
}

/// Feeds bytes `from..to` of `file` to `hasher`.
fn hash_range(file: &mut std::fs::File, from: u64, to: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(from))?;
    let copied = std::io::copy(&mut (&mut *file).take(to - from), hasher)?;
    if copied != to - from {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Input of `download`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadInput {
    /// The blob's id, from an `upload` handle.
    pub blob_id: String,
    /// Where to write it, inside a read-write folder.
    pub path: String,
    /// Replace an existing file there. Default false.
    #[serde(default)]
    pub overwrite: bool,
}

/// What `download` wrote.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Downloaded {
    /// The file written.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, checked against the blob's.
    pub sha256: String,
}

struct Download(Link);

impl MutateTool for Download {
    type Input = DownloadInput;
    type Output = Downloaded;
    type Staged = BlobHandle;

    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "download",
            "Write a file the server keeps (an `upload` handle's `blob_id`) to a path in an allowed folder. \
             The plan shows its size and SHA-256; applying streams it into a hidden file, checks the digest, \
             and only then puts it in place.",
        )
    }

    fn plan(&self, cx: &Context<'_>, input: &DownloadInput) -> ToolResult<(Plan, BlobHandle)> {
        let loc = cx.scope().resolve(&input.path)?;
        loc.require_writable()?;
        loc.require_not_root("replaced")?;
        let link = &self.0;
        let url = link.http.url(&format!("/blobs/{}/meta", input.blob_id));
        let blob: BlobHandle = block_on(link.json(link.http.client.get(url)))?;
        let state = loc.state(cx, false)?;
        let op = match state {
            PathState::Absent => EffectOp::CreateFile,
            _ if input.overwrite => EffectOp::ReplaceFile,
            _ => {
                return Err(ToolError::AlreadyExists {
                    path: loc.path(),
                    hint: "choose another path, or pass overwrite: true",
                });
            }
        };
        let display = loc.display();
        let summary = format!(
            "write {} ({} bytes, SHA-256 {}…) to {display}",
            blob.name,
            blob.size,
            &blob.sha256[..blob.sha256.len().min(12)]
        );
        let plan = Plan::new(
            summary,
            vec![Effect::new(op, display.clone()).bytes(blob.size)],
            Precondition::new(vec![Expectation { path: display, state }]),
        );
        Ok((plan, blob))
    }

    fn apply(&self, cx: &Context<'_>, input: &DownloadInput, blob: BlobHandle) -> ToolResult<Downloaded> {
        let loc = cx.scope().resolve(&input.path)?;
        let pending = loc.create_file(input.overwrite)?;
        let link = &self.0;
        let url = link.http.url(&format!("/blobs/{}", input.blob_id));
        let (size, sha256) = block_on(async {
            let response = link.http.client.get(url).bearer_auth(&link.token).send().await;
            let response = match response {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.bytes().await.unwrap_or_default();
                    return Err(Link::fail(Error::from_response(&link.http.base, status, &body)));
                }
                Err(e) => return Err(Link::fail(link.http.explain(e).await)),
            };
            // One thread writes what arrives while another hashes it.
            let mut file = pending.try_clone_file()?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
            let writer = std::thread::spawn(move || {
                fusion_tools::write_hashing(
                    &mut file,
                    Sha256::new(),
                    std::iter::from_fn(|| rx.blocking_recv()),
                )
            });
            let mut gather = fusion_tools::Gather::new(PIECE as usize);
            let mut body = response.bytes_stream();
            let (mut received, mut got) = (Ok(()), 0u64);
            while let Some(frame) = body.next().await {
                if let Err(e) = cx.checkpoint() {
                    received = Err(e);
                    break;
                }
                match frame {
                    Ok(bytes) => {
                        // Never more on disk than the blob holds.
                        got += bytes.len() as u64;
                        if got > blob.size {
                            received = Err(Link::fail(format!(
                                "the server sent more than the blob's {} bytes",
                                blob.size
                            )));
                            break;
                        }
                        if let Some(piece) = gather.push(&bytes)
                            && tx.send(piece.into()).await.is_err()
                        {
                            // The writer stopped on an error; it reports it below.
                            break;
                        }
                    }
                    Err(e) => {
                        received = Err(Link::fail(e));
                        break;
                    }
                }
            }
            if received.is_ok()
                && let Some(piece) = gather.finish()
            {
                let _ = tx.send(piece.into()).await;
            }
            drop(tx);
            let written = writer
                .join()
                .map_err(|_| loc.err(std::io::Error::other("the file writer failed")))?;
            received?;
            if let Some(e) = written.error {
                return Err(loc.err(e));
            }
            let (size, hasher) = (written.bytes, written.hasher.unwrap_or_default());
            Ok((size, format!("{:x}", hasher.finalize())))
        })?;
        if size != blob.size || sha256 != blob.sha256 {
            // Dropping the pending file removes it: nothing appears at the path.
            return Err(ToolError::DigestMismatch {
                path: loc.path(),
                expected: blob.sha256,
                actual: sha256,
            });
        }
        pending.commit()?;
        Ok(Downloaded {
            path: loc.display(),
            size,
            sha256,
        })
    }
}
