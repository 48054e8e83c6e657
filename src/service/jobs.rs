//! Heavy requests run apart from online lookups.
//!
//! An ingest, a materialization, a historical lookup, a verify or a de-identification holds a
//! thread for seconds to minutes, mostly computing. On the server's request runtime that
//! thread is one of its few workers (one per core; with `threads = 1` the only one), so every
//! online lookup queued behind it would wait. [`Jobs`] is a runtime of its own for such work:
//! a handler hands the whole operation over with [`Jobs::run`] and awaits its result, and
//! the request workers stay free for the lookups that must answer in a millisecond. The
//! job threads are separate OS threads, so the kernel shares the cores between them and the
//! request workers instead of a lookup waiting for a job to yield.
//!
//! Separate threads are not enough on a small machine: with two cores, a job computing on
//! every core (its own thread, rayon's pool and Lance's CPU pool) gets the same share of
//! them as the request workers, and a lookup waits its turn behind it. So every thread that
//! does job work runs at a lower scheduling priority ([`JOB_NICE`], as `nice` would set it):
//! the job threads themselves, and, in a serving process, rayon's global pool and Lance's
//! CPU pool ([`background_pools`]). The kernel then runs a request worker as soon as it has
//! work, and the jobs take every cycle the lookups leave; an idle server's job runs as fast
//! as before. Online lookups use neither pool.

use std::future::Future;
use std::sync::{Arc, Barrier};

use crate::error::{Error, Result};

/// The runtime heavy requests run on. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub(crate) struct Jobs {
    handle: tokio::runtime::Handle,
    _runtime: Arc<Owned>,
}

/// Owns the runtime; shuts it down without blocking when the last [`Jobs`] goes (a runtime
/// dropped inside another runtime's worker would panic on a blocking shutdown).
#[derive(Debug)]
struct Owned(Option<tokio::runtime::Runtime>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Jobs {
    /// A job runtime of `threads` worker threads (at least 1).
    ///
    /// # Errors
    /// [`Error::Io`] when the threads cannot be started.
    pub(crate) fn new(threads: usize) -> Result<Jobs> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("ward-job")
            .on_thread_start(lower_thread_priority)
            .enable_all()
            .build()
            .map_err(|e| Error::io("job runtime", e))?;
        Ok(Jobs {
            handle: runtime.handle().clone(),
            _runtime: Arc::new(Owned(Some(runtime))),
        })
    }

    /// Runs `job` on the job runtime and waits for its result. If the caller goes away (the
    /// request is cancelled), the job still runs to its end, so a write it started is never
    /// cut short by a client hanging up.
    ///
    /// # Errors
    /// Whatever `job` returns; [`Error::Internal`] if it panicked.
    pub(crate) async fn run<T, F>(&self, job: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.handle
            .spawn(job)
            .await
            .map_err(|e| Error::Internal(format!("a server job failed: {e}")))?
    }
}

/// The nice value of threads doing job work (0 is a normal thread, 19 the lowest priority).
/// At 10 the kernel gives a busy request worker about ten times the CPU of a busy job thread
/// (the weights of nice 0 and nice 10 are 1024 and 110), and a job still runs at full speed
/// when no lookup wants the core.
pub(crate) const JOB_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`JOB_NICE`] (Linux: the nice value is
/// per thread, and threads the caller starts later inherit it). Best effort: where the
/// platform refuses, the thread keeps its priority and the server still works.
pub(crate) fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // `setpriority(PRIO_PROCESS, 0, n)` sets the calling thread's nice value on Linux.
        // A thread may always lower its own priority; it only raises the number, never
        // below the current value.
        #[allow(unsafe_code)]
        // SAFETY: a plain system call on the calling thread; no memory is passed.
        let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, JOB_NICE) };
    }
}

/// The current thread's nice value (Linux; 0 elsewhere).
#[cfg(test)]
pub(crate) fn thread_nice() -> i32 {
    #[cfg(target_os = "linux")]
    {
        // /proc/thread-self/stat's 19th field is the nice value; reading it needs no unsafe
        // code and no errno dance around `getpriority`'s -1.
        if let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") {
            // The command name (field 2) is in parentheses and may contain spaces.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                if let Some(n) = rest.split_whitespace().nth(16) {
                    return n.parse().unwrap_or(0);
                }
            }
        }
    }
    0
}

/// Starts the pools job work computes on at [`JOB_NICE`], before anything else starts them at
/// normal priority: rayon's global pool (its threads lower their priority as they start) and
/// Lance's CPU pool (its threads are started from a lowered thread and inherit its
/// priority). A serving process calls this first, before it reads any dataset. Where a pool
/// already runs (a test process that served before), it is left as it is.
pub(crate) fn background_pools() {
    if rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("ward-rayon-{i}"))
        .start_handler(|_| lower_thread_priority())
        .build_global()
        .is_ok()
    {
        // Threads start on their own time; a task on every one of them returns only when
        // each has started (and lowered its priority).
        rayon::broadcast(|_| ());
    }
    let primer = std::thread::Builder::new()
        .name("ward-pool-start".into())
        .spawn(|| {
            lower_thread_priority();
            // Lance starts its CPU runtime, and the blocking threads that run its work, from
            // the thread that first hands it work. Hand it as many tasks as it has threads,
            // each waiting for all the others, so that every one of its threads is started
            // here (a pool with fewer threads than tasks would wait forever, so the count is
            // Lance's own).
            let n = lance_core::utils::tokio::get_num_compute_intensive_cpus().max(1);
            let all = Arc::new(Barrier::new(n));
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let all = all.clone();
                    lance_core::utils::tokio::spawn_cpu(move || {
                        all.wait();
                        Ok::<_, std::io::Error>(())
                    })
                })
                .collect();
            for t in tasks {
                let _ = futures::executor::block_on(t);
            }
        });
    if let Ok(primer) = primer {
        let _ = primer.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn job_threads_run_at_the_lower_priority() {
        let caller = thread_nice();
        let jobs = Jobs::new(1).unwrap();
        let nice = jobs.run(async { Ok(thread_nice()) }).await.unwrap();
        if cfg!(target_os = "linux") {
            // At JOB_NICE, or lower still where the whole test runs under a higher nice.
            assert!(
                nice >= JOB_NICE.max(caller),
                "a job thread runs at nice {nice}, the caller at {caller}"
            );
        }
        // The caller's own thread is untouched.
        assert_eq!(thread_nice(), caller);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_job_does_not_hold_the_callers_runtime() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let jobs = Jobs::new(1).unwrap();
        let released = Arc::new(AtomicBool::new(false));
        // A job that computes, never yielding, until the caller's runtime releases it: on
        // the caller's single thread it would never be released.
        let flag = released.clone();
        let busy = jobs.run(async move {
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !flag.load(Ordering::SeqCst) {
                if std::time::Instant::now() > give_up {
                    return Ok(false);
                }
                std::hint::spin_loop();
            }
            Ok(true)
        });
        let release = async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            released.store(true, Ordering::SeqCst);
        };
        let (busy, ()) = tokio::join!(busy, release);
        assert!(busy.unwrap(), "the job held the caller's runtime");
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_internal_error() {
        let jobs = Jobs::new(1).unwrap();
        let r: Result<()> = jobs.run(async { panic!("boom") }).await;
        assert!(matches!(r, Err(Error::Internal(_))));
    }
}
