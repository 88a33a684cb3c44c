//! What can stop a bridge, each with what to do about it.

use std::path::PathBuf;

/// Why a bridge stopped (or could not start).
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The NATS connection could not be set up.
    #[error("cannot connect to NATS at `{url}`: {source}; check the URL (--server), that nats-server runs there with JetStream (-js), and the credentials")]
    Connect {
        /// The server URL given.
        url: String,
        /// What the client said.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The credentials file could not be read.
    #[error("cannot read the credentials file `{}`: {source}; pass a readable .creds file to --creds", path.display())]
    Credentials {
        /// The file given.
        path: PathBuf,
        /// What reading it said.
        #[source]
        source: std::io::Error,
    },
    /// The stream could not be found or created.
    #[error("cannot find or create the JetStream stream `{stream}` for subject `{subject}`: {detail}; check that the server is reachable (--server) and runs with JetStream (-js), that the account may create streams, and that no other stream claims the subject")]
    Stream {
        /// The stream name.
        stream: String,
        /// The subject it should hold.
        subject: String,
        /// What the server or client said.
        detail: String,
    },
    /// The durable consumer could not be found or created.
    #[error("cannot find or create the durable consumer `{consumer}` on stream `{stream}`: {detail}; a work-queue stream allows one consumer per subject: reuse its name (--consumer) or delete the other")]
    Consumer {
        /// The consumer name.
        consumer: String,
        /// The stream name.
        stream: String,
        /// What the server or client said.
        detail: String,
    },
    /// The local segment could not be opened or created.
    #[error("cannot open or create the shmq segment `{segment}`: {source}")]
    Segment {
        /// The segment name.
        segment: String,
        /// What shmq said (boxed: it is large, and rare).
        #[source]
        source: Box<shmq::Error>,
    },
    /// Receiving from the local segment failed for good.
    #[error("receiving from shmq segment `{segment}` failed: {source}; the messages the bridge held are redelivered to the next consumer")]
    Receive {
        /// The segment name.
        segment: String,
        /// What shmq said.
        #[source]
        source: shmq::RecvError,
    },
    /// Sending into the local segment failed for good.
    #[error("sending into shmq segment `{segment}` failed: {source}; messages not sent stay unacknowledged in JetStream and are redelivered")]
    Send {
        /// The segment name.
        segment: String,
        /// What shmq said.
        #[source]
        source: shmq::SendError,
    },
    /// The limits given cannot work.
    #[error("invalid limits: {0}")]
    Limits(String),
}
