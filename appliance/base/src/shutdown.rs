use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A process-wide stop signal that both blocking threads and async tasks can wait on.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<Inner>);

#[derive(Default)]
struct Inner {
    stopped: Mutex<bool>,
    condvar: Condvar,
    notify: tokio::sync::Notify,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything to stop. Idempotent.
    pub fn trigger(&self) {
        let mut stopped = self.0.stopped.lock().unwrap_or_else(|e| e.into_inner());
        *stopped = true;
        self.0.condvar.notify_all();
        self.0.notify.notify_waiters();
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks for up to `timeout`; returns true if shutdown was triggered meanwhile.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let stopped = self.0.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = self
            .0
            .condvar
            .wait_timeout_while(stopped, timeout, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        *stopped
    }

    /// Sleeps for up to `duration`; returns true if shutdown was triggered meanwhile (the async
    /// twin of [`Shutdown::wait_timeout`]).
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => self.is_triggered(),
            () = self.triggered() => true,
        }
    }

    /// Resolves once shutdown is triggered.
    pub async fn triggered(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_returns_early_when_triggered_from_another_thread() {
        let s = Shutdown::new();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_timeout(Duration::from_secs(60)));
        s.trigger();
        assert!(t.join().unwrap());
        assert!(!Shutdown::new().wait_timeout(Duration::from_millis(1)));
    }

    #[tokio::test]
    async fn sleep_returns_early_when_triggered_and_says_so() {
        let s = Shutdown::new();
        let s2 = s.clone();
        let sleeping = tokio::spawn(async move { s2.sleep(Duration::from_secs(60)).await });
        s.trigger();
        let woke = tokio::time::timeout(Duration::from_secs(10), sleeping).await;
        assert!(woke.expect("woken, not slept out").unwrap());
        assert!(!Shutdown::new().sleep(Duration::from_millis(1)).await);
    }
}
