//! Which CPUs the endpoints send from: a tally the kernel keeps per CPU.
//!
//! tun runs a device's filter program (`TUNSETFILTEREBPF`) in
//! `tun_net_xmit`, that is in the context of whatever hands the frame to
//! the TAP: the sending process's system call, or the softirq that
//! answered on its behalf. [`SenderCpus`] loads one tiny socket-filter BPF
//! program that adds one to a per-CPU counter and keeps the frame whole,
//! and attaches it to every TAP it is given; [`SenderCpus::totals`] reads
//! the counters. The datapath uses them to run its worker next to
//! endpoints that wait on each other (`weft_datapath::placement`).
//!
//! The program is eleven instructions (twelve slots) written out here rather than
//! compiled: a BPF toolchain (clang, `bpf-linker`) and a loader library
//! would be a heavy build dependency for one counter. It runs once per
//! frame an endpoint sends, in the sender's context: a lookup the
//! verifier inlines and an atomic add.
//!
//! Loading needs `CAP_BPF` (or `CAP_SYS_ADMIN`), or unprivileged BPF
//! (`kernel.unprivileged_bpf_disabled = 0`); without either [`new`]
//! fails with `PermissionDenied` and nothing else changes.
//!
//! [`new`]: SenderCpus::new

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `_IOR('T', 225, int)`: attach a socket-filter program to a tun device
/// (a descriptor of `-1` detaches it).
const TUNSETFILTEREBPF: libc::c_ulong = 0x8004_54e1;

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// One BPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Insn {
    code: u8,
    /// Destination register in the low nibble, source in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

pub(crate) const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// `BPF_PSEUDO_MAP_FD`: the 64-bit immediate is a map's descriptor.
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;

/// The program: `counter[0] += 1` on this CPU; return "keep it all".
fn program(map: RawFd) -> [Insn; 12] {
    [
        insn(0xb7, 1, 0, 0, 0),                      // r1 = 0
        insn(0x63, 10, 1, -4, 0),                    // *(u32 *)(r10 - 4) = r1: the key
        insn(0xbf, 2, 10, 0, 0),                     // r2 = r10
        insn(0x07, 2, 0, 0, -4),                     // r2 += -4: &key
        insn(0x18, 1, PSEUDO_MAP_FD, 0, map),        // r1 = map (64-bit immediate,
        insn(0x00, 0, 0, 0, 0),                      //   second half)
        insn(0x85, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM), // r0 = this CPU's &counter[0]
        insn(0x15, 0, 0, 2, 0),                      // if r0 == 0 goto keep
        insn(0xb7, 1, 0, 0, 1),                      // r1 = 1
        insn(0xdb, 0, 1, 0, 0),                      // lock *(u64 *)(r0 + 0) += r1
        insn(0xb4, 0, 0, 0, -1),                     // keep: w0 = 0xffffffff (the whole frame)
        insn(0x95, 0, 0, 0, 0),                      // exit
    ]
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `bpf(2)`, returning the new descriptor or the result.
///
/// # Safety
/// `attr` must be the attribute struct `cmd` expects, and every pointer in
/// it valid for the kernel to read or write for the call's duration.
unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller upholds the contract above; the size passed is
    // the struct's own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The per-CPU tally of frames sent into the TAPs it is attached to.
pub struct SenderCpus {
    map: OwnedFd,
    prog: OwnedFd,
    /// One slot per possible CPU, as the kernel lays out a per-CPU value.
    values: Vec<u64>,
}

impl SenderCpus {
    /// Creates the counter map and loads the program.
    pub fn new() -> io::Result<Self> {
        let cpus = possible_cpus()?;
        let mut create = MapCreateAttr {
            map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
            key_size: 4,
            value_size: 8,
            max_entries: 1,
            map_flags: 0,
        };
        // SAFETY: a BPF_MAP_CREATE attribute with no pointers.
        let map = unsafe { bpf(BPF_MAP_CREATE, &mut create) }?;
        // SAFETY: the kernel just returned this descriptor to us alone.
        let map = unsafe { OwnedFd::from_raw_fd(map as RawFd) };

        let insns = program(map.as_raw_fd());
        let license = CString::new("GPL").expect("no NUL");
        // Quietly first: a verifier log too small for what the verifier
        // says fails even a program it accepts. Only a refusal is loaded
        // again, with the log, to say why.
        let prog = match load_program(&insns, &license, None, NAME) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(e),
            Err(e) => {
                let mut log = vec![0u8; 16 * 1024];
                let _ = load_program(&insns, &license, Some(&mut log), NAME);
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let verifier = String::from_utf8_lossy(&log[..end]);
                return Err(io::Error::new(
                    e.kind(),
                    format!("loading the sender-CPU counter: {e}; verifier: {verifier}"),
                ));
            }
        };
        // SAFETY: as for the map.
        let prog = unsafe { OwnedFd::from_raw_fd(prog as RawFd) };
        Ok(SenderCpus {
            map,
            prog,
            values: vec![0; cpus],
        })
    }

    /// Counts the frames the TAP behind `tap` is handed from now on,
    /// replacing any filter it had.
    pub fn attach(&self, tap: BorrowedFd<'_>) -> io::Result<()> {
        set_filter(tap, self.prog.as_raw_fd())
    }

    /// The frames counted so far on each CPU, indexed by CPU number.
    pub fn totals(&mut self) -> io::Result<&[u64]> {
        let key: u32 = 0;
        let mut lookup = MapElemAttr {
            map_fd: self.map.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: self.values.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `key` is 4 bytes and `values` holds one u64 per possible
        // CPU, the size of a per-CPU array value of 8 bytes.
        unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut lookup) }?;
        Ok(&self.values)
    }
}

/// The program's name, as `bpftool prog` shows it.
const NAME: &str = "weft_cpus";

/// `BPF_PROG_LOAD` of `insns` as a socket filter called `name` (at most 15
/// bytes), with the verifier's log in `log` when given.
pub(crate) fn load_program(
    insns: &[Insn],
    license: &CString,
    log: Option<&mut Vec<u8>>,
    name: &str,
) -> io::Result<libc::c_long> {
    let mut prog_name = [0u8; 16];
    let len = name.len().min(15);
    prog_name[..len].copy_from_slice(&name.as_bytes()[..len]);
    let (log_level, log_size, log_buf) = match log {
        Some(log) => (1, log.len() as u32, log.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        prog_name,
        ..Default::default()
    };
    // SAFETY: `insns`, `license` and the log (when given) outlive the call,
    // and the sizes given are theirs.
    unsafe { bpf(BPF_PROG_LOAD, &mut load) }
}

/// Takes any filter program off the TAP behind `tap` (one a previous
/// daemon attached stays with the device).
pub fn detach(tap: BorrowedFd<'_>) -> io::Result<()> {
    set_filter(tap, -1)
}

fn set_filter(tap: BorrowedFd<'_>, prog: RawFd) -> io::Result<()> {
    let fd: libc::c_int = prog;
    // SAFETY: TUNSETFILTEREBPF reads one int through the pointer, which
    // points at a live local.
    let rc = unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETFILTEREBPF, &fd as *const libc::c_int) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// How many CPUs the kernel may ever bring up: the length of a per-CPU
/// map value (`/sys/devices/system/cpu/possible`, e.g. `0-3`).
fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list_len(text.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable CPU list {text:?} in /sys/devices/system/cpu/possible"),
        )
    })
}

/// One more than the highest CPU in a list such as `0-3,8`.
fn parse_cpu_list_len(list: &str) -> Option<usize> {
    let mut highest = None;
    for part in list.split(',') {
        let last = part.rsplit('-').next()?;
        let n: usize = last.trim().parse().ok()?;
        highest = Some(highest.map_or(n, |h: usize| h.max(n)));
    }
    highest.map(|h| h + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_give_their_length() {
        assert_eq!(parse_cpu_list_len("0"), Some(1));
        assert_eq!(parse_cpu_list_len("0-1"), Some(2));
        assert_eq!(parse_cpu_list_len("0-3,8"), Some(9));
        assert_eq!(parse_cpu_list_len(""), None);
        assert_eq!(parse_cpu_list_len("x"), None);
    }

    #[test]
    fn a_refused_program_is_loaded_again_for_the_verifiers_words() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let license = CString::new("GPL").unwrap();
        // r0 = 0, and no exit.
        let insns = [insn(0xb7, 0, 0, 0, 0)];
        let e = load_program(&insns, &license, None, NAME).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        let mut log = vec![0u8; 16 * 1024];
        assert!(load_program(&insns, &license, Some(&mut log), NAME).is_err());
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let said = String::from_utf8_lossy(&log[..end]);
        assert!(said.contains("last insn"), "{said}");
    }

    #[test]
    fn instructions_encode_registers_low_then_high() {
        let i = insn(0x63, 10, 1, -4, 0);
        assert_eq!(i.regs, 0x1a);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }
}
