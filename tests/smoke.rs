mod common;
use common::unique;

use shmq::{Options, Queue, TryRecvError, TrySendError};

#[test]
fn send_then_receive_round_trips() {
    let name = unique("smoke");
    let q = Queue::create(&name, &Options::new(4, 64)).unwrap();
    let r = Queue::open(&name).unwrap();
    for i in 0..4u8 {
        q.try_send(&[i; 3]).unwrap();
    }
    assert_eq!(q.try_send(b"x"), Err(TrySendError::Full));
    for i in 0..4u8 {
        assert_eq!(r.try_recv().unwrap(), vec![i; 3]);
    }
    assert_eq!(r.try_recv(), Err(TryRecvError::Empty));
    let info = q.info();
    assert_eq!(info.participants.len(), 2);
    assert!(info.participants.iter().all(|p| p.alive));
    Queue::unlink(&name).unwrap();
}
