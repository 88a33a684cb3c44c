//! Batches: sending and receiving a run of consecutive slots with one claim on a
//! cursor ([`Ring::claim_run`]). Each slot of a run is published, released, skipped
//! or redelivered on its own, so a participant that dies part-way through a batch
//! leaves each position to the sweep like a single claim.

use super::{publish_slot, Claimed, End, Platform, Ring, RingMemory};
use crate::error::{TryRecvError, TrySendError};
use crate::layout::{pos_add, pos_diff};

impl<M: RingMemory, P: Platform> Ring<M, P> {
    /// Enqueues as many of `messages`, in order, as there are free slots for, with
    /// one claim on the cursor; returns how many (`0`: the ring is full). Refuses
    /// them all, sending none, if one is larger than the maximum. Never blocks.
    pub fn try_send_batch<B: AsRef<[u8]>>(&self, messages: &[B]) -> Result<usize, TrySendError> {
        if let Some(large) = messages
            .iter()
            .map(|m| m.as_ref().len())
            .find(|&len| len as u64 > self.max_message_size)
        {
            return Err(TrySendError::TooLarge {
                len: large,
                max: self.max_message_size,
            });
        }
        if messages.is_empty() {
            return Ok(0);
        }
        let max = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        let Some((pos, count)) = self.claim_run(End::Enqueue, max) else {
            return Ok(0);
        };
        for (k, message) in messages[..count as usize].iter().enumerate() {
            let message = message.as_ref();
            let at = pos_add(pos, k as u64);
            let (index, slot) = self.slot_at(at);
            // SAFETY: the run claim made us the only producer of every position in
            // it (its Acquire loads saw each slot released), and every length was
            // checked against the maximum at the top.
            unsafe { self.memory.write_payload(index, message) };
            publish_slot(slot, at, message.len() as u32);
        }
        self.count_operation();
        // One check for the whole run: the claim CAS is the wake-up protocol's
        // anchor, and every publish precedes this load.
        self.wake_if_waiting(&self.memory.shared().not_empty);
        Ok(count as usize)
    }

    /// Dequeues up to `max` messages with one claim on the cursor and lends each to
    /// `f` in place, in order, releasing each slot as soon as `f` returns for it (a
    /// crash part-way leaves only the rest to be delivered again). Returns how many
    /// `f` got; `Ok(0)` when empty. A message with a corrupt length is dropped and
    /// counted; its error is returned only if no message was delivered. If `f`
    /// panics, the message it had is released (as in [`Ring::try_recv_with`]) and the
    /// rest of the batch is given back for another delivery.
    pub fn try_recv_batch_with<F: FnMut(&[u8])>(
        &self,
        max: usize,
        mut f: F,
    ) -> Result<usize, TryRecvError> {
        if max == 0 {
            return Ok(0);
        }
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        let mut delivered = 0;
        let mut failed = None;
        // Runs made only of skips deliver nothing: claim again, at most a lap.
        let mut claimed_total = 0u64;
        while delivered == 0 && claimed_total <= self.capacity {
            let Some((pos, count)) = self.claim_run(End::Dequeue, max) else {
                break;
            };
            claimed_total += u64::from(count);
            self.count_operation();
            let mut unread = Unopened {
                ring: self,
                next: pos,
                end: pos_add(pos, u64::from(count)),
            };
            while unread.next != unread.end {
                let at = unread.next;
                unread.next = pos_add(at, 1);
                let (index, slot) = self.slot_at(at);
                match self.open_claimed(Claimed {
                    pos: at,
                    index,
                    slot,
                }) {
                    Ok(Some(message)) => {
                        message.read(&mut f);
                        delivered += 1;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
        }
        match failed {
            Some(e) if delivered == 0 => Err(e),
            _ => Ok(delivered),
        }
    }
}

/// The positions of a batch receive not yet opened (`next..end`): if the reader
/// unwinds, they are given back for another delivery rather than left claimed by a
/// live record forever.
struct Unopened<'a, M: RingMemory, P: Platform> {
    ring: &'a Ring<M, P>,
    next: u64,
    end: u64,
}

impl<M: RingMemory, P: Platform> Drop for Unopened<'_, M, P> {
    fn drop(&mut self) {
        let left = pos_diff(self.end, self.next);
        if left > 0 && !self.ring.hand_back_run(self.next, left as u32, false) {
            // No record free to carry them: release them rather than leave them
            // claimed forever (they are lost to the queue; a full participant table
            // while a reader panics mid-batch is the one case).
            for k in 0..left as u64 {
                let at = pos_add(self.next, k);
                let (_, slot) = self.ring.slot_at(at);
                self.ring.release_slot(slot, at);
            }
        }
    }
}
