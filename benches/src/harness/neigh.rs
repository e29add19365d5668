//! The kernel's IPv4 neighbour (ARP, RFC 826) table, as far as a scenario
//! that puts many "hosts" on one kernel needs it.
//!
//! Linux keeps one ARP table for the whole machine: every network
//! namespace's entries count against the same garbage-collection limits
//! (`net.ipv4.neigh.default.gc_thresh1..3`, writable only from the initial
//! namespace; defaults 128, 512 and 1024). Past `gc_thresh3` the kernel
//! cannot create an entry (`neighbour: arp_cache: neighbor table
//! overflow!`, the `table_fulls` column of `/proc/net/stat/arp_cache`) and
//! the packet that needed it is discarded (`IpOutDiscards`). Fifty real
//! machines have fifty tables of about fifty entries each; fifty host
//! namespaces on one kernel share one table of a few thousand. So the
//! convergence scenario raises the limits to what its topology needs while
//! it runs ([`Raised`], restored when dropped), and counts the overflows
//! during the run ([`table_fulls`]) so that a table still too small shows
//! in the results instead of as unexplained latency.

use std::fs;
use std::path::PathBuf;

use super::Reporter;

const SYSCTL_DIR: &str = "/proc/sys/net/ipv4/neigh/default";
const STAT: &str = "/proc/net/stat/arp_cache";

/// ARP entries the convergence topology can hold at once, all namespaces
/// together: each host's underlay namespace learns every other host and
/// the store (`hosts * hosts`), the underlay bridge's namespace every host
/// (`hosts`), and each of the `hosts` probes and `endpoints` endpoints
/// learns the addresses it exchanged pings with (`endpoints` and `hosts`
/// respectively).
pub fn convergence_entries(hosts: usize, endpoints: usize) -> u64 {
    let (h, e) = (hosts as u64, endpoints as u64);
    h * h + h + 2 * h * e
}

/// The limits chosen for `entries` entries: no garbage collection below
/// them (`gc_thresh1`), and twice and four times that as the soft and hard
/// limits, so other users of the machine keep their room; never below what
/// is set already.
pub fn limits_for(entries: u64, current: [u64; 3]) -> [u64; 3] {
    [
        current[0].max(entries),
        current[1].max(2 * entries),
        current[2].max(4 * entries),
    ]
}

fn sysctl_path(i: usize) -> PathBuf {
    PathBuf::from(SYSCTL_DIR).join(format!("gc_thresh{}", i + 1))
}

fn read_limits() -> Option<[u64; 3]> {
    let mut v = [0; 3];
    for (i, slot) in v.iter_mut().enumerate() {
        *slot = fs::read_to_string(sysctl_path(i))
            .ok()?
            .trim()
            .parse()
            .ok()?;
    }
    Some(v)
}

fn write_limits(v: [u64; 3]) -> std::io::Result<()> {
    // gc_thresh3 first when raising, last when lowering, so the three stay
    // ordered at every step.
    let raising = read_limits().is_none_or(|cur| v[2] >= cur[2]);
    let order: [usize; 3] = if raising { [2, 1, 0] } else { [0, 1, 2] };
    for i in order {
        fs::write(sysctl_path(i), v[i].to_string())?;
    }
    Ok(())
}

/// The neighbour table's limits raised for a run; the old ones come back
/// when it is dropped.
pub struct Raised<'r> {
    old: Option<[u64; 3]>,
    /// The limits in force during the run.
    pub limits: Option<[u64; 3]>,
    report: &'r dyn Reporter,
}

impl<'r> Raised<'r> {
    /// Raises the limits to hold `entries` entries. When they cannot be
    /// read or written (no `/proc/sys`, not the initial namespace), says
    /// so and leaves them: the overflow count then shows what it cost.
    pub fn new(entries: u64, report: &'r dyn Reporter) -> Raised<'r> {
        let Some(old) = read_limits() else {
            report.warning(&format!(
                "cannot read {SYSCTL_DIR}/gc_thresh*: the neighbour table keeps its limits"
            ));
            return Raised {
                old: None,
                limits: None,
                report,
            };
        };
        let new = limits_for(entries, old);
        if new == old {
            return Raised {
                old: None,
                limits: Some(old),
                report,
            };
        }
        match write_limits(new) {
            Ok(()) => Raised {
                old: Some(old),
                limits: Some(new),
                report,
            },
            Err(e) => {
                report.warning(&format!(
                    "cannot raise {SYSCTL_DIR}/gc_thresh1..3 to {new:?} ({e}); pings may be \
                     lost to neighbour table overflows"
                ));
                let _ = write_limits(old);
                Raised {
                    old: None,
                    limits: Some(old),
                    report,
                }
            }
        }
    }
}

impl Drop for Raised<'_> {
    fn drop(&mut self) {
        if let Some(old) = self.old.take() {
            if let Err(e) = write_limits(old) {
                self.report.warning(&format!(
                    "cannot restore {SYSCTL_DIR}/gc_thresh1..3 to {old:?}: {e}"
                ));
            }
        }
    }
}

/// Times the kernel could not create an ARP entry because the table was
/// full, machine-wide, since boot (the `table_fulls` column of
/// `/proc/net/stat/arp_cache`, one hexadecimal row per CPU).
pub fn table_fulls() -> Option<u64> {
    parse_table_fulls(&fs::read_to_string(STAT).ok()?)
}

fn parse_table_fulls(text: &str) -> Option<u64> {
    let mut lines = text.lines();
    let column = lines
        .next()?
        .split_whitespace()
        .position(|c| c == "table_fulls")?;
    lines
        .map(|l| {
            l.split_whitespace()
                .nth(column)
                .and_then(|v| u64::from_str_radix(v, 16).ok())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_hosts_need_more_than_the_default_hard_limit() {
        // What made 50 hosts stall and 20 not: the default gc_thresh3 is
        // 1024, gc_thresh2 (forced collection) 512.
        assert!(convergence_entries(20, 6) < 1024);
        assert!(convergence_entries(50, 30) > 1024);
        assert_eq!(convergence_entries(50, 30), 2500 + 50 + 3000);
    }

    #[test]
    fn limits_only_ever_go_up() {
        assert_eq!(limits_for(5550, [128, 512, 1024]), [5550, 11100, 22200]);
        assert_eq!(
            limits_for(100, [128, 512, 1024]),
            [128, 512, 1024],
            "a small run keeps the machine's limits"
        );
    }

    struct Quiet;

    impl Reporter for Quiet {
        fn status(&self, _: &str) {}
        fn warning(&self, message: &str) {
            panic!("unexpected warning: {message}");
        }
        fn table(&self, _: &str) {}
    }

    /// Raises the machine's real limits just above what they are and
    /// checks they come back when the guard goes (also on a panic: the
    /// guard is dropped while unwinding).
    #[test]
    fn raised_limits_come_back_when_dropped() {
        weft_testkit::require_root!();
        let Some(before) = read_limits() else {
            eprintln!("skipped: no {SYSCTL_DIR}");
            return;
        };
        {
            let raised = Raised::new(before[2] + 1, &Quiet);
            let during = read_limits().expect("read the limits");
            assert_eq!(Some(during), raised.limits);
            assert_eq!(during, limits_for(before[2] + 1, before));
            assert!(during[0] > before[0] && during[2] > before[2]);
        }
        assert_eq!(read_limits(), Some(before), "limits not restored");
        // A run that fits changes nothing and restores nothing.
        let unchanged = Raised::new(1, &Quiet);
        assert_eq!(unchanged.limits, Some(before));
        drop(unchanged);
        assert_eq!(read_limits(), Some(before));
        assert!(table_fulls().is_some(), "no {STAT}");
    }

    #[test]
    fn table_fulls_sums_every_cpu() {
        let stat = "entries  allocs   destroys hash_grows lookups  hits     res_failed rcv_probes_mcast rcv_probes_ucast periodic_gc_runs forced_gc_runs unresolved_discards table_fulls\n\
            00000003 000029db 00002cff 00000002   00b65731 00006655 00000017   00000000         00000000         00000000         000013bf       00000093            00001333\n\
            00000003 000034bb 00003194 00000006   00c38615 00008a2f 00000018   00000000         00000000         00000544         00001940       000001bd            00001878\n";
        assert_eq!(parse_table_fulls(stat), Some(0x1333 + 0x1878));
        assert_eq!(parse_table_fulls("entries allocs\n1 2\n"), None);
        assert_eq!(parse_table_fulls(""), None);
    }
}
