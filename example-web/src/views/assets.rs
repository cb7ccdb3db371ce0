//! The pages' script and styles, served as files (never inline, so the
//! pages' Content-Security-Policy forbids inline script and style outright).
//! The script is a set of ES modules under `assets/js/`, loaded from
//! `main.js`. Every file carries a strong ETag (a digest of its content)
//! and `Cache-Control: no-cache`: a browser keeps it and asks again with
//! `If-None-Match`, getting 304 until an upgrade changes it.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One file: its path under `/assets/`, type and content.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

const FILES: &[Asset] = &[
    Asset {
        path: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/app.css"),
    },
    Asset {
        path: "js/main.js",
        content_type: JS,
        body: include_str!("../../assets/js/main.js"),
    },
    Asset {
        path: "js/http.js",
        content_type: JS,
        body: include_str!("../../assets/js/http.js"),
    },
    Asset {
        path: "js/live.js",
        content_type: JS,
        body: include_str!("../../assets/js/live.js"),
    },
    Asset {
        path: "js/pairing.js",
        content_type: JS,
        body: include_str!("../../assets/js/pairing.js"),
    },
    Asset {
        path: "js/proposals.js",
        content_type: JS,
        body: include_str!("../../assets/js/proposals.js"),
    },
    Asset {
        path: "js/runner.js",
        content_type: JS,
        body: include_str!("../../assets/js/runner.js"),
    },
];

/// Each file's ETag, in the order of [`FILES`].
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|a| format!("\"{}\"", &crate::auth::sha256(a.body)[..16]))
        .collect()
});

/// A digest of every file, in the pages' links to the entry points, so a
/// page from a new version never pairs with an old file.
pub(crate) static VERSION: LazyLock<String> =
    LazyLock::new(|| crate::auth::sha256(&ETAGS.concat())[..12].to_string());

/// `GET /assets/{*path}`: the file, or 304 when the browser has it.
pub(crate) async fn serve(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|a| a.path == path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (asset, etag) = (&FILES[i], &ETAGS[i]);
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag = HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"\""));
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
}
