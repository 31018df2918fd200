//! A concurrency limit that survives config reloads: one semaphore for the life of the
//! process, resized in place. A reload that built a new semaphore would let the jobs queued on
//! the old one run beside the new ones, doubling the limit.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most `size` holders at once; [`resize`](Self::resize) changes `size` for the jobs
/// running and the ones waiting alike.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    semaphore: Arc<Semaphore>,
    size: Arc<Mutex<usize>>,
}

impl ConcurrencyLimit {
    /// A limit of `size` (at least 1).
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(size)),
            size: Arc::new(Mutex::new(size)),
        }
    }

    /// Waits for a slot; the slot is released when the permit is dropped.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// The current limit.
    pub fn size(&self) -> usize {
        *self.size.lock().expect("not poisoned")
    }

    /// Sets the limit to `size` (at least 1). Growing frees slots at once; shrinking takes
    /// slots away as they are released, so running jobs are never interrupted.
    pub fn resize(&self, size: usize) {
        let size = size.max(1);
        let mut current = self.size.lock().expect("not poisoned");
        if size > *current {
            self.semaphore.add_permits(size - *current);
        } else if size < *current {
            let excess = *current - size;
            let forgotten = self.semaphore.forget_permits(excess);
            if forgotten < excess {
                // The rest are held by running jobs: take them back as they come free.
                let semaphore = Arc::clone(&self.semaphore);
                let rest = u32::try_from(excess - forgotten).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    if let Ok(permits) = semaphore.acquire_many_owned(rest).await {
                        permits.forget();
                    }
                });
            }
        }
        *current = size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resizing_keeps_one_limit_for_running_and_waiting_jobs() {
        let limit = ConcurrencyLimit::new(2);
        let a = limit.acquire().await;
        let b = limit.acquire().await;
        assert_eq!(limit.semaphore.available_permits(), 0);
        // A reload to the same size changes nothing: the two running jobs still count.
        limit.resize(2);
        assert!(Arc::clone(&limit.semaphore).try_acquire_owned().is_err());
        limit.resize(3);
        let c = limit.acquire().await;
        assert!(Arc::clone(&limit.semaphore).try_acquire_owned().is_err());
        limit.resize(1);
        drop((a, b));
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(
            Arc::clone(&limit.semaphore).try_acquire_owned().is_err(),
            "one job runs, the limit is one"
        );
        drop(c);
        tokio::task::yield_now().await;
        let _d = limit.acquire().await;
        assert_eq!(limit.size(), 1);
    }
}
