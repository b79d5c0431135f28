//! CPU time, from the kernel's scheduler statistics: on a shared machine, the time a run took
//! moves with the other load, while the CPU time it used moves much less, so it says which
//! part of a run costs what.

use std::time::Duration;

/// CPU time used so far by the calling thread.
pub fn this_thread() -> Duration {
    on_cpu("/proc/thread-self/schedstat")
}

/// CPU time used so far by the threads of this process that are alive now.
pub fn process() -> Duration {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .map(|task| on_cpu(task.path().join("schedstat")))
        .sum()
}

/// The first field of a `schedstat` file: nanoseconds on a CPU (zero if it cannot be read,
/// e.g. a thread that ended meanwhile).
fn on_cpu(path: impl AsRef<std::path::Path>) -> Duration {
    let ns = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}
