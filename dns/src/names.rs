//! The per-network name table.
//!
//! Each weft network has one [`NameTable`]. Owners (endpoints, services;
//! any caller-chosen [`OwnerId`]) register an [`Entry`]: a list of names
//! (the first is the primary name; the rest are aliases) and the IPv4
//! addresses they resolve to. Registering again replaces the owner's
//! previous entry, and [`NameTable::remove`] drops it; both cost time
//! proportional to the owner's own names and addresses, not to the table.
//!
//! # Matching rules (what a name in a query matches)
//!
//! - Names compare case-insensitively (ASCII only, RFC 4343); a trailing
//!   dot is optional when registering or looking up by text.
//! - Names may be single-label (`web1`) or multi-label (`db.internal`).
//!   Registered names are restricted to letters, digits, `-` and `_`
//!   (Docker container names and aliases fit).
//! - If the table has a *domain* (normally the network's name, as Docker
//!   does), a name also matches with that domain appended: `web1.mynet`
//!   finds `web1`. Any other name inside the domain (or the domain itself)
//!   that is not registered is authoritatively absent: [`Lookup::NxDomain`],
//!   so such queries never leak upstream. There is no other search list.
//! - A name registered by several owners resolves to the union of their
//!   addresses, in registration order (Docker's shared network aliases).
//! - A name outside the domain that is not registered is
//!   [`Lookup::NotLocal`]: the resolver forwards it upstream.
//!
//! # Reverse (PTR) entries
//!
//! Each address of an entry with `ptr` set maps back to the entry's
//! primary name, qualified with the domain when there is one (`web1.mynet`).
//! If several owners claim an address the earliest registration wins.
//! With [`NameTable::set_subnet`], reverse lookups of unregistered
//! addresses inside the network's subnet are authoritatively absent too.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::wire::Name;

/// Caller-chosen identity of whoever registered an entry (an endpoint's
/// port id, a service id, ...).
pub type OwnerId = u64;

/// Why a name could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty label, label over 63 bytes, name over 253 characters, or a
    /// character other than letters, digits, `-` and `_`.
    #[error("invalid DNS name {0:?}")]
    Invalid(String),
    /// An entry with no names.
    #[error("an entry needs at least one name")]
    NoNames,
}

/// What one owner registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Names; the first is the primary name used for PTR answers.
    pub names: Vec<String>,
    /// Addresses every name resolves to.
    pub addrs: Vec<Ipv4Addr>,
    /// Whether the addresses map back to the primary name (PTR).
    pub ptr: bool,
}

impl Entry {
    /// An entry with PTR records for its addresses.
    pub fn new(names: &[&str], addrs: &[Ipv4Addr]) -> Entry {
        Entry {
            names: names.iter().map(|n| n.to_string()).collect(),
            addrs: addrs.to_vec(),
            ptr: true,
        }
    }

    /// The same entry without PTR records (e.g. extra aliases).
    pub fn without_ptr(mut self) -> Entry {
        self.ptr = false;
        self
    }
}

/// Result of a forward (A) lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name is registered; its addresses (possibly none).
    Found(Vec<Ipv4Addr>),
    /// The name lies in the table's domain but is not registered.
    NxDomain,
    /// The name is not weft's to answer.
    NotLocal,
}

#[derive(Debug, Clone)]
struct Owned {
    names: Vec<String>,
    addrs: Vec<Ipv4Addr>,
    ptr: bool,
}

/// Names and addresses of one network. See the module docs for the rules.
#[derive(Debug, Clone, Default)]
pub struct NameTable {
    domain: Option<String>,
    subnet: Option<(u32, u32)>,
    owners: HashMap<OwnerId, Owned>,
    by_name: HashMap<String, Vec<OwnerId>>,
    by_addr: HashMap<Ipv4Addr, Vec<OwnerId>>,
}

/// Lowercases and validates dotted text; strips one trailing dot.
fn normalize(name: &str) -> Result<String, NameError> {
    let invalid = || NameError::Invalid(name.to_string());
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(invalid());
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 || !label.bytes().all(valid_byte) {
            return Err(invalid());
        }
    }
    Ok(trimmed.to_ascii_lowercase())
}

fn valid_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

impl NameTable {
    /// An empty table without a domain.
    pub fn new() -> NameTable {
        NameTable::default()
    }

    /// An empty table whose names also match under `domain`.
    pub fn with_domain(domain: &str) -> Result<NameTable, NameError> {
        let mut t = NameTable::new();
        t.set_domain(Some(domain))?;
        Ok(t)
    }

    /// Sets or clears the domain (normally the network's name).
    pub fn set_domain(&mut self, domain: Option<&str>) -> Result<(), NameError> {
        self.domain = domain.map(normalize).transpose()?;
        Ok(())
    }

    /// The domain, lowercase and without a trailing dot.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Sets or clears the network's subnet (`network`, prefix length up
    /// to 32). Reverse lookups of unregistered addresses inside it are
    /// answered NXDOMAIN instead of being forwarded.
    pub fn set_subnet(&mut self, subnet: Option<(Ipv4Addr, u8)>) {
        self.subnet = subnet.map(|(net, len)| {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            (u32::from(net) & mask, mask)
        });
    }

    /// Whether `addr` lies in the subnet set with [`NameTable::set_subnet`].
    pub fn in_subnet(&self, addr: Ipv4Addr) -> bool {
        self.subnet
            .is_some_and(|(net, mask)| u32::from(addr) & mask == net)
    }

    /// Registers `entry` for `owner`, replacing the owner's previous entry.
    /// On error the table is unchanged.
    pub fn insert(&mut self, owner: OwnerId, entry: Entry) -> Result<(), NameError> {
        if entry.names.is_empty() {
            return Err(NameError::NoNames);
        }
        let mut names: Vec<String> = Vec::with_capacity(entry.names.len());
        for n in &entry.names {
            let n = normalize(n)?;
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let mut addrs = entry.addrs;
        let mut seen = Vec::with_capacity(addrs.len());
        addrs.retain(|a| {
            let new = !seen.contains(a);
            seen.push(*a);
            new
        });
        self.remove(owner);
        for n in &names {
            self.by_name.entry(n.clone()).or_default().push(owner);
        }
        if entry.ptr {
            for a in &addrs {
                self.by_addr.entry(*a).or_default().push(owner);
            }
        }
        self.owners.insert(
            owner,
            Owned {
                names,
                addrs,
                ptr: entry.ptr,
            },
        );
        Ok(())
    }

    /// Drops `owner`'s entry. Returns whether it had one.
    pub fn remove(&mut self, owner: OwnerId) -> bool {
        let Some(old) = self.owners.remove(&owner) else {
            return false;
        };
        for n in &old.names {
            if let Some(v) = self.by_name.get_mut(n) {
                v.retain(|&o| o != owner);
                if v.is_empty() {
                    self.by_name.remove(n);
                }
            }
        }
        if old.ptr {
            for a in &old.addrs {
                if let Some(v) = self.by_addr.get_mut(a) {
                    v.retain(|&o| o != owner);
                    if v.is_empty() {
                        self.by_addr.remove(a);
                    }
                }
            }
        }
        true
    }

    /// Number of owners with an entry.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Whether no owner has an entry.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    fn addrs_of(&self, key: &str) -> Option<Vec<Ipv4Addr>> {
        let owners = self.by_name.get(key)?;
        let mut out = Vec::new();
        for o in owners {
            for a in &self.owners[o].addrs {
                if !out.contains(a) {
                    out.push(*a);
                }
            }
        }
        Some(out)
    }

    /// Looks up dotted text (`web1`, `WEB1.mynet.`).
    pub fn lookup(&self, name: &str) -> Lookup {
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        let labels: Vec<&[u8]> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('.').map(str::as_bytes).collect()
        };
        self.lookup_labels(&labels)
    }

    /// Looks up a name taken from a query.
    pub fn lookup_name(&self, name: &Name) -> Lookup {
        let labels: Vec<&[u8]> = name.labels().collect();
        self.lookup_labels(&labels)
    }

    fn lookup_labels(&self, labels: &[&[u8]]) -> Lookup {
        if labels.is_empty() {
            return Lookup::NotLocal;
        }
        if let Some(found) = key_of(labels).and_then(|k| self.addrs_of(&k)) {
            return Lookup::Found(found);
        }
        let Some(domain) = &self.domain else {
            return Lookup::NotLocal;
        };
        let dlabels: Vec<&str> = domain.split('.').collect();
        if labels.len() < dlabels.len() {
            return Lookup::NotLocal;
        }
        let split = labels.len() - dlabels.len();
        let in_domain = labels[split..]
            .iter()
            .zip(&dlabels)
            .all(|(l, d)| l.eq_ignore_ascii_case(d.as_bytes()));
        if !in_domain {
            return Lookup::NotLocal;
        }
        match key_of(&labels[..split]).and_then(|k| self.addrs_of(&k)) {
            Some(found) => Lookup::Found(found),
            None => Lookup::NxDomain,
        }
    }

    /// The name `addr` maps back to: the primary name of its first
    /// registered owner, qualified with the domain if there is one,
    /// lowercase, without a trailing dot.
    pub fn lookup_ptr(&self, addr: Ipv4Addr) -> Option<String> {
        let owner = self.by_addr.get(&addr)?.first()?;
        let primary = self.owners[owner].names.first()?;
        Some(match &self.domain {
            Some(d) => format!("{primary}.{d}"),
            None => primary.clone(),
        })
    }
}

/// The lowercase lookup key for `labels`, or `None` if some label holds a
/// byte no registered name can contain.
fn key_of(labels: &[&[u8]]) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let mut key = String::new();
    for (i, l) in labels.iter().enumerate() {
        if l.is_empty() || !l.iter().copied().all(valid_byte) {
            return None;
        }
        if i > 0 {
            key.push('.');
        }
        for &b in *l {
            key.push(b.to_ascii_lowercase() as char);
        }
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_rules() {
        assert_eq!(normalize("Web1.").unwrap(), "web1");
        assert!(normalize("").is_err());
        assert!(normalize(".").is_err());
        assert!(normalize("a..b").is_err());
        assert!(normalize("a b").is_err());
        assert!(normalize("caf\u{e9}").is_err());
    }

    #[test]
    fn subnet_membership() {
        let mut t = NameTable::new();
        assert!(!t.in_subnet(Ipv4Addr::new(10, 0, 0, 1)));
        t.set_subnet(Some((Ipv4Addr::new(10, 0, 0, 7), 24)));
        assert!(t.in_subnet(Ipv4Addr::new(10, 0, 0, 200)));
        assert!(!t.in_subnet(Ipv4Addr::new(10, 0, 1, 1)));
        t.set_subnet(Some((Ipv4Addr::new(10, 0, 0, 7), 0)));
        assert!(t.in_subnet(Ipv4Addr::new(192, 0, 2, 1)));
    }
}
