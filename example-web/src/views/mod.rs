//! What every page shares: the layout with its script and styles (files of
//! their own, `assets.rs`), the proposal card (`proposal.rs`), and small
//! views.

pub(crate) mod assets;
mod proposal;

use maud::{DOCTYPE, Markup, html};

pub(crate) use proposal::proposal_card;

use crate::auth::Principal;

/// The pages' Content-Security-Policy: script, styles and connections from
/// this origin only, no inline script or style, no framing, forms post
/// here. With the other headers, on every response that set none itself (a
/// blob download sets a stricter one).
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn layout(title: &str, user: Option<&Principal>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fusion-host" }
                link rel="stylesheet" href=(format!("/assets/app.css?v={}", *assets::VERSION));
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
                script type="module" src=(format!("/assets/js/main.js?v={}", *assets::VERSION)) {}
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
