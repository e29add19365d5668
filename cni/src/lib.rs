//! `weft-cni`: a CNI plugin that puts containers on weft networks by
//! talking to the running daemon through [`weft_api::client`].
//!
//! It implements the [CNI specification 1.1] for network configurations of
//! version 0.4.0, 1.0.0 and 1.1.0. A runtime runs the plugin with the
//! parameters in environment variables and the network configuration on
//! stdin (spec section "Parameters"), and reads a result or an error as JSON
//! on stdout (section "Result Types").
//!
//! * [`env`]: the `CNI_*` environment variables;
//! * [`config`]: the network configuration on stdin, with the runtime's
//!   capabilities (`runtimeConfig`) and `prevResult`;
//! * [`result`]: the success results (`ADD`, `VERSION`);
//! * [`error`]: the error result and its well-known codes;
//! * [`commands`]: `ADD`, `DEL`, `CHECK`, `GC`, `STATUS`, `VERSION`.
//!
//! The `weft-cni` binary (`cli/src/bin/weft-cni.rs`) calls [`run`] with the
//! process's environment and stdin.
//!
//! [CNI specification 1.1]: https://github.com/containernetworking/cni/blob/main/SPEC.md

#![forbid(unsafe_code)]

pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod result;

use error::CniError;

/// The configuration versions this plugin accepts (spec: "Version").
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// The version errors and `VERSION` replies use when the configuration
/// names none.
pub const LATEST_VERSION: &str = "1.1.0";

/// What the plugin prints on stdout and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// JSON (a result or an error), or empty for a silent success.
    pub stdout: String,
    /// 0 on success, else non-zero (the error's code, capped to 1..=255).
    pub exit_code: i32,
}

/// Runs one plugin invocation: `var` reads an environment variable,
/// `stdin` is the network configuration as the runtime sent it.
pub fn run(var: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    match commands::dispatch(var, stdin) {
        Ok(Some(value)) => Outcome {
            stdout: pretty(&value),
            exit_code: 0,
        },
        Ok(None) => Outcome {
            stdout: String::new(),
            exit_code: 0,
        },
        Err(e) => error_outcome(&e),
    }
}

/// The outcome of an error found before [`run`] could start (reading
/// stdin failed).
pub fn run_error(e: CniError) -> Outcome {
    error_outcome(&e)
}

fn error_outcome(e: &CniError) -> Outcome {
    Outcome {
        stdout: pretty(&e.to_json()),
        exit_code: e.code.clamp(1, 255) as i32,
    }
}

fn pretty(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}
