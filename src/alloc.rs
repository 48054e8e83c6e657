//! Memory settings for batch work.
//!
//! A batch command (ingest, materialize, historical) allocates large buffers and touches each
//! page once or twice: reading Parquet, grouping events, building columns. On the benchmark
//! machine the kernel zeroing fresh pages was more than half of a historical lookup's CPU
//! time, and transparent huge pages made every first touch zero a whole 2 MiB region
//! (BENCHMARKS.md, "Features"). [`batch_mode`] turns transparent huge pages off for the
//! process, so pages are faulted 4 KiB at a time. A server (`ward serve`) keeps the system's
//! default.

/// Sets the process up for batch work (module doc): transparent huge pages off, unless
/// `MIMALLOC_ALLOW_THP` is set in the environment (which then decides, as mimalloc reads it).
/// Returns whether they are off. Not available outside Linux (returns false).
pub fn batch_mode() -> bool {
    std::env::var_os("MIMALLOC_ALLOW_THP").is_none() && no_huge_pages()
}

#[cfg(target_os = "linux")]
fn no_huge_pages() -> bool {
    // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` takes integer arguments only and sets
    // one flag of this process's memory map; it cannot touch Rust-owned memory.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn no_huge_pages() -> bool {
    false
}

/// Resident memory of this process now (VmRSS) and its peak so far (VmHWM), in MiB, where
/// the OS tells (Linux): for the stage logs of batch commands.
pub fn rss_mib() -> Option<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Logs (at `debug`) a batch stage's resident memory now and at its peak so far.
pub fn log_stage(stage: &str) {
    if let Some((now, peak)) = rss_mib() {
        tracing::debug!(
            stage,
            rss_mib = now.round(),
            peak_mib = peak.round(),
            "memory"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel reports the flag [`batch_mode`] sets (`THP_enabled` in
    /// `/proc/self/status`, Linux 5.0 and later).
    #[cfg(target_os = "linux")]
    #[test]
    fn batch_mode_turns_huge_pages_off() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        let thp = || {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("THP_enabled:").map(|v| v.trim().to_string()))
        };
        let Some(before) = thp() else {
            eprintln!("this kernel does not report THP_enabled; skipped");
            return;
        };
        assert!(batch_mode());
        assert_eq!(thp().as_deref(), Some("0"), "was {before}");
    }

    /// With 64 MiB touched, the process holds at least that much (in MiB, as named), and
    /// the peak is never below the current figure.
    #[cfg(target_os = "linux")]
    #[test]
    fn rss_counts_what_is_touched_in_mib() {
        let touched = vec![1u8; 64 << 20];
        let (now, peak) = rss_mib().expect("VmRSS and VmHWM on Linux");
        assert!(now >= 64.0, "{now} MiB resident with 64 MiB touched");
        assert!(now < 1024.0 * 1024.0, "{now}: not MiB");
        assert!(peak >= now);
        assert_eq!(touched[touched.len() - 1], 1);
    }
}
