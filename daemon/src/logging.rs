//! The daemon's log: `tracing` events to standard error, as human lines
//! (coloured only on a terminal) or as JSON lines, filtered by
//! `--log-level` or `RUST_LOG`.

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not a log format: use text or json")),
        }
    }
}

/// Installs the global subscriber. `level` (e.g. `info`, `debug`,
/// `weft_control=debug`) wins over `RUST_LOG`; without either, `info`.
/// Returns an error for a filter that does not parse.
pub fn init(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = match level {
        Some(text) => EnvFilter::try_new(text)
            .map_err(|e| format!("--log-level `{text}` is not a log filter ({e}): use error, warn, info, debug or trace"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A subscriber installed earlier (tests) is fine.
    let _ = installed;
    Ok(())
}
