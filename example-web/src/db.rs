//! The app's database: SQLite by default, PostgreSQL when the URL says so,
//! through sqlx's `Any` driver with one portable migration set. Implements
//! the dispatcher's `Store` on the app's own tables.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fusion_host_server::{
    CallLogEntry, DeviceRecord, PairingCodeRecord, ProposalRecord, ProposalStatus, ProposalUpdate, Store,
    StoreError, StoreResult,
};
use fusion_tools::{DeviceManifest, Mode};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// The database handle.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pub(crate) pool: AnyPool,
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
            // SQLite allows one writer; a single connection avoids busy errors.
            .max_connections(if sqlite { 1 } else { 8 })
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", redact(url)))?;
        if sqlite {
            sqlx::query("PRAGMA foreign_keys = ON").execute(&pool).await?;
        }
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Db { pool })
    }
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
        let mut tx = self.pool.begin().await.map_err(store_err)?;
        let row = sqlx::query(
            "SELECT owner, created_at, expires_at, used_at FROM pairing_codes WHERE code_hash = $1",
        )
        .bind(code_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_err)?;
        let Some(row) = row else { return Ok(None) };
        let mut record = PairingCodeRecord {
            code_hash: code_hash.to_string(),
            owner: row.try_get("owner").map_err(store_err)?,
            created_at: time(row.try_get("created_at").map_err(store_err)?),
            expires_at: time(row.try_get("expires_at").map_err(store_err)?),
            used_at: opt_time(row.try_get("used_at").map_err(store_err)?),
        };
        // The compare-and-set: only the first consumer flips used_at.
        let done =
            sqlx::query("UPDATE pairing_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL")
                .bind(code_hash)
                .bind(millis(now))
                .execute(&mut *tx)
                .await
                .map_err(store_err)?;
        if done.rows_affected() == 0 && record.used_at.is_none() {
            record.used_at = Some(now);
        }
        tx.commit().await.map_err(store_err)?;
        Ok(Some(record))
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
        let row = sqlx::query("SELECT * FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        row.as_ref().map(device_from).transpose().map_err(store_err)
    }

    async fn devices(&self, owner: &str) -> StoreResult<Vec<DeviceRecord>> {
        let rows = sqlx::query("SELECT * FROM devices WHERE owner = $1 ORDER BY created_at")
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
        sqlx::query("UPDATE devices SET manifest = $2, host_version = $3 WHERE id = $1")
            .bind(id)
            .bind(json(manifest))
            .bind(manifest.host_version.clone())
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

    async fn revoke_device(&self, id: &str, at: SystemTime) -> StoreResult<()> {
        sqlx::query("UPDATE devices SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(millis(at))
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
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE proposals SET status = $3, decided_by = COALESCE($4, decided_by), decided_at = COALESCE($5, decided_at), \
             output = COALESCE($6, output), error = COALESCE($7, error) WHERE id = $1 AND status = $2",
        )
        .bind(id)
        .bind(from.as_str())
        .bind(u.status.as_str())
        .bind(u.decided_by)
        .bind(u.decided_at.map(millis))
        .bind(u.output.map(|o| json(&o)))
        .bind(u.error.map(|e| json(&e)))
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn log_call(&self, c: CallLogEntry) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO calls (call_id, owner, device_id, tool, mode, proposal_id, started_at, duration_ms, error_code) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(c.call_id)
        .bind(c.owner)
        .bind(c.device_id)
        .bind(c.tool)
        .bind(c.mode.as_str())
        .bind(c.proposal_id)
        .bind(millis(c.started_at))
        .bind(c.duration_ms as i64)
        .bind(c.error_code)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn calls(&self, owner: &str, limit: usize) -> StoreResult<Vec<CallLogEntry>> {
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
                    proposal_id: row.try_get("proposal_id")?,
                    started_at: time(row.try_get("started_at")?),
                    duration_ms: row.try_get::<i64, _>("duration_ms")? as u64,
                    error_code: row.try_get("error_code")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_err)
    }
}
