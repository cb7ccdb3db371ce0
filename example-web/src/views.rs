//! What every page shares: the layout with its script and styles (served as
//! files, so the pages' Content-Security-Policy forbids inline ones), and
//! small views.

use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::auth::Principal;

// The page's styles and script are files of their own, never inline, so the
// pages' Content-Security-Policy can forbid inline script and style outright.
pub(crate) const CSS: &str = include_str!("../assets/app.css");
pub(crate) const JS: &str = include_str!("../assets/app.js");

/// A digest of both, in their URLs: a browser caches them for good and
/// fetches them again after an upgrade.
static ASSET_VERSION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::auth::sha256(&format!("{CSS}{JS}"))[..12].to_string());

pub(crate) fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (
                axum::http::header::CACHE_CONTROL,
                "public, max-age=31536000, immutable",
            ),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn layout(title: &str, user: Option<&Principal>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fusion-host" }
                link rel="stylesheet" href=(format!("/assets/app.css?v={}", *ASSET_VERSION));
            }
            body data-csrf=[user.and_then(|u| u.csrf.as_deref())] {
                header.top {
                    a.brand href="/devices" { "fusion-host" }
                    @if let Some(u) = user {
                        nav {
                            a href="/devices" { "Devices" }
                            span.muted { (u.user.email) }
                            form.inline method="post" action="/signout" {
                                input type="hidden" name="csrf" value=[u.csrf.as_deref()];
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                p.banner #offline-banner role="status" hidden { "Cannot reach the server — retrying…" }
                main { (body) }
                script src=(format!("/assets/app.js?v={}", *ASSET_VERSION)) {}
            }
        }
    }
}

pub(crate) fn ago(t: std::time::SystemTime) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs());
    match secs {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86399 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}
