//! The create/open handshake on a segment's state word: the creator writes the header
//! and the ring's initial state with plain or Relaxed stores and then publishes
//! [`state::READY`] with a Release store; an opener that reads READY with an Acquire
//! load may read all of it. No system call here: the segment calls these with the
//! word inside its mapping, the loom models (`loom-tests/tests/ready.rs`) with a word
//! on the heap, and both run this code.

use crate::layout::state;
use crate::ring::RingMemory;
use crate::sync::{AtomicU32, Ordering};

/// The creator's side, on a fresh (zero-filled) segment: runs `write_header` (the
/// header's plain stores), writes the ring's initial state into `memory`, and then
/// publishes READY in `state_word`. Nothing may be written after the publish.
pub fn publish<M: RingMemory>(state_word: &AtomicU32, memory: &M, write_header: impl FnOnce()) {
    publish_with(state_word, || {
        write_header();
        crate::ring::initialise(memory);
    });
}

/// [`publish`] for any layout: runs `initialise` (every plain or Relaxed store of
/// the header and the initial state), then publishes READY. A broadcast segment's
/// creator initialises its own layout through this.
pub fn publish_with(state_word: &AtomicU32, initialise: impl FnOnce()) {
    initialise();
    // Release: pairs with the Acquire in `is_ready`; an opener that sees READY sees
    // the header and every initial store above.
    state_word.store(state::READY, Ordering::Release);
}

/// The opener's side: whether the creator has published the segment. Once this has
/// returned `true`, the header and the ring's initial state are visible to the
/// caller's reads that follow it; before, none of it may be trusted.
pub fn is_ready(state_word: &AtomicU32) -> bool {
    // Acquire: pairs with the Release in `publish`.
    state_word.load(Ordering::Acquire) == state::READY
}
