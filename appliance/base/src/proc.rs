//! Process and host figures from /proc (Linux), for benchmarks and the system page.

/// CPU time (user + system) this process has used so far, all threads.
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds("/proc/self/stat")
}

/// CPU time another process has used so far (0 once it is gone).
pub fn cpu_seconds_of(pid: u32) -> f64 {
    cpu_seconds(&format!("/proc/{pid}/stat"))
}

fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads its argument.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of proc(5) stat; after the name, indices 11 and 12.
    (ticks(11) + ticks(12)) / per_second.max(1.0)
}

/// A `Name:   123 kB` field of a /proc file, in bytes.
fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// This process's resident memory and its peak, in bytes.
pub fn process_memory() -> (Option<u64>, Option<u64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (kb_field(&status, "VmRSS"), kb_field(&status, "VmHWM"))
}

/// Another process's resident memory, in bytes (None once it is gone).
pub fn memory_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kb_field(&status, "VmRSS")
}

/// The host's memory: total and available, in bytes.
pub fn host_memory() -> (Option<u64>, Option<u64>) {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    (kb_field(&info, "MemTotal"), kb_field(&info, "MemAvailable"))
}

/// The host's CPU time since boot, all cores: (busy, total) in clock ticks. Two readings give
/// the share of CPU used in between.
pub fn host_cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let total: u64 = values.iter().take(8).sum();
    // idle and iowait are the 4th and 5th.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_host() {
        let (rss, peak) = process_memory();
        assert!(rss.unwrap() > 0 && peak.unwrap() >= rss.unwrap());
        let (total, available) = host_memory();
        assert!(available.unwrap() <= total.unwrap());
        let (busy, all) = host_cpu_ticks();
        assert!(all > 0 && busy <= all);
        assert!(process_cpu_seconds() >= 0.0);
    }
}
