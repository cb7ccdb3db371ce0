//! The activity log as an audit trail: every call with who asked, the
//! device, the tool, the paths its input named, the outcome, and for a
//! change who approved or rejected it and when. Newest first, paged by an
//! opaque cursor, filtered by device and outcome; `GET /api/activity` as
//! JSON or CSV, and the Activity table on `/devices`.

use std::time::SystemTime;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Db, millis, time};
use crate::error::AppError;

/// Error codes that mean "the device's rules said no", not a failure.
const REFUSED: [&str; 2] = ["outside_scope", "permission_denied"];

/// Rows a page has unless asked otherwise, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 10_000;

/// What became of a call, as people read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// It ran (or was planned) as asked.
    Ok,
    /// The device's rules refused it: outside the allowed folders, read-only.
    Refused,
    /// The files changed between the plan and the approval.
    Conflict,
    /// Anything else that went wrong.
    Failed,
    /// A planned change a person rejected.
    Rejected,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Conflict,
        Outcome::Failed,
        Outcome::Rejected,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Conflict => "conflict",
            Outcome::Failed => "failed",
            Outcome::Rejected => "rejected",
        }
    }

    fn of(error_code: Option<&str>, rejected_plan: bool) -> Outcome {
        match error_code {
            None if rejected_plan => Outcome::Rejected,
            None => Outcome::Ok,
            Some(c) if REFUSED.contains(&c) => Outcome::Refused,
            Some("conflict") => Outcome::Conflict,
            Some(_) => Outcome::Failed,
        }
    }

    /// The SQL condition for this outcome (columns of `calls c` and
    /// `proposals p`); the codes are constants, never input.
    fn condition(self) -> String {
        let refused = REFUSED.map(|c| format!("'{c}'")).join(", ");
        let rejected = "(c.mode = 'plan' AND p.status = 'rejected')";
        match self {
            Outcome::Ok => format!("c.error_code IS NULL AND NOT {rejected}"),
            Outcome::Rejected => format!("c.error_code IS NULL AND {rejected}"),
            Outcome::Refused => format!("c.error_code IN ({refused})"),
            Outcome::Conflict => "c.error_code = 'conflict'".into(),
            Outcome::Failed => {
                format!("c.error_code IS NOT NULL AND c.error_code NOT IN ({refused}, 'conflict')")
            }
        }
    }
}

/// `?device=&outcome=&cursor=&limit=&format=`.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct ActivityQuery {
    /// Only this device's calls.
    #[serde(default)]
    pub(crate) device: Option<String>,
    /// Only calls with this outcome.
    #[serde(default)]
    pub(crate) outcome: Option<Outcome>,
    /// Where the previous page ended (its `next_cursor`).
    #[serde(default)]
    pub(crate) cursor: Option<String>,
    /// Rows per page: default 50, at most 10,000.
    #[serde(default)]
    pub(crate) limit: Option<usize>,
    /// `json` (default) or `csv`.
    #[serde(default)]
    pub(crate) format: Option<String>,
}

impl ActivityQuery {
    /// The filters as a query string (for links that keep them), without
    /// the cursor.
    pub(crate) fn filters(&self) -> String {
        let pairs: Vec<(&str, &str)> = [
            ("device", self.device.as_deref()),
            ("outcome", self.outcome.map(Outcome::as_str)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

/// A person's decision on a planned change.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Decision {
    /// `pending`, `approved`, `applied`, `failed`, `rejected` or `expired`.
    pub(crate) status: String,
    /// Who approved or rejected it (their email).
    pub(crate) decided_by: Option<String>,
    /// When, RFC 3339.
    pub(crate) decided_at: Option<String>,
}

/// One row of the audit trail.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActivityRow {
    pub(crate) call_id: String,
    /// When it started, RFC 3339.
    pub(crate) at: String,
    #[serde(skip)]
    pub(crate) started_at: SystemTime,
    /// Who asked: a person, an API token or an MCP client.
    pub(crate) requested_by: String,
    pub(crate) device_id: String,
    pub(crate) device_name: Option<String>,
    pub(crate) tool: String,
    /// `run`, `plan` or `apply`.
    pub(crate) mode: String,
    /// The paths its input named (the first 10).
    pub(crate) paths: Vec<String>,
    pub(crate) outcome: Outcome,
    pub(crate) error_code: Option<String>,
    pub(crate) duration_ms: i64,
    pub(crate) proposal_id: Option<String>,
    /// For a planned or applied change: what became of it, and who said so.
    pub(crate) decision: Option<Decision>,
}

/// One page of the trail and where the next one starts.
#[derive(Debug, Serialize)]
pub(crate) struct ActivityPage {
    pub(crate) entries: Vec<ActivityRow>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub(crate) next_cursor: Option<String>,
}

fn bad_cursor() -> AppError {
    AppError::invalid(
        "cursor",
        "is not a cursor this server gave; pass next_cursor from the previous page unchanged",
    )
}

/// `started_at_ms:call_id` of the last row shown.
fn parse_cursor(cursor: &str) -> Result<(i64, String), AppError> {
    let (ms, id) = cursor.split_once(':').ok_or_else(bad_cursor)?;
    let ms = ms.parse().map_err(|_| bad_cursor())?;
    if !id.starts_with("call_") {
        return Err(bad_cursor());
    }
    Ok((ms, id.to_string()))
}

fn row_from(r: &AnyRow) -> Result<ActivityRow, sqlx::Error> {
    let started_at = time(r.try_get("started_at")?);
    let mode: String = r.try_get("mode")?;
    let error_code: Option<String> = r.try_get("error_code")?;
    let status: Option<String> = r.try_get("p_status")?;
    let rejected_plan = mode == "plan" && status.as_deref() == Some("rejected");
    let paths: Option<String> = r.try_get("paths")?;
    Ok(ActivityRow {
        call_id: r.try_get("call_id")?,
        at: humantime::format_rfc3339_seconds(started_at).to_string(),
        started_at,
        requested_by: r
            .try_get::<Option<String>, _>("requested_by")?
            .unwrap_or_default(),
        device_id: r.try_get("device_id")?,
        device_name: r.try_get("device_name")?,
        tool: r.try_get("tool")?,
        outcome: Outcome::of(error_code.as_deref(), rejected_plan),
        mode,
        paths: paths
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default(),
        error_code,
        duration_ms: r.try_get("duration_ms")?,
        proposal_id: r.try_get("proposal_id")?,
        decision: match status {
            Some(status) => Some(Decision {
                status,
                decided_by: r.try_get("decided_by_email")?,
                decided_at: r
                    .try_get::<Option<i64>, _>("p_decided_at")?
                    .map(|ms| humantime::format_rfc3339_seconds(time(ms)).to_string()),
            }),
            None => None,
        },
    })
}

/// One page of `owner`'s trail, newest first.
pub(crate) async fn page(db: &Db, owner: &str, q: &ActivityQuery) -> Result<ActivityPage, AppError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(AppError::invalid(
            "limit",
            &format!("must be 1 to {MAX_LIMIT} rows (got {limit})"),
        ));
    }
    // Calls still queued for the log are part of the trail.
    db.flush_call_log().await;
    let mut sql = String::from(
        "SELECT c.call_id, c.started_at, c.requested_by, c.device_id, d.name AS device_name, c.tool, c.mode, \
         c.paths, c.error_code, c.duration_ms, c.proposal_id, p.status AS p_status, u.email AS decided_by_email, \
         p.decided_at AS p_decided_at \
         FROM calls c LEFT JOIN devices d ON d.id = c.device_id LEFT JOIN proposals p ON p.id = c.proposal_id \
         LEFT JOIN users u ON u.id = p.decided_by WHERE c.owner = $1",
    );
    let mut binds: Vec<String> = vec![owner.to_string()];
    let mut cursor_ms = None;
    if let Some(device) = q.device.as_deref().filter(|d| !d.is_empty()) {
        binds.push(device.to_string());
        sql.push_str(&format!(" AND c.device_id = ${}", binds.len()));
    }
    if let Some(outcome) = q.outcome {
        sql.push_str(&format!(" AND ({})", outcome.condition()));
    }
    if let Some(cursor) = q.cursor.as_deref().filter(|c| !c.is_empty()) {
        let (ms, id) = parse_cursor(cursor)?;
        cursor_ms = Some(ms);
        binds.push(id);
        let n = binds.len();
        sql.push_str(&format!(
            " AND (c.started_at < ${} OR (c.started_at = ${} AND c.call_id < ${n}))",
            n + 1,
            n + 1
        ));
    }
    sql.push_str(" ORDER BY c.started_at DESC, c.call_id DESC");
    sql.push_str(&format!(" LIMIT {}", limit + 1));
    let mut query = sqlx::query(&sql);
    for b in &binds {
        query = query.bind(b.clone());
    }
    if let Some(ms) = cursor_ms {
        query = query.bind(ms);
    }
    let rows = query.fetch_all(&db.pool).await?;
    let mut entries = rows.iter().map(row_from).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = (entries.len() > limit).then(|| {
        entries.truncate(limit);
        let last = &entries[limit - 1];
        format!("{}:{}", millis(last.started_at), last.call_id)
    });
    Ok(ActivityPage { entries, next_cursor })
}

/// A cell a spreadsheet will not run: device names (chosen by the device)
/// and paths (chosen by the agent) can begin with `=`, `+`, `-`, `@`, TAB or
/// CR, which spreadsheets read as a formula; such a cell gets a leading `'`,
/// as OWASP's guidance on CSV injection says.
fn inert(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// The page as CSV: one row per call, paths joined with `; `. The next
/// page's cursor is in the `x-next-cursor` header.
pub(crate) fn csv(page: &ActivityPage) -> Result<Response, AppError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let write = |out: &mut csv::Writer<Vec<u8>>, record: &[&str]| {
        out.write_record(record.iter().map(|cell| inert(cell).into_owned()))
            .map_err(|e| AppError::internal(format!("writing CSV: {e}")))
    };
    write(
        &mut out,
        &[
            "at",
            "requested_by",
            "device_id",
            "device",
            "tool",
            "mode",
            "paths",
            "outcome",
            "error_code",
            "decision",
            "decided_by",
            "decided_at",
            "duration_ms",
            "call_id",
            "proposal_id",
        ],
    )?;
    for r in &page.entries {
        let d = r.decision.as_ref();
        write(
            &mut out,
            &[
                &r.at,
                &r.requested_by,
                &r.device_id,
                r.device_name.as_deref().unwrap_or(""),
                &r.tool,
                &r.mode,
                &r.paths.join("; "),
                r.outcome.as_str(),
                r.error_code.as_deref().unwrap_or(""),
                d.map_or("", |d| d.status.as_str()),
                d.and_then(|d| d.decided_by.as_deref()).unwrap_or(""),
                d.and_then(|d| d.decided_at.as_deref()).unwrap_or(""),
                &r.duration_ms.to_string(),
                &r.call_id,
                r.proposal_id.as_deref().unwrap_or(""),
            ],
        )?;
    }
    let body = out
        .into_inner()
        .map_err(|e| AppError::internal(format!("writing CSV: {e}")))?;
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"activity.csv\""),
            ),
        ],
        body,
    )
        .into_response();
    if let Some(next) = page
        .next_cursor
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        response.headers_mut().insert("x-next-cursor", next);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formula_cells_are_inert() {
        for (cell, written) in [
            ("=HYPERLINK(\"http://evil\")", "'=HYPERLINK(\"http://evil\")"),
            ("+1+1", "'+1+1"),
            ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("/home/a=b.txt", "/home/a=b.txt"),
            ("north site", "north site"),
            ("", ""),
        ] {
            assert_eq!(super::inert(cell), written, "{cell:?}");
        }
    }
}
