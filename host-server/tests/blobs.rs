//! Files by handle over real HTTP: a chunk cut off mid-body and resumed,
//! the offset and completeness rules, a wrong digest, the size and quota
//! bounds, and owner scoping.
#![cfg(feature = "blobs")]

mod common;

use common::{Server, client};
use fusion_host_server::blobs::{BlobConfig, Blobs};
use serde_json::{Value, json};
use sha2::Digest as _;

async fn blob_server(dir: &std::path::Path, quota: u64) -> Server {
    let mut blobs = BlobConfig::local(dir).unwrap();
    blobs.max_blob_bytes = 64 * 1024 * 1024;
    blobs.owner_quota_bytes = quota;
    Server::with(|c| c.blobs = Some(Blobs::new(blobs))).await
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_upload_cut_mid_chunk_resumes_and_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let server = blob_server(dir.path(), 1 << 30).await;
    let device = server.enroll("alice").await;
    let c = client(&device.token);
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (status, up) = json_of(
        c.post(server.url("/uploads"))
            .json(&json!({ "name": "scan.e57", "size": content.len() }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{up}");
    let id = up["upload_id"].as_str().unwrap().to_string();
    let chunk_url = |offset: usize| server.url(&format!("/uploads/{id}?offset={offset}"));

    // A body that breaks off after 100,000 bytes (a moment later, so the
    // server has read them: a reset discards bytes not yet read).
    use futures_util::StreamExt as _;
    let first = bytes::Bytes::copy_from_slice(&content[..100_000]);
    let broken = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(first)]).chain(
        futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "cable pulled",
            ))
        }),
    );
    let cut = c
        .put(chunk_url(0))
        .body(reqwest::Body::wrap_stream(broken))
        .send()
        .await;
    assert!(cut.is_err() || !cut.unwrap().status().is_success());
    // What arrived is kept.
    let mut received = 0;
    for _ in 0..50 {
        let (_, st) = json_of(c.get(server.url(&format!("/uploads/{id}"))).send().await.unwrap()).await;
        received = st["received"].as_u64().unwrap();
        if received == 100_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(received, 100_000);

    // A chunk from the wrong place is refused, saying where to go on.
    let (status, err) = json_of(c.put(chunk_url(0)).body(content.clone()).send().await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("upload_offset")),
        "{err}"
    );
    assert!(err["message"].as_str().unwrap().contains("100000"), "{err}");
    // Completing early is refused.
    let complete = server.url(&format!("/uploads/{id}/complete"));
    let digest = format!("{:x}", sha2::Sha256::digest(&content));
    let (status, err) = json_of(
        c.post(&complete)
            .json(&json!({ "sha256": digest }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("upload_incomplete")),
        "{err}"
    );
    // More than declared is refused.
    let mut too_much = content[100_000..].to_vec();
    too_much.push(0);
    let (status, err) = json_of(c.put(chunk_url(100_000)).body(too_much).send().await.unwrap()).await;
    assert_eq!((status, err["code"].as_str()), (413, Some("too_large")), "{err}");

    let (_, st) = json_of(c.get(server.url(&format!("/uploads/{id}"))).send().await.unwrap()).await;
    let at = st["received"].as_u64().unwrap() as usize;
    let (status, st) = json_of(
        c.put(chunk_url(at))
            .body(content[at..].to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, st["received"].as_u64()),
        (200, Some(content.len() as u64)),
        "{st}"
    );
    let (status, handle) = json_of(
        c.post(&complete)
            .json(&json!({ "sha256": digest }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{handle}");
    assert_eq!(handle["sha256"], digest.as_str());
    let blob = handle["blob_id"].as_str().unwrap();

    // Downloaded whole, with its digest in a header.
    let r = c.get(server.url(&format!("/blobs/{blob}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-sha256"], digest.as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), content.as_slice());

    // Another owner's device: not found.
    let bob = server.enroll("bob").await;
    let (status, err) = json_of(
        client(&bob.token)
            .get(server.url(&format!("/blobs/{blob}/meta")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("blob_not_found")),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_digest_discards_the_upload_and_bounds_hold() {
    let dir = tempfile::tempdir().unwrap();
    let server = blob_server(dir.path(), 1_000_000).await;
    let device = server.enroll("alice").await;
    let c = client(&device.token);
    let begin = |size: u64| {
        c.post(server.url("/uploads"))
            .json(&json!({ "name": "a.bin", "size": size }))
            .send()
    };
    let (_, up) = json_of(begin(3).await.unwrap()).await;
    let id = up["upload_id"].as_str().unwrap();
    c.put(server.url(&format!("/uploads/{id}?offset=0")))
        .body("abc")
        .send()
        .await
        .unwrap();
    let (status, err) = json_of(
        c.post(server.url(&format!("/uploads/{id}/complete")))
            .json(&json!({ "sha256": "0".repeat(64) }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("digest_mismatch")),
        "{err}"
    );
    let (status, err) = json_of(c.get(server.url(&format!("/uploads/{id}"))).send().await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("upload_not_found")),
        "{err}"
    );

    // Larger than the server keeps; more than the quota.
    let (status, err) = json_of(begin(65 * 1024 * 1024).await.unwrap()).await;
    assert_eq!((status, err["code"].as_str()), (413, Some("too_large")), "{err}");
    let (status, first) = json_of(begin(600_000).await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, err) = json_of(begin(600_000).await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (413, Some("quota_exceeded")),
        "{err}"
    );
    // Discarding an upload in progress frees what it held: another owner
    // cannot, and then the next one fits.
    let first = server.url(&format!("/uploads/{}", first["upload_id"].as_str().unwrap()));
    let bob = server.enroll("bob").await;
    let (status, err) = json_of(client(&bob.token).delete(&first).send().await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("upload_not_found")),
        "{err}"
    );
    assert_eq!(c.delete(&first).send().await.unwrap().status(), 204);
    let (status, err) = json_of(c.get(&first).send().await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("upload_not_found")),
        "{err}"
    );
    let (status, err) = json_of(begin(600_000).await.unwrap()).await;
    assert_eq!(status, 200, "{err}");
    // A name with a folder in it is not a file name.
    let (status, err) = json_of(
        c.post(server.url("/uploads"))
            .json(&json!({ "name": "../x", "size": 1 }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_request")),
        "{err}"
    );
}

#[tokio::test]
async fn a_blob_expires_and_frees_its_owners_quota() {
    let dir = tempfile::tempdir().unwrap();
    let server = blob_server(dir.path(), 10).await;
    let device = server.enroll("alice").await;
    let c = client(&device.token);
    let upload = |size: u64| {
        c.post(server.url("/uploads"))
            .json(&json!({ "name": "a.bin", "size": size }))
            .send()
    };
    let (_, up) = json_of(upload(6).await.unwrap()).await;
    let id = up["upload_id"].as_str().unwrap();
    c.put(server.url(&format!("/uploads/{id}?offset=0")))
        .body("abcdef")
        .send()
        .await
        .unwrap();
    let digest = format!("{:x}", sha2::Sha256::digest(b"abcdef"));
    let (_, handle) = json_of(
        c.post(server.url(&format!("/uploads/{id}/complete")))
            .json(&json!({ "sha256": digest }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let meta = server.url(&format!("/blobs/{}/meta", handle["blob_id"].as_str().unwrap()));
    // 6 of 10 bytes kept: another 6 is over the quota.
    let (status, err) = json_of(upload(6).await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (413, Some("quota_exceeded")),
        "{err}"
    );
    // Seven days later the blob is gone, and its bytes count no more.
    server
        .clock
        .advance(std::time::Duration::from_secs(7 * 24 * 3600));
    let (status, err) = json_of(c.get(&meta).send().await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("blob_not_found")),
        "{err}"
    );
    let (status, _) = json_of(upload(6).await.unwrap()).await;
    assert_eq!(status, 200);
}

/// An S3 server of the test's own: `moto_server` (PyPI `moto[server]`), an
/// independent implementation of the S3 API that enforces its rules (a
/// multipart part under 5 MiB but the last is refused, as on AWS).
/// `FUSION_TEST_MOTO_SERVER` names the program, else `moto_server` on PATH.
struct Moto {
    child: std::process::Child,
    url: String,
}

impl Moto {
    async fn start() -> Option<Moto> {
        let program = std::env::var_os("FUSION_TEST_MOTO_SERVER")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH")?)
                    .map(|d| d.join("moto_server"))
                    .find(|p| p.is_file())
            })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..400 {
            if reqwest::get(&moto.url).await.is_ok() {
                return Some(moto);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        None
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn blobs_kept_in_an_s3_bucket_round_trip_in_parts() {
    let Some(moto) = Moto::start().await else {
        eprintln!(
            "blobs_kept_in_an_s3_bucket_round_trip_in_parts: skipped: no moto_server \
             (pip install 'moto[server]', or set FUSION_TEST_MOTO_SERVER)"
        );
        return;
    };
    let created = reqwest::Client::new()
        .put(format!("{}/scans", moto.url))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&moto.url)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("scans")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let staging = tempfile::tempdir().unwrap();
    let blobs = BlobConfig::remote(std::sync::Arc::new(s3), staging.path()).unwrap();
    let server = Server::with(|c| c.blobs = Some(Blobs::new(blobs))).await;
    let device = server.enroll("alice").await;
    let c = client(&device.token);

    // 19 MiB: five 4 MiB chunks from the device, three parts into the bucket.
    let content: Vec<u8> = (0..19 * 1024 * 1024u32).map(|i| (i % 241) as u8).collect();
    let (status, up) = json_of(
        c.post(server.url("/uploads"))
            .json(&json!({ "name": "north.e57", "size": content.len() }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{up}");
    let id = up["upload_id"].as_str().unwrap();
    let chunk = up["chunk_bytes"].as_u64().unwrap() as usize;
    for at in (0..content.len()).step_by(chunk) {
        let end = (at + chunk).min(content.len());
        let r = c
            .put(server.url(&format!("/uploads/{id}?offset={at}")))
            .body(content[at..end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let digest = format!("{:x}", sha2::Sha256::digest(&content));
    let (status, handle) = json_of(
        c.post(server.url(&format!("/uploads/{id}/complete")))
            .json(&json!({ "sha256": digest }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{handle}");
    let blob = handle["blob_id"].as_str().unwrap();
    assert_eq!(
        std::fs::read_dir(staging.path()).unwrap().count(),
        0,
        "nothing stays staged"
    );

    let r = c.get(server.url(&format!("/blobs/{blob}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-sha256"], digest.as_str());
    let body = r.bytes().await.unwrap();
    // The bytes themselves, not what the server says about them.
    assert!(body[..] == content[..], "the download differs from the upload");
    let bob = server.enroll("bob").await;
    let r = client(&bob.token)
        .get(server.url(&format!("/blobs/{blob}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
