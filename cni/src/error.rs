//! The error result (CNI spec 1.1, section "Error"): `cniVersion`, `code`,
//! `msg` and `details`, printed on stdout with a non-zero exit status.
//!
//! Codes 1–99 are the spec's well-known errors ("Well-known Error Codes");
//! 100 and up are this plugin's own.

use serde_json::json;

/// 1: the configuration's `cniVersion` is not supported.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// 2: a field of the configuration is not supported; the message names it.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// 3: the container is unknown or gone; no cleanup is needed.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// 4: an environment variable is missing or invalid.
pub const INVALID_ENV: u32 = 4;
/// 6: the configuration on stdin is not valid JSON of the expected shape.
pub const DECODING_FAILURE: u32 = 6;
/// 7: the configuration is well-formed but invalid.
pub const INVALID_CONFIG: u32 = 7;
/// 11: a transient condition (the daemon is not running): try again later.
pub const TRY_AGAIN_LATER: u32 = 11;
/// 50: `STATUS`: the plugin cannot serve `ADD` requests.
pub const NOT_AVAILABLE: u32 = 50;
/// 100: the daemon refused the request (its message says why).
pub const DAEMON_REFUSED: u32 = 100;
/// 101: talking to the daemon failed (permissions, a broken reply).
pub const DAEMON_FAILED: u32 = 101;
/// 110: `CHECK`: the endpoint is missing or differs from `prevResult`.
pub const CHECK_FAILED: u32 = 110;

/// One error result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
    /// The configuration's `cniVersion`, once known.
    pub cni_version: Option<String>,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
            cni_version: None,
        }
    }

    /// Adds the longer explanation (`details`).
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Sets the `cniVersion` the error reports, unless one is set.
    pub fn version(mut self, version: &str) -> Self {
        if self.cni_version.is_none() {
            self.cni_version = Some(version.to_owned());
        }
        self
    }

    /// The error result's JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = json!({
            "cniVersion": self.cni_version.as_deref().unwrap_or(crate::LATEST_VERSION),
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

/// An error of the daemon client as a CNI error: a daemon that is not
/// running is transient (11), a refusal carries the daemon's message.
pub fn from_client(e: weft_api::client::ClientError) -> CniError {
    use weft_api::client::ClientError;
    match e {
        ClientError::NotRunning { .. } => CniError::new(TRY_AGAIN_LATER, e.to_string())
            .details("the weft daemon is not running; start it and retry"),
        ClientError::Refused(api) => {
            CniError::new(DAEMON_REFUSED, format!("weft refused: {}", api.message))
                .details(format!("{:?}", api.kind))
        }
        ClientError::Io { .. } | ClientError::Protocol(_) => {
            CniError::new(DAEMON_FAILED, e.to_string())
        }
    }
}
