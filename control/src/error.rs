//! Building the API's errors: each says what was wrong and what to do.

use crate::ipam::IpamError;
use weft_api::{ApiError, ErrorKind};
use weft_datapath::DatapathError;

/// Longest network, endpoint, service or alias name.
pub const MAX_NAME_LEN: usize = 64;

/// The result of one control-plane operation.
pub type ApiResult<T> = Result<T, ApiError>;

/// An error of `kind` with a message for a person.
pub fn err(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError::new(kind, message)
}

/// The datapath refused a change (it applied none of it).
pub fn datapath_error(e: DatapathError) -> ApiError {
    err(
        ErrorKind::Internal,
        format!("the datapath refused the change: {e}"),
    )
}

/// An address-management error, classified.
pub fn ipam_error(e: IpamError) -> ApiError {
    let kind = match e {
        IpamError::AddressTaken { .. } => ErrorKind::AlreadyExists,
        IpamError::Exhausted { .. } => ErrorKind::Exhausted,
        _ => ErrorKind::InvalidArgument,
    };
    err(kind, e.to_string())
}

/// Prefixes an error with the network it concerns.
pub fn in_network(mut e: ApiError, network: &str) -> ApiError {
    e.message = format!("network `{network}`: {}", e.message);
    e
}

/// Checks a network, endpoint, service or alias name: what the CLI, DNS
/// and file names tolerate.
pub fn check_name(what: &str, name: &str) -> ApiResult<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(err(
            ErrorKind::InvalidArgument,
            format!(
                "{what} name `{name}` is not valid: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit"
            ),
        ))
    }
}
