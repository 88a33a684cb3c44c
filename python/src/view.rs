//! Zero-copy receives: a message lent to Python as a read-only `memoryview` of its
//! slot, inside a callback (`Queue.get_with`) or a `with` block (`Queue.get_view`).
//!
//! The memoryview's base is a small exporter object ([`Exporter`], a type made with
//! `PyType_FromSpec` so that it can implement the buffer protocol under the stable
//! ABI of Python 3.9) that owns the held message (a [`Lease`]: the library's
//! `Delivery` and the handle it borrows). When the block ends the view is released,
//! so touching it raises `ValueError`. The message is settled (acknowledged, or
//! given back for another delivery if the block raised) once no buffer on the
//! exporter is left: at once normally; later if the caller made views of its own
//! from it (slices, `memoryview(view)`, NumPy arrays), which keep the message held,
//! and readable, until they go. A view never outlives the message it shows.

use std::ffi::{c_int, c_void};
use std::mem::ManuallyDrop;
use std::ptr;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::errors;
use crate::handles::Lent;
use crate::wait::{expired, slice_end, Patience};

/// What happens to a held message when its views are gone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Still in use: the block has not ended.
    Open = 0,
    /// Acknowledge it (the block ended normally).
    Acknowledge = 1,
    /// Give it back for another delivery (the block raised).
    GiveBack = 2,
}

/// A held message and the handle it is held through.
struct Lease {
    // Before `lent`, and never dropped after it: it borrows the handle `lent` owns.
    delivery: ManuallyDrop<shmq::Delivery<'static>>,
    lent: Lent,
}

impl Lease {
    fn settle(mut self, how: Settle) {
        // SAFETY: `delivery` is taken exactly once, here; `self` is consumed.
        let delivery = unsafe { ManuallyDrop::take(&mut self.delivery) };
        if self.lent.inherited() {
            // Received by a parent before a fork: the parent settles it, not us.
            std::mem::forget(delivery);
        } else if how == Settle::GiveBack {
            if let Err(kept) = delivery.abandon() {
                // No record free to carry it back: acknowledging is the only way
                // left that does not leave it stuck.
                drop(kept.delivery);
            }
        } else {
            drop(delivery);
        }
        // `lent` drops now, after the delivery: the handle goes back to the pool.
    }
}

/// `Py_buffer` as CPython lays it out (part of the stable ABI from 3.11, unchanged
/// since 3.3; pyo3 exposes it only for 3.11+ builds).
#[repr(C)]
struct PyBuffer {
    buf: *mut c_void,
    obj: *mut ffi::PyObject,
    len: ffi::Py_ssize_t,
    itemsize: ffi::Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut std::ffi::c_char,
    shape: *mut ffi::Py_ssize_t,
    strides: *mut ffi::Py_ssize_t,
    suboffsets: *mut ffi::Py_ssize_t,
    internal: *mut c_void,
}

const PYBUF_WRITABLE: c_int = 0x0001;
const PYBUF_FORMAT: c_int = 0x0004;
const PYBUF_ND: c_int = 0x0008;
const PYBUF_STRIDES: c_int = 0x0010 | PYBUF_ND;

/// The Python object that exports a held message's bytes. Only touched with the
/// interpreter lock held.
#[repr(C)]
struct Exporter {
    ob_base: ffi::PyObject,
    /// The held message (`Box::into_raw`); null once settled (or in an instance
    /// made from Python, which exports nothing).
    lease: *mut Lease,
    data: *const u8,
    len: ffi::Py_ssize_t,
    /// Buffers handed out and not yet released.
    exports: ffi::Py_ssize_t,
    /// `Settle` as an integer: zero-filled allocation reads as `Open`.
    settle: c_int,
}

/// Sets a `BufferError` and fails a `getbuffer` call.
///
/// # Safety
/// The interpreter lock is held; `view` is the caller's buffer structure.
unsafe fn refuse(view: *mut PyBuffer, message: &std::ffi::CStr) -> c_int {
    // SAFETY: the interpreter lock is held (caller); the message is NUL-terminated.
    unsafe { ffi::PyErr_SetString(ffi::PyExc_BufferError, message.as_ptr()) };
    // SAFETY: `view` is a valid buffer structure owned by the caller.
    unsafe { (*view).obj = ptr::null_mut() };
    -1
}

/// `bf_getbuffer`: a read-only, one-dimensional view of the message's bytes.
unsafe extern "C" fn get_buffer(
    obj: *mut ffi::PyObject,
    view: *mut PyBuffer,
    flags: c_int,
) -> c_int {
    let this = obj.cast::<Exporter>();
    // SAFETY: CPython calls this slot only on instances of the exporter type, so
    // `obj` is an `Exporter`, with the interpreter lock held.
    let exporter = unsafe { &mut *this };
    if exporter.lease.is_null() || exporter.settle != Settle::Open as c_int {
        // SAFETY: interpreter lock held; `view` is the caller's.
        return unsafe {
            refuse(view, c"the message was settled when its block ended: copy what you need inside it (bytes(view))")
        };
    }
    if flags & PYBUF_WRITABLE != 0 {
        // SAFETY: as above.
        return unsafe { refuse(view, c"a received message is read-only") };
    }
    // SAFETY: `view` points at a buffer structure the caller owns, to be filled in;
    // `shape` and `strides` point into it, as `PyBuffer_FillInfo` does, so they live
    // as long as it. `obj` gets a new reference, released by `PyBuffer_Release`.
    unsafe {
        let view = &mut *view;
        view.buf = exporter.data as *mut c_void;
        ffi::Py_INCREF(obj);
        view.obj = obj;
        view.len = exporter.len;
        view.itemsize = 1;
        view.readonly = 1;
        view.ndim = 1;
        view.format = if flags & PYBUF_FORMAT != 0 {
            c"B".as_ptr() as *mut _
        } else {
            ptr::null_mut()
        };
        view.shape = if flags & PYBUF_ND != 0 {
            &mut view.len
        } else {
            ptr::null_mut()
        };
        view.strides = if flags & PYBUF_STRIDES == PYBUF_STRIDES {
            &mut view.itemsize
        } else {
            ptr::null_mut()
        };
        view.suboffsets = ptr::null_mut();
        view.internal = ptr::null_mut();
    }
    exporter.exports += 1;
    0
}

/// Settles the message if its block ended and no buffer is left.
///
/// # Safety
/// `this` is a live `Exporter`; the interpreter lock is held.
unsafe fn settle_if_done(this: *mut Exporter) {
    // SAFETY: the caller's contract.
    let exporter = unsafe { &mut *this };
    let how = match exporter.settle {
        1 => Settle::Acknowledge,
        2 => Settle::GiveBack,
        _ => return,
    };
    if exporter.exports > 0 || exporter.lease.is_null() {
        return;
    }
    let lease = std::mem::replace(&mut exporter.lease, ptr::null_mut());
    // SAFETY: a non-null `lease` came from `Box::into_raw` and is taken once (the
    // field is nulled above).
    let lease = unsafe { Box::from_raw(lease) };
    (*lease).settle(how);
}

/// `bf_releasebuffer`: one buffer fewer; the last one settles a finished message.
unsafe extern "C" fn release_buffer(obj: *mut ffi::PyObject, _view: *mut PyBuffer) {
    let this = obj.cast::<Exporter>();
    // SAFETY: called by CPython on an exporter instance, lock held.
    unsafe {
        (*this).exports -= 1;
        settle_if_done(this);
    }
}

/// `tp_dealloc`: a message still held (its block never ended) is given back.
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    let this = obj.cast::<Exporter>();
    // SAFETY: called by CPython once, on an exporter instance whose last reference
    // went, lock held; no buffer is outstanding (each holds a reference).
    unsafe {
        if (*this).settle == Settle::Open as c_int {
            (*this).settle = Settle::GiveBack as c_int;
        }
        settle_if_done(this);
        let tp = ffi::Py_TYPE(obj);
        let free = ffi::PyType_GetSlot(tp, ffi::Py_tp_free);
        let free: ffi::freefunc = std::mem::transmute(free);
        free(obj.cast());
        // Instances of heap types hold a reference to their type.
        ffi::Py_DECREF(tp.cast());
    }
}

/// The exporter type, made once per interpreter.
fn exporter_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    TYPE.get_or_try_init(py, || {
        let mut slots = [
            ffi::PyType_Slot {
                slot: ffi::Py_bf_getbuffer,
                pfunc: get_buffer as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_bf_releasebuffer,
                pfunc: release_buffer as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_dealloc,
                pfunc: dealloc as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: 0,
                pfunc: ptr::null_mut(),
            },
        ];
        let mut spec = ffi::PyType_Spec {
            // 'static: a heap type made from a spec keeps pointing at its name.
            name: c"shmq._shmq.HeldMessage".as_ptr(),
            basicsize: std::mem::size_of::<Exporter>() as c_int,
            itemsize: 0,
            flags: ffi::Py_TPFLAGS_DEFAULT as _,
            slots: slots.as_mut_ptr(),
        };
        // SAFETY: `spec` and `slots` are valid for the call (CPython copies what it
        // keeps, except the 'static name); the slot functions have the signatures
        // CPython calls them with (`PyBuffer` matches `Py_buffer`'s layout).
        let raw = unsafe { ffi::PyType_FromSpec(&mut spec) };
        // SAFETY: a new reference to a type, or null with an exception set.
        let tp = unsafe { Bound::from_owned_ptr_or_err(py, raw)? };
        Ok(tp.cast_into::<PyType>()?.unbind())
    })
    .map(|tp| tp.bind(py))
}

/// A message held for a `with` block or a callback (what `Queue.get_view` returns).
#[pyclass(module = "shmq", name = "HeldView")]
pub(crate) struct HeldView {
    exporter: Py<PyAny>,
    view: Option<Py<PyAny>>,
    deliveries: u32,
}

/// Holds `delivery` (received through `lent`) in a new exporter.
fn hold(py: Python<'_>, delivery: shmq::Delivery<'static>, lent: Lent) -> PyResult<HeldView> {
    let deliveries = delivery.deliveries();
    let (data, len) = (delivery.as_ptr(), delivery.len());
    let lease = Lease {
        delivery: ManuallyDrop::new(delivery),
        lent,
    };
    let tp = match exporter_type(py) {
        Ok(tp) => tp,
        Err(e) => {
            lease.settle(Settle::GiveBack);
            return Err(e);
        }
    };
    // SAFETY: `tp` is the exporter type; `PyType_GenericAlloc` returns a zero-filled
    // instance (new reference) or null with an exception set.
    let raw = unsafe { ffi::PyType_GenericAlloc(tp.as_type_ptr(), 0) };
    if raw.is_null() {
        lease.settle(Settle::GiveBack);
        return Err(PyErr::fetch(py));
    }
    let this = raw.cast::<Exporter>();
    // SAFETY: `raw` is a fresh, zero-filled exporter instance no one else sees yet.
    unsafe {
        (*this).lease = Box::into_raw(Box::new(lease));
        (*this).data = data;
        (*this).len = len as ffi::Py_ssize_t;
    }
    // SAFETY: `raw` is a new reference.
    let exporter = unsafe { Bound::from_owned_ptr(py, raw) }.unbind();
    Ok(HeldView {
        exporter,
        view: None,
        deliveries,
    })
}

/// Moves a value that holds no Python object through `Python::detach`, which runs
/// its closure on the calling thread.
struct SameThread<T>(T);
// SAFETY: `detach` runs the closure on this very thread, so the value never goes
// to another one; it holds no Python object, so using it without the interpreter
// lock is sound.
unsafe impl<T> Send for SameThread<T> {}

/// Receives a message into a [`HeldView`], waiting as `patience` says.
pub(crate) fn receive(py: Python<'_>, mut lent: Lent, patience: Patience) -> PyResult<HeldView> {
    let handle = lent.handle_ptr();
    // SAFETY: `handle` is the boxed handle `lent` owns: it stays at this address
    // while `lent` lives, and the `Lease` made below keeps `lent` alive for as long
    // as the delivery (dropping the delivery first). Nothing else reaches the handle
    // meanwhile: `lent` is not used until the lease settles.
    let first: Result<shmq::Delivery<'static>, _> = unsafe { &mut *handle }.try_receive();
    let delivery = match (first, patience) {
        (Ok(delivery), _) => delivery,
        (Err(shmq::TryRecvError::Empty), Patience::Until(deadline)) => loop {
            let end = slice_end(deadline);
            let target = SameThread(handle);
            let received = py.detach(move || {
                let target = target;
                // SAFETY: as for `first` (no delivery is alive at this point).
                SameThread(unsafe { &mut *target.0 }.receive_deadline(end))
            });
            match received.0 {
                Ok(delivery) => break delivery,
                Err(shmq::RecvError::Timeout) if !expired(deadline) => py.check_signals()?,
                Err(e) => return Err(errors::recv_error(e)),
            }
        },
        (Err(e), _) => return Err(errors::try_recv_error(e)),
    };
    hold(py, delivery, lent)
}

impl HeldView {
    /// The read-only memoryview of the message (made on first use).
    fn view<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(view) = &self.view {
            return Ok(view.bind(py).clone());
        }
        // SAFETY: `exporter` is a live object; a new reference or null with an
        // exception set comes back.
        let raw = unsafe { ffi::PyMemoryView_FromObject(self.exporter.as_ptr()) };
        // SAFETY: as said.
        let view = unsafe { Bound::from_owned_ptr_or_err(py, raw)? };
        self.view = Some(view.clone().unbind());
        Ok(view)
    }

    /// Ends the block: the view is released and the message settled `how` as soon
    /// as no buffer on it is left.
    fn finish(&mut self, py: Python<'_>, how: Settle) -> PyResult<()> {
        let this = self.exporter.as_ptr().cast::<Exporter>();
        // SAFETY: `exporter` is an `Exporter` (made by `hold`), alive (we hold a
        // reference), and the interpreter lock is held.
        unsafe {
            if (*this).settle != Settle::Open as c_int {
                return Ok(());
            }
            (*this).settle = how as c_int;
        }
        if let Some(view) = self.view.take() {
            // Fails (BufferError) only while something still holds a buffer of
            // the view itself: then that buffer keeps the message until released.
            if let Err(e) = view.bind(py).call_method0(pyo3::intern!(py, "release")) {
                if !e.is_instance_of::<PyBufferError>(py) {
                    return Err(e);
                }
            }
        }
        // SAFETY: as above.
        unsafe { settle_if_done(this) };
        Ok(())
    }

    /// Runs `callback(view)`, then acknowledges the message, or gives it back if
    /// the callback raised.
    pub(crate) fn run(
        &mut self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let view = self.view(py)?;
        match callback.call1((view,)) {
            Ok(result) => {
                self.finish(py, Settle::Acknowledge)?;
                Ok(result.unbind())
            }
            Err(e) => {
                self.finish(py, Settle::GiveBack)?;
                Err(e)
            }
        }
    }
}

#[pymethods]
impl HeldView {
    /// The message's bytes as a read-only memoryview, valid until the block ends.
    fn __enter__<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.view(py)
    }

    /// Acknowledges the message; if the block raised, gives it back for another
    /// delivery instead. Does not suppress the exception.
    #[pyo3(signature = (exc_type, _exc_value, _traceback))]
    fn __exit__(
        &mut self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc_value: Option<Bound<'_, PyAny>>,
        _traceback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let how = if exc_type.is_some_and(|t| !t.is_none()) {
            Settle::GiveBack
        } else {
            Settle::Acknowledge
        };
        self.finish(py, how)?;
        Ok(false)
    }

    /// Which delivery of the message this is: 1 the first time, one more for each
    /// consumer that died holding it or gave it back.
    #[getter]
    fn deliveries(&self) -> u32 {
        self.deliveries
    }
}
