//! The harness's error type, and [`Context`] to say which step failed.
//!
//! Every error shows its own step; [`Error::message`] adds the causes, as
//! the notes in the table and the progress lines print them.

use std::path::PathBuf;
use std::process::ExitStatus;

use weft_api::client::ClientError;

/// Why the benchmark, a topology or a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Ctrl-C or SIGTERM; everything created has been removed.
    #[error("interrupted")]
    Interrupted,
    /// Namespaces need CAP_NET_ADMIN.
    #[error(
        "`weft bench` needs root (CAP_NET_ADMIN) to create network namespaces; run it as \
         `sudo {} bench`",
        exe.display()
    )]
    NotRoot {
        /// The weft binary, for the suggested command.
        exe: PathBuf,
    },
    /// `--baseline-weft` does not name a weft binary that can be run.
    #[error("--baseline-weft {}: {reason}", path.display())]
    BadBaseline {
        path: PathBuf,
        /// What is wrong with it and what to do.
        reason: String,
    },
    /// A tool every topology needs is not installed.
    #[error("`weft bench` needs `{tool}`: install it (apt install {package})")]
    MissingTool {
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// A helper command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A helper command ran past its time limit and was killed.
    #[error("`{command}` did not finish within {secs} s")]
    CommandTimedOut { command: String, secs: u64 },
    /// A background process (daemon, switch, server) exited early.
    #[error("`{command}` exited ({status})")]
    Exited { command: String, status: ExitStatus },
    /// Something did not become ready in time.
    #[error("timed out after {secs} s waiting for {what}")]
    WaitTimedOut { what: String, secs: u64 },
    /// A file, directory, process or signal operation failed.
    #[error("{context}")]
    Io {
        /// The step, e.g. "cannot create DIR".
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// JSON could not be read or written.
    #[error("{context}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    /// A weft daemon's control API failed or refused a request.
    #[error("{context}")]
    Api {
        context: String,
        #[source]
        source: ClientError,
    },
    /// A tool failed or printed something the harness cannot read; the
    /// message says which and how.
    #[error("{0}")]
    Tool(String),
    /// weft's own topology could not be built in these scenarios.
    #[error("weft's own topology failed in: {scenarios} (see the notes above)")]
    WeftFailed {
        /// Comma-separated scenario names.
        scenarios: String,
    },
    /// `source` happened during `context` (e.g. with a log's last lines).
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

/// The harness's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this is (or was caused by) an interruption.
    pub fn is_interrupted(&self) -> bool {
        match self {
            Error::Interrupted => true,
            Error::Context { source, .. } => source.is_interrupted(),
            _ => false,
        }
    }

    /// This error and its causes, `: `-separated (as anyhow's `{:#}`).
    pub fn message(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }

    /// Wraps this error in `context`.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }
}

/// Names the step that failed, like anyhow's `Context`.
pub trait Context<T> {
    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;

    fn context(self, context: impl Into<String>) -> Result<T>
    where
        Self: Sized,
    {
        self.with_context(|| context)
    }
}

impl<T> Context<T> for Result<T> {
    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.context(context()))
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context().into(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, serde_json::Error> {
    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| Error::Json {
            context: context().into(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, ClientError> {
    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| Error::Api {
            context: context().into(),
            source,
        })
    }
}

/// A missing value in a tool's output: [`Error::Tool`] with the message.
impl<T> Context<T> for Option<T> {
    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error::Tool(context().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_list_the_causes_like_anyhow() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err: Result<()> = Err(io).context("cannot create /x");
        let err = err.context("weft daemon log:\n    last line").unwrap_err();
        assert_eq!(
            err.message(),
            "weft daemon log:\n    last line: cannot create /x: no such file"
        );
        assert!(!err.is_interrupted());
        assert!(Error::Interrupted.context("waiting").is_interrupted());
    }
}
