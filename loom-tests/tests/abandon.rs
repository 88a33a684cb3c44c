//! Loom model of giving a message back (`Received::abandon`, issue 16's poison
//! messages): the consumer's claim moves to a carrier record that it then lets go of,
//! so a sweep takes the message over as a dead consumer's. A concurrent consumer
//! must get every message exactly once, the abandoned one with its return counted,
//! and never see the abandoned slot with no record naming it (it would then stay
//! claimed forever, and the ring would wedge a lap later).
#![cfg(loom)]

use loom::thread;
use loom_tests::{
    assert_exactly_once, assert_repaired_and_usable, check, ring, try_recv, Message, Spin,
};
use shmq::model::layout::POS_MASK;
use shmq::model::{Ordering, Redelivery, RingMemory, Scope};
use shmq::TryRecvError;

fn decode(bytes: &[u8]) -> Message {
    assert_eq!(bytes.len(), 2, "torn message length");
    (bytes[0], bytes[1])
}

/// One consumer takes the first message it finds and abandons it while another
/// receives and sweeps (with delivery) until both messages are out. Asserts: each
/// message delivered exactly once to the second consumer, or once to it after the
/// abandon (with one return counted); the carrier record is freed; the ring is
/// repaired and usable.
#[test]
fn abandoned_message_is_delivered_once_more() {
    check("abandoned_message_is_delivered_once_more", 3, || {
        // Four records: producer, abandoner, receiver, and one free for the carrier.
        let (memory, _platform, mut rings) = ring(2, 4, POS_MASK);
        drop(rings.pop());
        let receiver = rings.pop().unwrap();
        let abandoner = rings.pop().unwrap();
        let producer = rings.pop().unwrap();
        producer.try_send(&[0, 0]).unwrap();
        producer.try_send(&[0, 1]).unwrap();
        let abandons = thread::spawn(move || {
            let abandoned = match abandoner.try_recv_message() {
                Ok(Some(message)) => {
                    let got = message.peek(decode);
                    assert_eq!(message.returns(), 0, "a first delivery");
                    assert!(message.abandon().is_ok(), "a record is free");
                    Some(got)
                }
                Ok(None) => None,
                Err(e) => panic!("receive failed: {e:?}"),
            };
            (abandoner, abandoned)
        });
        let mut got = Vec::new();
        let mut returns = Vec::new();
        let mut spin = Spin::default();
        while got.len() < 2 {
            match try_recv(&receiver) {
                Ok(message) => {
                    got.push(message);
                    returns.push(0);
                    spin.progressed();
                }
                Err(TryRecvError::Empty) => {
                    // Housekeeping: it also frees dead records with nothing
                    // outstanding, so a carrier let go of before it names the
                    // claim would be freed under the abandoner.
                    let sweep = receiver.sweep(Scope::Housekeeping, Redelivery::TakeOne);
                    match sweep.redelivered {
                        Some(Ok(message)) => {
                            returns.push(message.returns());
                            got.push(message.read(decode));
                            spin.progressed();
                        }
                        None => spin.failed(),
                        Some(Err(e)) => panic!("redelivery failed: {e:?}"),
                    }
                }
                Err(e) => panic!("unexpected receive error {e:?}"),
            }
        }
        let (abandoner, abandoned) = abandons.join().unwrap();
        assert_exactly_once(&got, &[(0, 0), (0, 1)]);
        // Relaxed: every thread has been joined.
        let stats = &memory.shared().stats;
        assert_eq!(
            stats.abandoned.load(Ordering::Relaxed),
            u64::from(abandoned.is_some())
        );
        if let Some(message) = abandoned {
            let at = got.iter().position(|m| *m == message).unwrap();
            assert_eq!(returns[at], 1, "the abandon is counted");
            assert_eq!(stats.redelivered.load(Ordering::Relaxed), 1);
        }
        drop(abandoner);
        assert_repaired_and_usable(&receiver);
        let sweep = receiver.sweep(Scope::Housekeeping, Redelivery::Leave);
        assert_eq!(sweep.freed, 0, "the carrier record was already freed");
    });
}
