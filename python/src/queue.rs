//! `shmq.Queue`: the `multiprocessing.Queue` interface over a shmq segment.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::codec::{self, Codec, LARGE};
use crate::errors::{self, Kind};
use crate::handles::{Handles, Lent};
use crate::view::{self, HeldView};
use crate::wait::{expired, slice_end, Patience};

/// Default capacity of a new queue (messages).
const DEFAULT_CAPACITY: u64 = 1024;
/// Default largest message of a new queue (bytes, after pickling).
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 4096;
/// Default number of handles that may be attached at once: every process using the
/// queue takes one, and one more per thread blocked in it at the same time.
const DEFAULT_MAX_PARTICIPANTS: u64 = 256;
/// Most messages one claim of the batch API moves.
const BATCH: usize = 256;

/// A queue in a POSIX shared-memory segment, shared by any number of processes.
#[pyclass(module = "shmq", frozen)]
pub(crate) struct Queue {
    handles: Arc<Handles>,
    name: String,
    capacity: u64,
    max_message_size: u64,
    codec: Codec,
    closed: AtomicBool,
}

/// Makes a Python object of a message while it is in its slot.
type Read<'a> = dyn Fn(Python<'_>, &[u8]) -> PyResult<Py<PyAny>> + Sync + 'a;

/// Names of the private segments this process created, removed when it exits.
static PRIVATE: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());

/// A fresh name for a private segment (`py.PID.N.NANOS`).
fn private_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Relaxed: a counter; uniqueness within the process is all it gives.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    format!("py.{}.{n}.{nanos:x}", std::process::id())
}

/// Removes segment `name` and its dead-letter segment, if any.
fn remove(name: &str) -> Result<(), shmq::Error> {
    let removed = shmq::Queue::unlink(name);
    match shmq::Queue::unlink(&format!("{name}.dead")) {
        Ok(()) | Err(shmq::Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    removed
}

impl Queue {
    fn attach(handle: shmq::Queue, codec: Codec) -> Self {
        Self {
            name: handle.name().to_owned(),
            capacity: handle.capacity(),
            max_message_size: handle.max_message_size(),
            handles: Handles::new(handle),
            codec,
            closed: AtomicBool::new(false),
        }
    }

    /// A handle for one operation.
    fn lend(&self) -> PyResult<Lent> {
        // Relaxed: `close` is a request from this process, not a synchronisation.
        if self.closed.load(Ordering::Relaxed) {
            return Err(Kind::QueueClosed.err(format!(
                "queue `{}` was closed in this process: open it again with shmq.Queue.open",
                self.name
            )));
        }
        self.handles.lend().map_err(errors::segment_error)
    }

    /// Sends one message, waiting as `patience` says.
    fn send(&self, py: Python<'_>, message: &[u8], patience: Patience) -> PyResult<()> {
        let mut lent = self.lend()?;
        let first = if message.len() < LARGE {
            lent.try_send(message)
        } else {
            let (back, sent) = py.detach(move || {
                let sent = lent.try_send(message);
                (lent, sent)
            });
            lent = back;
            sent
        };
        let deadline = match (first, patience) {
            (Ok(()), _) => return Ok(()),
            (Err(shmq::TrySendError::Full), Patience::Until(deadline)) => deadline,
            (Err(e), _) => return Err(errors::try_send_error(e)),
        };
        loop {
            let end = slice_end(deadline);
            let (back, sent) = py.detach(move || {
                let sent = lent.send_deadline(message, end);
                (lent, sent)
            });
            lent = back;
            match sent {
                Err(shmq::SendError::Timeout) if !expired(deadline) => py.check_signals()?,
                sent => return sent.map_err(errors::send_error),
            }
        }
    }

    /// The object in `message`, or a `shmq.DecodeError` holding its bytes.
    fn decode(&self, py: Python<'_>, message: &[u8]) -> PyResult<Py<PyAny>> {
        self.codec.decode(py, message).map_err(|cause| {
            errors::decode_error(py, cause, Vec::new(), vec![(0, message.to_vec())])
        })
    }

    /// Receives one message, waiting as `patience` says, and makes a Python object of
    /// it with `read` while it is still in its slot.
    fn receive(&self, py: Python<'_>, patience: Patience, read: &Read<'_>) -> PyResult<Py<PyAny>> {
        let mut lent = self.lend()?;
        let deadline = match (lent.try_recv_with(|bytes| read(py, bytes)), patience) {
            (Ok(object), _) => return object,
            (Err(shmq::TryRecvError::Empty), Patience::Until(deadline)) => deadline,
            (Err(e), _) => return Err(errors::try_recv_error(e)),
        };
        loop {
            let end = slice_end(deadline);
            let (back, received) = py.detach(move || {
                let received =
                    lent.recv_with_deadline(end, |bytes| Python::attach(|py| read(py, bytes)));
                (lent, received)
            });
            lent = back;
            match received {
                Ok(object) => return object,
                Err(shmq::RecvError::Timeout) if !expired(deadline) => py.check_signals()?,
                Err(e) => return Err(errors::recv_error(e)),
            }
        }
    }

    /// Sends every message of `messages` (checked against the maximum first: all or
    /// none are refused), waiting as `patience` says; `queue.Full` if time runs out,
    /// with the number sent in its `sent` attribute.
    fn send_many(&self, py: Python<'_>, messages: &[&[u8]], patience: Patience) -> PyResult<()> {
        if let Some(len) = messages.iter().map(|m| m.len()).max() {
            if len as u64 > self.max_message_size {
                return Err(errors::try_send_error(shmq::TrySendError::TooLarge {
                    len,
                    max: self.max_message_size,
                }));
            }
        }
        let lent = self.lend()?;
        let mut sent = 0;
        while sent < messages.len() {
            match lent.try_send_batch(&messages[sent..]) {
                Ok(n) => sent += n,
                Err(shmq::TrySendError::Full) => break,
                Err(e) => return Err(errors::try_send_error(e)),
            }
        }
        let mut lent = lent;
        while sent < messages.len() {
            let deadline = match patience {
                Patience::Until(deadline) if !expired(deadline) => deadline,
                _ => return Err(partly_sent(py, sent, messages.len())),
            };
            let wait = slice_end(deadline).saturating_duration_since(Instant::now());
            let rest = &messages[sent..];
            let (back, result) = py.detach(move || {
                let result = lent.send_batch_timeout(rest, wait);
                (lent, result)
            });
            lent = back;
            sent += result.map_err(errors::send_error)?;
            py.check_signals()?;
        }
        Ok(())
    }

    /// Receives up to `max` messages as `bytes`, waiting as `patience` says for the
    /// first; `queue.Empty` if none came.
    fn receive_many<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        patience: Patience,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let mut lent = self.lend()?;
        let mut messages = Vec::new();
        let take = |lent: &Lent, messages: &mut Vec<Bound<'py, PyBytes>>| {
            let want = (max - messages.len()).min(BATCH);
            lent.try_recv_batch_with(want, |bytes| messages.push(codec::new_bytes(py, bytes)))
        };
        match take(&lent, &mut messages) {
            Ok(_) => {}
            Err(shmq::TryRecvError::Empty) => {
                let Patience::Until(deadline) = patience else {
                    return Err(errors::try_recv_error(shmq::TryRecvError::Empty));
                };
                let want = max.min(BATCH);
                loop {
                    let wait = slice_end(deadline).saturating_duration_since(Instant::now());
                    let (back, received) = py.detach(move || {
                        let received = lent.recv_batch(want, Some(wait));
                        (lent, received)
                    });
                    lent = back;
                    match received {
                        Ok(batch) => {
                            messages.extend(batch.iter().map(|m| codec::new_bytes(py, m)));
                            break;
                        }
                        Err(shmq::RecvError::Timeout) if !expired(deadline) => {
                            py.check_signals()?
                        }
                        Err(e) => return Err(errors::recv_error(e)),
                    }
                }
            }
            Err(e) => return Err(errors::try_recv_error(e)),
        }
        // Whatever else is there already, up to `max`.
        while messages.len() < max {
            match take(&lent, &mut messages) {
                Ok(_) => {}
                Err(shmq::TryRecvError::Empty) => break,
                Err(e) => return Err(errors::try_recv_error(e)),
            }
        }
        Ok(messages)
    }
}

/// `queue.Full` for a batch of which `sent` of `total` went out.
fn partly_sent(py: Python<'_>, sent: usize, total: usize) -> PyErr {
    let err = Kind::Full.err(format!(
        "queue stayed full: {sent} of {total} messages were sent (the first {sent}, in order; \
         see the exception's `sent`)"
    ));
    if let Err(e) = err.value(py).setattr("sent", sent) {
        return e;
    }
    err
}

#[pymethods]
impl Queue {
    /// Creates a queue, or attaches to the named one.
    ///
    /// With no `name`, a private segment with a generated name is created; it is
    /// removed when this process exits normally (not when a forked child does), and
    /// other processes reach it by receiving the queue itself (it pickles by name).
    /// With a `name`, the segment is created if missing and attached to otherwise
    /// (an existing segment keeps its own capacity and message size).
    ///
    /// `capacity` is a power of two; `max_message_size` bounds a message after
    /// pickling. `dumps`/`loads` replace pickle (`dumps(obj) -> bytes`,
    /// `loads(bytes) -> obj`).
    #[new]
    #[pyo3(signature = (name=None, capacity=DEFAULT_CAPACITY, max_message_size=DEFAULT_MAX_MESSAGE_SIZE, *, dumps=None, loads=None, max_participants=DEFAULT_MAX_PARTICIPANTS))]
    fn new(
        name: Option<String>,
        capacity: u64,
        max_message_size: u64,
        dumps: Option<Py<PyAny>>,
        loads: Option<Py<PyAny>>,
        max_participants: u64,
    ) -> PyResult<Self> {
        let options =
            shmq::Options::new(capacity, max_message_size).max_participants(max_participants);
        let handle = match &name {
            Some(name) => shmq::Queue::open_or_create(name, &options),
            None => {
                let name = private_name();
                let created = shmq::Queue::create(&name, &options);
                if created.is_ok() {
                    let mut private = PRIVATE.lock().unwrap_or_else(|e| e.into_inner());
                    private.push((name, std::process::id()));
                }
                created
            }
        }
        .map_err(errors::segment_error)?;
        Ok(Self::attach(handle, Codec { dumps, loads }))
    }

    /// Attaches to the existing queue `name` (`shmq.SegmentNotFound` if there is none).
    #[staticmethod]
    #[pyo3(signature = (name, *, dumps=None, loads=None))]
    fn open(name: &str, dumps: Option<Py<PyAny>>, loads: Option<Py<PyAny>>) -> PyResult<Self> {
        let handle = shmq::Queue::open(name).map_err(errors::segment_error)?;
        Ok(Self::attach(handle, Codec { dumps, loads }))
    }

    /// The segment's name (`/dev/shm/shmq.NAME`).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// How many messages the queue holds.
    #[getter]
    fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The largest message, in bytes (after pickling).
    #[getter]
    fn max_message_size(&self) -> u64 {
        self.max_message_size
    }

    /// Puts `obj` (pickled). Blocks while the queue is full, at most `timeout`
    /// seconds if given; `queue.Full` then, or at once with `block=False`.
    /// `shmq.MessageTooLarge` (a `ValueError`) if the pickle exceeds
    /// `max_message_size`.
    #[pyo3(signature = (obj, block=true, timeout=None))]
    fn put(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let patience = Patience::from_args(block, timeout)?;
        let message = self.codec.encode(obj)?;
        self.send(py, message.as_bytes(), patience)
    }

    /// `put(obj, block=False)`.
    fn put_nowait(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let message = self.codec.encode(obj)?;
        self.send(py, message.as_bytes(), Patience::Never)
    }

    /// Puts `data` as it is (any bytes-like object), without pickling.
    #[pyo3(signature = (data, block=true, timeout=None))]
    fn put_bytes(
        &self,
        py: Python<'_>,
        data: Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let patience = Patience::from_args(block, timeout)?;
        let data = codec::into_bytes(data)?;
        self.send(py, data.as_bytes(), patience)
    }

    /// Removes and returns the next object. Blocks while the queue is empty, at most
    /// `timeout` seconds if given; `queue.Empty` then, or at once with
    /// `block=False`.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let patience = Patience::from_args(block, timeout)?;
        self.receive(py, patience, &|py, bytes| self.decode(py, bytes))
    }

    /// `get(block=False)`.
    fn get_nowait(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.receive(py, Patience::Never, &|py, bytes| self.decode(py, bytes))
    }

    /// Removes and returns the next message as `bytes`, without unpickling.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get_bytes(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let patience = Patience::from_args(block, timeout)?;
        self.receive(py, patience, &|py, bytes| {
            Ok(codec::new_bytes(py, bytes).into_any().unbind())
        })
    }

    /// Puts every object of `objs`, in order, moving up to 256 per claim on the
    /// queue. All are pickled and checked first: if one is too large, none is sent.
    /// If time runs out, `queue.Full` says how many went (its `sent` attribute: the
    /// first that many, in order).
    #[pyo3(signature = (objs, block=true, timeout=None))]
    fn put_many(
        &self,
        py: Python<'_>,
        objs: &Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let patience = Patience::from_args(block, timeout)?;
        let encoded = objs
            .try_iter()?
            .map(|obj| self.codec.encode(&obj?))
            .collect::<PyResult<Vec<_>>>()?;
        let messages: Vec<&[u8]> = encoded.iter().map(|m| m.as_bytes()).collect();
        self.send_many(py, &messages, patience)
    }

    /// Removes and returns a list of up to `max_messages` objects: waits (as `get`
    /// does) for the first, then takes whatever else is already there. The messages
    /// are taken before they are unpickled: if unpickling any raises, the batch comes
    /// back in a `shmq.DecodeError` (`objects`: those that decoded, in order;
    /// `undecodable`: `(position, bytes)` of the others), so nothing is lost.
    #[pyo3(signature = (max_messages=BATCH, block=true, timeout=None))]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        max_messages: usize,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        if max_messages == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "'max_messages' must be at least 1",
            ));
        }
        let patience = Patience::from_args(block, timeout)?;
        let messages = self.receive_many(py, max_messages, patience)?;
        let mut objects = Vec::with_capacity(messages.len());
        let mut undecodable = Vec::new();
        let mut first_refusal = None;
        for (position, message) in messages.iter().enumerate() {
            match self.codec.decode(py, message.as_bytes()) {
                Ok(object) => objects.push(object),
                Err(e) => {
                    undecodable.push((position, message.as_bytes().to_vec()));
                    first_refusal.get_or_insert(e);
                }
            }
        }
        match first_refusal {
            None => PyList::new(py, objects),
            Some(cause) => Err(errors::decode_error(py, cause, objects, undecodable)),
        }
    }

    /// Receives the next message without copying it: use as ``with q.get_view() as
    /// view:``, where ``view`` is a read-only memoryview of the message in shared
    /// memory. The message is acknowledged when the block ends, or given back for
    /// another delivery if the block raises (a process killed inside the block has
    /// its message delivered to another consumer). The view is released when the
    /// block ends: copy what you keep (``bytes(view)``). Views made from it (slices,
    /// NumPy arrays) keep the message held until they are released. Waits as `get`.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get_view(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<HeldView> {
        let patience = Patience::from_args(block, timeout)?;
        view::receive(py, self.lend()?, patience)
    }

    /// Receives the next message without copying it and returns
    /// ``callback(view)``, ``view`` being a read-only memoryview of the message valid
    /// during the call. The message is acknowledged when the callback returns, or
    /// given back for another delivery if it raises. Waits as `get`.
    #[pyo3(signature = (callback, block=true, timeout=None))]
    fn get_with(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let patience = Patience::from_args(block, timeout)?;
        view::receive(py, self.lend()?, patience)?.run(py, callback)
    }

    /// Approximate number of messages in the queue (others may be sending and
    /// receiving while it is counted).
    fn qsize(&self) -> PyResult<u64> {
        Ok(self.lend()?.len())
    }

    /// Whether the queue is empty (approximate, as `qsize`).
    fn empty(&self) -> PyResult<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Whether the queue is full (approximate, as `qsize`).
    fn full(&self) -> PyResult<bool> {
        Ok(self.qsize()? >= self.capacity)
    }

    /// Closes this process's use of the queue: later calls on this object raise
    /// `shmq.QueueClosed`. The segment and its messages stay for other processes;
    /// `unlink` removes the name.
    fn close(&self) {
        // Relaxed: see `lend`.
        self.closed.store(true, Ordering::Relaxed);
        self.handles.close();
    }

    /// Does nothing: there is no feeder thread to wait for (every `put` has
    /// written its message into shared memory when it returns).
    fn join_thread(&self) {}

    /// Does nothing: there is no feeder thread (see `join_thread`).
    fn cancel_join_thread(&self) {}

    /// Removes the segment's name (and its dead-letter segment's): processes already
    /// attached keep using it; no other can attach. Removing a name already gone is
    /// not an error.
    fn unlink(&self) -> PyResult<()> {
        let mut private = PRIVATE.lock().unwrap_or_else(|e| e.into_inner());
        private.retain(|(name, _)| name != &self.name);
        match remove(&self.name) {
            Ok(()) | Err(shmq::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(errors::segment_error(e)),
        }
    }

    /// Pickles as the segment's name (and the `dumps`/`loads` pair), so that the
    /// queue can be handed to other processes under any start method.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let rebuild = py.import("shmq._shmq")?.getattr("_rebuild")?;
        let args = (
            self.name.clone(),
            self.codec.dumps.as_ref().map(|f| f.clone_ref(py)),
            self.codec.loads.as_ref().map(|f| f.clone_ref(py)),
        );
        (rebuild, args).into_pyobject(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "shmq.Queue(name={:?}, capacity={}, max_message_size={})",
            self.name, self.capacity, self.max_message_size
        )
    }
}

/// Rebuilds a pickled queue: attaches to the segment by name.
#[pyfunction(name = "_rebuild")]
pub(crate) fn rebuild(
    name: &str,
    dumps: Option<Py<PyAny>>,
    loads: Option<Py<PyAny>>,
) -> PyResult<Queue> {
    Queue::open(name, dumps, loads)
}

/// Removes the segment `name` (and its dead-letter segment): processes attached keep
/// using it. `shmq.SegmentNotFound` if there is none.
#[pyfunction]
pub(crate) fn unlink(name: &str) -> PyResult<()> {
    remove(name).map_err(errors::segment_error)
}

/// Removes the private segments this process created (registered with `atexit`);
/// a forked child, which inherited the list, removes nothing.
#[pyfunction(name = "_unlink_private_segments")]
pub(crate) fn unlink_private_segments() {
    let mut private = PRIVATE.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::process::id();
    for (name, creator) in private.drain(..) {
        if creator == me {
            // Gone already (removed by hand): nothing left to do.
            let _ = remove(&name);
        }
    }
}
