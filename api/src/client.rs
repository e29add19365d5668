//! The client side of the control API: find the daemon's socket, send one
//! request, read one reply.
//!
//! The wire protocol is documented in `docs/api.md`: a connection carries one
//! JSON request line and one JSON reply line.

use std::io::{self, BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{ApiError, Reply, Request};

/// How long to wait for the daemon's reply before giving up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket every command uses when neither `--socket` nor `WEFT_SOCKET`
/// is given: `/run/weft/weft.sock` when privileged ([`is_privileged`]),
/// `$XDG_RUNTIME_DIR/weft/weft.sock` otherwise (or `/tmp/weft-UID/weft.sock` when `XDG_RUNTIME_DIR` is unset).
pub fn default_socket_path() -> PathBuf {
    socket_path_for(is_privileged(), env_dir("XDG_RUNTIME_DIR"), current_uid())
}

fn socket_path_for(root: bool, runtime_dir: Option<PathBuf>, uid: u32) -> PathBuf {
    if root {
        return PathBuf::from("/run/weft/weft.sock");
    }
    match runtime_dir {
        Some(dir) => dir.join("weft").join("weft.sock"),
        None => PathBuf::from(format!("/tmp/weft-{uid}/weft.sock")),
    }
}

/// Whether this process is "root" to weft: it has `CAP_NET_ADMIN` in the
/// initial user namespace (see `weft_os::privilege`). Root inside a user
/// namespace is not; it gets the per-user defaults.
pub fn is_privileged() -> bool {
    weft_os::privilege::is_privileged()
}

fn current_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// An XDG base directory from the environment; per the XDG spec, unset,
/// empty and relative values are ignored.
pub fn env_dir(var: &str) -> Option<PathBuf> {
    let value = std::env::var_os(var)?;
    let path = PathBuf::from(value);
    path.is_absolute().then_some(path)
}

/// Why a request did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (it does not exist, or the daemon that
    /// created it is gone).
    #[error(
        "no weft daemon is listening on {}: start one with `weft daemon` \
         (or point --socket / WEFT_SOCKET at it)",
        path.display()
    )]
    NotRunning { path: PathBuf },
    /// The daemon understood the request and refused it; no state changed.
    #[error("{}", .0.message)]
    Refused(ApiError),
    /// Talking to the daemon failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The daemon's reply did not follow the protocol.
    #[error("unexpected reply from the daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        ClientError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Sends `req` to the daemon listening on `socket` and returns the reply's
/// `result` (`null` when the daemon sent none).
pub fn call(socket: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    let (result, _) = exchange(socket, req, true)?;
    Ok(result)
}

/// Sends a request whose reply is followed by a stream (`capture`): the
/// reply's `result`, and the connection positioned after the reply line,
/// without a read timeout. The client keeps its side open: closing it
/// tells the daemon to stop.
pub fn call_streaming(
    socket: &Path,
    req: &Request,
) -> Result<(serde_json::Value, BufReader<UnixStream>), ClientError> {
    let (result, reader) = exchange(socket, req, false)?;
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|e| ClientError::io("cannot set socket timeouts", e))?;
    Ok((result, reader))
}

/// Connects, sends `req` (closing the write side when `close_write`) and
/// reads the reply line.
fn exchange(
    socket: &Path,
    req: &Request,
    close_write: bool,
) -> Result<(serde_json::Value, BufReader<UnixStream>), ClientError> {
    let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            path: socket.to_path_buf(),
        },
        io::ErrorKind::PermissionDenied => ClientError::io(
            format!(
                "cannot connect to {}: permission denied (the socket is mode 0660: \
                 run as root or as a member of the socket's group)",
                socket.display()
            ),
            e,
        ),
        _ => ClientError::io(format!("cannot connect to {}", socket.display()), e),
    })?;
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
        .map_err(|e| ClientError::io("cannot set socket timeouts", e))?;

    let mut line = serde_json::to_string(req)
        .map_err(|e| ClientError::Protocol(format!("cannot encode request: {e}")))?;
    line.push('\n');
    let sent = (&stream).write_all(line.as_bytes()).and_then(|()| {
        if close_write {
            stream.shutdown(Shutdown::Write)
        } else {
            Ok(())
        }
    });
    match sent {
        Ok(()) => {}
        // The daemon may have closed early after replying with an error;
        // its reply is still worth reading.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(ClientError::io("cannot send the request to the daemon", e)),
    }

    let mut reply_line = String::new();
    let mut reader = BufReader::new(stream);
    reader
        .read_line(&mut reply_line)
        .map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::io(
                format!(
                    "the daemon did not reply within {} s",
                    REPLY_TIMEOUT.as_secs()
                ),
                e,
            ),
            _ => ClientError::io("cannot read the daemon's reply", e),
        })?;
    Ok((parse_reply(&reply_line)?, reader))
}

/// Sends `req` and decodes the result as `T`: the typed form of [`call`]
/// for programs (a CNI plugin, an agent) that know what their request
/// returns, e.g. `call_as::<Vec<NetworkInfo>>(socket, &Request::NetworkList)`.
pub fn call_as<T: serde::de::DeserializeOwned>(
    socket: &Path,
    req: &Request,
) -> Result<T, ClientError> {
    let value = call(socket, req)?;
    serde_json::from_value(value)
        .map_err(|e| ClientError::Protocol(format!("unexpected reply to {req:?}: {e}")))
}

/// Turns one reply line into the request's result or error.
fn parse_reply(line: &str) -> Result<serde_json::Value, ClientError> {
    if line.trim().is_empty() {
        return Err(ClientError::Protocol(
            "the daemon closed the connection without replying".into(),
        ));
    }
    let reply: Reply = serde_json::from_str(line)
        .map_err(|e| ClientError::Protocol(format!("reply is not valid JSON: {e}")))?;
    match (reply.ok, reply.result, reply.error) {
        (true, result, None) => Ok(result.unwrap_or(serde_json::Value::Null)),
        (false, _, Some(error)) => Err(ClientError::Refused(error)),
        (true, _, Some(_)) => Err(ClientError::Protocol(
            "reply has \"ok\": true and an \"error\"".into(),
        )),
        (false, _, None) => Err(ClientError::Protocol(
            "reply has \"ok\": false but no \"error\"".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn socket_path_rules() {
        assert_eq!(
            socket_path_for(true, Some("/run/user/1000".into()), 0),
            PathBuf::from("/run/weft/weft.sock")
        );
        assert_eq!(
            socket_path_for(false, Some("/run/user/1000".into()), 1000),
            PathBuf::from("/run/user/1000/weft/weft.sock")
        );
        assert_eq!(
            socket_path_for(false, None, 1000),
            PathBuf::from("/tmp/weft-1000/weft.sock")
        );
    }

    #[test]
    fn reply_parsing() {
        let v = parse_reply("{\"ok\":true,\"result\":[1,2]}\n").unwrap();
        assert_eq!(v, serde_json::json!([1, 2]));
        assert_eq!(
            parse_reply("{\"ok\":true}\n").unwrap(),
            serde_json::Value::Null
        );
        match parse_reply(r#"{"ok":false,"error":{"kind":"not_found","message":"no network x"}}"#) {
            Err(ClientError::Refused(e)) => {
                assert_eq!(e.kind, ErrorKind::NotFound);
                assert_eq!(e.message, "no network x");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(parse_reply(""), Err(ClientError::Protocol(_))));
        assert!(matches!(parse_reply("nope"), Err(ClientError::Protocol(_))));
        assert!(matches!(
            parse_reply(r#"{"ok":false}"#),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn missing_socket_is_not_running() {
        let path = PathBuf::from(format!(
            "/tmp/weft-test-missing-{}/weft.sock",
            std::process::id()
        ));
        match call(&path, &Request::Status) {
            Err(e @ ClientError::NotRunning { .. }) => {
                assert!(e.to_string().contains("weft daemon"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn round_trip_with_a_fake_daemon() {
        let dir = std::env::temp_dir().join(format!("weft-client-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut req = String::new();
            BufReader::new(&conn).read_line(&mut req).unwrap();
            let req: Request = serde_json::from_str(&req).unwrap();
            assert_eq!(req, Request::Stats);
            (&conn)
                .write_all(b"{\"ok\":true,\"result\":{\"ports\":[],\"switch_drops\":{}}}\n")
                .unwrap();
        });
        let v = call(&path, &Request::Stats).unwrap();
        server.join().unwrap();
        assert_eq!(v["ports"], serde_json::json!([]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
