//! The control socket's server: one request per connection, and no client,
//! slow or hostile, can stall it.
//!
//! * **Bounded.** At most [`Limits::max_clients`] connections are open at
//!   once (derived from the descriptor limit, so the daemon keeps
//!   descriptors for TAPs and sockets). Each connection has a thread of its
//!   own while it lasts.
//! * **Short patience.** A client has [`Limits::request_timeout`] in all to
//!   send its request line (a per-read timeout would let a client dribble a
//!   byte at a time forever) and [`Limits::reply_timeout`] to take the
//!   reply.
//! * **Newcomers are served.** When every slot is taken, the connection
//!   that has waited longest without sending its request is closed to make
//!   room, so idle connections cannot lock out a client that has something
//!   to say. When every slot is busy applying a request, the newcomer gets a
//!   short "busy" error instead of waiting. When `accept(2)` runs out of
//!   descriptors the oldest idle connection is closed and accept tried
//!   again: the daemon refuses, it does not collapse.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_api::{ApiError, ErrorKind, Reply};
use weft_os::peer::{peer_credentials, PeerCred};

/// Longest request accepted, in bytes (the largest real request is well
/// under 4 KiB).
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// The server's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_clients: usize,
    /// Time a client has to send its whole request line.
    pub request_timeout: Duration,
    /// Time a client has to take its reply.
    pub reply_timeout: Duration,
}

impl Limits {
    /// Limits for a process whose descriptor limit is `nofile`: a quarter of
    /// the descriptors at most go to clients (each takes two: the
    /// connection and the copy kept to evict it), and never more than 256.
    pub fn for_descriptor_limit(nofile: u64) -> Limits {
        let max_clients = (nofile / 8).clamp(4, 256) as usize;
        Limits {
            max_clients,
            request_timeout: Duration::from_secs(2),
            reply_timeout: Duration::from_secs(5),
        }
    }

    /// Limits from this process's soft `RLIMIT_NOFILE`.
    pub fn from_rlimit() -> Limits {
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        Limits::for_descriptor_limit(nofile)
    }
}

/// What the server does with one request line from one caller.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, caller: PeerCred, line: &str) -> Answer;
}

/// A handler's answer to one request: the reply line, and what takes the
/// connection over once the reply is written (a capture streams frames).
pub struct Answer {
    pub reply: Reply,
    /// Runs with the connection after the reply; the connection keeps its
    /// slot among [`Limits::max_clients`] until it returns.
    pub then: Option<Box<dyn FnOnce(UnixStream) + Send>>,
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Answer {
        Answer { reply, then: None }
    }
}

/// A connection still waiting for its request line: the copy of its socket
/// the server may shut down to evict it.
struct Waiting {
    id: u64,
    since: Instant,
    stream: UnixStream,
}

/// State shared by the accept loop and the connection threads.
struct Shared {
    limits: Limits,
    /// Connections open (threads running).
    open: AtomicUsize,
    /// Connections still reading their request, oldest first.
    waiting: Mutex<VecDeque<Waiting>>,
    next_id: AtomicU64,
}

impl Shared {
    /// Closes the connection that has waited longest for its request;
    /// false when none is waiting.
    fn evict_oldest(&self) -> bool {
        let oldest = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        match oldest {
            Some(w) => {
                tracing::debug!(waited = ?w.since.elapsed(), "closing the longest-idle API connection to make room");
                // Shutting the read side only: a request already in the
                // socket is still read and answered; an idle client sees
                // its connection closed.
                let _ = w.stream.shutdown(Shutdown::Read);
                true
            }
            None => false,
        }
    }

    /// Takes connection `id` off the waiting list; false when it was
    /// evicted meanwhile.
    fn stop_waiting(&self, id: u64) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match waiting.iter().position(|w| w.id == id) {
            Some(i) => {
                waiting.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Serves `listener` forever.
pub fn serve(listener: UnixListener, limits: Limits, handler: Arc<dyn Handler>) {
    let shared = Arc::new(Shared {
        limits,
        open: AtomicUsize::new(0),
        waiting: Mutex::new(VecDeque::new()),
        next_id: AtomicU64::new(0),
    });
    tracing::debug!(max_clients = limits.max_clients, "API server limits");
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.raw_os_error().is_some_and(is_out_of_descriptors) => {
                tracing::warn!(error = %e, "out of descriptors accepting an API client: closing the longest-idle one");
                if !shared.evict_oldest() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        admit(&shared, stream, &handler);
    }
}

fn is_out_of_descriptors(errno: i32) -> bool {
    errno == nix::libc::EMFILE || errno == nix::libc::ENFILE
}

/// Gives `stream` a thread of its own, making room first if needed.
fn admit(shared: &Arc<Shared>, stream: UnixStream, handler: &Arc<dyn Handler>) {
    // The descriptor limit is read again at each accept: an operator may
    // lower it on the running daemon (`prlimit`).
    let max = Limits::from_rlimit()
        .max_clients
        .min(shared.limits.max_clients);
    if shared.open.load(Ordering::Acquire) >= max && !shared.evict_oldest() {
        refuse(
            &stream,
            "the daemon is busy: every API connection is applying a request; try again",
        );
        return;
    }
    let caller = match peer_credentials(&stream) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the API client's credentials");
            return;
        }
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let evictable = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            refuse(&stream, &format!("the daemon is out of resources ({e})"));
            return;
        }
    };
    shared
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back(Waiting {
            id,
            since: Instant::now(),
            stream: evictable,
        });
    shared.open.fetch_add(1, Ordering::AcqRel);
    let thread_shared = Arc::clone(shared);
    let handler = Arc::clone(handler);
    let spawned = std::thread::Builder::new()
        .name("weft-api".into())
        .spawn(move || {
            connection(&thread_shared, id, caller, stream, &*handler);
            thread_shared.stop_waiting(id);
            thread_shared.open.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start a thread for an API client");
        shared.stop_waiting(id);
        shared.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Writes a one-line error reply without waiting for the client.
fn refuse(stream: &UnixStream, message: &str) {
    let _ = stream.set_nonblocking(true);
    let reply = Reply::failure(ApiError::new(ErrorKind::System, message));
    if let Ok(mut text) = serde_json::to_string(&reply) {
        text.push('\n');
        let _ = (&*stream).write_all(text.as_bytes());
    }
}

/// One connection: read the request within the deadline, apply it, reply.
fn connection(
    shared: &Shared,
    id: u64,
    caller: PeerCred,
    stream: UnixStream,
    handler: &dyn Handler,
) {
    let line = read_request(&stream, shared.limits.request_timeout);
    if !shared.stop_waiting(id) && !matches!(line, Ok(Some(_))) {
        // Evicted to make room for a newer client before it said anything.
        return;
    }
    let answer = match line {
        Ok(Some(line)) => handler.handle(caller, &line),
        Ok(None) => return,
        Err(e) => Reply::failure(ApiError::new(ErrorKind::InvalidArgument, e.to_string())).into(),
    };
    let mut text = serde_json::to_string(&answer.reply).unwrap_or_else(|_| {
        r#"{"ok":false,"error":{"kind":"internal","message":"reply did not serialize"}}"#.into()
    });
    text.push('\n');
    let _ = stream.set_write_timeout(Some(shared.limits.reply_timeout));
    if (&stream).write_all(text.as_bytes()).is_ok() {
        if let Some(then) = answer.then {
            let _ = stream.set_read_timeout(None);
            then(stream);
        }
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("no complete request within {0:?}: send the request line at once")]
    Timeout(Duration),
    #[error("the request is longer than {MAX_REQUEST_LEN} bytes")]
    TooLong,
    #[error("the request is not UTF-8")]
    NotUtf8,
    #[error("could not read the request: {0}")]
    Io(#[source] io::Error),
}

/// Reads one line (without its `\n`) within `timeout` in all; `None` when
/// the client closed without sending anything.
fn read_request(stream: &UnixStream, timeout: Duration) -> Result<Option<String>, ReadError> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout(timeout));
        }
        let _ = stream.set_read_timeout(Some(left));
        let n = match (&*stream).read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::Timeout(timeout))
            }
            Err(e) => return Err(ReadError::Io(e)),
        };
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            break;
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&chunk[..end]);
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST_LEN {
            return Err(ReadError::TooLong);
        }
    }
    if buf.len() > MAX_REQUEST_LEN {
        return Err(ReadError::TooLong);
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| ReadError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_descriptor_limit() {
        assert_eq!(Limits::for_descriptor_limit(1024).max_clients, 128);
        assert_eq!(Limits::for_descriptor_limit(16).max_clients, 4);
        assert_eq!(Limits::for_descriptor_limit(1 << 20).max_clients, 256);
    }

    #[test]
    fn a_request_is_read_whole_or_refused() {
        let (client, server) = UnixStream::pair().unwrap();
        (&client).write_all(b"{\"op\":\"status\"}\nrest").unwrap();
        let line = read_request(&server, Duration::from_secs(1)).unwrap();
        assert_eq!(line.as_deref(), Some("{\"op\":\"status\"}"));

        // Nothing at all, then closed: no request.
        let (client, server) = UnixStream::pair().unwrap();
        drop(client);
        assert!(matches!(
            read_request(&server, Duration::from_secs(1)),
            Ok(None)
        ));

        // A line that never ends within the deadline.
        let (client, server) = UnixStream::pair().unwrap();
        (&client).write_all(b"{\"op\":").unwrap();
        let started = Instant::now();
        let e = read_request(&server, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, ReadError::Timeout(_)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));

        // Too long.
        let (client, server) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = (&client).write_all(&vec![b'x'; MAX_REQUEST_LEN + 10]);
        });
        let e = read_request(&server, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, ReadError::TooLong), "{e}");
        drop(server);
        writer.join().unwrap();
    }
}
