//! Python bindings of shmq: `shmq.Queue`, a `multiprocessing.Queue` whose messages go
//! through a lock-free ring in POSIX shared memory and survive `kill -9` of any
//! process. The Python package around this module is `shmq/` beside it.
//!
//! One module per concern: `queue` the Python class, `handles` the library handles
//! behind it (threads, fork), `view` zero-copy receives, `codec` pickling and building Python objects from a
//! slot's bytes, `view` zero-copy receives, `wait` waiting in slices, `errors` the
//! exceptions.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use pyo3::prelude::*;

mod codec;
mod errors;
mod handles;
mod queue;
mod view;
mod wait;

/// The extension module `shmq._shmq`.
#[pymodule]
fn _shmq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<queue::Queue>()?;
    m.add_class::<view::HeldView>()?;
    m.add_function(wrap_pyfunction!(queue::unlink, m)?)?;
    m.add_function(wrap_pyfunction!(queue::unlink_private_segments, m)?)?;
    m.add_function(wrap_pyfunction!(queue::rebuild, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork_in_child, m)?)?;
    Ok(())
}

/// Forgets the handles inherited from the parent process and closes their
/// descriptors; registered with `os.register_at_fork(after_in_child=...)`.
#[pyfunction(name = "_after_fork_in_child")]
fn after_fork_in_child() {
    handles::after_fork_in_child();
}
