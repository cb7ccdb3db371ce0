//! A running call's progress, as its tool reports it, posted to the server
//! (`POST /progress`) at most once a second while the call runs.

use std::time::Duration;

use fusion_tools::{CallProgress, ProgressSink};
use tokio::sync::watch;

use crate::client::Http;

/// How often a call's progress is posted, at most.
const EVERY: Duration = Duration::from_secs(1);

/// A sink for the tool's reports, and the task that posts the latest of
/// them every [`EVERY`] until the sink is dropped (the call ended) or the
/// server says it takes none (an older server: `404`).
pub(crate) fn poster(
    http: Http,
    token: String,
    call_id: String,
) -> (ProgressSink, impl Future<Output = ()> + Send + 'static) {
    let (sink, mut rx) = latest(call_id);
    let posting = async move {
        while rx.changed().await.is_ok() {
            let progress = rx.borrow_and_update().clone();
            let response = http
                .client
                .post(http.url("/progress"))
                .bearer_auth(&token)
                .json(&progress)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match response {
                Ok(r) if r.status().is_client_error() => {
                    tracing::debug!(call_id = %progress.call_id, status = r.status().as_u16(), "the server takes no progress; not sending more");
                    return;
                }
                // Progress is a courtesy: a failure is not worth a retry.
                Ok(_) | Err(_) => {}
            }
            tokio::time::sleep(EVERY).await;
        }
    };
    (sink, posting)
}

/// A sink for a tool's reports, and the latest of them to read at one's
/// own pace. Tools report as often as they like (every buffer, every
/// batch): only a change marks the value changed, and the message is copied
/// only when it changes.
pub(crate) fn latest(call_id: String) -> (ProgressSink, watch::Receiver<CallProgress>) {
    let (tx, rx) = watch::channel(CallProgress {
        call_id,
        done: 0,
        total: None,
        message: None,
    });
    let sink = ProgressSink::new(move |done, total, what| {
        tx.send_if_modified(|p| {
            let changed = p.done != done || p.total != total;
            p.done = done;
            p.total = total;
            if p.message.as_deref() != Some(what) {
                p.message = Some(what.to_string());
            }
            changed
        });
    });
    (sink, rx)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use axum::http::StatusCode;

    use super::*;

    /// A server whose `POST /progress` answers `status`; it keeps the
    /// number of posts and the last `done` posted.
    async fn server(status: StatusCode) -> (String, Arc<AtomicUsize>, Arc<AtomicU64>) {
        let (posts, last) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
        let (counted, kept) = (Arc::clone(&posts), Arc::clone(&last));
        let app = axum::Router::new().route(
            &format!("{}/progress", crate::client::DEVICE_PREFIX),
            axum::routing::post(move |axum::Json(p): axum::Json<CallProgress>| {
                counted.fetch_add(1, Ordering::SeqCst);
                kept.store(p.done, Ordering::SeqCst);
                async move { status }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, posts, last)
    }

    /// A poster of `url`'s, fed `n` changes by a tool, run to its end.
    async fn post_to(url: &str, n: u64) {
        let (sink, posting) = poster(
            Http::new(url, None, "test").unwrap(),
            "fhd_test".into(),
            "call_1".into(),
        );
        let posting = tokio::spawn(posting);
        report(sink, n).await;
        tokio::time::timeout(Duration::from_secs(5), posting)
            .await
            .unwrap()
            .unwrap();
    }

    /// Reports `n` changes through a tool's context, each after the pace
    /// of posting.
    async fn report(sink: ProgressSink, n: u64) {
        let dir = tempfile::tempdir().unwrap();
        let scope = fusion_tools::Scope::single(dir.path(), fusion_tools::Access::ReadOnly).unwrap();
        let cx = fusion_tools::Context::new(&scope).with_progress(sink);
        for done in 1..=n {
            cx.progress(done, Some(n), "bytes hashed");
            tokio::time::sleep(EVERY + Duration::from_millis(100)).await;
        }
    }

    /// A server that takes progress gets the latest count (changes that
    /// come faster than the pace fold into one post); one that does not
    /// know the endpoint (404) is asked once for the call, not again.
    #[tokio::test]
    async fn posts_the_latest_count_until_the_server_says_it_takes_none() {
        let (url, posts, last) = server(StatusCode::NO_CONTENT).await;
        post_to(&url, 2).await;
        assert!(posts.load(Ordering::SeqCst) >= 1);
        assert_eq!(
            last.load(Ordering::SeqCst),
            2,
            "the last count reached the server"
        );

        let (url, posts, _) = server(StatusCode::NOT_FOUND).await;
        post_to(&url, 2).await;
        assert_eq!(posts.load(Ordering::SeqCst), 1, "asked once, then no more");
    }
}
