//! The runtime's parameters in environment variables (CNI spec 1.1,
//! section "Parameters"): `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME`, `CNI_ARGS` and `CNI_PATH`. A missing or invalid variable
//! is error 4.

use crate::error::{CniError, INVALID_ENV};

/// The operation the runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
}

/// The parameters of one invocation, as far as its command needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    /// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`: where other plugins live (unused: weft calls none).
    pub path: Vec<String>,
}

/// Reads `CNI_COMMAND`.
pub fn command(var: &dyn Fn(&str) -> Option<String>) -> Result<Command, CniError> {
    let text = var("CNI_COMMAND")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CniError::new(INVALID_ENV, "CNI_COMMAND is not set"))?;
    Command::parse(&text).ok_or_else(|| {
        CniError::new(
            INVALID_ENV,
            format!("CNI_COMMAND `{text}` is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
        )
    })
}

impl Env {
    /// Reads and checks the variables; those `command` requires (spec,
    /// "Parameters") must be present.
    pub fn read(var: &dyn Fn(&str) -> Option<String>, command: Command) -> Result<Env, CniError> {
        let get = |name: &str| var(name).filter(|s| !s.is_empty());
        let (needs_id, needs_netns, needs_ifname) = match command {
            Command::Add | Command::Check => (true, true, true),
            Command::Del => (true, false, true),
            Command::Gc | Command::Status | Command::Version => (false, false, false),
        };
        let required = |name: &str, needed: bool| -> Result<Option<String>, CniError> {
            match get(name) {
                None if needed => Err(CniError::new(
                    INVALID_ENV,
                    format!("{name} is not set (required for {command:?})"),
                )),
                v => Ok(v),
            }
        };
        let container_id = required("CNI_CONTAINERID", needs_id)?;
        if let Some(id) = &container_id {
            check_container_id(id)?;
        }
        let netns = required("CNI_NETNS", needs_netns)?;
        if let Some(ns) = &netns {
            if !ns.starts_with('/') {
                return Err(CniError::new(
                    INVALID_ENV,
                    format!("CNI_NETNS `{ns}` is not an absolute path"),
                ));
            }
        }
        let ifname = required("CNI_IFNAME", needs_ifname)?;
        if let Some(name) = &ifname {
            check_ifname(name)?;
        }
        let args = match get("CNI_ARGS") {
            Some(text) => parse_args(&text)?,
            None => Vec::new(),
        };
        let path = get("CNI_PATH")
            .map(|p| p.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(Env {
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The value of `key` in `CNI_ARGS`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The spec's container ID: letters and digits, then also `_`, `.`, `-`.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let valid = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(CniError::new(
            INVALID_ENV,
            format!("CNI_CONTAINERID `{id}` is not valid: use letters, digits, '_', '.', '-', starting with a letter or digit"),
        ))
    }
}

/// A Linux interface name: 1 to 15 bytes, no '/', ':' or whitespace, not
/// `.` or `..`.
fn check_ifname(name: &str) -> Result<(), CniError> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if valid {
        Ok(())
    } else {
        Err(CniError::new(
            INVALID_ENV,
            format!("CNI_IFNAME `{name}` is not a valid interface name"),
        ))
    }
}

/// `CNI_ARGS`: `KEY=VALUE;KEY=VALUE`.
fn parse_args(text: &str) -> Result<Vec<(String, String)>, CniError> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    CniError::new(
                        INVALID_ENV,
                        format!("CNI_ARGS entry `{pair}` is not KEY=VALUE"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn add_needs_id_netns_and_ifname() {
        let v = vars(&[("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")]);
        let e = Env::read(&v, Command::Add).unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
        let env = Env::read(&v, Command::Del).unwrap();
        assert_eq!(env.ifname.as_deref(), Some("eth0"));
    }

    #[test]
    fn args_are_pairs() {
        let v = vars(&[("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web")]);
        let env = Env::read(&v, Command::Gc).unwrap();
        assert_eq!(env.arg("K8S_POD_NAME"), Some("web"));
        let bad = vars(&[("CNI_ARGS", "oops")]);
        assert_eq!(Env::read(&bad, Command::Gc).unwrap_err().code, INVALID_ENV);
    }

    #[test]
    fn bad_ids_and_ifnames_are_refused() {
        for (k, v) in [
            ("CNI_CONTAINERID", "-x"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_IFNAME", "sixteen-chars-xx"),
        ] {
            let vs = vars(&[(k, v)]);
            assert_eq!(
                Env::read(&vs, Command::Gc).unwrap_err().code,
                INVALID_ENV,
                "{k}={v}"
            );
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            command(&vars(&[("CNI_COMMAND", "ADD")])).unwrap(),
            Command::Add
        );
        assert_eq!(command(&vars(&[])).unwrap_err().code, INVALID_ENV);
        assert_eq!(
            command(&vars(&[("CNI_COMMAND", "add")])).unwrap_err().code,
            INVALID_ENV
        );
    }
}
