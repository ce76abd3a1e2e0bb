//! Admission control: a fixed number of worker slots behind a bounded wait queue.
//!
//! An item request takes a [`Slot`] before it works and releases it when the slot is
//! dropped. When every slot is taken, up to `queue_limit` requests wait in arrival order.
//! A request that finds the queue full is rejected at once, which the routes turn into
//! 503. The counts of busy slots and waiting requests are the `demo_inflight_requests`
//! and `demo_queue_depth` gauges.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Worker slots and the queue of requests waiting for one.
#[derive(Debug)]
pub struct Admission {
    slots: Semaphore,
    queue_limit: usize,
    waiting: AtomicUsize,
    busy: AtomicUsize,
}

impl Admission {
    /// Creates `workers` slots with room for `queue_limit` waiting requests.
    pub fn new(workers: usize, queue_limit: usize) -> Self {
        Self {
            slots: Semaphore::new(workers),
            queue_limit,
            waiting: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    /// Takes a free slot, or waits for one in arrival order if the queue has room.
    ///
    /// Returns `None` at once when every slot is taken and `queue_limit` requests already
    /// wait. A caller that is dropped while it waits leaves the queue.
    pub async fn acquire(&self) -> Option<Slot<'_>> {
        // Tokio's semaphore hands released permits to waiters first, so this fast path
        // cannot overtake a request that is already queued.
        if let Ok(permit) = self.slots.try_acquire() {
            return Some(Slot::new(self, permit));
        }

        let queue_place = self.enter_queue()?;
        // The semaphore is never closed, so `acquire` only returns once a slot is free.
        let permit = self.slots.acquire().await.ok()?;
        drop(queue_place);

        Some(Slot::new(self, permit))
    }

    /// Number of slots held by requests.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Number of requests waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn enter_queue(&self) -> Option<QueuePlace<'_>> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < self.queue_limit).then_some(waiting + 1)
            })
            .ok()?;

        Some(QueuePlace { admission: self })
    }
}

/// A worker slot held by one request, released on drop.
#[derive(Debug)]
pub struct Slot<'a> {
    admission: &'a Admission,
    _permit: SemaphorePermit<'a>,
}

impl<'a> Slot<'a> {
    fn new(admission: &'a Admission, permit: SemaphorePermit<'a>) -> Self {
        admission.busy.fetch_add(1, Ordering::Relaxed);
        Self {
            admission,
            _permit: permit,
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.admission.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A place in the wait queue, given up on drop.
struct QueuePlace<'a> {
    admission: &'a Admission,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.admission.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Poll;

    use super::*;

    /// Polls a future once, so that a request that must wait joins the queue.
    async fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
    }

    #[tokio::test]
    async fn free_slot_is_taken_at_once() {
        let admission = Admission::new(2, 0);

        let slot = admission.acquire().await;

        assert!(slot.is_some());
        assert_eq!(admission.busy(), 1);
        assert_eq!(admission.waiting(), 0);
    }

    #[tokio::test]
    async fn full_queue_rejects_at_once() {
        let admission = Admission::new(1, 1);
        let _running = admission
            .acquire()
            .await
            .expect("first request gets the slot");
        let mut queued = pin!(admission.acquire());
        assert!(poll_once(queued.as_mut()).await.is_pending());

        let rejected = admission.acquire().await;

        assert!(rejected.is_none());
        assert_eq!(admission.waiting(), 1);
    }

    #[tokio::test]
    async fn queued_request_gets_released_slot() {
        let admission = Admission::new(1, 1);
        let running = admission
            .acquire()
            .await
            .expect("first request gets the slot");
        let mut queued = pin!(admission.acquire());
        assert!(poll_once(queued.as_mut()).await.is_pending());

        drop(running);
        let slot = queued.await;

        assert!(slot.is_some());
        assert_eq!(admission.busy(), 1);
        assert_eq!(admission.waiting(), 0);
    }

    #[tokio::test]
    async fn dropped_waiter_leaves_queue() {
        let admission = Admission::new(1, 1);
        let _running = admission
            .acquire()
            .await
            .expect("first request gets the slot");
        {
            let mut queued = pin!(admission.acquire());
            assert!(poll_once(queued.as_mut()).await.is_pending());
            assert_eq!(admission.waiting(), 1);
        }

        assert_eq!(admission.waiting(), 0);
    }

    #[tokio::test]
    async fn zero_queue_limit_rejects_when_slots_are_busy() {
        let admission = Admission::new(1, 0);
        let _running = admission
            .acquire()
            .await
            .expect("first request gets the slot");

        let rejected = admission.acquire().await;

        assert!(rejected.is_none());
    }
}
