//! The library's typed errors as Python exceptions: `queue.Full` / `queue.Empty` for
//! a full or empty queue, the classes of `shmq/_errors.py` for the rest, each with
//! the library's message.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The exception classes shmq raises, looked up once per interpreter.
pub(crate) enum Kind {
    Full,
    Empty,
    Error,
    MessageTooLarge,
    SegmentNotFound,
    InvalidOptions,
    QueueClosed,
}

impl Kind {
    fn class<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyType>> {
        static FULL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static EMPTY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static TOO_LARGE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static NOT_FOUND: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static INVALID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static CLOSED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        let (cell, module, name) = match self {
            Kind::Full => (&FULL, "queue", "Full"),
            Kind::Empty => (&EMPTY, "queue", "Empty"),
            Kind::Error => (&ERROR, "shmq._errors", "Error"),
            Kind::MessageTooLarge => (&TOO_LARGE, "shmq._errors", "MessageTooLarge"),
            Kind::SegmentNotFound => (&NOT_FOUND, "shmq._errors", "SegmentNotFound"),
            Kind::InvalidOptions => (&INVALID, "shmq._errors", "InvalidOptions"),
            Kind::QueueClosed => (&CLOSED, "shmq._errors", "QueueClosed"),
        };
        cell.import(py, module, name)
    }

    /// An exception of this kind carrying `message`.
    pub(crate) fn err(&self, message: impl Into<String>) -> PyErr {
        let message = message.into();
        Python::attach(|py| match self.class(py) {
            Ok(class) => PyErr::from_type(class.clone(), message),
            Err(lookup_failed) => lookup_failed,
        })
    }
}

/// Errors from creating, opening or removing a segment.
pub(crate) fn segment_error(e: shmq::Error) -> PyErr {
    let kind = match e {
        shmq::Error::NotFound { .. } => Kind::SegmentNotFound,
        shmq::Error::InvalidName { .. }
        | shmq::Error::InvalidOptions { .. }
        | shmq::Error::InvalidMode { .. } => Kind::InvalidOptions,
        _ => Kind::Error,
    };
    kind.err(e.to_string())
}

pub(crate) fn try_send_error(e: shmq::TrySendError) -> PyErr {
    match e {
        shmq::TrySendError::Full => Kind::Full.err("queue is full"),
        shmq::TrySendError::TooLarge { .. } => Kind::MessageTooLarge.err(e.to_string()),
        _ => Kind::Error.err(e.to_string()),
    }
}

pub(crate) fn send_error(e: shmq::SendError) -> PyErr {
    match e {
        shmq::SendError::Timeout => Kind::Full.err("timed out: the queue stayed full"),
        shmq::SendError::TooLarge { .. } => Kind::MessageTooLarge.err(e.to_string()),
        _ => Kind::Error.err(e.to_string()),
    }
}

pub(crate) fn try_recv_error(e: shmq::TryRecvError) -> PyErr {
    match e {
        shmq::TryRecvError::Empty => Kind::Empty.err("queue is empty"),
        _ => Kind::Error.err(e.to_string()),
    }
}

pub(crate) fn recv_error(e: shmq::RecvError) -> PyErr {
    match e {
        shmq::RecvError::Timeout => Kind::Empty.err("timed out: no message arrived"),
        _ => Kind::Error.err(e.to_string()),
    }
}
