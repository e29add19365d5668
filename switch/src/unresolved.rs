//! Frames waiting for a neighbour's MAC address.
//!
//! When the next hop of a routed or masqueraded packet is on the link but
//! not yet in the ARP table, the gateway asks for it (RFC 826) and, as a
//! host does (RFC 1122 §2.3.2.2: "SHOULD save at least one (the latest)
//! packet of every set of packets destined to the same unresolved IP
//! address"; Linux keeps `unres_qlen` of them), keeps the packet here
//! instead of dropping it. The ARP reply flushes the neighbour's frames in
//! the order they came; frames not claimed within [`MAX_WAIT`] are dropped
//! and counted, as are frames that find the queue full.
//!
//! Bounds, chosen for a forwarding process rather than a host:
//!
//! * at most [`PER_NEIGHBOR`] frames per neighbour (Linux's default
//!   `unres_qlen_bytes` holds about 100 small packets; the first packets
//!   of a flow are what matter here: a SYN, a DNS query, a STUN request);
//! * at most [`SLOTS`] frames in all, each up to [`SLOT_LEN`] bytes
//!   (larger frames, such as GSO super-frames, are not kept: TCP sends
//!   small segments until the path is known);
//! * frames wait at most [`MAX_WAIT`] (Linux gives up after 3 probes a
//!   second apart).
//!
//! All storage is allocated when the queue is made; queueing and flushing
//! copy bytes and never allocate.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::frame::Offload;
use crate::NetworkId;

/// Frames kept per unresolved neighbour.
pub const PER_NEIGHBOR: usize = 8;
/// Frames kept in all.
pub const SLOTS: usize = 256;
/// Largest frame kept (Ethernet header included).
pub const SLOT_LEN: usize = 2048;
/// Longest a frame waits for its neighbour.
pub const MAX_WAIT: Duration = Duration::from_secs(3);

/// Whose MAC a frame waits for: an address on the uplink's link, or a
/// host of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighborKey {
    Uplink(Ipv4Addr),
    Network(NetworkId, Ipv4Addr),
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The neighbour already has [`PER_NEIGHBOR`] frames waiting, or every
    /// slot is taken.
    Full,
    /// Larger than [`SLOT_LEN`].
    TooLarge,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    key: NeighborKey,
    len: usize,
    offload: Offload,
    since: Instant,
    seq: u64,
}

/// The queue; see the module docs.
pub struct UnresolvedQueue {
    bytes: Box<[u8]>,
    slots: Box<[Option<Waiting>]>,
    free: Vec<usize>,
    seq: u64,
}

impl Default for UnresolvedQueue {
    fn default() -> Self {
        UnresolvedQueue::new()
    }
}

impl UnresolvedQueue {
    pub fn new() -> UnresolvedQueue {
        UnresolvedQueue {
            bytes: vec![0u8; SLOTS * SLOT_LEN].into_boxed_slice(),
            slots: vec![None; SLOTS].into_boxed_slice(),
            free: (0..SLOTS).rev().collect(),
            seq: 0,
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        SLOTS - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any frame waits for `key`.
    pub fn is_waiting(&self, key: NeighborKey) -> bool {
        !self.is_empty() && self.slots.iter().flatten().any(|w| w.key == key)
    }

    /// Keeps a copy of `frame` until `key` resolves.
    pub fn push(
        &mut self,
        key: NeighborKey,
        frame: &[u8],
        offload: &Offload,
        now: Instant,
    ) -> Result<(), QueueError> {
        if frame.len() > SLOT_LEN {
            return Err(QueueError::TooLarge);
        }
        let mine = self.slots.iter().flatten().filter(|w| w.key == key).count();
        if mine >= PER_NEIGHBOR {
            return Err(QueueError::Full);
        }
        let Some(slot) = self.free.pop() else {
            return Err(QueueError::Full);
        };
        self.bytes[slot * SLOT_LEN..slot * SLOT_LEN + frame.len()].copy_from_slice(frame);
        self.seq += 1;
        self.slots[slot] = Some(Waiting {
            key,
            len: frame.len(),
            offload: *offload,
            since: now,
            seq: self.seq,
        });
        Ok(())
    }

    /// Hands every frame waiting for `key` to `send`, oldest first, and
    /// frees their slots. Returns how many there were.
    pub fn flush(&mut self, key: NeighborKey, mut send: impl FnMut(&mut [u8], &Offload)) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut mine = [(0u64, 0usize); PER_NEIGHBOR];
        let mut n = 0;
        for (i, w) in self.slots.iter().enumerate() {
            if let Some(w) = w {
                if w.key == key && n < PER_NEIGHBOR {
                    mine[n] = (w.seq, i);
                    n += 1;
                }
            }
        }
        mine[..n].sort_unstable();
        for &(_, slot) in &mine[..n] {
            if let Some(w) = self.slots[slot].take() {
                let frame = &mut self.bytes[slot * SLOT_LEN..slot * SLOT_LEN + w.len];
                send(frame, &w.offload);
                self.free.push(slot);
            }
        }
        n
    }

    /// Drops the frames that waited [`MAX_WAIT`]; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut dropped = 0;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.is_some_and(|w| now.saturating_duration_since(w.since) >= MAX_WAIT) {
                *slot = None;
                self.free.push(i);
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::NO_OFFLOAD;

    const A: NeighborKey = NeighborKey::Uplink(Ipv4Addr::new(192, 0, 2, 1));
    const B: NeighborKey = NeighborKey::Network(NetworkId(1), Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn flushes_in_order_per_neighbour_and_bounds() {
        let mut q = UnresolvedQueue::new();
        let t = Instant::now();
        for i in 0..PER_NEIGHBOR as u8 {
            q.push(A, &[i; 60], &NO_OFFLOAD, t).unwrap();
        }
        assert_eq!(q.push(A, &[9; 60], &NO_OFFLOAD, t), Err(QueueError::Full));
        assert_eq!(
            q.push(B, &[0; SLOT_LEN + 1], &NO_OFFLOAD, t),
            Err(QueueError::TooLarge)
        );
        q.push(B, &[77; 100], &NO_OFFLOAD, t).unwrap();
        assert!(q.is_waiting(A) && q.is_waiting(B));
        let mut got = Vec::new();
        assert_eq!(q.flush(A, |f, _| got.push((f[0], f.len()))), PER_NEIGHBOR);
        assert_eq!(
            got,
            (0..PER_NEIGHBOR as u8).map(|i| (i, 60)).collect::<Vec<_>>()
        );
        assert!(!q.is_waiting(A));
        assert_eq!(q.len(), 1);
        assert_eq!(q.expire(t + MAX_WAIT / 2), 0);
        assert_eq!(q.expire(t + MAX_WAIT), 1);
        assert!(q.is_empty());
        assert_eq!(q.flush(B, |_, _| panic!("expired frame flushed")), 0);
    }

    #[test]
    fn the_pool_is_shared_and_bounded() {
        let mut q = UnresolvedQueue::new();
        let t = Instant::now();
        let mut queued = 0;
        for n in 0..(SLOTS / PER_NEIGHBOR + 4) as u8 {
            let key = NeighborKey::Uplink(Ipv4Addr::new(192, 0, 2, n));
            for _ in 0..PER_NEIGHBOR {
                if q.push(key, &[n; 64], &NO_OFFLOAD, t).is_ok() {
                    queued += 1;
                }
            }
        }
        assert_eq!(queued, SLOTS);
        assert_eq!(q.len(), SLOTS);
    }
}
