//! `fusion-host`, the device binary.
//!
//! Not built yet: the device runtime (enroll, run, doctor, status) lands with
//! the `fusion-host` library. Until then this binary says so and exits with
//! status 2, rather than pretending to connect.

use std::process::ExitCode;

fn main() -> ExitCode {
    let tools = fusion_tools::Toolbox::builtin();
    let names: Vec<_> = tools.names().collect();
    eprintln!(
        "fusion-host: the device runtime is not available in this build yet.\n\
         The built-in tools are ready ({}); `cargo run -p example-web -- --demo` shows them working.",
        names.join(", ")
    );
    ExitCode::from(2)
}
