//! Keeping devices up to date: what the operator decides for everyone
//! (`--updates manual`, `--pin-version`), what each account decides for its
//! devices (on `/devices`, or `PUT /api/update-policy`), the policy a device
//! is told when it connects, and each device's update state as `/devices`
//! shows it.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use fusion_host_server::DeviceStatus;
use fusion_protocol::UpdatePolicy;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Authed, MaybeAuthed};
use crate::db::{Operator, OwnerPolicy, effective, owner_policy, policy, save_policy};
use crate::error::AppError;
use crate::releases;
use crate::state::AppState;

/// Checks a version to pin: empty means none.
fn pin(version: Option<&str>) -> Result<Option<String>, AppError> {
    match version.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if semver::Version::parse(v).is_ok() => Ok(Some(v.to_string())),
        Some(v) => Err(AppError::invalid(
            "pinned",
            &format!("{v:?} is not a version; give one like 0.2.0, or nothing to follow the newest"),
        )),
    }
}

/// Where a device is, as `/devices` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceUpdate {
    /// It said it is installing this version.
    Updating(String),
    /// It stays on this version.
    Pinned(String),
    /// This newer version is offered.
    Available(String),
    /// It runs the offered version (or a newer one).
    UpToDate,
}

impl DeviceUpdate {
    /// `None` when the app offers no release (or the device runs a build
    /// with no version to compare) and the device is not updating.
    pub(crate) fn of(
        device: &DeviceStatus,
        offered: Option<&str>,
        policy: Option<&UpdatePolicy>,
    ) -> Option<Self> {
        if let Some(version) = &device.updating {
            return Some(DeviceUpdate::Updating(version.clone()));
        }
        let offered = offered?;
        // A build that is not a release (a development build) cannot be compared.
        semver::Version::parse(&device.device.host_version).ok()?;
        if let Some(pinned) = policy.and_then(|p| p.pinned.as_ref()) {
            return Some(DeviceUpdate::Pinned(pinned.clone()));
        }
        Some(if releases::is_newer(offered, &device.device.host_version) {
            DeviceUpdate::Available(offered.to_string())
        } else {
            DeviceUpdate::UpToDate
        })
    }

    pub(crate) fn badge(&self, automatic: bool) -> Markup {
        match self {
            DeviceUpdate::Updating(v) => html! { span.badge.updating { "updating to " (v) } },
            DeviceUpdate::Pinned(v) => {
                html! { span.badge.pinned title="Automatic updates keep it on this version" { "pinned to " (v) } }
            }
            DeviceUpdate::Available(v) => {
                let how = if automatic {
                    "It updates by itself when no call is running"
                } else {
                    "Run `fusion-host update` on it"
                };
                html! { span.badge.update title=(how) { (v) " available" } }
            }
            DeviceUpdate::UpToDate => html! { span.badge.current { "up to date" } },
        }
    }
}

/// The routes: the API and the form on `/devices`.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/update-policy", get(get_policy).put(put_policy))
        .route("/devices/updates", post(form))
        .with_state(state)
}

async fn described(s: &AppState, owner: &str) -> Result<Value, AppError> {
    let own = owner_policy(&s.db, owner).await?;
    let operator = &s.db.updates;
    Ok(json!({
        "automatic": own.automatic,
        "pinned": own.pinned,
        "operator": { "manual": operator.manual, "pinned": operator.pinned },
        "offered": releases::offered(s).await,
        "devices_are_told": policy(&s.db, owner).await?,
    }))
}

/// `GET /api/update-policy`: the account's choice, the operator's, the
/// release offered, and what devices are told.
async fn get_policy(State(s): State<AppState>, Authed(p): Authed) -> Result<Json<Value>, AppError> {
    Ok(Json(described(&s, &p.user.id).await?))
}

/// `PUT /api/update-policy {automatic, pinned}`.
async fn put_policy(
    State(s): State<AppState>,
    Authed(p): Authed,
    headers: HeaderMap,
    Json(body): Json<OwnerPolicy>,
) -> Result<Json<Value>, AppError> {
    p.check_csrf(headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))?;
    let policy = OwnerPolicy {
        automatic: body.automatic,
        pinned: pin(body.pinned.as_deref())?,
    };
    save_policy(&s.db, &p.user.id, &policy).await?;
    Ok(Json(described(&s, &p.user.id).await?))
}

#[derive(Debug, Deserialize)]
struct PolicyForm {
    csrf: String,
    /// A checkbox: present when ticked.
    automatic: Option<String>,
    pinned: Option<String>,
}

/// The form on `/devices`: works without script.
async fn form(
    State(s): State<AppState>,
    MaybeAuthed(p): MaybeAuthed,
    Form(form): Form<PolicyForm>,
) -> Result<Response, AppError> {
    let Some(p) = p else {
        return Ok(Redirect::to("/signin").into_response());
    };
    p.check_csrf(Some(&form.csrf))?;
    let policy = OwnerPolicy {
        automatic: form.automatic.is_some(),
        pinned: pin(form.pinned.as_deref())?,
    };
    save_policy(&s.db, &p.user.id, &policy).await?;
    Ok(Redirect::to("/devices#updates").into_response())
}

/// The account's policy, for `/devices`.
pub(crate) async fn for_page(
    s: &AppState,
    owner: &str,
) -> Result<(OwnerPolicy, Option<UpdatePolicy>), AppError> {
    let own = owner_policy(&s.db, owner).await?;
    let told = s.db.updates.offered.then(|| effective(&s.db.updates, &own));
    Ok((own, told))
}

/// The updates section of `/devices`, when the app offers releases.
pub(crate) fn view(own: &OwnerPolicy, operator: &Operator, offered: &str, csrf: Option<&str>) -> Markup {
    html! {
        section.card #updates {
            h2 { "Updates" }
            p.muted {
                "This app offers fusion-host " (offered) ". A device that updates by itself waits until no call is running, checks the release's signature, and goes back to the version before if the new one cannot connect. Devices learn a change here when they next connect."
            }
            @if operator.manual {
                p.notice #updates-operator { "The operator turned automatic updates off for everyone: run " code { "fusion-host update" } " on a device to update it." }
            }
            @if let Some(v) = &operator.pinned {
                p.notice #updates-operator-pin { "The operator keeps every device on " (v) "." }
            }
            form.inline #updates-form method="post" action="/devices/updates" {
                input type="hidden" name="csrf" value=[csrf];
                label { input #updates-automatic type="checkbox" name="automatic" checked[own.automatic] disabled[operator.manual]; " Update my devices automatically" }
                " "
                label { "Stay on version " input #updates-pinned type="text" name="pinned" size="10" placeholder="newest" value=[own.pinned.as_deref()]; }
                " "
                button.small type="submit" { "Save" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_bounds_what_an_account_chooses() {
        let own = OwnerPolicy {
            automatic: true,
            pinned: Some("0.2.0".into()),
        };
        let open = Operator {
            offered: true,
            ..Operator::default()
        };
        assert_eq!(
            effective(&open, &own),
            UpdatePolicy {
                automatic: true,
                pinned: Some("0.2.0".into())
            }
        );
        let strict = Operator {
            offered: true,
            manual: true,
            pinned: Some("0.1.0".into()),
        };
        assert_eq!(
            effective(&strict, &own),
            UpdatePolicy {
                automatic: false,
                pinned: Some("0.1.0".into())
            }
        );
    }

    #[test]
    fn a_pin_is_a_version_or_nothing() {
        assert_eq!(pin(Some(" 1.2.3 ")).unwrap(), Some("1.2.3".into()));
        assert_eq!(pin(Some("")).unwrap(), None);
        assert_eq!(pin(None).unwrap(), None);
        let e = pin(Some("latest")).unwrap_err();
        assert_eq!(e.code, "invalid_input");
        assert!(e.message.contains("\"latest\" is not a version"), "{}", e.message);
    }
}
