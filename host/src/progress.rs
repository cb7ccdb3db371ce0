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
