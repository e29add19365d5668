//! The forwarding database of one network: learned MAC address → port, with
//! ageing, as an IEEE 802.1D learning bridge keeps it (802.1D-2004 §7.8,
//! §7.9.2: default ageing time 300 s).
//!
//! The table has a fixed capacity allocated up front, so learning never
//! allocates on the data path; when it is full, new addresses are not learned
//! and frames to them are flooded, as hardware bridges do.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rustc_hash::FxBuildHasher;

use crate::PortId;
use weft_packet::MacAddr;

/// Default ageing time for learned addresses (IEEE 802.1D).
pub const DEFAULT_AGING: Duration = Duration::from_secs(300);
/// Default number of addresses one network can learn.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    port: PortId,
    last_seen: Instant,
    /// Set by the control plane: never ages, never moved by learning.
    is_static: bool,
}

/// A copy of one table entry, to put back exactly as it was
/// ([`MacTable::entry`], [`MacTable::restore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedMac(Entry);

/// One learned address, as reported to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    pub mac: MacAddr,
    pub port: PortId,
    pub age: Duration,
    /// Fed by the control plane rather than learned.
    pub is_static: bool,
}

/// What [`MacTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnOutcome {
    /// The address was known on this port; its timer was refreshed.
    Refreshed,
    /// The address is new, or moved from another port.
    Learned,
    /// The table is full; the address was not learned.
    Full,
}

#[derive(Debug)]
pub struct MacTable {
    entries: HashMap<u64, Entry, FxBuildHasher>,
    capacity: usize,
}

impl MacTable {
    pub fn with_capacity(capacity: usize) -> Self {
        MacTable {
            entries: HashMap::with_capacity_and_hasher(capacity, FxBuildHasher),
            capacity,
        }
    }

    /// Records that `mac` was seen as a source on `port` at `now`.
    #[inline]
    pub fn learn(&mut self, mac: MacAddr, port: PortId, now: Instant) -> LearnOutcome {
        if let Some(entry) = self.entries.get_mut(&mac.to_u64()) {
            if entry.is_static {
                return LearnOutcome::Refreshed;
            }
            let moved = entry.port != port;
            entry.port = port;
            entry.last_seen = now;
            return if moved {
                LearnOutcome::Learned
            } else {
                LearnOutcome::Refreshed
            };
        }
        if self.entries.len() >= self.capacity {
            return LearnOutcome::Full;
        }
        self.entries.insert(
            mac.to_u64(),
            Entry {
                port,
                last_seen: now,
                is_static: false,
            },
        );
        LearnOutcome::Learned
    }

    /// Installs an entry from the control plane (e.g. a remote MAC behind a
    /// VTEP), replacing a learned one. Static entries count against the
    /// capacity too; `false` when the table is full.
    pub fn set_static(&mut self, mac: MacAddr, port: PortId, now: Instant) -> bool {
        let key = mac.to_u64();
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            return false;
        }
        self.entries.insert(
            key,
            Entry {
                port,
                last_seen: now,
                is_static: true,
            },
        );
        true
    }

    /// A copy of `mac`'s entry, learned or static.
    pub fn entry(&self, mac: MacAddr) -> Option<SavedMac> {
        self.entries.get(&mac.to_u64()).copied().map(SavedMac)
    }

    /// Puts `mac`'s entry back as [`MacTable::entry`] copied it (`None`:
    /// removes it).
    pub fn restore(&mut self, mac: MacAddr, saved: Option<SavedMac>) {
        match saved {
            Some(SavedMac(e)) => {
                self.entries.insert(mac.to_u64(), e);
            }
            None => {
                self.entries.remove(&mac.to_u64());
            }
        }
    }

    /// Removes an entry, static or learned.
    pub fn remove(&mut self, mac: MacAddr) -> bool {
        self.entries.remove(&mac.to_u64()).is_some()
    }

    /// The port `mac` was last seen on, if it has not aged out.
    #[inline]
    pub fn lookup(&self, mac: MacAddr) -> Option<PortId> {
        self.entries.get(&mac.to_u64()).map(|e| e.port)
    }

    /// Removes entries not seen for `aging` or longer.
    pub fn expire(&mut self, now: Instant, aging: Duration) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.is_static || now.saturating_duration_since(e.last_seen) < aging);
        before - self.entries.len()
    }

    /// Forgets every address learned on `port` (the port went away).
    pub fn forget_port(&mut self, port: PortId) {
        self.entries.retain(|_, e| e.port != port);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries with their age at `now`, sorted by MAC.
    pub fn dump(&self, now: Instant) -> Vec<Learned> {
        let mut rows: Vec<Learned> = self
            .entries
            .iter()
            .map(|(&key, e)| {
                let b = key.to_be_bytes();
                Learned {
                    mac: MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]]),
                    port: e.port,
                    age: now.saturating_duration_since(e.last_seen),
                    is_static: e.is_static,
                }
            })
            .collect();
        rows.sort_by_key(|r| r.mac);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn learns_refreshes_and_moves() {
        let mut t = MacTable::with_capacity(4);
        let now = Instant::now();
        assert_eq!(t.learn(mac(1), PortId(1), now), LearnOutcome::Learned);
        assert_eq!(t.learn(mac(1), PortId(1), now), LearnOutcome::Refreshed);
        assert_eq!(t.lookup(mac(1)), Some(PortId(1)));
        assert_eq!(t.learn(mac(1), PortId(2), now), LearnOutcome::Learned);
        assert_eq!(t.lookup(mac(1)), Some(PortId(2)));
        assert_eq!(t.lookup(mac(9)), None);
    }

    #[test]
    fn full_table_refuses_new_but_refreshes_old() {
        let mut t = MacTable::with_capacity(2);
        let now = Instant::now();
        t.learn(mac(1), PortId(1), now);
        t.learn(mac(2), PortId(1), now);
        assert_eq!(t.learn(mac(3), PortId(1), now), LearnOutcome::Full);
        assert_eq!(t.learn(mac(2), PortId(1), now), LearnOutcome::Refreshed);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn entries_age_out() {
        let mut t = MacTable::with_capacity(4);
        let start = Instant::now();
        t.learn(mac(1), PortId(1), start);
        t.learn(mac(2), PortId(1), start + Duration::from_secs(5));
        let removed = t.expire(start + Duration::from_secs(10), Duration::from_secs(8));
        assert_eq!(removed, 1);
        assert_eq!(t.lookup(mac(1)), None);
        assert_eq!(t.lookup(mac(2)), Some(PortId(1)));
        let rows = t.dump(start + Duration::from_secs(10));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].mac, mac(2));
        assert_eq!(rows[0].age, Duration::from_secs(5));
    }

    #[test]
    fn static_entries_neither_age_nor_move() {
        let mut t = MacTable::with_capacity(4);
        let start = Instant::now();
        assert!(t.set_static(mac(1), PortId(7), start));
        assert_eq!(t.learn(mac(1), PortId(2), start), LearnOutcome::Refreshed);
        assert_eq!(t.lookup(mac(1)), Some(PortId(7)));
        t.expire(start + Duration::from_secs(1000), Duration::from_secs(1));
        assert_eq!(t.lookup(mac(1)), Some(PortId(7)));
        assert!(t.dump(start)[0].is_static);
        assert!(t.remove(mac(1)));
        assert_eq!(t.lookup(mac(1)), None);
    }

    #[test]
    fn forgetting_a_port_removes_its_entries() {
        let mut t = MacTable::with_capacity(4);
        let now = Instant::now();
        t.learn(mac(1), PortId(1), now);
        t.learn(mac(2), PortId(2), now);
        t.forget_port(PortId(1));
        assert_eq!(t.lookup(mac(1)), None);
        assert_eq!(t.len(), 1);
    }
}
