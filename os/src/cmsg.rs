//! Ancillary data (control messages, `cmsg(3)`) for `recvmmsg`, in the
//! shape of quinn-udp's `cmsg` module: a fixed-size, suitably aligned
//! buffer per message and a typed decoder, so that [`crate::udp`] never
//! does pointer arithmetic on control buffers itself. (Sending goes through
//! nix's `sendmsg`, which encodes its own control messages.)
//!
//! weft receives at most a few control messages per datagram (`UDP_GRO`,
//! an `int`), so [`CmsgBuf`] is small enough to sit in a stack array of
//! one per datagram.

use std::mem::{self, size_of};
use std::ptr;

/// Bytes of control space per message: room for several small control
/// messages (each `CMSG_SPACE(4)` = 24 bytes on 64-bit Linux).
pub(crate) const CMSG_BUF_LEN: usize = 64;

/// A control-message buffer, aligned as `struct cmsghdr` requires.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf(pub(crate) [u8; CMSG_BUF_LEN]);

const _: () = assert!(mem::align_of::<CmsgBuf>() >= mem::align_of::<libc::cmsghdr>());

/// `CMSG_LEN(len)`: the value of `cmsg_len` for `len` bytes of data.
const fn cmsg_len(len: usize) -> usize {
    // SAFETY: CMSG_LEN is pure arithmetic on its argument (libc marks it
    // unsafe only because it is a C macro port); `len` is at most a few
    // bytes, so the cast to c_uint is lossless.
    unsafe { libc::CMSG_LEN(len as libc::c_uint) as usize }
}

/// Iterates over the control messages the kernel wrote into `hdr`'s
/// control buffer and returns the data of the first with `level` and `ty`,
/// read as a `T`. Returns `None` if there is none, or if it is too short to
/// hold a `T`.
///
/// # Safety
///
/// `hdr.msg_control` must point at a readable buffer of at least
/// `hdr.msg_controllen` bytes, aligned for `cmsghdr`, holding control
/// messages as `recvmsg`/`recvmmsg` leave them (or be null with
/// `msg_controllen == 0`).
pub(crate) unsafe fn find<T: Copy>(
    hdr: &libc::msghdr,
    level: libc::c_int,
    ty: libc::c_int,
) -> Option<T> {
    // SAFETY: the caller guarantees the buffer is valid; CMSG_FIRSTHDR only
    // reads `hdr`'s fields.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR / CMSG_NXTHDR only return pointers to whole
        // cmsghdr structures inside the control buffer.
        let c = unsafe { &*cmsg };
        if c.cmsg_level == level && c.cmsg_type == ty {
            if (c.cmsg_len as usize) < cmsg_len(size_of::<T>()) {
                return None;
            }
            // SAFETY: `cmsg_len` says the data holds at least size_of::<T>()
            // bytes after the header, inside the buffer; read unaligned as
            // CMSG_DATA is only `size_t`-aligned. T is a plain integer.
            return Some(unsafe { ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<T>()) });
        }
        // SAFETY: `cmsg` is a valid header inside `hdr`'s control buffer;
        // CMSG_NXTHDR checks the next one against `msg_controllen` and
        // returns null past the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    impl CmsgBuf {
        const fn new() -> Self {
            CmsgBuf([0; CMSG_BUF_LEN])
        }
    }

    /// `CMSG_SPACE(len)`: the room a control message with `len` bytes of data
    /// takes, padding included.
    const fn space(len: usize) -> usize {
        // SAFETY: CMSG_SPACE is pure arithmetic on its argument (libc marks it
        // unsafe only because it is a C macro port); `len` is at most a few
        // bytes, so the cast to c_uint is lossless.
        unsafe { libc::CMSG_SPACE(len as libc::c_uint) as usize }
    }

    /// Makes `buf` the control buffer of `hdr` and writes one control message
    /// (`level`, `ty`, `value`) into it, setting `msg_control` and
    /// `msg_controllen`.
    ///
    /// # Panics
    ///
    /// If `T` does not fit in a [`CmsgBuf`] (a programming error: weft only
    /// encodes integers).
    fn encode_one<T: Copy>(
        hdr: &mut libc::msghdr,
        buf: &mut CmsgBuf,
        level: libc::c_int,
        ty: libc::c_int,
        value: T,
    ) {
        let total = space(size_of::<T>());
        assert!(total <= CMSG_BUF_LEN, "control message too large");
        buf.0[..total].fill(0);
        hdr.msg_control = buf.0.as_mut_ptr().cast();
        hdr.msg_controllen = total as _;
        // SAFETY: `msg_control` points at `buf`, which is aligned for cmsghdr
        // and holds `total >= size_of::<cmsghdr>()` bytes, so CMSG_FIRSTHDR
        // returns a non-null pointer to its start.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
        debug_assert!(!cmsg.is_null());
        // SAFETY: `cmsg` points at the start of `buf` (valid, aligned, and
        // writable for `total` bytes, which covers the header and the data at
        // CMSG_DATA). `value` is written unaligned because CMSG_DATA is only
        // guaranteed to be aligned to `size_t`.
        unsafe {
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = ty;
            (*cmsg).cmsg_len = cmsg_len(size_of::<T>()) as _;
            ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<T>(), value);
        }
    }

    fn empty_msghdr() -> libc::msghdr {
        // SAFETY: msghdr is plain data (integers and raw pointers); all-zero
        // is a valid, empty value.
        unsafe { mem::zeroed() }
    }

    #[test]
    fn encode_then_find_roundtrip() {
        let mut hdr = empty_msghdr();
        let mut buf = CmsgBuf::new();
        encode_one(
            &mut hdr,
            &mut buf,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            1400u16,
        );
        #[allow(clippy::unnecessary_cast)] // size_t on glibc, socklen_t on musl
        let controllen = hdr.msg_controllen as usize;
        assert_eq!(controllen, space(2));
        // SAFETY: `hdr` points at `buf`, just encoded.
        let got = unsafe { find::<u16>(&hdr, libc::SOL_UDP, libc::UDP_SEGMENT) };
        assert_eq!(got, Some(1400));
        // SAFETY: as above.
        let other = unsafe { find::<u16>(&hdr, libc::SOL_UDP, libc::UDP_GRO) };
        assert_eq!(other, None);
        // Asking for more data than the message holds is refused.
        // SAFETY: as above.
        let wide = unsafe { find::<u64>(&hdr, libc::SOL_UDP, libc::UDP_SEGMENT) };
        assert_eq!(wide, None);
    }

    #[test]
    fn find_on_empty_control_buffer() {
        let hdr = empty_msghdr();
        // SAFETY: null control buffer with length 0.
        let got = unsafe { find::<i32>(&hdr, libc::SOL_UDP, libc::UDP_GRO) };
        assert_eq!(got, None);
    }
}
