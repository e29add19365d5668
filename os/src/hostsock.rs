//! The few socket calls the socket uplink (`weft-hostnet`) needs that
//! `std` and `socket2` do not offer: a TCP socket's peek offset
//! (`SO_PEEK_OFF`, TCP since Linux 6.10), discarding received bytes
//! without copying them (`MSG_TRUNC` on TCP, `tcp(7)`), and the bytes a
//! socket still holds to send (`SIOCOUTQ`).
//!
//! With a peek offset, data received from the host can be sent on to an
//! endpoint straight out of the socket's receive queue (`MSG_PEEK`) and
//! dropped from it only once the endpoint acknowledges it, so the kernel's
//! queue is the retransmission buffer.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Sets the socket's peek offset: the next `MSG_PEEK` read starts `off`
/// bytes into the receive queue and advances it; reading (or discarding)
/// bytes moves it back by as many.
pub fn set_peek_off(fd: BorrowedFd<'_>, off: u32) -> io::Result<()> {
    let v = libc::c_int::try_from(off)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "peek offset too large"))?;
    // SAFETY: the pointer and length describe a live c_int for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(r).map(drop)
}

/// Drops up to `len` bytes from the head of a TCP socket's receive queue
/// without copying them (`MSG_TRUNC`); returns how many were dropped.
/// Never blocks.
pub fn discard(fd: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: with MSG_TRUNC, TCP skips the copy to user space, so the
    // null buffer is never written (tcp(7): "MSG_TRUNC ... discard").
    let r = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Bytes the socket holds to send: not yet sent plus not yet
/// acknowledged (`SIOCOUTQ`).
pub fn outq(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int to the pointer, which is live.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut v as *mut libc::c_int) };
    check(r)?;
    Ok(v.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn peek_offset_discard_and_outq_over_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        a.write_all(b"0123456789").unwrap();
        // Wait for all ten bytes to arrive.
        let mut probe = [0u8; 16];
        while b.peek(&mut probe).unwrap() < 10 {}
        set_peek_off(b.as_fd(), 0).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(b.peek(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"0123");
        assert_eq!(b.peek(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"4567", "the peek offset advanced");
        assert_eq!(discard(b.as_fd(), 3).unwrap(), 3);
        // Offset moved back by 3: the next peek starts at "8".
        assert_eq!(b.peek(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"89");
        set_peek_off(b.as_fd(), 0).unwrap();
        let mut rest = [0u8; 7];
        (&b).read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"3456789");
        assert_eq!(outq(b.as_fd()).unwrap(), 0, "b sent nothing");
    }
}
