//! Pinning the calling thread to CPUs (`sched_setaffinity(2)` on the
//! thread's own id), and which CPU it is on (`sched_getcpu(3)`).

use std::io;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Pins the calling thread to `cpu`. Fails with a message naming the CPUs
/// this process may use when `cpu` is not one of them.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let allowed = current_thread_cpus()?;
    if !allowed.contains(&cpu) {
        let usable: Vec<String> = allowed.iter().map(usize::to_string).collect();
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "CPU {cpu} is not one this process may run on (usable: {})",
                usable.join(",")
            ),
        ));
    }
    set_current_thread_cpus(&[cpu])
}

/// The CPUs the calling thread may run on.
pub fn current_thread_cpus() -> io::Result<Vec<usize>> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    Ok((0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect())
}

/// Lets the calling thread run on exactly `cpus`.
pub fn set_current_thread_cpus(cpus: &[usize]) -> io::Result<()> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu).map_err(io::Error::from)?;
    }
    // Pid 0 is the calling thread.
    sched_setaffinity(Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// The CPU the calling thread is running on right now.
pub fn current_cpu() -> io::Result<usize> {
    nix::sched::sched_getcpu().map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_only_the_calling_thread() {
        let before = sched_getaffinity(Pid::from_raw(0)).unwrap();
        let first = (0..CpuSet::count())
            .find(|&c| before.is_set(c).unwrap())
            .unwrap();
        std::thread::spawn(move || {
            pin_current_thread(first).unwrap();
            let now = sched_getaffinity(Pid::from_raw(0)).unwrap();
            for c in 0..CpuSet::count() {
                assert_eq!(now.is_set(c).unwrap(), c == first, "CPU {c}");
            }
        })
        .join()
        .unwrap();
        // This thread kept its mask.
        let after = sched_getaffinity(Pid::from_raw(0)).unwrap();
        assert_eq!(format!("{after:?}"), format!("{before:?}"));
    }

    #[test]
    fn a_thread_moves_within_its_mask_and_back() {
        std::thread::spawn(|| {
            let all = current_thread_cpus().unwrap();
            let last = *all.last().unwrap();
            set_current_thread_cpus(&[last]).unwrap();
            assert_eq!(current_thread_cpus().unwrap(), vec![last]);
            assert_eq!(current_cpu().unwrap(), last);
            set_current_thread_cpus(&all).unwrap();
            assert_eq!(current_thread_cpus().unwrap(), all);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_unusable_cpu_is_refused_with_the_usable_ones() {
        let err = std::thread::spawn(|| pin_current_thread(CpuSet::count() + 5).unwrap_err())
            .join()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("usable: "), "{err}");
    }
}
