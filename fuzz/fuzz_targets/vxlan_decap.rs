//! Any bytes as the payload of a received VXLAN UDP datagram.
//!
//! Beyond "never panics", checks what `decapsulate` promises: it accepts
//! exactly the payloads with room for the VXLAN and inner Ethernet headers
//! and the I flag set, the inner frame it returns is the input's suffix
//! after the 8-byte header, and the VNI fits in 24 bits and matches the
//! header view's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_vtep::{
    decapsulate, inner_flow_hash, udp_source_port, DecapError, Vni, VxlanHeader,
    ETHERNET_HEADER_LEN, FLAG_VNI, HEADER_LEN, SOURCE_PORT_MIN,
};

fuzz_target!(|data: &[u8]| {
    let long_enough = data.len() >= HEADER_LEN + ETHERNET_HEADER_LEN;
    match decapsulate(data) {
        Ok((vni, inner)) => {
            assert!(long_enough);
            assert!(data[0] & FLAG_VNI != 0, "accepted without the I flag");
            assert!(vni.get() <= Vni::MAX.get(), "VNI {vni} over 24 bits");
            assert_eq!(inner.len(), data.len() - HEADER_LEN);
            assert!(
                std::ptr::eq(inner, &data[HEADER_LEN..]),
                "inner frame is not the input's suffix"
            );
            let header = VxlanHeader::new_checked(data).expect("long enough");
            assert_eq!(header.vni(), vni);
            assert_eq!(header.payload(), inner);
            // The source port for the reverse direction is always valid.
            assert!(udp_source_port(inner_flow_hash(inner)) >= SOURCE_PORT_MIN);
        }
        Err(DecapError::Truncated { len }) => {
            assert!(!long_enough);
            assert_eq!(len, data.len());
        }
        Err(DecapError::MissingVniFlag { flags }) => {
            assert!(long_enough);
            assert_eq!(flags, data[0]);
            assert!(flags & FLAG_VNI == 0);
        }
    }
    // The flow hash must take any bytes, not only valid frames.
    let _ = inner_flow_hash(data);
});
