//! Exit codes of the contract, and the error marker that selects exit 2.

use std::fmt;

/// 0: everything asked for succeeded.
pub const OK: u8 = 0;
/// 1: it ran, but something failed.
pub const FAILED: u8 = 1;
/// 2: bad input (usage, invalid slug, unknown tenant, malformed config); nothing changed.
pub const BAD_INPUT: u8 = 2;
/// 130: interrupted by Ctrl-C (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

/// Bad input from the operator. Raised before anything is changed; main maps it to exit 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Shorthand for returning bad input as an `anyhow::Error`.
pub fn bad_input(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(msg.into()))
}

/// The exit code for an error that ended a command.
pub fn code_for(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<BadInput>()) {
        BAD_INPUT
    } else {
        FAILED
    }
}
