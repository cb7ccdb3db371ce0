//! The fusion-host device runtime: enrollment, the credentials file, the
//! outbound SSE dispatch loop and result posting.
//!
//! Not built yet: this crate currently only fixes its place in the workspace
//! (it depends on `fusion-tools`, and `example-host` depends on it). The
//! tools it will dispatch to are complete in `fusion-tools`.
