//! How much memory a child process took: for the benchmarks that run the real binary.

/// `VmHWM` of a running process: the kernel's high-water mark of its resident memory. Sampled
/// while it runs, not `ru_maxrss` from `wait4`: Linux carries the forking process's peak into a
/// child across `exec`.
pub fn vm_hwm_kib(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
