//! Memory settings for batch work.
//!
//! The `ward` binary allocates with mimalloc (src/main.rs). A batch command (ingest,
//! materialize, historical) frees and reallocates large buffers all the time: reading
//! Parquet, grouping events, building columns. Two defaults make that slow, measured on the
//! benchmark machine (BENCHMARKS.md, "Features"), where the kernel zeroing fresh pages was
//! more than half of a historical lookup's CPU time:
//!
//! - mimalloc returns freed memory to the operating system 10 ms after it is freed
//!   (`purge_delay`), and reusing it then costs a page fault and zeroing the page again;
//! - transparent huge pages make every first touch of a 2 MiB region zero all of it.
//!
//! [`batch_mode`] turns both off for the process: freed memory is kept for the next
//! allocation until the process exits, which a batch command does soon anyway, and pages are
//! faulted 4 KiB at a time. A server (`ward serve`) keeps the defaults and returns memory
//! between bursts of requests.

/// What [`batch_mode`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMode {
    /// mimalloc keeps freed memory (`purge_delay` = -1).
    pub keeps_freed_memory: bool,
    /// Transparent huge pages are off for the process.
    pub no_huge_pages: bool,
}

/// `mi_option_purge_delay`: its position in `mi_option_e` (mimalloc.h of mimalloc 3, the
/// version `libmimalloc-sys` builds by default). [`batch_mode`] checks that the option holds
/// its documented default before it changes it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// The documented default of `mi_option_purge_delay`, in milliseconds.
const PURGE_DELAY_DEFAULT: std::os::raw::c_long = 10;

/// Sets the process up for batch work (module doc). mimalloc's purge delay is left alone when
/// it does not hold its documented default: changed already (for example by
/// `MIMALLOC_PURGE_DELAY` in the environment, which then wins), or another mimalloc version
/// whose options may be numbered differently. Transparent huge pages stay on when
/// `MIMALLOC_ALLOW_THP` is set. The purge setting only matters in a process whose global
/// allocator is mimalloc.
pub fn batch_mode() -> BatchMode {
    BatchMode {
        keeps_freed_memory: keep_freed_memory(),
        no_huge_pages: std::env::var_os("MIMALLOC_ALLOW_THP").is_none() && no_huge_pages(),
    }
}

fn keep_freed_memory() -> bool {
    // SAFETY: `mi_option_get` and `mi_option_set` read and write one integer of mimalloc's
    // option table and accept any option number; mimalloc reads this option each time it
    // considers a purge, so changing it while the process runs takes effect.
    #[allow(unsafe_code)]
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) != PURGE_DELAY_DEFAULT {
            return false;
        }
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == -1
    }
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
