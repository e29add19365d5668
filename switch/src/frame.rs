//! A frame's offload metadata as the forwarding core sees it: the
//! virtio-net header (virtio 1.x spec §5.1.6) that TAP devices with
//! `IFF_VNET_HDR` exchange, saying whether a frame is a GSO super-frame and
//! whether its transport checksum is still partial.

use weft_os::tap::{
    VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
};

/// Offload metadata of a frame: GSO type and size, partial checksum.
pub type Offload = VirtioNetHdr;

/// Offload metadata of a frame that needs nothing done to it.
pub const NO_OFFLOAD: Offload = VirtioNetHdr {
    flags: 0,
    gso_type: VIRTIO_NET_HDR_GSO_NONE,
    hdr_len: 0,
    gso_size: 0,
    csum_start: 0,
    csum_offset: 0,
    num_buffers: 0,
};

/// Whether a frame is a GSO super-frame to be segmented downstream.
#[inline]
pub fn is_gso(offload: &Offload) -> bool {
    offload.gso_type & !VIRTIO_NET_HDR_GSO_ECN != VIRTIO_NET_HDR_GSO_NONE
}

/// Whether a frame's transport checksum is partial (to be completed by
/// whoever segments or finally receives it).
#[inline]
pub fn needs_csum(offload: &Offload) -> bool {
    offload.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
}

/// Room for the largest frame a port may deliver: a 64 KiB IPv6 GSO
/// super-frame with its Ethernet and IPv6 headers.
pub const MAX_FRAME_LEN: usize = 14 + 40 + 65535;
