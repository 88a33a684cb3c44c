//! The stop signal: set once (by SIGINT or SIGTERM), seen by every task, which then
//! finishes the messages it holds and returns.

use tokio::sync::watch;

/// Raises the stop signal.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Watches the stop signal; clone one per task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new stop signal, not raised.
pub fn channel() -> (Trigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Shutdown(receiver))
}

impl Trigger {
    /// Raises the signal: every [`Shutdown`] sees it.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Whether the signal is raised.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once the signal is raised (at once if it already is). Cancel safe.
    pub async fn stopping(&mut self) {
        // An error means every trigger is gone: nobody can stop us any more, so
        // nothing is left to wait for either; treat it as a stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
