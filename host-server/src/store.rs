//! Persistence, behind a trait the app implements on its own tables. The
//! crate never creates tables; [`MemoryStore`] is the implementation for tests
//! and demos.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use fusion_protocol::{CallEvent, DeviceManifest, ErrorBody, Mode, Plan, UpdatePolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A store failure (database down, constraint violated). Opaque to the
/// dispatcher, which reports it as an internal error and logs it.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl StoreError {
    /// Wraps any error.
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError(e.into())
    }
}

/// A store result.
pub type StoreResult<T> = Result<T, StoreError>;

/// A paired device. The token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Server-issued id, `dev_` + 32 hex characters.
    pub id: String,
    /// The user who paired it.
    pub owner: String,
    /// Its name, as the device reported it.
    pub name: String,
    /// Operating system and architecture.
    pub platform: String,
    /// The device binary's version at its last connect.
    pub host_version: String,
    /// SHA-256 of the bearer token, lowercase hex.
    #[serde(skip_serializing)]
    pub token_hash: String,
    /// When it was paired.
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: SystemTime,
    /// When it last connected or disconnected.
    #[serde(with = "crate::time::rfc3339_opt")]
    pub last_seen: Option<SystemTime>,
    /// When it was revoked; a revoked device never authenticates again.
    #[serde(with = "crate::time::rfc3339_opt")]
    pub revoked_at: Option<SystemTime>,
}

/// What a device list shows of a manifest: the folders and the tool names,
/// without the tools' descriptions and schemas (tens of KB per device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestSummary {
    /// The device binary's version.
    pub host_version: String,
    /// The allowed folders, each read-only or read-write.
    pub roots: Vec<fusion_protocol::RootInfo>,
    /// The tools' names, in the manifest's order.
    pub tools: Vec<String>,
}

impl From<&DeviceManifest> for ManifestSummary {
    fn from(m: &DeviceManifest) -> Self {
        ManifestSummary {
            host_version: m.host_version.clone(),
            roots: m.roots.clone(),
            tools: m.tools.iter().map(|t| t.name.clone()).collect(),
        }
    }
}

/// A minted pairing code. Only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingCodeRecord {
    /// SHA-256 of the normalized code (8 letters, no dash), lowercase hex.
    pub code_hash: String,
    /// Who minted it; the device it pairs belongs to them.
    pub owner: String,
    /// When it was minted.
    pub created_at: SystemTime,
    /// When it stops working.
    pub expires_at: SystemTime,
    /// When it was used (or tried after use).
    pub used_at: Option<SystemTime>,
}

/// Where a device authorization request (RFC 8628) is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAuthorizationStatus {
    /// Waiting for a signed-in person to approve or deny it on `/device`.
    Pending,
    /// Approved; the device's next poll gets its token.
    Approved,
    /// Denied; it can never be approved.
    Denied,
    /// Approved, and the token was issued: the device code is spent.
    Issued,
}

impl DeviceAuthorizationStatus {
    /// The status as stored: `pending`, `approved`, `denied`, `issued`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceAuthorizationStatus::Pending => "pending",
            DeviceAuthorizationStatus::Approved => "approved",
            DeviceAuthorizationStatus::Denied => "denied",
            DeviceAuthorizationStatus::Issued => "issued",
        }
    }

    /// The status named by [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Denied, Self::Issued]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A device authorization request (`POST /device/code`): a device asking
/// to be paired by whoever approves its user code. Only hashes of the two
/// codes are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthorizationRecord {
    /// `da_` + 32 hex characters.
    pub id: String,
    /// SHA-256 of the device code (the device's 256-bit secret), lowercase hex.
    pub device_code_hash: String,
    /// SHA-256 of the normalized user code (8 letters, no dash), lowercase hex.
    pub user_code_hash: String,
    /// The name the device asks to be shown under.
    pub name: String,
    /// Its operating system and architecture.
    pub platform: String,
    /// Its binary's version.
    pub host_version: String,
    /// The address it asked from, as the server saw it.
    pub address: Option<String>,
    /// When it asked.
    pub created_at: SystemTime,
    /// When both codes stop working.
    pub expires_at: SystemTime,
    /// Where it is now.
    pub status: DeviceAuthorizationStatus,
    /// Who approved or denied it; the device belongs to them.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<SystemTime>,
    /// The minimum seconds between two polls; `slow_down` adds 5.
    pub interval_secs: u32,
    /// When the device last polled for its token.
    pub last_polled_at: Option<SystemTime>,
}

/// Where a proposal is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    /// Waiting for a person.
    Pending,
    /// Approved; the apply call is under way.
    Approved,
    /// Approved and applied.
    Applied,
    /// Approved, but apply failed (a conflict, the device offline, ...).
    Failed,
    /// Rejected by a person.
    Rejected,
    /// Nobody decided before it expired.
    Expired,
}

impl ProposalStatus {
    /// The status as stored and sent: `pending`, `applied`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalStatus::Pending => "pending",
            ProposalStatus::Approved => "approved",
            ProposalStatus::Applied => "applied",
            ProposalStatus::Failed => "failed",
            ProposalStatus::Rejected => "rejected",
            ProposalStatus::Expired => "expired",
        }
    }
}

/// A planned mutation waiting for (or past) a person's decision. The stored
/// `input` and `plan.precondition` are what apply sends: never the client's copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalRecord {
    /// `prop_` + 32 hex characters.
    pub id: String,
    /// Whose device it is, and who may decide.
    pub owner: String,
    /// The device that planned it.
    pub device_id: String,
    /// The mutate tool.
    pub tool: String,
    /// The exact input that was planned and will be applied.
    pub input: Value,
    /// The device's plan: summary, diff, effects, precondition.
    pub plan: Plan,
    /// Who asked for it (the calling user or agent).
    pub requested_by: String,
    /// When it was planned.
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: SystemTime,
    /// After this it can no longer be approved.
    #[serde(with = "crate::time::rfc3339")]
    pub expires_at: SystemTime,
    /// Where it is now.
    pub status: ProposalStatus,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// When.
    #[serde(with = "crate::time::rfc3339_opt")]
    pub decided_at: Option<SystemTime>,
    /// Apply's output, once applied.
    pub output: Option<Value>,
    /// Apply's error, when it failed.
    pub error: Option<ErrorBody>,
}

/// A change of a proposal's status, applied only from an expected status.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposalUpdate {
    /// The new status.
    pub status: ProposalStatus,
    /// Who decided (set on approve/reject).
    pub decided_by: Option<String>,
    /// When they decided.
    pub decided_at: Option<SystemTime>,
    /// Apply's output.
    pub output: Option<Value>,
    /// Apply's error.
    pub error: Option<ErrorBody>,
}

/// One line of the activity log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallLogEntry {
    /// The call's id.
    pub call_id: String,
    /// Who made it.
    pub owner: String,
    /// On which device.
    pub device_id: String,
    /// Which tool.
    pub tool: String,
    /// `run`, `plan` or `apply`.
    pub mode: Mode,
    /// Who asked for it, as the app named them ([`crate::CallOptions::requested_by`],
    /// else the owner); for an apply, who asked for the change.
    #[serde(default)]
    pub requested_by: String,
    /// The paths its input names (`path`, `from`, `to`, `source`,
    /// `target`, … at any depth), the first [`LOGGED_PATHS`].
    #[serde(default)]
    pub paths: Vec<String>,
    /// The proposal it planned or applied.
    pub proposal_id: Option<String>,
    /// When it started.
    #[serde(with = "crate::time::rfc3339")]
    pub started_at: SystemTime,
    /// How long until the result (or the failure).
    pub duration_ms: u64,
    /// The error code, when it failed.
    pub error_code: Option<String>,
}

/// A call sent to a device and not answered yet, kept while replicas share
/// devices (see `docs/CLUSTER.md`): a device that reconnects to another
/// replica, or to the same one after it restarted, still gets it, and its
/// result finds the replica whose caller waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCallRecord {
    /// The call's id.
    pub call_id: String,
    /// The device it is for.
    pub device_id: String,
    /// The replica whose caller waits for the result.
    pub caller: String,
    /// The call as the device gets it.
    pub call: CallEvent,
    /// When it was made.
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: SystemTime,
}

/// How many of a call's paths the activity log keeps.
pub const LOGGED_PATHS: usize = 10;

/// The paths a tool's input names: the string values (or strings in
/// arrays) of the fields tools use for paths, at any depth (a rename
/// batch's `renames[].from`/`to`), the first [`LOGGED_PATHS`], each once.
pub(crate) fn input_paths(input: &Value) -> Vec<String> {
    const FIELDS: [&str; 9] = [
        "path",
        "paths",
        "from",
        "to",
        "source",
        "sources",
        "target",
        "destination",
        "merge_into",
    ];
    fn walk(v: &Value, named: bool, out: &mut Vec<String>) {
        if out.len() >= LOGGED_PATHS {
            return;
        }
        match v {
            Value::String(s) if named && !out.contains(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, named, out)),
            Value::Object(map) => {
                for (k, v) in map {
                    walk(v, FIELDS.contains(&k.as_str()), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(input, false, &mut out);
    out
}

/// What the dispatcher needs to persist. Every method is one small,
/// self-contained operation; the compare-and-set ones must be atomic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Saves a new pairing code.
    async fn create_pairing_code(&self, code: PairingCodeRecord) -> StoreResult<()>;

    /// Atomically marks the code used and returns it *as it was before*
    /// (so a second use shows `used_at`); `None` when no such code exists.
    async fn consume_pairing_code(
        &self,
        code_hash: &str,
        now: SystemTime,
    ) -> StoreResult<Option<PairingCodeRecord>>;

    /// Saves a new device authorization request.
    async fn create_device_authorization(&self, request: DeviceAuthorizationRecord) -> StoreResult<()>;

    /// The newest device authorization request whose user code hashes to
    /// `user_code_hash`, whatever its status.
    async fn device_authorization_by_user_code(
        &self,
        user_code_hash: &str,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>>;

    /// The device authorization request whose device code hashes to
    /// `device_code_hash`.
    async fn device_authorization_by_device_code(
        &self,
        device_code_hash: &str,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>>;

    /// Replaces the mutable fields (`status`, `decided_by`, `decided_at`,
    /// `interval_secs`, `last_polled_at`) of request `update.id` only if its
    /// status is `from` now; returns whether it did. This is what makes a
    /// request decided once and its token issued once.
    async fn update_device_authorization(
        &self,
        from: DeviceAuthorizationStatus,
        update: &DeviceAuthorizationRecord,
    ) -> StoreResult<bool>;

    /// Saves a newly paired device.
    async fn create_device(&self, device: DeviceRecord) -> StoreResult<()>;

    /// One device by id, whoever owns it.
    async fn device(&self, id: &str) -> StoreResult<Option<DeviceRecord>>;

    /// The devices of one owner, revoked ones included, oldest first.
    async fn devices(&self, owner: &str) -> StoreResult<Vec<DeviceRecord>>;

    /// Records a connect or disconnect.
    async fn touch_device(&self, id: &str, at: SystemTime) -> StoreResult<()>;

    /// Saves the device's latest manifest (tools and roots), replacing the old
    /// one. Kept apart from the device row: the call path never loads it.
    async fn save_manifest(&self, id: &str, manifest: &DeviceManifest) -> StoreResult<()>;

    /// The device's latest manifest, if it ever sent one.
    async fn manifest(&self, id: &str) -> StoreResult<Option<DeviceManifest>>;

    /// The manifest summaries of one owner's devices, by device id: what a
    /// device list shows. The default loads each manifest in turn; a database
    /// should answer in one query without loading whole manifests.
    async fn manifest_summaries(&self, owner: &str) -> StoreResult<HashMap<String, ManifestSummary>> {
        let mut out = HashMap::new();
        for device in self.devices(owner).await? {
            if let Some(m) = self.manifest(&device.id).await? {
                out.insert(device.id, ManifestSummary::from(&m));
            }
        }
        Ok(out)
    }

    /// Marks a device revoked.
    async fn revoke_device(&self, id: &str, at: SystemTime) -> StoreResult<()>;

    /// Gives a device a new name.
    async fn rename_device(&self, id: &str, name: &str) -> StoreResult<()>;

    /// Saves a new proposal.
    async fn create_proposal(&self, proposal: ProposalRecord) -> StoreResult<()>;

    /// One proposal by id, whoever owns it.
    async fn proposal(&self, id: &str) -> StoreResult<Option<ProposalRecord>>;

    /// One owner's proposals, newest first, optionally only those in `status`.
    async fn proposals(
        &self,
        owner: &str,
        status: Option<ProposalStatus>,
    ) -> StoreResult<Vec<ProposalRecord>>;

    /// Applies `update` only if the proposal's status is `from` now, in one
    /// atomic step (compare-and-set); returns the proposal as updated, or
    /// `None` when its status was not `from` (or there is no such proposal).
    /// This is what makes a proposal resolve exactly once. Fields of
    /// `update` that are `None` keep their value.
    async fn transition_proposal(
        &self,
        id: &str,
        from: ProposalStatus,
        update: ProposalUpdate,
    ) -> StoreResult<Option<ProposalRecord>>;

    /// Appends to the activity log.
    async fn log_call(&self, entry: CallLogEntry) -> StoreResult<()>;

    /// One owner's most recent calls, newest first.
    async fn calls(&self, owner: &str, limit: usize) -> StoreResult<Vec<CallLogEntry>>;

    /// How `owner` is named to the devices they pair (an email address), so
    /// a device can say whose it is in words a person recognises. `None`
    /// (the default) shows the owner id.
    async fn owner_label(&self, owner: &str) -> StoreResult<Option<String>> {
        let _ = owner;
        Ok(None)
    }

    /// How `owner`'s devices are kept up to date, told to each device in
    /// `hello` when it connects: automatic updates on or off, and a pinned
    /// version. `None` (the default) says nothing, and devices then update
    /// only when their user runs `fusion-host update`.
    async fn update_policy(&self, owner: &str) -> StoreResult<Option<UpdatePolicy>> {
        let _ = owner;
        Ok(None)
    }

    /// Keeps a call until it is answered. Only replicas in a cluster call
    /// the pending-call methods; the default refuses, so a store that
    /// cannot keep them says so at the first call instead of losing calls.
    async fn save_pending_call(&self, call: PendingCallRecord) -> StoreResult<()> {
        let _ = call;
        Err(no_pending_calls())
    }

    /// One pending call.
    async fn pending_call(&self, call_id: &str) -> StoreResult<Option<PendingCallRecord>> {
        let _ = call_id;
        Err(no_pending_calls())
    }

    /// A device's pending calls, oldest first.
    async fn pending_calls(&self, device_id: &str) -> StoreResult<Vec<PendingCallRecord>> {
        let _ = device_id;
        Err(no_pending_calls())
    }

    /// Forgets a pending call (answered, cancelled or timed out); `false`
    /// when it was not there.
    async fn remove_pending_call(&self, call_id: &str) -> StoreResult<bool> {
        let _ = call_id;
        Err(no_pending_calls())
    }
}

fn no_pending_calls() -> StoreError {
    StoreError::new("this store does not keep pending calls, which replicas in a cluster need")
}

/// An in-memory [`Store`], for tests and demos. Nothing survives a restart.
/// Identical manifests (devices running the same build) are kept once.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    codes: HashMap<String, PairingCodeRecord>,
    authorizations: Vec<DeviceAuthorizationRecord>,
    devices: Vec<DeviceRecord>,
    manifests: HashMap<String, Arc<DeviceManifest>>,
    distinct_manifests: Vec<Arc<DeviceManifest>>,
    proposals: Vec<ProposalRecord>,
    calls: Vec<CallLogEntry>,
    pending_calls: Vec<PendingCallRecord>,
    update_policies: HashMap<String, UpdatePolicy>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets what [`Store::update_policy`] answers for `owner`.
    pub fn set_update_policy(&self, owner: &str, policy: UpdatePolicy) {
        self.tables().update_policies.insert(owner.to_string(), policy);
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_pairing_code(&self, code: PairingCodeRecord) -> StoreResult<()> {
        self.tables().codes.insert(code.code_hash.clone(), code);
        Ok(())
    }

    async fn consume_pairing_code(
        &self,
        code_hash: &str,
        now: SystemTime,
    ) -> StoreResult<Option<PairingCodeRecord>> {
        let mut tables = self.tables();
        Ok(tables.codes.get_mut(code_hash).map(|code| {
            let before = code.clone();
            code.used_at.get_or_insert(now);
            before
        }))
    }

    async fn create_device_authorization(&self, request: DeviceAuthorizationRecord) -> StoreResult<()> {
        self.tables().authorizations.push(request);
        Ok(())
    }

    async fn device_authorization_by_user_code(
        &self,
        user_code_hash: &str,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>> {
        Ok(self
            .tables()
            .authorizations
            .iter()
            .rev()
            .find(|a| a.user_code_hash == user_code_hash)
            .cloned())
    }

    async fn device_authorization_by_device_code(
        &self,
        device_code_hash: &str,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>> {
        Ok(self
            .tables()
            .authorizations
            .iter()
            .find(|a| a.device_code_hash == device_code_hash)
            .cloned())
    }

    async fn update_device_authorization(
        &self,
        from: DeviceAuthorizationStatus,
        update: &DeviceAuthorizationRecord,
    ) -> StoreResult<bool> {
        let mut tables = self.tables();
        let Some(a) = tables
            .authorizations
            .iter_mut()
            .find(|a| a.id == update.id && a.status == from)
        else {
            return Ok(false);
        };
        a.status = update.status;
        a.decided_by.clone_from(&update.decided_by);
        a.decided_at = update.decided_at;
        a.interval_secs = update.interval_secs;
        a.last_polled_at = update.last_polled_at;
        Ok(true)
    }

    async fn create_device(&self, device: DeviceRecord) -> StoreResult<()> {
        self.tables().devices.push(device);
        Ok(())
    }

    async fn device(&self, id: &str) -> StoreResult<Option<DeviceRecord>> {
        Ok(self.tables().devices.iter().find(|d| d.id == id).cloned())
    }

    async fn devices(&self, owner: &str) -> StoreResult<Vec<DeviceRecord>> {
        Ok(self
            .tables()
            .devices
            .iter()
            .filter(|d| d.owner == owner)
            .cloned()
            .collect())
    }

    async fn touch_device(&self, id: &str, at: SystemTime) -> StoreResult<()> {
        if let Some(d) = self.tables().devices.iter_mut().find(|d| d.id == id) {
            d.last_seen = Some(at);
        }
        Ok(())
    }

    async fn save_manifest(&self, id: &str, manifest: &DeviceManifest) -> StoreResult<()> {
        let mut tables = self.tables();
        let shared = match tables.distinct_manifests.iter().find(|m| ***m == *manifest) {
            Some(m) => Arc::clone(m),
            None => {
                let m = Arc::new(manifest.clone());
                tables.distinct_manifests.push(Arc::clone(&m));
                m
            }
        };
        if let Some(d) = tables.devices.iter_mut().find(|d| d.id == id) {
            d.host_version = manifest.host_version.clone();
        }
        tables.manifests.insert(id.to_string(), shared);
        tables.distinct_manifests.retain(|m| Arc::strong_count(m) > 1);
        Ok(())
    }

    async fn manifest(&self, id: &str) -> StoreResult<Option<DeviceManifest>> {
        Ok(self.tables().manifests.get(id).map(|m| DeviceManifest::clone(m)))
    }

    async fn manifest_summaries(&self, owner: &str) -> StoreResult<HashMap<String, ManifestSummary>> {
        let tables = self.tables();
        Ok(tables
            .devices
            .iter()
            .filter(|d| d.owner == owner)
            .filter_map(|d| {
                let m = tables.manifests.get(&d.id)?;
                Some((d.id.clone(), ManifestSummary::from(&**m)))
            })
            .collect())
    }

    async fn revoke_device(&self, id: &str, at: SystemTime) -> StoreResult<()> {
        if let Some(d) = self.tables().devices.iter_mut().find(|d| d.id == id) {
            d.revoked_at.get_or_insert(at);
        }
        Ok(())
    }

    async fn rename_device(&self, id: &str, name: &str) -> StoreResult<()> {
        if let Some(d) = self.tables().devices.iter_mut().find(|d| d.id == id) {
            d.name = name.to_string();
        }
        Ok(())
    }

    async fn create_proposal(&self, proposal: ProposalRecord) -> StoreResult<()> {
        self.tables().proposals.push(proposal);
        Ok(())
    }

    async fn proposal(&self, id: &str) -> StoreResult<Option<ProposalRecord>> {
        Ok(self.tables().proposals.iter().find(|p| p.id == id).cloned())
    }

    async fn proposals(
        &self,
        owner: &str,
        status: Option<ProposalStatus>,
    ) -> StoreResult<Vec<ProposalRecord>> {
        Ok(self
            .tables()
            .proposals
            .iter()
            .rev()
            .filter(|p| p.owner == owner && status.is_none_or(|s| p.status == s))
            .cloned()
            .collect())
    }

    async fn transition_proposal(
        &self,
        id: &str,
        from: ProposalStatus,
        update: ProposalUpdate,
    ) -> StoreResult<Option<ProposalRecord>> {
        let mut tables = self.tables();
        let Some(p) = tables
            .proposals
            .iter_mut()
            .find(|p| p.id == id && p.status == from)
        else {
            return Ok(None);
        };
        p.status = update.status;
        p.decided_by = update.decided_by.or(p.decided_by.take());
        p.decided_at = update.decided_at.or(p.decided_at);
        p.output = update.output.or(p.output.take());
        p.error = update.error.or(p.error.take());
        Ok(Some(p.clone()))
    }

    async fn log_call(&self, entry: CallLogEntry) -> StoreResult<()> {
        self.tables().calls.push(entry);
        Ok(())
    }

    async fn calls(&self, owner: &str, limit: usize) -> StoreResult<Vec<CallLogEntry>> {
        Ok(self
            .tables()
            .calls
            .iter()
            .rev()
            .filter(|c| c.owner == owner)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn update_policy(&self, owner: &str) -> StoreResult<Option<UpdatePolicy>> {
        Ok(self.tables().update_policies.get(owner).cloned())
    }

    async fn save_pending_call(&self, call: PendingCallRecord) -> StoreResult<()> {
        let mut tables = self.tables();
        tables.pending_calls.retain(|c| c.call_id != call.call_id);
        tables.pending_calls.push(call);
        Ok(())
    }

    async fn pending_call(&self, call_id: &str) -> StoreResult<Option<PendingCallRecord>> {
        Ok(self
            .tables()
            .pending_calls
            .iter()
            .find(|c| c.call_id == call_id)
            .cloned())
    }

    async fn pending_calls(&self, device_id: &str) -> StoreResult<Vec<PendingCallRecord>> {
        Ok(self
            .tables()
            .pending_calls
            .iter()
            .filter(|c| c.device_id == device_id)
            .cloned()
            .collect())
    }

    async fn remove_pending_call(&self, call_id: &str) -> StoreResult<bool> {
        let mut tables = self.tables();
        let before = tables.pending_calls.len();
        tables.pending_calls.retain(|c| c.call_id != call_id);
        Ok(tables.pending_calls.len() != before)
    }
}

#[cfg(test)]
mod tests;
