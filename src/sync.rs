//! The one place the algorithm gets its concurrency primitives from.
//!
//! Under `--cfg loom` every atomic, cell and spin hint comes from [`loom`], so the
//! model checker explores the very code that ships (see `loom-tests/`). In a normal
//! build they are `std`'s. Nothing in [`crate::ring`] imports atomics from anywhere else.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Payload bytes of the heap-backed broadcast memory the models run on: one atomic
/// per byte, so a subscriber's racing copy of a slot being overwritten is a set of
/// Relaxed loads loom can interleave with the writer's stores (a torn read), rather
/// than a data race.
#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU8;

/// A hint that we are busy-waiting. Under loom it yields to the scheduler so the
/// model can make progress in the spinning thread's absence.
#[inline]
pub fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Give the core away: the step after spinning in every wait strategy.
#[inline]
pub fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// Interior-mutable byte storage for the heap-backed ring the models run on:
/// `loom::cell::UnsafeCell`, which checks that producer writes and consumer reads of
/// a slot's bytes are ordered by the slot's sequence (a missing Release/Acquire shows
/// up as a causality violation even when the values happen to look right).
#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
