//! How the process ends: its exit codes, and a failure that carries one.
//! Every command returns [`Fail`]; `main` prints it and exits with its code.

use fusion_host::Error as HostError;

/// How the process exits.
pub(crate) mod exit {
    /// Bad usage or configuration.
    pub(crate) const USAGE: u8 = 2;
    /// The device must be paired again (revoked, unknown token).
    pub(crate) const REPAIR: u8 = 3;
    /// Stopped at once by a second stop signal.
    pub(crate) const INTERRUPTED: u8 = 130;
}

/// A failure whose JSON document a command already printed on stdout, so
/// `--json` prints no second one: scripts read one JSON value.
#[derive(Debug)]
pub(crate) struct PrintedAsJson(pub(crate) anyhow::Error);

impl std::fmt::Display for PrintedAsJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for PrintedAsJson {}

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) code: u8,
    pub(crate) error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Fail {
    fn from(e: E) -> Self {
        let error = e.into();
        let code = match error.downcast_ref::<HostError>() {
            Some(HostError::Revoked) => exit::REPAIR,
            Some(e)
                if e.code()
                    .is_some_and(|c| c == "invalid_code" || c == "code_expired") =>
            {
                exit::USAGE
            }
            _ => 1,
        };
        Fail { code, error }
    }
}
