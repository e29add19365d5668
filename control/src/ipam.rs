//! IPv4 subnets and address pools (IP address management), on `ipnet`.
//!
//! A subnet's first address is the network address and its last the directed
//! broadcast address (RFC 919, RFC 922); neither is handed out. The gateway
//! takes one host address, by default the first (RFC 1812 leaves the choice
//! open; Docker and most home routers use `.1`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Errors about subnets and addresses; each says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("`{0}` is not an IPv4 subnet: expected ADDRESS/PREFIX, e.g. 10.1.0.0/24")]
    BadCidr(String),
    #[error("`{0}` is not an IPv4 address: expected dotted quad, e.g. 10.1.0.5")]
    BadAddress(String),
    #[error("prefix length /{0} is too long: a network needs room for a gateway and at least one endpoint, use /30 or shorter")]
    PrefixTooLong(u8),
    #[error("prefix length /{0} is too short: use /8 or longer")]
    PrefixTooShort(u8),
    #[error("`{given}` has host bits set: did you mean {suggested}?")]
    HostBitsSet { given: String, suggested: Ipv4Net },
    #[error("{addr} is not inside subnet {subnet}: pick an address in {subnet}")]
    OutsideSubnet { addr: Ipv4Addr, subnet: Ipv4Net },
    #[error("{addr} is the network or broadcast address of {subnet}: pick a host address")]
    ReservedAddress { addr: Ipv4Addr, subnet: Ipv4Net },
    #[error("{addr} is already in use in {subnet}: pick another address or leave --ip out to get a free one")]
    AddressTaken { addr: Ipv4Addr, subnet: Ipv4Net },
    #[error("no free address left in {subnet}: detach an endpoint or create a larger network")]
    Exhausted { subnet: Ipv4Net },
    #[error("IP range {range} is not inside subnet {subnet}: pick a range within the subnet")]
    RangeOutsideSubnet { range: Ipv4Net, subnet: Ipv4Net },
}

/// Reads a subnet as `ADDRESS/PREFIX`: a prefix of /8 to /30 (room for a
/// gateway and at least one endpoint) and no host bits set.
pub fn parse_subnet(s: &str) -> Result<Ipv4Net, IpamError> {
    let bad = || IpamError::BadCidr(s.to_string());
    let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    subnet(addr, prefix)
}

/// A subnet whose host bits must be zero, of /8 to /30.
pub fn subnet(addr: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Net, IpamError> {
    if prefix_len > 30 {
        return Err(IpamError::PrefixTooLong(prefix_len));
    }
    if prefix_len < 8 {
        return Err(IpamError::PrefixTooShort(prefix_len));
    }
    let net = Ipv4Net::new(addr, prefix_len).map_err(|_| IpamError::PrefixTooLong(prefix_len))?;
    if net.network() != addr {
        return Err(IpamError::HostBitsSet {
            given: format!("{addr}/{prefix_len}"),
            suggested: net.trunc(),
        });
    }
    Ok(net)
}

/// What IP address management asks of a subnet beyond `ipnet`'s own.
pub trait SubnetExt {
    /// First address after the network address (the default gateway).
    fn first_host(&self) -> Ipv4Addr;
    /// Last address before the broadcast address.
    fn last_host(&self) -> Ipv4Addr;
    /// Whether `ip` is a usable host address (not network or broadcast).
    fn is_host(&self, ip: Ipv4Addr) -> bool;
    /// Whether the two subnets share an address.
    fn overlaps(&self, other: &Ipv4Net) -> bool;
}

impl SubnetExt for Ipv4Net {
    fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + 1)
    }

    fn last_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.broadcast()) - 1)
    }

    fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(&ip) && ip != self.network() && ip != self.broadcast()
    }

    fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(&other.network()) || other.contains(&self.network())
    }
}

/// Parses a bare IPv4 address with an error that names the input.
pub fn parse_addr(s: &str) -> Result<Ipv4Addr, IpamError> {
    s.trim()
        .parse()
        .map_err(|_| IpamError::BadAddress(s.to_string()))
}

/// The addresses of one subnet that are in use.
///
/// A pool may hand out only part of its subnet (an IP range, as Docker's
/// `--ip-range`), so that hosts sharing an overlay subnet never pick the
/// same address; an address asked for explicitly may lie anywhere in the
/// subnet.
#[derive(Debug, Clone)]
pub struct Pool {
    subnet: Ipv4Net,
    range: Option<Ipv4Net>,
    taken: BTreeSet<Ipv4Addr>,
}

impl Pool {
    pub fn new(subnet: Ipv4Net) -> Self {
        Pool {
            subnet,
            range: None,
            taken: BTreeSet::new(),
        }
    }

    /// A pool that hands out addresses from `range` only.
    pub fn with_range(subnet: Ipv4Net, range: Ipv4Net) -> Result<Self, IpamError> {
        if !subnet.contains(&range.network()) || !subnet.contains(&range.broadcast()) {
            return Err(IpamError::RangeOutsideSubnet { range, subnet });
        }
        Ok(Pool {
            subnet,
            range: Some(range),
            taken: BTreeSet::new(),
        })
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn range(&self) -> Option<Ipv4Net> {
        self.range
    }

    /// First and last address handed out automatically.
    fn bounds(&self) -> (u32, u32) {
        let first = u32::from(self.subnet.first_host());
        let last = u32::from(self.subnet.last_host());
        match self.range {
            Some(r) => (
                first.max(u32::from(r.network())),
                last.min(u32::from(r.broadcast())),
            ),
            None => (first, last),
        }
    }

    /// Checks that `addr` could be reserved, without reserving it.
    pub fn check(&self, addr: Ipv4Addr) -> Result<(), IpamError> {
        if !self.subnet.contains(&addr) {
            return Err(IpamError::OutsideSubnet {
                addr,
                subnet: self.subnet,
            });
        }
        if !self.subnet.is_host(addr) {
            return Err(IpamError::ReservedAddress {
                addr,
                subnet: self.subnet,
            });
        }
        if self.taken.contains(&addr) {
            return Err(IpamError::AddressTaken {
                addr,
                subnet: self.subnet,
            });
        }
        Ok(())
    }

    /// Reserves a specific address.
    pub fn reserve(&mut self, addr: Ipv4Addr) -> Result<(), IpamError> {
        self.check(addr)?;
        self.taken.insert(addr);
        Ok(())
    }

    /// The lowest free host address, without reserving it.
    pub fn next_free(&self) -> Result<Ipv4Addr, IpamError> {
        let (first, last) = self.bounds();
        // Taken addresses are sorted: the first gap is the lowest free one.
        let mut candidate = first;
        for taken in self
            .taken
            .range(Ipv4Addr::from(first)..)
            .map(|a| u32::from(*a))
        {
            if taken > candidate {
                break;
            }
            if taken == candidate {
                candidate += 1;
            }
        }
        if candidate > last {
            return Err(IpamError::Exhausted {
                subnet: self.range.unwrap_or(self.subnet),
            });
        }
        Ok(Ipv4Addr::from(candidate))
    }

    /// The lowest free host address inside `block` (an address block the
    /// host leased from a cluster store), without reserving it.
    pub fn next_free_in(&self, block: Ipv4Net) -> Option<Ipv4Addr> {
        let first = u32::from(self.subnet.first_host()).max(u32::from(block.network()));
        let last = u32::from(self.subnet.last_host()).min(u32::from(block.broadcast()));
        (first..=last)
            .map(Ipv4Addr::from)
            .find(|a| !self.taken.contains(a))
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, addr: Ipv4Addr) -> bool {
        self.taken.remove(&addr)
    }

    pub fn is_taken(&self, addr: Ipv4Addr) -> bool {
        self.taken.contains(&addr)
    }

    /// Addresses still to be handed out automatically.
    pub fn free_count(&self) -> u64 {
        let (first, last) = self.bounds();
        let taken = self
            .taken
            .range(Ipv4Addr::from(first)..=Ipv4Addr::from(last))
            .count() as u64;
        (u64::from(last) + 1).saturating_sub(u64::from(first)) - taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        parse_subnet(s).unwrap()
    }

    #[test]
    fn parses_cidrs_and_names_bad_ones() {
        let n = net("10.1.0.0/24");
        assert_eq!(n.network(), Ipv4Addr::new(10, 1, 0, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 1, 0, 255));
        assert_eq!(n.to_string(), "10.1.0.0/24");
        for bad in [
            "banana",
            "10.0.0.0/33",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0/24",
            "10.0.0.0/+4",
        ] {
            let err = parse_subnet(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert_eq!(
            parse_subnet("10.0.0.5/24").unwrap_err().to_string(),
            "`10.0.0.5/24` has host bits set: did you mean 10.0.0.0/24?"
        );
        assert!(matches!(
            parse_subnet("10.0.0.0/31"),
            Err(IpamError::PrefixTooLong(31))
        ));
    }

    #[test]
    fn overlap_detection() {
        assert!(net("10.0.0.0/16").overlaps(&net("10.0.5.0/24")));
        assert!(net("10.0.5.0/24").overlaps(&net("10.0.0.0/16")));
        assert!(!net("10.0.0.0/24").overlaps(&net("10.0.1.0/24")));
    }

    #[test]
    fn pool_hands_out_lowest_free_and_reuses_released() {
        let mut p = Pool::new(net("10.0.0.0/29"));
        p.reserve(Ipv4Addr::new(10, 0, 0, 1)).unwrap(); // gateway
        assert_eq!(p.next_free().unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        p.reserve(Ipv4Addr::new(10, 0, 0, 2)).unwrap();
        p.reserve(Ipv4Addr::new(10, 0, 0, 4)).unwrap();
        assert_eq!(p.next_free().unwrap(), Ipv4Addr::new(10, 0, 0, 3));
        p.reserve(Ipv4Addr::new(10, 0, 0, 3)).unwrap();
        assert_eq!(p.next_free().unwrap(), Ipv4Addr::new(10, 0, 0, 5));
        assert!(p.release(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(p.next_free().unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.free_count(), 6 - 3);
    }

    #[test]
    fn ranged_pool_hands_out_only_its_range() {
        let mut p = Pool::with_range(net("10.0.0.0/24"), net("10.0.0.128/30")).unwrap();
        p.reserve(Ipv4Addr::new(10, 0, 0, 1)).unwrap();
        assert_eq!(p.free_count(), 4);
        assert_eq!(p.next_free().unwrap(), Ipv4Addr::new(10, 0, 0, 128));
        p.reserve(Ipv4Addr::new(10, 0, 0, 50)).unwrap(); // explicit, outside the range
        for _ in 0..4 {
            p.reserve(p.next_free().unwrap()).unwrap();
        }
        assert!(matches!(p.next_free(), Err(IpamError::Exhausted { .. })));
        assert!(matches!(
            Pool::with_range(net("10.0.0.0/24"), net("10.0.1.0/25")),
            Err(IpamError::RangeOutsideSubnet { .. })
        ));
    }

    #[test]
    fn free_addresses_inside_a_block() {
        let mut p = Pool::new(net("10.0.0.0/24"));
        p.reserve(Ipv4Addr::new(10, 0, 0, 1)).unwrap();
        // The first block starts at the network address, which is never
        // handed out, and the gateway is taken.
        assert_eq!(
            p.next_free_in(net("10.0.0.0/28")),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(
            p.next_free_in(net("10.0.0.240/28")),
            Some(Ipv4Addr::new(10, 0, 0, 240))
        );
        for n in 240..=254 {
            p.reserve(Ipv4Addr::new(10, 0, 0, n)).unwrap();
        }
        // .255 is the broadcast address.
        assert_eq!(p.next_free_in(net("10.0.0.240/28")), None);
    }

    #[test]
    fn pool_refuses_bad_addresses_and_runs_out() {
        let mut p = Pool::new(net("10.0.0.0/30"));
        assert!(matches!(
            p.reserve(Ipv4Addr::new(10, 0, 0, 0)),
            Err(IpamError::ReservedAddress { .. })
        ));
        assert!(matches!(
            p.reserve(Ipv4Addr::new(10, 0, 0, 3)),
            Err(IpamError::ReservedAddress { .. })
        ));
        assert!(matches!(
            p.reserve(Ipv4Addr::new(10, 0, 1, 1)),
            Err(IpamError::OutsideSubnet { .. })
        ));
        p.reserve(Ipv4Addr::new(10, 0, 0, 1)).unwrap();
        assert!(matches!(
            p.reserve(Ipv4Addr::new(10, 0, 0, 1)),
            Err(IpamError::AddressTaken { .. })
        ));
        p.reserve(p.next_free().unwrap()).unwrap();
        assert!(matches!(p.next_free(), Err(IpamError::Exhausted { .. })));
    }
}
