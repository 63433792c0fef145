//! SIGINT (Ctrl-C) and SIGTERM for commands that must clean up before they exit: backup,
//! drop --archive and restore race their work against `Signals::recv` and, when a signal
//! wins, drop the work (killing its pg_dump / pg_restore, which run with kill_on_drop) and
//! remove what it made. Once listened for, the signals no longer end the process by
//! themselves, so listen only after any confirmation prompt (a blocking read would
//! otherwise make Ctrl-C do nothing).

use anyhow::{Context, Result};
use futures_util::FutureExt;
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Signals {
    int: Signal,
    term: Signal,
    seen: Option<&'static str>,
}

impl Signals {
    pub fn listen() -> Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            seen: None,
        })
    }

    /// Waits for SIGINT or SIGTERM and names it. Cancel-safe.
    pub async fn recv(&mut self) -> &'static str {
        let name = tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        };
        self.seen = Some(name);
        name
    }

    /// The signal received so far, if any, without waiting.
    pub fn received(&mut self) -> Option<&'static str> {
        if self.seen.is_none() {
            let _ = self.recv().now_or_never();
        }
        self.seen
    }
}

/// Says on stderr (and with --format json, as the one document on stdout) that a signal
/// stopped the command; returns exit code 130.
pub fn interrupted(json: bool, msg: &str) -> u8 {
    crate::errln!("{msg}");
    if json {
        crate::output::print_json(
            &serde_json::json!({"error": msg, "exit_code": crate::domain::exit::INTERRUPTED}),
        );
    }
    crate::domain::exit::INTERRUPTED
}
