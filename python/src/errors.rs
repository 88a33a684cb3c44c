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
    DecodeError,
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
        static DECODE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        let (cell, module, name) = match self {
            Kind::Full => (&FULL, "queue", "Full"),
            Kind::Empty => (&EMPTY, "queue", "Empty"),
            Kind::Error => (&ERROR, "shmq._errors", "Error"),
            Kind::MessageTooLarge => (&TOO_LARGE, "shmq._errors", "MessageTooLarge"),
            Kind::SegmentNotFound => (&NOT_FOUND, "shmq._errors", "SegmentNotFound"),
            Kind::InvalidOptions => (&INVALID, "shmq._errors", "InvalidOptions"),
            Kind::QueueClosed => (&CLOSED, "shmq._errors", "QueueClosed"),
            Kind::DecodeError => (&DECODE, "shmq._errors", "DecodeError"),
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

/// `shmq.DecodeError` for messages the decoder refused, so that nothing taken from the
/// queue is lost: `data` is the first refused message's bytes, `objects` what did
/// decode (in order) and `undecodable` a `(position, bytes)` pair per refusal;
/// `cause` (the first refusal) becomes `__cause__`. A refusal that is not an
/// `Exception` (`KeyboardInterrupt`, `SystemExit`) is passed on as it is.
pub(crate) fn decode_error(
    py: Python<'_>,
    cause: PyErr,
    objects: Vec<Py<PyAny>>,
    undecodable: Vec<(usize, Vec<u8>)>,
) -> PyErr {
    if !cause.is_instance_of::<pyo3::exceptions::PyException>(py) {
        return cause;
    }
    let Some((_, first)) = undecodable.first() else {
        return cause;
    };
    let message = format!(
        "could not decode {} received message(s) ({cause}); nothing is lost: the \
         exception's `data` holds the first one's {} bytes, `undecodable` every one \
         with its position, and `objects` those that did decode",
        undecodable.len(),
        first.len()
    );
    let err = Kind::DecodeError.err(message);
    let value = err.value(py);
    let attributes = (|| -> PyResult<()> {
        value.setattr("data", pyo3::types::PyBytes::new(py, first))?;
        value.setattr("objects", pyo3::types::PyList::new(py, objects)?)?;
        let pairs = undecodable
            .iter()
            .map(|(i, bytes)| (*i, pyo3::types::PyBytes::new(py, bytes)))
            .collect::<Vec<_>>();
        value.setattr("undecodable", pyo3::types::PyList::new(py, pairs)?)?;
        Ok(())
    })();
    if let Err(e) = attributes {
        return e;
    }
    err.set_cause(py, Some(cause));
    err
}
