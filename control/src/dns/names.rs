//! The names each network's gateway answers for: its endpoints (with their
//! aliases) and its services, kept by the control plane and read by the
//! DNS responders.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use weft_dns::NameTable;
use weft_switch::NetworkId;

/// Per-network name tables, kept by the control plane.
pub type NameTables = Arc<Mutex<HashMap<NetworkId, NameTable>>>;

/// Rebuilds one network's table: its endpoints (with aliases) and services.
pub fn table_for(
    domain: &str,
    subnet: (Ipv4Addr, u8),
    endpoints: &[(u64, Vec<String>, Ipv4Addr)],
    services: &[(String, Ipv4Addr)],
) -> NameTable {
    let mut table = NameTable::with_domain(domain).unwrap_or_default();
    table.set_subnet(Some(subnet));
    for (owner, names, ip) in endpoints {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = table.insert(*owner, weft_dns::Entry::new(&names, &[*ip]));
    }
    for (i, (name, vip)) in services.iter().enumerate() {
        let _ = table.insert(1 << 40 | i as u64, weft_dns::Entry::new(&[name], &[*vip]));
    }
    table
}
