//! What a running device is doing, and a hold on new calls: so a restart
//! (an automatic update) never cuts a call short.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusion_tools::Cancellation;

/// The calls a device is running, and a hold on new ones; see
/// [`HostHandle::activity`].
#[derive(Debug, Clone)]
pub struct Activity {
    pub(crate) running: Arc<Mutex<HashMap<String, Cancellation>>>,
    pub(crate) gate: Arc<Gate>,
}

#[derive(Debug, Default)]
pub(crate) struct Gate {
    pub(crate) held: std::sync::atomic::AtomicBool,
    /// Wakes the session to reconnect when a hold is let go.
    pub(crate) released: tokio::sync::Notify,
}

impl Activity {
    /// How many calls are running now.
    pub fn running(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Takes no new call until [`Activity::release`]: one that arrives is
    /// left unanswered, and the server sends it again on the device's next
    /// stream. Running calls go on.
    pub fn hold(&self) {
        self.gate.held.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether calls are held.
    pub fn is_held(&self) -> bool {
        self.gate.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes calls again. The device reconnects at once, so the server
    /// sends the calls it held.
    pub fn release(&self) {
        if self.gate.held.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.gate.released.notify_one();
        }
    }

    /// Waits until no call is running, checking every `poll`.
    pub async fn idle(&self, poll: Duration) {
        while self.running() > 0 {
            tokio::time::sleep(poll).await;
        }
    }
}
