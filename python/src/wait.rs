//! How long a Python call may wait, and waiting in slices: a blocked call gives the
//! interpreter back every [`SLICE`] so that signal handlers (Ctrl-C) run and the
//! call can end with their exception.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Longest wait without checking for signals (KeyboardInterrupt within about this).
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// What a call's `block` / `timeout` arguments ask for.
#[derive(Clone, Copy)]
pub(crate) enum Patience {
    /// Do not wait (`block=False`).
    Never,
    /// Wait until the deadline (`None`: forever).
    Until(Option<Instant>),
}

impl Patience {
    /// Reads `block` and `timeout` as `multiprocessing.Queue` does: `timeout` counts
    /// only when blocking, and must not be negative.
    pub(crate) fn from_args(block: bool, timeout: Option<f64>) -> PyResult<Self> {
        if !block {
            return Ok(Patience::Never);
        }
        let Some(seconds) = timeout else {
            return Ok(Patience::Until(None));
        };
        if seconds.is_nan() || seconds < 0.0 {
            return Err(PyValueError::new_err(
                "'timeout' must be a non-negative number of seconds (or None to wait forever)",
            ));
        }
        // A timeout too long to represent waits forever.
        let deadline = Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|wait| Instant::now().checked_add(wait));
        Ok(Patience::Until(deadline))
    }
}

/// The end of the next wait without the interpreter lock.
pub(crate) fn slice_end(deadline: Option<Instant>) -> Instant {
    let slice = Instant::now() + SLICE;
    deadline.map_or(slice, |deadline| deadline.min(slice))
}

/// Whether `deadline` has passed.
pub(crate) fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}
