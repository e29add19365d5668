//! Source port (and ICMP identifier) allocation for SNAT / masquerade.
//!
//! A masquerading NAT rewrites the source of outgoing flows to its uplink
//! address and a port it picks, and must pick ports so that the reply
//! tuples of live flows never collide. [`PortAllocator`] keeps, for every
//! (protocol, external address) pair, one bit per port of a configured
//! [`PortRange`] (default `32768..=60999`, Linux's
//! `net.ipv4.ip_local_port_range`); a port is in use while a flow holds
//! it, whatever the flow's destination, so no two live flows of the same
//! protocol on the same external address ever share a source port — the
//! "port overloading" RFC 4787 REQ-3 forbids cannot happen. The conntrack
//! table holds one port per internal endpoint (its endpoint-independent
//! mapping, RFC 4787 REQ-1) and shares it among that endpoint's flows.
//!
//! Allocation:
//!
//! 1. *Port preservation* (RFC 4787 §4.2.1): the original source port is
//!    tried first if it is free, as Linux does (through `&mut`, also a
//!    port outside the range; see [`PortAllocator::allocate_owned`] for
//!    privileged ports and parity, RFC 4787 REQ-3a and REQ-4).
//! 2. Otherwise the search starts at a point derived from a
//!    caller-supplied hash (the conntrack table hashes the flow with a
//!    per-process random key, so ports are hard to predict, in the spirit
//!    of RFC 6056) and probes linearly, a 64-bit word at a time, wrapping
//!    around once.
//!
//! The bitmaps are arrays of `AtomicU64`: claiming and releasing a port is
//! one `fetch_or` / `fetch_and`, with no lock. The map from (protocol,
//! address) to bitmap sits behind a read-mostly `RwLock` that is written
//! only the first time an external address is seen. An owner with
//! `&mut` access (the conntrack table) uses [`PortAllocator::allocate_owned`]
//! and [`PortAllocator::release_owned`], which reach the map through
//! `RwLock::get_mut`: no lock at all, and no reference count touched.
//!
//! When every port is taken, [`PortAllocator::allocate`] fails with
//! [`PortAllocError::Exhausted`] and [`PortAllocator::exhausted`] counts
//! the failure.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::flow::Protocol;

/// An inclusive range of ports (or ICMP identifiers) to allocate from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// Linux's default ephemeral range, `32768..=60999`.
    pub const LINUX_EPHEMERAL: PortRange = PortRange {
        first: 32768,
        last: 60999,
    };

    /// The range `first..=last`.
    ///
    /// Port 0 is not a valid TCP/UDP source port, so `first` must be at
    /// least 1, and the range must not be empty.
    pub const fn new(first: u16, last: u16) -> Result<PortRange, PortAllocError> {
        if first == 0 || first > last {
            return Err(PortAllocError::InvalidRange { first, last });
        }
        Ok(PortRange { first, last })
    }

    /// The first port of the range.
    pub const fn first(self) -> u16 {
        self.first
    }

    /// The last port of the range (inclusive).
    pub const fn last(self) -> u16 {
        self.last
    }

    /// How many ports the range holds.
    pub const fn len(self) -> usize {
        (self.last - self.first) as usize + 1
    }

    /// Always `false`: a range holds at least one port.
    pub const fn is_empty(self) -> bool {
        false
    }

    /// Whether `port` lies in the range.
    pub const fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange::LINUX_EPHEMERAL
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Why no port could be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PortAllocError {
    /// Every port of the range is held by a live flow.
    #[error("no free {proto} port on {ip} in range {range}")]
    Exhausted {
        /// The protocol.
        proto: Protocol,
        /// The external address.
        ip: Ipv4Addr,
        /// The configured range.
        range: PortRange,
    },
    /// `first` is 0 or greater than `last`.
    #[error("invalid port range {first}-{last}")]
    InvalidRange {
        /// Requested first port.
        first: u16,
        /// Requested last port.
        last: u16,
    },
}

/// One bit per port of the range; bits past the end of the range are
/// permanently set so they are never handed out.
struct Pool {
    words: Box<[AtomicU64]>,
    in_use: AtomicUsize,
}

impl Pool {
    fn new(len: usize) -> Pool {
        let nwords = len.div_ceil(64);
        let words: Box<[AtomicU64]> = (0..nwords).map(|_| AtomicU64::new(0)).collect();
        let tail = len % 64;
        if tail != 0 {
            words[nwords - 1].store(!0u64 << tail, Ordering::Relaxed);
        }
        Pool {
            words,
            in_use: AtomicUsize::new(0),
        }
    }

    fn claim(&self, idx: usize) -> bool {
        let bit = 1u64 << (idx % 64);
        let prev = self.words[idx / 64].fetch_or(bit, Ordering::AcqRel);
        let won = prev & bit == 0;
        if won {
            self.in_use.fetch_add(1, Ordering::Relaxed);
        }
        won
    }

    fn release(&self, idx: usize) -> bool {
        let bit = 1u64 << (idx % 64);
        let prev = self.words[idx / 64].fetch_and(!bit, Ordering::AcqRel);
        let was = prev & bit != 0;
        if was {
            self.in_use.fetch_sub(1, Ordering::Relaxed);
        }
        was
    }

    fn is_set(&self, idx: usize) -> bool {
        self.words[idx / 64].load(Ordering::Acquire) & (1u64 << (idx % 64)) != 0
    }

    /// Claims the first free index at or after `start`, wrapping around
    /// once, scanning a word at a time.
    fn claim_from(&self, start: usize) -> Option<usize> {
        self.claim_from_masked(start, !0)
    }

    /// [`claim_from`](Self::claim_from) restricted to the indices whose
    /// bit is set in `mask` (the same 64-bit pattern for every word: words
    /// start at multiples of 64, so an even/odd pattern selects one
    /// parity).
    fn claim_from_masked(&self, start: usize, mask: u64) -> Option<usize> {
        let nwords = self.words.len();
        let (sw, sb) = (start / 64, start % 64);
        for step in 0..=nwords {
            let w = (sw + step) % nwords;
            let allowed = mask
                & if step == 0 {
                    !0u64 << sb
                } else if step == nwords {
                    // Back at the first word: the bits before `start`.
                    (1u64 << sb) - 1
                } else {
                    !0u64
                };
            loop {
                let cur = self.words[w].load(Ordering::Relaxed);
                let free = !cur & allowed;
                if free == 0 {
                    break;
                }
                let b = free.trailing_zeros() as usize;
                let bit = 1u64 << b;
                if self.words[w].fetch_or(bit, Ordering::AcqRel) & bit == 0 {
                    self.in_use.fetch_add(1, Ordering::Relaxed);
                    return Some(w * 64 + b);
                }
                // Lost a race for this bit: look at the word again.
            }
        }
        None
    }
}

/// Lock-free per-(protocol, external address) port allocator.
pub struct PortAllocator {
    range: PortRange,
    preserve: bool,
    parity: bool,
    /// Never hand out a port outside the range, not even a kept one.
    range_only: bool,
    pools: RwLock<HashMap<(Protocol, Ipv4Addr), Arc<Pool>>>,
    /// Every port per (protocol, address), for the ports outside the
    /// range that are kept (port preservation) or privileged (RFC 4787
    /// REQ-3a); owner only.
    outside_pools: HashMap<(Protocol, Ipv4Addr), Pool>,
    exhausted: AtomicU64,
}

impl fmt::Debug for PortAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortAllocator")
            .field("range", &self.range)
            .field("preserve", &self.preserve)
            .field("parity", &self.parity)
            .field("exhausted", &self.exhausted())
            .finish_non_exhaustive()
    }
}

impl Default for PortAllocator {
    fn default() -> Self {
        PortAllocator::new(PortRange::default())
    }
}

impl PortAllocator {
    /// An allocator handing out ports of `range`, with port preservation
    /// on.
    pub fn new(range: PortRange) -> PortAllocator {
        PortAllocator {
            range,
            preserve: true,
            parity: false,
            range_only: false,
            pools: RwLock::new(HashMap::new()),
            outside_pools: HashMap::new(),
            exhausted: AtomicU64::new(0),
        }
    }

    /// Keeps [`allocate_owned`](Self::allocate_owned) inside the range
    /// even for a source port outside it that is free (as Linux's
    /// `MASQUERADE --to-ports` does; without it, like plain
    /// `MASQUERADE`, a free source port is kept wherever it is).
    pub fn with_range_only(mut self, range_only: bool) -> PortAllocator {
        self.range_only = range_only;
        self
    }

    /// Turns port parity preservation (RFC 4787 REQ-4: an even source
    /// port gets an even external port, an odd one an odd port, when one
    /// is free) on or off for [`allocate_owned`](Self::allocate_owned).
    pub fn with_parity_preservation(mut self, parity: bool) -> PortAllocator {
        self.parity = parity;
        self
    }

    /// Turns port preservation (trying the original port first) on or off.
    pub fn with_port_preservation(mut self, preserve: bool) -> PortAllocator {
        self.preserve = preserve;
        self
    }

    /// The configured range.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Whether port preservation is on.
    pub fn preserves_ports(&self) -> bool {
        self.preserve
    }

    fn pool(&self, proto: Protocol, ip: Ipv4Addr) -> Arc<Pool> {
        if let Some(p) = self
            .pools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(proto, ip))
        {
            return Arc::clone(p);
        }
        let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            pools
                .entry((proto, ip))
                .or_insert_with(|| Arc::new(Pool::new(self.range.len()))),
        )
    }

    fn existing_pool(&self, proto: Protocol, ip: Ipv4Addr) -> Option<Arc<Pool>> {
        self.pools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(proto, ip))
            .cloned()
    }

    /// Allocates a port of `proto` on `ip`: `preferred` if preservation is
    /// on, it is in range and free; otherwise the first free port probing
    /// linearly from a start derived from `hash`.
    pub fn allocate(
        &self,
        proto: Protocol,
        ip: Ipv4Addr,
        preferred: u16,
        hash: u64,
    ) -> Result<u16, PortAllocError> {
        let pool = self.pool(proto, ip);
        let first = self.range.first;
        if self.preserve
            && self.range.contains(preferred)
            && pool.claim(usize::from(preferred - first))
        {
            return Ok(preferred);
        }
        let start = (hash % self.range.len() as u64) as usize;
        match pool.claim_from(start) {
            // idx < range.len() <= 65535, so the sum fits.
            Some(idx) => Ok(first + idx as u16),
            None => {
                self.exhausted.fetch_add(1, Ordering::Relaxed);
                Err(PortAllocError::Exhausted {
                    proto,
                    ip,
                    range: self.range,
                })
            }
        }
    }

    /// [`allocate`](Self::allocate) through `&mut self`: the pool map is
    /// reached without locking. Allocates only the first time `(proto,
    /// ip)` is seen (its bitmap).
    ///
    /// Beyond [`allocate`](Self::allocate), it follows RFC 4787 REQ-3a/b
    /// and REQ-4:
    ///
    /// * a `preferred` TCP or UDP port outside the range is kept if free,
    ///   as Linux's masquerade does; a privileged one (below 1024) that
    ///   is taken is replaced by a free port of the same parity in
    ///   `1..=511` (for `preferred < 512`) or `600..=1023`, the windows
    ///   Linux uses, so that it stays privileged; otherwise, or when
    ///   those are full, a port of the range is picked;
    /// * with parity preservation on, a port of the range with the parity
    ///   of `preferred` is searched first, then any.
    pub fn allocate_owned(
        &mut self,
        proto: Protocol,
        ip: Ipv4Addr,
        preferred: u16,
        hash: u64,
    ) -> Result<u16, PortAllocError> {
        let range = self.range;
        if self.preserve
            && !self.range_only
            && proto != Protocol::Icmp
            && preferred != 0
            && !range.contains(preferred)
        {
            if let Some(port) = self.allocate_outside(proto, ip, preferred, hash) {
                return Ok(port);
            }
        }
        let preserve = self.preserve;
        let parity = self.parity;
        let pool = self
            .pools
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((proto, ip))
            .or_insert_with(|| Arc::new(Pool::new(range.len())));
        let first = range.first;
        if preserve && range.contains(preferred) && pool.claim(usize::from(preferred - first)) {
            return Ok(preferred);
        }
        let start = (hash % range.len() as u64) as usize;
        let masked = if parity {
            // Index parity that gives a port of `preferred`'s parity.
            let odd_idx = (preferred ^ first) & 1 == 1;
            let mask = if odd_idx {
                0xAAAA_AAAA_AAAA_AAAA
            } else {
                0x5555_5555_5555_5555
            };
            pool.claim_from_masked(start, mask)
        } else {
            None
        };
        match masked.or_else(|| pool.claim_from(start)) {
            // idx < range.len() <= 65535, so the sum fits.
            Some(idx) => Ok(first + idx as u16),
            None => {
                self.exhausted.fetch_add(1, Ordering::Relaxed);
                Err(PortAllocError::Exhausted { proto, ip, range })
            }
        }
    }

    /// `preferred` (outside the range) if free, or a privileged port for
    /// a privileged `preferred` (see
    /// [`allocate_owned`](Self::allocate_owned)).
    fn allocate_outside(
        &mut self,
        proto: Protocol,
        ip: Ipv4Addr,
        preferred: u16,
        hash: u64,
    ) -> Option<u16> {
        let range = self.range;
        let pool = self.outside_pools.entry((proto, ip)).or_insert_with(|| {
            let p = Pool::new(65536);
            p.claim(0);
            p
        });
        if pool.claim(usize::from(preferred)) {
            return Some(preferred);
        }
        if preferred >= 1024 {
            return None;
        }
        let (lo, hi) = if preferred < 512 {
            (1, 511)
        } else {
            (600, 1023)
        };
        let n = hi - lo + 1;
        let start = (hash % n as u64) as usize;
        for step in 0..n {
            let port = lo + (start + step) % n;
            if port % 2 == usize::from(preferred % 2)
                && !range.contains(port as u16)
                && pool.claim(port)
            {
                return Some(port as u16);
            }
        }
        None
    }

    /// [`release`](Self::release) through `&mut self`, without locking.
    pub fn release_owned(&mut self, proto: Protocol, ip: Ipv4Addr, port: u16) -> bool {
        if !self.range.contains(port) {
            return self
                .outside_pools
                .get(&(proto, ip))
                .is_some_and(|p| port != 0 && p.release(usize::from(port)));
        }
        let first = self.range.first;
        self.pools
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(proto, ip))
            .is_some_and(|p| p.release(usize::from(port - first)))
    }

    /// Claims exactly `port`; `false` if it is out of range or taken.
    pub fn claim(&self, proto: Protocol, ip: Ipv4Addr, port: u16) -> bool {
        self.range.contains(port)
            && self
                .pool(proto, ip)
                .claim(usize::from(port - self.range.first))
    }

    /// Returns `port` to the pool; `false` if it was not in use.
    pub fn release(&self, proto: Protocol, ip: Ipv4Addr, port: u16) -> bool {
        if !self.range.contains(port) {
            return false;
        }
        self.existing_pool(proto, ip)
            .is_some_and(|p| p.release(usize::from(port - self.range.first)))
    }

    /// Whether `port` is held.
    pub fn is_in_use(&self, proto: Protocol, ip: Ipv4Addr, port: u16) -> bool {
        self.range.contains(port)
            && self
                .existing_pool(proto, ip)
                .is_some_and(|p| p.is_set(usize::from(port - self.range.first)))
    }

    /// How many ports of `proto` on `ip` are held.
    pub fn in_use(&self, proto: Protocol, ip: Ipv4Addr) -> usize {
        self.existing_pool(proto, ip)
            .map_or(0, |p| p.in_use.load(Ordering::Relaxed))
    }

    /// How many allocations failed because the range was exhausted.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

    #[test]
    fn range_validation_and_default() {
        assert_eq!(PortRange::default(), PortRange::new(32768, 60999).unwrap());
        assert_eq!(PortRange::default().len(), 28232);
        assert_eq!(
            PortRange::new(0, 10),
            Err(PortAllocError::InvalidRange { first: 0, last: 10 })
        );
        assert!(PortRange::new(10, 9).is_err());
        let one = PortRange::new(7, 7).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one.contains(7) && !one.contains(8));
        assert_eq!(PortRange::new(1, 65535).unwrap().len(), 65535);
        assert_eq!(one.to_string(), "7-7");
    }

    #[test]
    fn preserves_the_original_port_when_free() {
        let a = PortAllocator::default();
        assert_eq!(a.allocate(Protocol::Tcp, IP, 40000, 0), Ok(40000));
        // Taken: a different one.
        let p = a.allocate(Protocol::Tcp, IP, 40000, 0).unwrap();
        assert_ne!(p, 40000);
        assert!(a.range().contains(p));
        // Other protocol and other address are independent.
        assert_eq!(a.allocate(Protocol::Udp, IP, 40000, 0), Ok(40000));
        let other = Ipv4Addr::new(203, 0, 113, 2);
        assert_eq!(a.allocate(Protocol::Tcp, other, 40000, 0), Ok(40000));
        // Out of range: not preserved.
        let p = a.allocate(Protocol::Tcp, IP, 80, 0).unwrap();
        assert!(a.range().contains(p));
        assert_eq!(a.in_use(Protocol::Tcp, IP), 3);
    }

    #[test]
    fn owned_allocation_keeps_parity_and_privilege() {
        let mut a =
            PortAllocator::new(PortRange::new(1024, 1100).unwrap()).with_parity_preservation(true);
        assert_eq!(a.allocate_owned(Protocol::Udp, IP, 1031, 0), Ok(1031));
        // Outside the range: kept while free, then one of the range.
        assert_eq!(a.allocate_owned(Protocol::Udp, IP, 5000, 0), Ok(5000));
        let p = a.allocate_owned(Protocol::Udp, IP, 5000, 3).unwrap();
        assert!(a.range().contains(p) && p.is_multiple_of(2), "{p}");
        assert!(a.release_owned(Protocol::Udp, IP, 5000));
        for hash in 0..20 {
            let p = a.allocate_owned(Protocol::Udp, IP, 1031, hash).unwrap();
            assert_eq!(p % 2, 1, "odd source port got {p}");
            let p = a.allocate_owned(Protocol::Udp, IP, 1030, hash).unwrap();
            assert_eq!(p % 2, 0, "even source port got {p}");
        }
        // Privileged ports: kept if free, else another privileged port of
        // the same parity in the window Linux uses.
        assert_eq!(a.allocate_owned(Protocol::Udp, IP, 700, 0), Ok(700));
        let p = a.allocate_owned(Protocol::Udp, IP, 700, 5).unwrap();
        assert!((600..=1023).contains(&p) && p.is_multiple_of(2), "{p}");
        assert_eq!(a.allocate_owned(Protocol::Udp, IP, 123, 0), Ok(123));
        let p = a.allocate_owned(Protocol::Udp, IP, 123, 9).unwrap();
        assert!((1..=511).contains(&p) && p % 2 == 1, "{p}");
        assert!(a.release_owned(Protocol::Udp, IP, 123));
        assert!(!a.release_owned(Protocol::Udp, IP, 123), "double release");
        assert_eq!(a.allocate_owned(Protocol::Udp, IP, 123, 0), Ok(123));
        // Parity falls back to the other parity once one is used up.
        let mut b =
            PortAllocator::new(PortRange::new(2000, 2003).unwrap()).with_parity_preservation(true);
        let got: HashSet<u16> = (0..4)
            .map(|h| b.allocate_owned(Protocol::Tcp, IP, 2002, h).unwrap())
            .collect();
        assert_eq!(got, HashSet::from([2000, 2001, 2002, 2003]));
    }

    #[test]
    fn preservation_can_be_disabled() {
        let a =
            PortAllocator::new(PortRange::new(1000, 1999).unwrap()).with_port_preservation(false);
        assert!(!a.preserves_ports());
        assert_eq!(a.allocate(Protocol::Udp, IP, 1500, 7), Ok(1007));
    }

    #[test]
    fn release_and_reuse() {
        let a = PortAllocator::new(PortRange::new(5000, 5001).unwrap());
        let p1 = a.allocate(Protocol::Udp, IP, 0, 0).unwrap();
        let p2 = a.allocate(Protocol::Udp, IP, 0, 0).unwrap();
        assert_ne!(p1, p2);
        assert!(matches!(
            a.allocate(Protocol::Udp, IP, 0, 0),
            Err(PortAllocError::Exhausted { .. })
        ));
        assert_eq!(a.exhausted(), 1);
        assert!(a.is_in_use(Protocol::Udp, IP, p1));
        assert!(a.release(Protocol::Udp, IP, p1));
        assert!(!a.release(Protocol::Udp, IP, p1), "double release");
        assert!(!a.is_in_use(Protocol::Udp, IP, p1));
        assert_eq!(a.allocate(Protocol::Udp, IP, 0, 0), Ok(p1));
        assert!(!a.release(Protocol::Udp, IP, 4999), "out of range");
        assert!(!a.release(Protocol::Tcp, IP, 5000), "unknown pool");
    }

    #[test]
    fn claim_specific_ports() {
        let a = PortAllocator::new(PortRange::new(100, 200).unwrap());
        assert!(a.claim(Protocol::Tcp, IP, 150));
        assert!(!a.claim(Protocol::Tcp, IP, 150));
        assert!(!a.claim(Protocol::Tcp, IP, 99));
        assert_eq!(a.in_use(Protocol::Tcp, IP), 1);
    }

    #[test]
    fn every_port_of_a_range_is_handed_out_exactly_once() {
        // 130 ports: spans three words, with a partial last one.
        let range = PortRange::new(65406, 65535).unwrap();
        let a = PortAllocator::new(range);
        let mut seen = HashSet::new();
        for i in 0..range.len() {
            let p = a.allocate(Protocol::Tcp, IP, 0, i as u64 * 7919).unwrap();
            assert!(range.contains(p));
            assert!(seen.insert(p), "port {p} handed out twice");
        }
        assert!(a.allocate(Protocol::Tcp, IP, 0, 3).is_err());
        assert_eq!(a.in_use(Protocol::Tcp, IP), range.len());
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let a = PortAllocator::new(PortRange::new(20000, 20999).unwrap());
        let got: Vec<Vec<u16>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let a = &a;
                    s.spawn(move || {
                        (0..250)
                            .map(|i| {
                                a.allocate(Protocol::Udp, IP, 20000, (t * 1000 + i) as u64)
                                    .unwrap()
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: HashSet<u16> = got.iter().flatten().copied().collect();
        assert_eq!(all.len(), 1000);
        assert_eq!(a.in_use(Protocol::Udp, IP), 1000);
        assert!(a.allocate(Protocol::Udp, IP, 0, 0).is_err());
    }

    proptest! {
        /// The probe returns the first free port at or after the start,
        /// cyclically: compare with a naive model.
        #[test]
        fn probing_matches_model(
            len in 1usize..300,
            taken in proptest::collection::vec(any::<u16>(), 0..300),
            hash in any::<u64>(),
        ) {
            let range = PortRange::new(1000, 1000 + len as u16 - 1).unwrap();
            let a = PortAllocator::new(range).with_port_preservation(false);
            let mut model = vec![false; len];
            for t in taken {
                let idx = usize::from(t) % len;
                let port = 1000 + idx as u16;
                prop_assert_eq!(a.claim(Protocol::Tcp, IP, port), !model[idx]);
                model[idx] = true;
            }
            let start = (hash % len as u64) as usize;
            let expect = (0..len).map(|i| (start + i) % len).find(|&i| !model[i]);
            let got = a.allocate(Protocol::Tcp, IP, 0, hash).ok();
            prop_assert_eq!(got, expect.map(|i| 1000 + i as u16));
        }
    }
}
