//! Between Python objects and message bytes: pickling (or a user's `dumps`/`loads`),
//! `bytes` objects made from a slot (large ones copied without the interpreter
//! lock), and short-lived `memoryview`s over a slot.

use std::os::raw::c_char;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyInt};

/// Messages at least this long are copied with the interpreter lock released.
pub(crate) const LARGE: usize = 64 * 1024;

/// How objects become messages and back: pickle, or the user's pair.
pub(crate) struct Codec {
    /// `None`: `pickle.dumps` at the highest protocol.
    pub(crate) dumps: Option<Py<PyAny>>,
    /// `None`: `pickle.loads`.
    pub(crate) loads: Option<Py<PyAny>>,
}

fn pickle<'py>(py: Python<'py>, name: &'static str) -> PyResult<&'py Bound<'py, PyAny>> {
    static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static PROTOCOL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let cell = match name {
        "dumps" => &DUMPS,
        "loads" => &LOADS,
        _ => &PROTOCOL,
    };
    cell.import(py, "pickle", name)
}

impl Codec {
    /// The message for `obj`.
    pub(crate) fn encode<'py>(&self, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let py = obj.py();
        let encoded = match &self.dumps {
            Some(dumps) => dumps.bind(py).call1((obj,))?,
            None => {
                let protocol = pickle(py, "HIGHEST_PROTOCOL")?.cast::<PyInt>()?;
                pickle(py, "dumps")?.call1((obj, protocol))?
            }
        };
        into_bytes(encoded)
    }

    /// The object in `message`, read in place where the decoder allows it.
    pub(crate) fn decode(&self, py: Python<'_>, message: &[u8]) -> PyResult<Py<PyAny>> {
        match &self.loads {
            // A user's function may keep what it is given: give it its own bytes.
            Some(loads) => Ok(loads.bind(py).call1((new_bytes(py, message),))?.unbind()),
            // A small message is copied into `bytes` (cheaper than making and
            // releasing a view); a large one is read in place: pickle.loads copies
            // what it keeps out of its argument.
            None if message.len() < LARGE => Ok(pickle(py, "loads")?
                .call1((PyBytes::new(py, message),))?
                .unbind()),
            None => with_memoryview(py, message, |view| {
                Ok(pickle(py, "loads")?.call1((view,))?.unbind())
            }),
        }
    }
}

/// `obj` as `bytes`: itself if it is, else `bytes(obj)` (any buffer).
pub(crate) fn into_bytes(obj: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyBytes>> {
    match obj.cast_into::<PyBytes>() {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let obj = e.into_inner();
            let py = obj.py();
            Ok(py
                .get_type::<PyBytes>()
                .call1((obj,))?
                .cast_into::<PyBytes>()?)
        }
    }
}

/// A `bytes` copy of `message`; a large one is copied without the interpreter lock.
pub(crate) fn new_bytes<'py>(py: Python<'py>, message: &[u8]) -> Bound<'py, PyBytes> {
    if message.len() < LARGE {
        return PyBytes::new(py, message);
    }
    let made = PyBytes::new_with(py, message.len(), |buffer| {
        py.detach(|| buffer.copy_from_slice(message));
        Ok(())
    });
    // `new_with` fails only if allocating the object fails, like `PyBytes::new`
    // (which aborts then); keep the same behaviour.
    made.unwrap_or_else(|_| PyBytes::new(py, message))
}

/// Runs `f` on a read-only `memoryview` of `message`, then releases the view, so
/// that touching it later raises `ValueError` instead of reading a reused slot.
pub(crate) fn with_memoryview<R>(
    py: Python<'_>,
    message: &[u8],
    f: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<R>,
) -> PyResult<R> {
    const PY_BUF_READ: i32 = 0x100;
    // SAFETY: `message` is valid for reads of its length for this whole function
    // (the caller holds the slot); the view is read-only (PyBUF_READ) and is released
    // below before we return, so Python cannot reach the memory after `message`'s
    // lifetime through it. The length fits `Py_ssize_t`: a slice never exceeds
    // isize::MAX bytes.
    let raw = unsafe {
        pyo3::ffi::PyMemoryView_FromMemory(
            message.as_ptr() as *mut c_char,
            message.len() as pyo3::ffi::Py_ssize_t,
            PY_BUF_READ,
        )
    };
    // SAFETY: `raw` is a new reference or null with an exception set.
    let view = unsafe { Bound::from_owned_ptr_or_err(py, raw)? };
    let result = f(&view);
    let released = view.call_method0(pyo3::intern!(py, "release"));
    let value = result?;
    released?;
    Ok(value)
}
