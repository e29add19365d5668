//! A network's IPv4 neighbour table: address → MAC bindings the switch knows
//! without asking, used for ARP suppression (answering an ARP request
//! locally instead of flooding it across tunnels, RFC 7432 §10 describes the
//! same for EVPN) and for routing into overlay networks.
//!
//! Entries are learned from ARP packets arriving over tunnels, or fed by a
//! control plane (static: never aged). Local endpoints are not stored here:
//! the switch knows them from their ports.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rustc_hash::FxBuildHasher;

use weft_packet::MacAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    mac: MacAddr,
    last_seen: Instant,
    is_static: bool,
}

/// A copy of one binding, to put back exactly as it was
/// ([`NeighborTable::entry`], [`NeighborTable::restore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedNeighbor(Entry);

/// A neighbour binding as reported to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub age: Duration,
    pub is_static: bool,
}

#[derive(Debug)]
pub struct NeighborTable {
    entries: HashMap<Ipv4Addr, Entry, FxBuildHasher>,
    capacity: usize,
}

impl NeighborTable {
    pub fn with_capacity(capacity: usize) -> Self {
        NeighborTable {
            entries: HashMap::with_capacity_and_hasher(capacity, FxBuildHasher),
            capacity,
        }
    }

    /// Records a binding seen on the wire; static bindings win. `false` when
    /// the table is full and the binding is new.
    pub fn learn(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) -> bool {
        if let Some(e) = self.entries.get_mut(&ip) {
            if !e.is_static {
                e.mac = mac;
                e.last_seen = now;
            }
            return true;
        }
        if self.entries.len() >= self.capacity {
            return false;
        }
        self.entries.insert(
            ip,
            Entry {
                mac,
                last_seen: now,
                is_static: false,
            },
        );
        true
    }

    /// Installs a binding from the control plane.
    pub fn set_static(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) -> bool {
        if !self.entries.contains_key(&ip) && self.entries.len() >= self.capacity {
            return false;
        }
        self.entries.insert(
            ip,
            Entry {
                mac,
                last_seen: now,
                is_static: true,
            },
        );
        true
    }

    /// A copy of `ip`'s binding, learned or static.
    pub fn entry(&self, ip: Ipv4Addr) -> Option<SavedNeighbor> {
        self.entries.get(&ip).copied().map(SavedNeighbor)
    }

    /// Puts `ip`'s binding back as [`NeighborTable::entry`] copied it
    /// (`None`: removes it).
    pub fn restore(&mut self, ip: Ipv4Addr, saved: Option<SavedNeighbor>) {
        match saved {
            Some(SavedNeighbor(e)) => {
                self.entries.insert(ip, e);
            }
            None => {
                self.entries.remove(&ip);
            }
        }
    }

    pub fn remove(&mut self, ip: Ipv4Addr) -> bool {
        self.entries.remove(&ip).is_some()
    }

    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.entries.get(&ip).map(|e| e.mac)
    }

    /// Drops learned bindings not refreshed within `aging`.
    pub fn expire(&mut self, now: Instant, aging: Duration) {
        self.entries
            .retain(|_, e| e.is_static || now.saturating_duration_since(e.last_seen) < aging);
    }

    pub fn dump(&self, now: Instant) -> Vec<Neighbor> {
        let mut rows: Vec<Neighbor> = self
            .entries
            .iter()
            .map(|(&ip, e)| Neighbor {
                ip,
                mac: e.mac,
                age: now.saturating_duration_since(e.last_seen),
                is_static: e.is_static,
            })
            .collect();
        rows.sort_by_key(|n| n.ip);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const M1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const M2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn learns_updates_and_ages() {
        let mut t = NeighborTable::with_capacity(2);
        let t0 = Instant::now();
        assert!(t.learn(A, M1, t0));
        assert!(t.learn(A, M2, t0));
        assert_eq!(t.lookup(A), Some(M2));
        t.expire(t0 + Duration::from_secs(10), Duration::from_secs(5));
        assert_eq!(t.lookup(A), None);
    }

    #[test]
    fn static_bindings_win_and_stay() {
        let mut t = NeighborTable::with_capacity(1);
        let t0 = Instant::now();
        assert!(t.set_static(A, M1, t0));
        t.learn(A, M2, t0);
        assert_eq!(t.lookup(A), Some(M1));
        t.expire(t0 + Duration::from_secs(1000), Duration::from_secs(1));
        assert_eq!(t.lookup(A), Some(M1));
        assert!(!t.learn(Ipv4Addr::new(10, 0, 0, 3), M2, t0), "full");
        assert!(t.dump(t0)[0].is_static);
    }
}
