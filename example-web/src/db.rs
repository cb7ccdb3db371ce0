//! The app's database: SQLite by default, PostgreSQL when the URL says so,
//! through sqlx's `Any` driver with one portable migration set. Implements
//! the dispatcher's `Store` on the app's own tables.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fusion_host_server::{
    CallLogEntry, DeviceAuthorizationRecord, DeviceAuthorizationStatus, DeviceRecord, ManifestSummary,
    PairingCodeRecord, PendingCallRecord, ProposalRecord, ProposalStatus, ProposalUpdate, Store, StoreError,
    StoreResult,
};
use fusion_protocol::UpdatePolicy;
use fusion_tools::{DeviceManifest, Mode};
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

/// The database handle.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pub(crate) pool: AnyPool,
    /// The call log's writer: entries are written in batches off the call path.
    log: mpsc::Sender<LogMsg>,
    /// What the operator decided about updates, for everyone.
    pub(crate) updates: std::sync::Arc<Operator>,
}

/// The columns of a device row, without its manifest (tens of KB): the call
/// path reads the device on every call and never needs its tools.
const DEVICE_COLUMNS: &str =
    "id, owner, name, platform, host_version, token_hash, created_at, last_seen, revoked_at";

/// How many call-log entries wait for the writer at most; past that,
/// `log_call` waits (backpressure instead of unbounded memory).
const LOG_QUEUE: usize = 16_384;

/// How many entries one INSERT writes at most.
const LOG_BATCH: usize = 256;

enum LogMsg {
    Entry(Box<CallLogEntry>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

fn opt_time(ms: Option<i64>) -> Option<SystemTime> {
    ms.map(time)
}

fn store_err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::new(e)
}

impl Db {
    /// Connects and migrates. `sqlite://path` (created if missing) or `postgres://…`.
    pub(crate) async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // SQLite in WAL mode: readers run beside the one writer, and a
            // writer waits for another (busy_timeout) instead of failing.
            .max_connections(if sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            // Durable at every checkpoint; a power cut can lose
                            // the last commits, never corrupt the file.
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", redact(url)))?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let (log, queue) = mpsc::channel(LOG_QUEUE);
        tokio::spawn(write_call_log(pool.clone(), queue));
        Ok(Db {
            pool,
            log,
            updates: Default::default(),
        })
    }

    /// Waits until every call-log entry logged so far is written. The app
    /// calls it on shutdown, after the server stopped taking calls.
    pub(crate) async fn flush_call_log(&self) {
        let (done, written) = oneshot::channel();
        if self.log.send(LogMsg::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// Writes the call log in batches: whatever queued up while the last batch
/// was written goes into the next INSERT, so the log keeps up with the call
/// rate and no call waits for the database.
async fn write_call_log(pool: AnyPool, mut queue: mpsc::Receiver<LogMsg>) {
    let mut batch = Vec::with_capacity(LOG_BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                LogMsg::Entry(e) => batch.push(*e),
                LogMsg::Flush(done) => flushes.push(done),
            }
            if batch.len() < LOG_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = insert_calls(&pool, &batch).await {
                tracing::error!(error = %e, lost = batch.len(), "could not write the call log");
            }
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn insert_calls(pool: &AnyPool, entries: &[CallLogEntry]) -> Result<(), sqlx::Error> {
    const COLUMNS: usize = 11;
    let mut sql = String::from(
        "INSERT INTO calls (call_id, owner, device_id, tool, mode, proposal_id, started_at, duration_ms, error_code, \
         requested_by, paths) VALUES ",
    );
    for i in 0..entries.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        let params: Vec<String> = (1..=COLUMNS).map(|k| format!("${}", i * COLUMNS + k)).collect();
        sql.push_str(&format!("({})", params.join(", ")));
    }
    let mut query = sqlx::query(&sql);
    for c in entries {
        query = query
            .bind(c.call_id.clone())
            .bind(c.owner.clone())
            .bind(c.device_id.clone())
            .bind(c.tool.clone())
            .bind(c.mode.as_str())
            .bind(c.proposal_id.clone())
            .bind(millis(c.started_at))
            .bind(c.duration_ms as i64)
            .bind(c.error_code.clone())
            .bind(c.requested_by.clone())
            .bind(json(&c.paths));
    }
    query.execute(pool).await?;
    Ok(())
}

/// A database URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn device_from(row: &AnyRow) -> Result<DeviceRecord, sqlx::Error> {
    Ok(DeviceRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        name: row.try_get("name")?,
        platform: row.try_get("platform")?,
        host_version: row.try_get("host_version")?,
        token_hash: row.try_get("token_hash")?,
        created_at: time(row.try_get("created_at")?),
        last_seen: opt_time(row.try_get("last_seen")?),
        revoked_at: opt_time(row.try_get("revoked_at")?),
    })
}

fn authorization_from(row: &AnyRow) -> Result<DeviceAuthorizationRecord, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(DeviceAuthorizationRecord {
        id: row.try_get("id")?,
        device_code_hash: row.try_get("device_code_hash")?,
        user_code_hash: row.try_get("user_code_hash")?,
        name: row.try_get("name")?,
        platform: row.try_get("platform")?,
        host_version: row.try_get("host_version")?,
        address: row.try_get("address")?,
        created_at: time(row.try_get("created_at")?),
        expires_at: time(row.try_get("expires_at")?),
        status: DeviceAuthorizationStatus::parse(&status).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown device authorization status {status}").into())
        })?,
        decided_by: row.try_get("decided_by")?,
        decided_at: opt_time(row.try_get("decided_at")?),
        interval_secs: u32::try_from(row.try_get::<i64, _>("interval_secs")?).unwrap_or(u32::MAX),
        last_polled_at: opt_time(row.try_get("last_polled_at")?),
    })
}

fn status_from(s: &str) -> ProposalStatus {
    match s {
        "approved" => ProposalStatus::Approved,
        "applied" => ProposalStatus::Applied,
        "failed" => ProposalStatus::Failed,
        "rejected" => ProposalStatus::Rejected,
        "expired" => ProposalStatus::Expired,
        _ => ProposalStatus::Pending,
    }
}

fn json_col<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<Option<T>, sqlx::Error> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

fn pending_call_from(row: &AnyRow) -> Result<PendingCallRecord, sqlx::Error> {
    Ok(PendingCallRecord {
        call_id: row.try_get("call_id")?,
        device_id: row.try_get("device_id")?,
        caller: row.try_get("caller")?,
        call: json_col(row, "call")?.ok_or_else(|| sqlx::Error::ColumnNotFound("call".into()))?,
        created_at: time(row.try_get("created_at")?),
    })
}

fn proposal_from(row: &AnyRow) -> Result<ProposalRecord, sqlx::Error> {
    Ok(ProposalRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        device_id: row.try_get("device_id")?,
        tool: row.try_get("tool")?,
        input: json_col(row, "input")?.unwrap_or_default(),
        plan: json_col(row, "plan")?.ok_or_else(|| sqlx::Error::Decode("proposal without a plan".into()))?,
        requested_by: row.try_get("requested_by")?,
        created_at: time(row.try_get("created_at")?),
        expires_at: time(row.try_get("expires_at")?),
        status: status_from(&row.try_get::<String, _>("status")?),
        decided_by: row.try_get("decided_by")?,
        decided_at: opt_time(row.try_get("decided_at")?),
        output: json_col(row, "output")?,
        error: json_col(row, "error")?,
    })
}

fn mode_from(s: &str) -> Mode {
    match s {
        "plan" => Mode::Plan,
        "apply" => Mode::Apply,
        _ => Mode::Run,
    }
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[async_trait]
impl Store for Db {
    async fn create_pairing_code(&self, code: PairingCodeRecord) -> StoreResult<()> {
        sqlx::query("INSERT INTO pairing_codes (code_hash, owner, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, NULL)")
            .bind(code.code_hash)
            .bind(code.owner)
            .bind(millis(code.created_at))
            .bind(millis(code.expires_at))
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn consume_pairing_code(
        &self,
        code_hash: &str,
        now: SystemTime,
    ) -> StoreResult<Option<PairingCodeRecord>> {
        // The compare-and-set first, as one statement (a read-then-write
        // transaction would fail to upgrade under a concurrent writer):
        // only the first consumer flips used_at.
        let consumed =
            sqlx::query("UPDATE pairing_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL")
                .bind(code_hash)
                .bind(millis(now))
                .execute(&self.pool)
                .await
                .map_err(store_err)?
                .rows_affected()
                == 1;
        let row = sqlx::query(
            "SELECT owner, created_at, expires_at, used_at FROM pairing_codes WHERE code_hash = $1",
        )
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_err)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(PairingCodeRecord {
            code_hash: code_hash.to_string(),
            owner: row.try_get("owner").map_err(store_err)?,
            created_at: time(row.try_get("created_at").map_err(store_err)?),
            expires_at: time(row.try_get("expires_at").map_err(store_err)?),
            // As it was before this call: unused if this call consumed it.
            used_at: if consumed {
                None
            } else {
                opt_time(row.try_get("used_at").map_err(store_err)?)
            },
        }))
    }

    async fn create_device_authorization(&self, a: DeviceAuthorizationRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO device_authorizations (id, device_code_hash, user_code_hash, name, platform, host_version, \
             address, created_at, expires_at, status, decided_by, decided_at, interval_secs, last_polled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(a.id)
        .bind(a.device_code_hash)
        .bind(a.user_code_hash)
        .bind(a.name)
        .bind(a.platform)
        .bind(a.host_version)
        .bind(a.address)
        .bind(millis(a.created_at))
        .bind(millis(a.expires_at))
        .bind(a.status.as_str())
        .bind(a.decided_by)
        .bind(a.decided_at.map(millis))
        .bind(i64::from(a.interval_secs))
        .bind(a.last_polled_at.map(millis))
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn device_authorization_by_user_code(
        &self,
        user_code_hash: &str,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>> {
        sqlx::query(
            "SELECT * FROM device_authorizations WHERE user_code_hash = $1 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(user_code_hash)
        .fetch_optional(&self.pool)
        .await
        .and_then(|row| row.as_ref().map(authorization_from).transpose())
        .map_err(store_err)
    }

    async fn device_authorization_by_device_code(
        &self,
        device_code_hash: &str,
    ) -> StoreResult<Option<DeviceAuthorizationRecord>> {
        sqlx::query("SELECT * FROM device_authorizations WHERE device_code_hash = $1")
            .bind(device_code_hash)
            .fetch_optional(&self.pool)
            .await
            .and_then(|row| row.as_ref().map(authorization_from).transpose())
            .map_err(store_err)
    }

    async fn update_device_authorization(
        &self,
        from: DeviceAuthorizationStatus,
        a: &DeviceAuthorizationRecord,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE device_authorizations SET status = $3, decided_by = $4, decided_at = $5, \
             interval_secs = $6, last_polled_at = $7 WHERE id = $1 AND status = $2",
        )
        .bind(&a.id)
        .bind(from.as_str())
        .bind(a.status.as_str())
        .bind(&a.decided_by)
        .bind(a.decided_at.map(millis))
        .bind(i64::from(a.interval_secs))
        .bind(a.last_polled_at.map(millis))
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(updated.rows_affected() == 1)
    }

    async fn update_policy(&self, owner: &str) -> StoreResult<Option<UpdatePolicy>> {
        policy(self, owner).await.map_err(store_err)
    }

    async fn owner_label(&self, owner: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)
    }

    async fn create_device(&self, d: DeviceRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO devices (id, owner, name, platform, host_version, token_hash, created_at, last_seen, revoked_at, manifest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)",
        )
        .bind(d.id)
        .bind(d.owner)
        .bind(d.name)
        .bind(d.platform)
        .bind(d.host_version)
        .bind(d.token_hash)
        .bind(millis(d.created_at))
        .bind(d.last_seen.map(millis))
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn device(&self, id: &str) -> StoreResult<Option<DeviceRecord>> {
        let row = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        row.as_ref().map(device_from).transpose().map_err(store_err)
    }

    async fn devices(&self, owner: &str) -> StoreResult<Vec<DeviceRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE owner = $1 ORDER BY created_at"
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        rows.iter()
            .map(device_from)
            .collect::<Result<_, _>>()
            .map_err(store_err)
    }

    async fn touch_device(&self, id: &str, at: SystemTime) -> StoreResult<()> {
        sqlx::query("UPDATE devices SET last_seen = $2 WHERE id = $1")
            .bind(id)
            .bind(millis(at))
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn save_manifest(&self, id: &str, manifest: &DeviceManifest) -> StoreResult<()> {
        sqlx::query(
            "UPDATE devices SET manifest = $2, host_version = $3, manifest_summary = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(json(manifest))
        .bind(manifest.host_version.clone())
        .bind(json(&ManifestSummary::from(manifest)))
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn manifest(&self, id: &str) -> StoreResult<Option<DeviceManifest>> {
        let row = sqlx::query("SELECT manifest FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        match row {
            Some(row) => json_col(&row, "manifest").map_err(store_err),
            None => Ok(None),
        }
    }

    async fn manifest_summaries(&self, owner: &str) -> StoreResult<HashMap<String, ManifestSummary>> {
        let rows =
            sqlx::query("SELECT id, manifest_summary FROM devices WHERE owner = $1 AND manifest IS NOT NULL")
                .bind(owner)
                .fetch_all(&self.pool)
                .await
                .map_err(store_err)?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id").map_err(store_err)?;
            let summary = match json_col::<ManifestSummary>(&row, "manifest_summary").map_err(store_err)? {
                Some(s) => Some(s),
                // Saved before summaries were kept: read the whole manifest once.
                None => self.manifest(&id).await?.as_ref().map(ManifestSummary::from),
            };
            if let Some(summary) = summary {
                out.insert(id, summary);
            }
        }
        Ok(out)
    }

    async fn revoke_device(&self, id: &str, at: SystemTime) -> StoreResult<()> {
        sqlx::query("UPDATE devices SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(millis(at))
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn rename_device(&self, id: &str, name: &str) -> StoreResult<()> {
        sqlx::query("UPDATE devices SET name = $2 WHERE id = $1")
            .bind(id)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn create_proposal(&self, p: ProposalRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO proposals (id, owner, device_id, tool, input, plan, requested_by, created_at, expires_at, status, \
             decided_by, decided_at, output, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL, NULL, NULL)",
        )
        .bind(p.id)
        .bind(p.owner)
        .bind(p.device_id)
        .bind(p.tool)
        .bind(json(&p.input))
        .bind(json(&p.plan))
        .bind(p.requested_by)
        .bind(millis(p.created_at))
        .bind(millis(p.expires_at))
        .bind(p.status.as_str())
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn proposal(&self, id: &str) -> StoreResult<Option<ProposalRecord>> {
        let row = sqlx::query("SELECT * FROM proposals WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        row.as_ref().map(proposal_from).transpose().map_err(store_err)
    }

    async fn proposals(
        &self,
        owner: &str,
        status: Option<ProposalStatus>,
    ) -> StoreResult<Vec<ProposalRecord>> {
        let rows = match status {
            Some(s) => {
                sqlx::query(
                    "SELECT * FROM proposals WHERE owner = $1 AND status = $2 ORDER BY created_at DESC",
                )
                .bind(owner)
                .bind(s.as_str())
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query("SELECT * FROM proposals WHERE owner = $1 ORDER BY created_at DESC")
                    .bind(owner)
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(store_err)?;
        rows.iter()
            .map(proposal_from)
            .collect::<Result<_, _>>()
            .map_err(store_err)
    }

    async fn transition_proposal(
        &self,
        id: &str,
        from: ProposalStatus,
        u: ProposalUpdate,
    ) -> StoreResult<Option<ProposalRecord>> {
        let row = sqlx::query(
            "UPDATE proposals SET status = $3, decided_by = COALESCE($4, decided_by), decided_at = COALESCE($5, decided_at), \
             output = COALESCE($6, output), error = COALESCE($7, error) WHERE id = $1 AND status = $2 RETURNING *",
        )
        .bind(id)
        .bind(from.as_str())
        .bind(u.status.as_str())
        .bind(u.decided_by)
        .bind(u.decided_at.map(millis))
        .bind(u.output.map(|o| json(&o)))
        .bind(u.error.map(|e| json(&e)))
        .fetch_optional(&self.pool)
        .await
        .map_err(store_err)?;
        row.as_ref().map(proposal_from).transpose().map_err(store_err)
    }

    async fn log_call(&self, c: CallLogEntry) -> StoreResult<()> {
        self.log
            .send(LogMsg::Entry(Box::new(c)))
            .await
            .map_err(|_| store_err("the call-log writer stopped"))
    }

    async fn calls(&self, owner: &str, limit: usize) -> StoreResult<Vec<CallLogEntry>> {
        // Read what was logged, including what is still queued.
        self.flush_call_log().await;
        let rows = sqlx::query("SELECT * FROM calls WHERE owner = $1 ORDER BY started_at DESC LIMIT $2")
            .bind(owner)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?;
        rows.iter()
            .map(|row| {
                Ok(CallLogEntry {
                    call_id: row.try_get("call_id")?,
                    owner: row.try_get("owner")?,
                    device_id: row.try_get("device_id")?,
                    tool: row.try_get("tool")?,
                    mode: mode_from(&row.try_get::<String, _>("mode")?),
                    requested_by: row
                        .try_get::<Option<String>, _>("requested_by")?
                        .unwrap_or_default(),
                    paths: json_col(row, "paths")?.unwrap_or_default(),
                    proposal_id: row.try_get("proposal_id")?,
                    started_at: time(row.try_get("started_at")?),
                    duration_ms: row.try_get::<i64, _>("duration_ms")? as u64,
                    error_code: row.try_get("error_code")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_err)
    }

    async fn save_pending_call(&self, c: PendingCallRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO pending_calls (call_id, device_id, caller, call, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(c.call_id)
        .bind(c.device_id)
        .bind(c.caller)
        .bind(json(&c.call))
        .bind(millis(c.created_at))
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn pending_call(&self, call_id: &str) -> StoreResult<Option<PendingCallRecord>> {
        let row = sqlx::query("SELECT * FROM pending_calls WHERE call_id = $1")
            .bind(call_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        row.as_ref().map(pending_call_from).transpose().map_err(store_err)
    }

    async fn pending_calls(&self, device_id: &str) -> StoreResult<Vec<PendingCallRecord>> {
        let rows =
            sqlx::query("SELECT * FROM pending_calls WHERE device_id = $1 ORDER BY created_at, call_id")
                .bind(device_id)
                .fetch_all(&self.pool)
                .await
                .map_err(store_err)?;
        rows.iter()
            .map(pending_call_from)
            .collect::<Result<_, _>>()
            .map_err(store_err)
    }

    async fn remove_pending_call(&self, call_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM pending_calls WHERE call_id = $1")
            .bind(call_id)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() > 0)
    }
}

// Update policies: the operator's, and each account's (`updates.rs` has the
// page and the API).

/// What the operator decided, for every account.
#[derive(Debug, Clone, Default)]
pub(crate) struct Operator {
    /// Releases are served (`--releases`). Without them there is nothing
    /// to update to, and devices are told nothing.
    pub(crate) offered: bool,
    /// `--updates manual`: no device updates by itself.
    pub(crate) manual: bool,
    /// `--pin-version`: every device stays on this version.
    pub(crate) pinned: Option<String>,
}

/// What one account decided for its devices. No row: automatic, newest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnerPolicy {
    pub(crate) automatic: bool,
    #[serde(default)]
    pub(crate) pinned: Option<String>,
}

impl Default for OwnerPolicy {
    fn default() -> Self {
        OwnerPolicy {
            automatic: true,
            pinned: None,
        }
    }
}

pub(crate) async fn owner_policy(db: &Db, owner: &str) -> sqlx::Result<OwnerPolicy> {
    let row = sqlx::query("SELECT automatic, pinned FROM update_policies WHERE owner = $1")
        .bind(owner)
        .fetch_optional(&db.pool)
        .await?;
    Ok(match row {
        Some(row) => OwnerPolicy {
            automatic: row.try_get::<i64, _>("automatic")? != 0,
            pinned: row.try_get("pinned")?,
        },
        None => OwnerPolicy::default(),
    })
}

pub(crate) async fn save_policy(db: &Db, owner: &str, policy: &OwnerPolicy) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO update_policies (owner, automatic, pinned, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (owner) DO UPDATE SET automatic = $2, pinned = $3, updated_at = $4",
    )
    .bind(owner)
    .bind(i64::from(policy.automatic))
    .bind(policy.pinned.as_deref())
    .bind(millis(std::time::SystemTime::now()))
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The policy `owner`'s devices are told when they connect: the account's
/// choice within the operator's. `None` when no releases are served.
pub(crate) async fn policy(db: &Db, owner: &str) -> sqlx::Result<Option<UpdatePolicy>> {
    if !db.updates.offered {
        return Ok(None);
    }
    let own = owner_policy(db, owner).await?;
    Ok(Some(effective(&db.updates, &own)))
}

/// A migrated SQLite database in a fresh folder with one user, `usr_1`
/// (a@example.com), for unit tests; the folder lives as long as the handle.
#[cfg(test)]
pub(crate) async fn scratch() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("t.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind("usr_1")
        .bind("a@example.com")
        .bind("x")
        .bind(0i64)
        .execute(&db.pool)
        .await
        .unwrap();
    (dir, db)
}

pub(crate) fn effective(operator: &Operator, own: &OwnerPolicy) -> UpdatePolicy {
    UpdatePolicy {
        automatic: !operator.manual && own.automatic,
        pinned: operator.pinned.clone().or_else(|| own.pinned.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn count_calls(db: &Db) -> i64 {
        sqlx::query("SELECT COUNT(*) AS n FROM calls")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    /// `log_call` only queues; `flush_call_log` returns once every queued
    /// entry is in the table (what a clean shutdown relies on).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_call_log_is_written_in_batches_and_flushed() {
        let (_dir, db) = scratch().await;
        let n = 3 * LOG_BATCH + 17;
        for i in 0..n {
            db.log_call(CallLogEntry {
                call_id: format!("call_{i}"),
                owner: "usr_1".into(),
                device_id: "dev_1".into(),
                tool: "stat".into(),
                mode: Mode::Run,
                requested_by: "alice@example.com".into(),
                paths: vec![format!("scan_{i}.e57")],
                proposal_id: None,
                started_at: SystemTime::now(),
                duration_ms: 1,
                error_code: (i % 7 == 0).then(|| "not_found".to_string()),
            })
            .await
            .unwrap();
        }
        db.flush_call_log().await;
        assert_eq!(count_calls(&db).await, n as i64);
        let recent = db.calls("usr_1", 10).await.unwrap();
        assert_eq!(recent.len(), 10);
    }

    /// Pending calls round-trip through the table on SQLite, and on
    /// PostgreSQL when `FUSION_TEST_POSTGRES_URL` is set: what replicas read
    /// when a device reconnects to another one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_calls_are_kept_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut urls = vec![format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())];
        match std::env::var("FUSION_TEST_POSTGRES_URL") {
            Ok(pg) => urls.push(pg),
            Err(_) => eprintln!(
                "pending_calls_are_kept_until_removed: PostgreSQL skipped (FUSION_TEST_POSTGRES_URL unset)"
            ),
        }
        for url in urls {
            let db = Db::connect(&url).await.unwrap();
            let device = crate::auth::random_hex(8);
            let call = |n: u64| PendingCallRecord {
                call_id: format!("call_{device}_{n}"),
                device_id: device.clone(),
                caller: "rep_a".into(),
                call: fusion_tools::CallEvent {
                    call_id: format!("call_{device}_{n}"),
                    tool: "stat".into(),
                    mode: Mode::Run,
                    input: serde_json::json!({ "path": format!("scan_{n}.e57") }),
                    timeout_ms: 60_000,
                    proposal_id: None,
                    precondition: None,
                },
                created_at: UNIX_EPOCH + Duration::from_millis(1_000 + n),
            };
            for n in [2, 1, 3] {
                db.save_pending_call(call(n)).await.unwrap();
            }
            let kept = db.pending_calls(&device).await.unwrap();
            assert_eq!(kept, [call(1), call(2), call(3)], "{url}: oldest first, whole");
            assert_eq!(db.pending_call(&call(2).call_id).await.unwrap(), Some(call(2)));
            assert!(db.remove_pending_call(&call(2).call_id).await.unwrap());
            assert!(
                !db.remove_pending_call(&call(2).call_id).await.unwrap(),
                "{url}: once"
            );
            assert_eq!(db.pending_call(&call(2).call_id).await.unwrap(), None);
            assert_eq!(db.pending_calls(&device).await.unwrap(), [call(1), call(3)]);
            assert!(db.pending_calls("dev_other").await.unwrap().is_empty());
        }
    }
}
