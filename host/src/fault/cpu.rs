//! CPU contention: busy threads pinned to the CPUs a shadow may run on.
//!
//! The threads live in the Umbra process, so they stop when Umbra stops or crashes and
//! need no ledger entry. Each thread spins until its deadline or [`CpuContention::stop`],
//! checking a flag about every millisecond.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
use tracing::{info, warn};

use crate::fault::error::ResourceError;

/// Upper bound of `threads_per_cpu`: more threads add scheduling noise, not contention.
const MAX_THREADS_PER_CPU: usize = 8;

/// Busy threads competing with a shadow for its CPUs until stopped or until their
/// deadline passes. Dropping it stops and joins the threads.
#[derive(Debug)]
pub struct CpuContention {
    cpus: Vec<usize>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl CpuContention {
    /// Starts `threads_per_cpu` busy threads on each CPU in the affinity mask of `pid`,
    /// for at most `duration`.
    pub fn start(
        pid: u32,
        threads_per_cpu: usize,
        duration: Duration,
    ) -> Result<CpuContention, ResourceError> {
        if !(1..=MAX_THREADS_PER_CPU).contains(&threads_per_cpu) {
            return Err(ResourceError::InvalidSetting {
                setting: "threads_per_cpu",
                value: threads_per_cpu.to_string(),
                expected: "expected 1 to 8",
            });
        }
        let target = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or(ResourceError::NoSuchProcess { pid })?;
        let mask = sched_getaffinity(Some(target)).map_err(|errno| ResourceError::Syscall {
            action: "read the CPU affinity",
            pid,
            source: errno.into(),
        })?;
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
            .filter(|&cpu| mask.is_set(cpu))
            .collect();

        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + duration;
        let mut contention = CpuContention {
            cpus: cpus.clone(),
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for &cpu in &cpus {
            for index in 0..threads_per_cpu {
                let stop = stop.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("umbra-cpu-{cpu}-{index}"))
                    .spawn(move || spin_on(cpu, &stop, deadline))
                    .map_err(|source| ResourceError::Syscall {
                        action: "start a CPU contention thread",
                        pid,
                        source,
                    })?;
                contention.threads.push(thread);
            }
        }
        info!(
            pid,
            ?cpus,
            threads_per_cpu,
            ?duration,
            "CPU contention started"
        );
        Ok(contention)
    }

    /// The CPUs that busy threads run on.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Stops and joins the threads.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for CpuContention {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn spin_on(cpu: usize, stop: &AtomicBool, deadline: Instant) {
    let mut set = CpuSet::new();
    set.set(cpu);
    if let Err(errno) = sched_setaffinity(None, &set) {
        warn!(cpu, error = %errno, "failed to pin CPU contention thread; it runs unpinned");
    }
    let mut counter = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        // About a millisecond of work between checks of the flag and the clock.
        for step in 0..200_000u64 {
            counter = std::hint::black_box(counter.wrapping_mul(31).wrapping_add(step));
        }
    }
}
