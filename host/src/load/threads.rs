//! Dedicated worker threads: one current-thread Tokio runtime per thread.
//!
//! By default the executors spawn their workers on the caller's runtime. With
//! `dedicated_threads`, the workers are dealt round-robin to that many OS threads, each
//! running its own current-thread runtime, as wrk runs one event loop per thread. The
//! workers then never share a runtime thread with the engine's tasks, so a task that
//! blocks a thread of the caller's runtime does not postpone a send. The threads still
//! share the CPU cores with everything else.
//!
//! NOTE: in repeated 10 s runs against nginx 1.22 (one worker) on a shared 2-core
//! machine with 32 connections, this mode and the multi-thread runtime differed by less
//! than the run-to-run noise. Measure on the target hardware before choosing it for speed.
//!
//! Each thread gets a watcher task in the caller's `JoinSet`, so the executors'
//! supervision treats a thread like a task: the run ends when every thread has finished,
//! and a panic on a thread becomes a failed task.

use std::future::Future;
use std::num::NonZeroUsize;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Runtime};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// Runs `workers` on `threads` dedicated threads and adds one watcher per thread to
/// `tasks`. On error, the threads started so far keep running until their workers stop,
/// so the caller must stop the workers and still await `tasks`.
pub(crate) fn spawn_on_threads<F>(
    workers: Vec<F>,
    threads: NonZeroUsize,
    tasks: &mut JoinSet<()>,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let thread_count = threads.get().min(workers.len().max(1));
    let mut groups: Vec<Vec<F>> = (0..thread_count).map(|_| Vec::new()).collect();
    for (index, worker) in workers.into_iter().enumerate() {
        groups[index % thread_count].push(worker);
    }

    // Build every runtime before starting any thread, so that a failure here leaves
    // nothing running.
    let runtimes = groups
        .iter()
        .map(|_| Builder::new_current_thread().enable_all().build())
        .collect::<std::io::Result<Vec<Runtime>>>()?;

    for (index, (group, runtime)) in groups.into_iter().zip(runtimes).enumerate() {
        let (finished, finished_signal) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("umbra-load-{index}"))
            .spawn(move || run_group(runtime, group, finished))?;
        tasks.spawn(watch_thread(thread, finished_signal));
    }
    Ok(())
}

/// Runs one thread's workers to completion. `finished` is dropped last, after the
/// runtime, so the watcher's join returns at once.
fn run_group<F>(runtime: Runtime, group: Vec<F>, finished: oneshot::Sender<()>)
where
    F: Future<Output = ()> + Send + 'static,
{
    runtime.block_on(async {
        let mut workers = JoinSet::new();
        for worker in group {
            workers.spawn(worker);
        }
        while let Some(joined) = workers.join_next().await {
            if let Err(error) = joined
                && error.is_panic()
            {
                std::panic::resume_unwind(error.into_panic());
            }
        }
    });
    drop(runtime);
    drop(finished);
}

/// Waits until the thread has finished, then joins it and passes on its panic, if any.
async fn watch_thread(thread: JoinHandle<()>, finished: oneshot::Receiver<()>) {
    // The sender is dropped when the thread returns or unwinds, never sent to.
    let _ = finished.await;

    // The thread has dropped its runtime and is returning, so this join blocks only for
    // that last step.
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}
