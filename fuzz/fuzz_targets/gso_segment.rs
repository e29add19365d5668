//! TCP segmentation of vnet_hdr GSO super-frames (virtio 1.x §5.1.6.2,
//! RFC 9293 for the TCP header fixes) and the coalescer that merges
//! segments back, with random headers and sizes.
//!
//! Input: a 10-byte virtio-net header (flags, gso_type, hdr_len, gso_size,
//! csum_start, csum_offset, little-endian as the kernel writes them), one
//! byte of prefix length, then the Ethernet frame.
//!
//! Checks: nothing panics; the records `segment` reports lie inside the
//! output buffer, back to back, each a GSO segment's at least the prefix
//! plus an Ethernet header, a plain frame's the prefix plus the frame;
//! whatever the coalescer emits is at least an Ethernet header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_os::tap::VirtioNetHdr;
use weft_switch::frame::is_gso;
use weft_switch::offload::{segment, Coalescer};

const OUT_LEN: usize = 256 * 1024;

thread_local! {
    /// The output buffer and the coalescers, allocated once (as the
    /// datapath's are); every input leaves the coalescers flushed.
    static OUT: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; OUT_LEN]);
    static MERGE: std::cell::RefCell<Coalescer> = std::cell::RefCell::new(Coalescer::new(4));
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 11 {
        return;
    }
    let le = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]);
    let offload = VirtioNetHdr {
        flags: data[0],
        gso_type: data[1],
        hdr_len: le(2),
        gso_size: le(4),
        csum_start: le(6),
        csum_offset: le(8),
        num_buffers: 0,
    };
    let prefix_len = usize::from(data[10] & 0x3f);
    let frame = &data[11..];
    OUT.with(|out| check(frame, &offload, prefix_len, &mut out.borrow_mut()));
});

fn check(frame: &[u8], offload: &VirtioNetHdr, prefix_len: usize, out: &mut [u8]) {
    if let Ok(s) = segment(frame, offload, prefix_len, out) {
        assert!(s.count >= 1);
        assert!(s.total_len <= out.len());
        let mut next = 0;
        for r in s.records() {
            assert_eq!(r.start, next, "records are back to back");
            assert!(r.end <= s.total_len);
            if is_gso(offload) {
                assert!(r.len() >= prefix_len + 14, "a segment without a frame");
            } else {
                assert_eq!(
                    r.len(),
                    prefix_len + frame.len(),
                    "a plain frame is copied whole"
                );
            }
            next = r.end;
        }
        assert_eq!(next, s.total_len);
        if is_gso(offload) && s.count > 1 {
            assert!(offload.gso_size > 0);
        }
        // Merge them back: whatever comes out is at least a header.
        MERGE.with(|c| {
            let mut c = c.borrow_mut();
            for r in s.records() {
                let _ = c.push(&out[r.start + prefix_len..r.end], |f, _| {
                    assert!(f.len() >= 14)
                });
            }
            c.flush(|f, _| assert!(f.len() >= 14));
        });
    }
    // The frame as a segment on its own.
    MERGE.with(|c| {
        let mut c = c.borrow_mut();
        let _ = c.push(frame, |f, _| {
            assert!(f.len() >= 14 || f.len() == frame.len())
        });
        c.flush(|_, _| {});
    });
}
