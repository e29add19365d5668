//! A TAP queue whose receive processing runs in a kernel thread of its own
//! (threaded NAPI).
//!
//! A frame written to a plain TAP queue goes up the namespace's stack (IP,
//! UDP, the socket's queue) inside the write, on the writer's CPU. A queue
//! attached with `IFF_NAPI` instead queues it for the queue's NAPI
//! instance, and with the device's `threaded` attribute set
//! (`/sys/class/net/IF/threaded`, Linux 5.12; the kernel's
//! `Documentation/networking/napi.rst`, "Threaded NAPI") a kernel thread
//! runs that instance, on whichever CPU the scheduler finds time. Without
//! the attribute the instance runs in softirq context right after the
//! write, which costs more than the plain path (a 64-byte flood over the
//! overlay was read at about 0.86× the rate), so weft never writes through
//! NAPI unthreaded.
//!
//! weft's TAPs are multi-queue with two queues: the plain one, written
//! normally, and a [`NapiQueue`], written while the receive processing is
//! better off in a thread of its own (the datapath decides when). The
//! endpoint's own frames would arrive on either queue, as tun picks one
//! per flow; a two-instruction steering program ([`steer_to_first_queue`],
//! `TUNSETSTEERINGEBPF`) puts them all on the plain one, so weft reads one
//! queue as before, and the NAPI queue is only written. Loading it needs
//! `CAP_BPF`: a daemon without it (rootless) keeps single-queue TAPs.
//!
//! The attribute lives in sysfs, and a sysfs mount shows the network
//! devices of the namespace it was mounted from. [`thread_napi_here`]
//! therefore runs where the TAP was just made, inside its namespace: on
//! the thread [`crate::run_in_netns`] dedicates to it, or in the rootless
//! helper. It makes a sysfs mount attached nowhere (`fsopen`/`fsmount`,
//! Linux 5.2), which costs the same however many mounts the host has.
//! Older kernels get what `ip netns exec` does: a mount namespace of the
//! thread's own with sysfs mounted over `/sys`. That copies every mount
//! of the host, and a host with a namespace per endpoint has one
//! (`/run/netns/NAME`) per endpoint: with 1,000 namespaces each copy
//! cost about 2.4 ms more than with none (`unshare -m`, 20 runs).

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;

use crate::sender_cpus::{insn, load_program};

/// `_IOR('T', 224, int)`: set a tun device's queue-steering program.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;

/// A TAP's second queue, attached with `IFF_NAPI` to a device whose NAPI
/// runs threaded.
#[derive(Debug)]
pub struct NapiQueue {
    queue: OwnedFd,
}

impl NapiQueue {
    pub(crate) fn new(queue: OwnedFd) -> NapiQueue {
        NapiQueue { queue }
    }

    /// Writes one frame gathered from several slices with one `writev`.
    pub fn write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Ok(nix::sys::uio::writev(&self.queue, bufs)?)
    }
}

impl AsFd for NapiQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.as_fd()
    }
}

/// Has tun put every frame the endpoint sends on the first queue, the
/// plain one: a steering program that returns 0.
pub fn steer_to_first_queue(tap: BorrowedFd<'_>) -> io::Result<()> {
    let insns = [
        insn(0xb7, 0, 0, 0, 0), // r0 = 0: the first queue
        insn(0x95, 0, 0, 0, 0), // exit
    ];
    let license = CString::new("GPL").expect("no NUL");
    let prog = load_program(&insns, &license, None, "weft_queue0")?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as libc::c_int) };
    let fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: TUNSETSTEERINGEBPF reads one int through the pointer, which
    // points at a live local; the device keeps its own reference to the
    // program, so ours may close.
    let rc = unsafe {
        libc::ioctl(
            tap.as_raw_fd(),
            TUNSETSTEERINGEBPF,
            &fd as *const libc::c_int,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the `threaded` attribute of `ifname`, a device of the calling
/// thread's network namespace.
///
/// On a kernel without `fsopen` (before 5.2) it moves the calling thread
/// (or process) into a mount namespace of its own with sysfs mounted over
/// `/sys`: call it only on a thread made for the namespace, as the last
/// thing that thread does with files.
pub fn thread_napi_here(ifname: &str) -> io::Result<()> {
    let attribute = format!("class/net/{ifname}/threaded");
    match detached_sysfs() {
        Ok(sysfs) => {
            let file = openat(
                &sysfs,
                attribute.as_str(),
                OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            std::fs::File::from(file).write_all(b"1")
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            sysfs_in_own_mount_namespace()?;
            std::fs::write(format!("/sys/{attribute}"), b"1")
        }
        Err(e) => Err(e),
    }
}

/// A sysfs instance of the calling thread's network namespace, mounted
/// nowhere: the returned descriptor is its root, and closing it unmounts
/// it.
fn detached_sysfs() -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    let name = CString::new("sysfs").expect("no NUL");
    // SAFETY: fsopen reads the NUL-terminated name; the descriptor it
    // returns is ours alone.
    let context = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    if context < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let context = unsafe { OwnedFd::from_raw_fd(context as libc::c_int) };
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let attributes = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    // SAFETY: fsmount takes the context's descriptor and two flag words.
    let root = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attributes as libc::c_uint,
        )
    };
    if root < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(root as libc::c_int) })
}

/// Gives the calling thread a mount namespace of its own, with sysfs
/// (of its network namespace) over `/sys`, as `ip netns exec` does.
fn sysfs_in_own_mount_namespace() -> io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    // Nothing mounted from here on reaches the daemon's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )?;
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::run_in_netns;
    use crate::tap::{Tap, TapOptions};
    use crate::testns::TestNs;

    fn sys_in(ns: &TestNs, file: &str) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns.name(), "cat"])
            .arg(format!("/sys/class/net/{file}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn a_frame_written_to_the_napi_queue_reaches_the_namespace() {
        let Some(ns) = TestNs::new("napi") else {
            return;
        };
        let opts = TapOptions {
            napi: true,
            ..TapOptions::default()
        };
        let (tap, queue) = run_in_netns(ns.path(), move || {
            let tap = Tap::create("weft-tn0", opts).unwrap();
            steer_to_first_queue(tap.as_fd()).unwrap();
            let queue = NapiQueue::new(tap.attach_napi_queue().unwrap());
            std::process::Command::new("ip")
                .args(["link", "set", "weft-tn0", "up"])
                .status()
                .unwrap();
            thread_napi_here(tap.name()).unwrap();
            (tap, queue)
        })
        .unwrap();
        assert_eq!(sys_in(&ns, "weft-tn0/threaded"), "1");
        // The daemon's own /sys is untouched.
        assert!(!std::path::Path::new("/sys/class/net/weft-tn0").exists());

        let before: u64 = sys_in(&ns, "weft-tn0/statistics/rx_packets")
            .parse()
            .unwrap();
        // A broadcast ARP request: a frame the stack takes and counts.
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
        frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1]);
        frame.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        assert_eq!(
            queue.write_vectored(&[io::IoSlice::new(&frame)]).unwrap(),
            frame.len()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let now: u64 = sys_in(&ns, "weft-tn0/statistics/rx_packets")
                .parse()
                .unwrap();
            if now > before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the frame never arrived"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(tap);
    }

    #[test]
    fn setting_the_attribute_leaves_the_mount_namespace_alone() {
        let Some(ns) = TestNs::new("napimnt") else {
            return;
        };
        let opts = TapOptions {
            napi: true,
            ..TapOptions::default()
        };
        let mount_ns = || std::fs::read_link("/proc/thread-self/ns/mnt").unwrap();
        let (tap, before, after) = run_in_netns(ns.path(), move || {
            let tap = Tap::create("weft-tn2", opts).unwrap();
            let _queue = tap.attach_napi_queue().unwrap();
            let before = mount_ns();
            thread_napi_here(tap.name()).unwrap();
            (tap, before, mount_ns())
        })
        .unwrap();
        assert_eq!(sys_in(&ns, "weft-tn2/threaded"), "1");
        // Copying the host's mounts would cost every attach time in
        // proportion to the namespaces the host has.
        assert_eq!(
            before, after,
            "the thread took a mount namespace of its own"
        );
        drop(tap);
    }

    #[test]
    fn the_fallback_shows_the_namespace_its_own_devices() {
        let Some(ns) = TestNs::new("napisys") else {
            return;
        };
        let devices = run_in_netns(ns.path(), || {
            let tap = Tap::create("weft-tn3", TapOptions::default()).unwrap();
            sysfs_in_own_mount_namespace().unwrap();
            let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            drop(tap);
            names
        })
        .unwrap();
        assert_eq!(devices, ["lo", "weft-tn3"]);
    }

    #[test]
    fn the_endpoints_frames_all_arrive_on_the_plain_queue() {
        let Some(ns) = TestNs::new("steer") else {
            return;
        };
        let opts = TapOptions {
            napi: true,
            ..TapOptions::default()
        };
        let (tap, queue) = run_in_netns(ns.path(), move || {
            let tap = Tap::create("weft-tn1", opts).unwrap();
            steer_to_first_queue(tap.as_fd()).unwrap();
            let queue = NapiQueue::new(tap.attach_napi_queue().unwrap());
            for args in [
                &["link", "set", "weft-tn1", "up"][..],
                &["addr", "add", "10.9.0.1/24", "dev", "weft-tn1"],
                &[
                    "neigh",
                    "add",
                    "10.9.0.2",
                    "lladdr",
                    "02:00:00:00:00:02",
                    "dev",
                    "weft-tn1",
                ],
            ] {
                let status = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .unwrap();
                assert!(status.success(), "ip {args:?}");
            }
            // Twenty flows: without the steering program tun spreads them
            // over both queues by their hash.
            let socket = std::net::UdpSocket::bind("10.9.0.1:0").unwrap();
            for port in 5000..5020 {
                socket.send_to(b"x", ("10.9.0.2", port)).unwrap();
            }
            (tap, queue)
        })
        .unwrap();
        tap.set_nonblocking(true).unwrap();
        crate::tap::set_nonblocking(queue.as_fd(), true).unwrap();
        let mut buf = [0u8; 2048];
        let mut plain = 0;
        while tap.read(&mut buf).is_ok() {
            plain += 1;
        }
        assert!(plain >= 20, "{plain} frames on the plain queue");
        let e = crate::tap::read(queue.as_fd(), &mut buf).unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::WouldBlock,
            "a frame on the NAPI queue"
        );
    }
}
