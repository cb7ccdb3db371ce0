//! The fusion-host dispatcher and the device-facing HTTP/SSE routes, for an
//! axum backend to embed.
//!
//! Not built yet: this crate currently only fixes its place in the workspace
//! (it depends on `fusion-tools` for the wire types, and `example-web`
//! depends on it).
