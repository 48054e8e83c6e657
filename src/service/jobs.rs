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

use std::future::Future;
use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;

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
