//! DNS over TCP framing (RFC 1035 §4.2.2): each message is preceded by
//! its length as a 2-byte big-endian integer. Only the codec lives here;
//! the caller owns the sockets.
//!
//! The codec frames bytes and does not judge them: a zero-length frame
//! decodes to an empty message, which the DNS parser then rejects.

use crate::wire::MAX_TCP_LEN;

/// Size of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 2;

/// Why a message cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The message is longer than 65535 bytes.
    #[error("message of {0} bytes exceeds the 65535-byte TCP limit")]
    TooLong(usize),
}

/// Appends the length prefix and `msg` to `out`.
pub fn write_frame(msg: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if msg.len() > MAX_TCP_LEN {
        return Err(FrameError::TooLong(msg.len()));
    }
    out.reserve(LENGTH_PREFIX_LEN + msg.len());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    Ok(())
}

/// `msg` with its length prefix.
pub fn encode_frame(msg: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    write_frame(msg, &mut out)?;
    Ok(out)
}

/// Splits the first complete frame off `buf`: the message and the number
/// of bytes it used (prefix included). `None` if `buf` does not yet hold a
/// whole frame.
pub fn decode_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    let prefix = buf.get(..LENGTH_PREFIX_LEN)?;
    let len = u16::from_be_bytes([prefix[0], prefix[1]]) as usize;
    let end = LENGTH_PREFIX_LEN + len;
    Some((buf.get(LENGTH_PREFIX_LEN..end)?, end))
}

/// Reassembles messages from a TCP byte stream read in arbitrary pieces.
#[derive(Debug, Clone, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, if one has arrived.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        let (msg, used) = decode_frame(&self.buf)?;
        let msg = msg.to_vec();
        self.buf.drain(..used);
        Some(msg)
    }

    /// Bytes held that do not yet form a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}
