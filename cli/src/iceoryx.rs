//! iceoryx2 publish/subscribe as the fan-out workload's comparison (cli feature
//! `iceoryx2`): the controller's services for one phase, and a child's publisher or
//! subscriber end.
//!
//! Used as iceoryx2 documents it: one publish/subscribe service of a fixed 64-byte
//! payload type (`[u64; 8]`) sized for the phase's subscribers, loaned samples
//! (`loan_uninit`, `write_payload`, `send`), and, for blocking subscribers, an event
//! service beside it: the publisher's notifier signals after each send, each
//! subscriber's listener waits for it. Polling subscribers have no event service
//! and their publisher does not notify.

use std::time::{Duration, Instant};

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::{event, publish_subscribe};

use crate::error::{CliError, EX_SOFTWARE, EX_UNAVAILABLE};
use crate::os::now_ns;

/// The payload: 64 bytes, as the fan-out workload's shmq messages.
pub type Payload = [u64; 8];

/// How a subscriber waits for the next sample.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// On its listener of the event service (the publisher notifies each send).
    Block,
    /// Polling `receive`, with `sched_yield` between empty polls.
    Yield,
}

/// An iceoryx2 failure as a CLI error naming the step.
fn failed(step: &str) -> impl Fn(&dyn std::fmt::Display) -> CliError + '_ {
    move |e| CliError::new(EX_SOFTWARE, format!("iceoryx2: {step}: {e}"))
}

/// A node of this process, without iceoryx2's signal handlers (the benchmark's own
/// stop protocol ends the children).
fn node() -> Result<Node<ipc::Service>, CliError> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(|e| failed("creating a node")(&e))
}

fn service_name(name: &str) -> Result<ServiceName, CliError> {
    ServiceName::new(name).map_err(|e| {
        CliError::new(
            EX_UNAVAILABLE,
            format!("iceoryx2 refused the service name `{name}`: {e:?}"),
        )
    })
}

/// The services of one phase, created by the controller before the children start
/// and removed when dropped (the controller's node is their last owner once the
/// children have exited).
pub struct Services {
    _publish_subscribe: publish_subscribe::PortFactory<ipc::Service, Payload, ()>,
    _event: Option<event::PortFactory<ipc::Service>>,
    _node: Node<ipc::Service>,
}

impl Services {
    /// Creates the service `name` for one publisher and `subscribers` subscribers,
    /// each holding up to `buffer` samples, and (for blocking subscribers) its event
    /// service.
    pub fn create(
        name: &str,
        subscribers: u64,
        buffer: u64,
        waiting: Waiting,
    ) -> Result<Self, CliError> {
        let node = node()?;
        let subscribers = subscribers as usize;
        // Every subscriber and the publisher run in a node of their own, plus ours.
        let nodes = subscribers + 2;
        let publish_subscribe = node
            .service_builder(&service_name(name)?)
            .publish_subscribe::<Payload>()
            .max_publishers(1)
            .max_subscribers(subscribers)
            .max_nodes(nodes)
            .subscriber_max_buffer_size(buffer as usize)
            .history_size(0)
            .create()
            .map_err(|e| failed("creating the publish/subscribe service")(&e))?;
        let event = match waiting {
            Waiting::Yield => None,
            Waiting::Block => Some(
                node.service_builder(&service_name(name)?)
                    .event()
                    .max_notifiers(1)
                    .max_listeners(subscribers)
                    .max_nodes(nodes)
                    .create()
                    .map_err(|e| failed("creating the event service")(&e))?,
            ),
        };
        Ok(Self {
            _publish_subscribe: publish_subscribe,
            _event: event,
            _node: node,
        })
    }
}

/// A child's publisher end (with its notifier when subscribers block).
pub struct PublisherEnd {
    publisher: Publisher<ipc::Service, Payload, ()>,
    notifier: Option<Notifier<ipc::Service>>,
    _node: Node<ipc::Service>,
}

impl PublisherEnd {
    /// Opens the phase's services `name` and creates the ports.
    pub fn open(name: &str, waiting: Waiting) -> Result<Self, CliError> {
        let node = node()?;
        let publisher = node
            .service_builder(&service_name(name)?)
            .publish_subscribe::<Payload>()
            .open()
            .map_err(|e| failed("opening the publish/subscribe service")(&e))?
            .publisher_builder()
            .create()
            .map_err(|e| failed("creating the publisher")(&e))?;
        let notifier = match waiting {
            Waiting::Yield => None,
            Waiting::Block => Some(
                node.service_builder(&service_name(name)?)
                    .event()
                    .open()
                    .map_err(|e| failed("opening the event service")(&e))?
                    .notifier_builder()
                    .create()
                    .map_err(|e| failed("creating the notifier")(&e))?,
            ),
        };
        Ok(Self {
            publisher,
            notifier,
            _node: node,
        })
    }

    /// Sends `message` in a loaned sample to every subscriber, then notifies their
    /// listeners (blocking subscribers).
    pub fn publish(&self, message: Payload) -> Result<(), CliError> {
        let sample = self
            .publisher
            .loan_uninit()
            .map_err(|e| failed("loaning a sample")(&e))?;
        sample
            .write_payload(message)
            .send()
            .map_err(|e| failed("sending")(&e))?;
        if let Some(notifier) = &self.notifier {
            notifier.notify().map_err(|e| failed("notifying")(&e))?;
        }
        Ok(())
    }
}

/// A child's subscriber end (with its listener when it blocks).
pub struct SubscriberEnd {
    subscriber: Subscriber<ipc::Service, Payload, ()>,
    listener: Option<Listener<ipc::Service>>,
    _node: Node<ipc::Service>,
}

impl SubscriberEnd {
    /// Opens the phase's services `name` and creates the ports.
    pub fn open(name: &str, waiting: Waiting) -> Result<Self, CliError> {
        let node = node()?;
        let subscriber = node
            .service_builder(&service_name(name)?)
            .publish_subscribe::<Payload>()
            .open()
            .map_err(|e| failed("opening the publish/subscribe service")(&e))?
            .subscriber_builder()
            .create()
            .map_err(|e| failed("creating the subscriber")(&e))?;
        let listener = match waiting {
            Waiting::Yield => None,
            Waiting::Block => Some(
                node.service_builder(&service_name(name)?)
                    .event()
                    .open()
                    .map_err(|e| failed("opening the event service")(&e))?
                    .listener_builder()
                    .create()
                    .map_err(|e| failed("creating the listener")(&e))?,
            ),
        };
        Ok(Self {
            subscriber,
            listener,
            _node: node,
        })
    }

    /// Waits up to `patience` for the next sample; returns it with the
    /// CLOCK_MONOTONIC time it was received at, or `None`.
    pub fn receive(&self, patience: Duration) -> Result<Option<(Payload, u64)>, CliError> {
        let deadline = Instant::now() + patience;
        loop {
            let sample = self
                .subscriber
                .receive()
                .map_err(|e| failed("receiving")(&e))?;
            if let Some(sample) = sample {
                let received = now_ns();
                return Ok(Some((*sample.payload(), received)));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match &self.listener {
                // A notification sent after the empty receive above is still pending
                // here, so the wait returns at once: no wake-up is lost.
                Some(listener) => {
                    listener
                        .timed_wait(|_| {}, deadline - now)
                        .map_err(|e| failed("waiting on the listener")(&e))?;
                }
                None => std::thread::yield_now(),
            }
        }
    }
}
