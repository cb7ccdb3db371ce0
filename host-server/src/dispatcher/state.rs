//! The slots: each device's live state, behind one mutex that is never
//! held across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fusion_protocol::{
    CallEvent, CallProgress, CallResult, CancelEvent, ClosingEvent, DeviceManifest, UpdateStatus,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::ToolIndex;
use crate::error::Result;
use crate::store::DeviceRecord;

/// How long a device that said it is updating is shown as such without
/// saying how it went.
const UPDATING_FOR: Duration = Duration::from_secs(10 * 60);

#[derive(Default)]
pub(super) struct State {
    pub(super) slots: HashMap<String, Slot>,
    /// Distinct tool indexes; slots hold `Arc`s into this.
    pub(super) indexes: Vec<Arc<ToolIndex>>,
    pub(super) pending: HashMap<String, Pending>,
    /// Calls whose result was delivered, so a repeated POST is acknowledged
    /// (idempotency) instead of refused. Pruned by age and count.
    pub(super) finished: HashMap<String, String>,
    pub(super) finished_order: VecDeque<(Instant, String)>,
    /// Calls made on other replicas and pushed to streams held here: call
    /// id → (device, calling replica), so their results go straight back.
    pub(super) routed: HashMap<String, (String, String)>,
}

/// How long, and how many, delivered call ids are remembered.
const FINISHED_TTL: Duration = Duration::from_secs(10 * 60);
const FINISHED_MAX: usize = 100_000;

pub(super) struct Slot {
    pub(super) owner: String,
    pub(super) session: Option<Session>,
    /// The replica holding the device's stream, when another one does.
    pub(super) remote: Option<String>,
    pub(super) online: watch::Sender<bool>,
    pub(super) tools: Option<Arc<ToolIndex>>,
    pub(super) next_event_id: u64,
    /// Calls sent (or waiting to be sent) and not yet answered, by event id:
    /// re-delivered on every new stream.
    pub(super) outstanding: BTreeMap<u64, CallEvent>,
    /// The version an automatic update is installing, and since when.
    pub(super) updating: Option<(String, Instant)>,
}

pub(super) struct Session {
    pub(super) id: String,
    pub(super) tx: mpsc::UnboundedSender<StreamMsg>,
    /// The device as it authenticated for this stream. While the stream is
    /// live, its calls and results are checked against this copy instead of
    /// a store read each; revocation ends the session and with it the copy.
    pub(super) device: DeviceRecord,
}

/// What the dispatcher pushes to one device's SSE stream.
#[derive(Debug)]
pub(crate) enum StreamMsg {
    Call(u64, Box<CallEvent>),
    Cancel(CancelEvent),
    /// Sent last, then the stream closes.
    Revoked(ClosingEvent),
    /// Sent last, then the stream closes.
    Replaced(ClosingEvent),
}

pub(super) struct Pending {
    pub(super) device_id: String,
    pub(super) tx: oneshot::Sender<Result<CallResult>>,
    /// Where the device's progress reports go, if the caller listens.
    pub(super) progress: Option<mpsc::UnboundedSender<CallProgress>>,
}

/// How a call ended, which decides what ending it tells whom.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ending<'a> {
    /// Its result reached the caller here. `tell_holder`: the replica
    /// holding the stream may still have it queued.
    Answered { tell_holder: bool },
    /// The caller here stopped waiting, for `reason` (`timeout`,
    /// `caller_gone`).
    Cancelled { reason: &'a str },
    /// Another replica says a call it made ended: answered, or cancelled
    /// for a reason the device is told. Its waiter is not here.
    EndedElsewhere { cancel: Option<&'a str> },
    /// Its device was revoked.
    Revoked,
}

/// What ending a call found here.
pub(super) struct Ended {
    /// The caller waiting here, to be answered.
    pub(super) waiter: Option<Pending>,
    /// Whether this replica holds the device's stream.
    pub(super) held_here: bool,
}

impl Slot {
    /// Takes note of a device's word on its automatic update, reported
    /// here or to another replica: `started` marks it updating, any outcome
    /// ends that.
    pub(super) fn note_update(&mut self, status: UpdateStatus, to: &str) {
        self.updating = (status == UpdateStatus::Started).then(|| (to.to_string(), Instant::now()));
    }

    /// The version an automatic update is installing, while that is recent.
    pub(super) fn updating(&self) -> Option<String> {
        self.updating
            .as_ref()
            .filter(|(_, since)| since.elapsed() < UPDATING_FOR)
            .map(|(version, _)| version.clone())
    }

    pub(super) fn is_online(&self) -> bool {
        self.session.is_some() || self.remote.is_some()
    }

    /// Queues a call and pushes it to the stream, unless it is queued
    /// already (it can reach the holder both from the store and by request).
    pub(super) fn push_once(&mut self, call: CallEvent) -> bool {
        if self.outstanding.values().any(|c| c.call_id == call.call_id) {
            return self.session.is_some();
        }
        let Some(session) = &self.session else {
            return false;
        };
        self.next_event_id += 1;
        let event_id = self.next_event_id;
        let _ = session.tx.send(StreamMsg::Call(event_id, Box::new(call.clone())));
        self.outstanding.insert(event_id, call);
        true
    }
}

impl State {
    /// Hands `progress` to the caller waiting here for that call of
    /// `device_id`'s, if it listens: another device's report reaches
    /// nobody.
    pub(super) fn forward_progress(&self, device_id: &str, progress: &CallProgress) {
        if let Some(pending) = self.pending.get(&progress.call_id)
            && pending.device_id == device_id
            && let Some(listener) = &pending.progress
        {
            let _ = listener.send(progress.clone());
        }
    }

    pub(super) fn slot(&mut self, device_id: &str, owner: &str) -> &mut Slot {
        self.slots.entry(device_id.to_string()).or_insert_with(|| Slot {
            owner: owner.to_string(),
            session: None,
            remote: None,
            online: watch::Sender::new(false),
            tools: None,
            next_event_id: 0,
            outstanding: BTreeMap::new(),
            updating: None,
        })
    }

    /// Indexes a manifest's tool classes into the device's slot, sharing an
    /// identical index another device already has.
    pub(super) fn index_tools(
        &mut self,
        device_id: &str,
        owner: &str,
        manifest: &DeviceManifest,
    ) -> Arc<ToolIndex> {
        let index: ToolIndex = manifest.tools.iter().map(|t| (t.name.clone(), t.class)).collect();
        self.indexes.retain(|i| Arc::strong_count(i) > 1);
        let shared = match self.indexes.iter().find(|i| ***i == index) {
            Some(i) => Arc::clone(i),
            None => {
                let i = Arc::new(index);
                self.indexes.push(Arc::clone(&i));
                i
            }
        };
        self.slot(device_id, owner).tools = Some(Arc::clone(&shared));
        shared
    }

    /// Forgets a call everywhere this replica keeps it (its waiter, the
    /// device's queue, the routed map) and tells a stream held here to
    /// cancel it when it was cancelled: the one place a call ends.
    /// [`Dispatcher::end_call`](super::Dispatcher::end_call) adds telling
    /// the other replicas about calls made here.
    pub(super) fn end_call(&mut self, device_id: &str, call_id: &str, ending: Ending<'_>) -> Ended {
        let waiter = match ending {
            Ending::EndedElsewhere { .. } => None,
            _ => self.pending.remove(call_id),
        };
        self.routed.remove(call_id);
        let mut held_here = false;
        if let Some(slot) = self.slots.get_mut(device_id) {
            slot.outstanding.retain(|_, c| c.call_id != call_id);
            if let Some(session) = &slot.session {
                held_here = true;
                if let Ending::Cancelled { reason } | Ending::EndedElsewhere { cancel: Some(reason) } = ending
                {
                    let _ = session.tx.send(StreamMsg::Cancel(CancelEvent {
                        call_id: call_id.to_string(),
                        reason: reason.to_string(),
                    }));
                }
            }
        }
        if matches!(ending, Ending::Answered { .. }) && waiter.is_some() {
            self.remember_finished(call_id.to_string(), device_id);
        }
        Ended { waiter, held_here }
    }

    fn remember_finished(&mut self, call_id: String, device_id: &str) {
        let now = Instant::now();
        while let Some((at, _)) = self.finished_order.front() {
            if now.duration_since(*at) < FINISHED_TTL && self.finished_order.len() < FINISHED_MAX {
                break;
            }
            if let Some((_, id)) = self.finished_order.pop_front() {
                self.finished.remove(&id);
            }
        }
        self.finished.insert(call_id.clone(), device_id.to_string());
        self.finished_order.push_back((now, call_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `POST /result` is idempotent per `call_id` for ten minutes: a result
    /// posted again within them is acknowledged, not refused.
    #[tokio::test(start_paused = true)]
    async fn a_finished_call_is_remembered_for_ten_minutes() {
        let mut state = State::default();
        state.remember_finished("call_a".into(), "dev_1");
        tokio::time::advance(FINISHED_TTL - Duration::from_secs(1)).await;
        state.remember_finished("call_b".into(), "dev_1");
        assert_eq!(state.finished.get("call_a").map(String::as_str), Some("dev_1"));
        tokio::time::advance(Duration::from_secs(2)).await;
        state.remember_finished("call_c".into(), "dev_1");
        assert!(
            !state.finished.contains_key("call_a"),
            "forgotten after ten minutes"
        );
        assert!(state.finished.contains_key("call_b") && state.finished.contains_key("call_c"));
    }
}
