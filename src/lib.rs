//! courier: the message core of a WeChat-style chat system, built as an
//! LMAX-disruptor pipeline.
//!
//! - [`codec`]: the client protocol without sockets (frames, messages).
//! - [`broker`]: the pipeline (decode → journal → flush → logic → fan-out, with the
//!   SQLite store and the auth workers beside it), embeddable behind any
//!   gateway through [`broker::Ingress`] and [`broker::Egress`].
//! - [`net`]: the mio TCP server, the broker's first gateway.
//! - [`client`]: a blocking client, for tests, tools and `courier chat`.
//! - [`bench`](mod@bench): the load generator's schedule, latency recording and reports.
//!
//! # Example: embedding the broker
//!
//! A gateway builds a [`broker::Broker`] with an egress of its own, pushes
//! frames in through an ingress, and shuts it down when done (see also
//! `examples/gateway.rs`).
//!
//! ```
//! use std::sync::mpsc;
//! use courier::broker::{AuthConfig, Broker, BrokerConfig, ConnId, Egress};
//! use courier::codec::{proto, Message, LENGTH_PREFIX_BYTES};
//!
//! struct Frames(mpsc::Sender<(ConnId, Vec<u8>)>);
//!
//! impl Egress for Frames {
//!     fn send(&mut self, conn: ConnId, frame: &[u8]) {
//!         let _ = self.0.send((conn, frame.to_vec()));
//!     }
//!     fn close(&mut self, _conn: ConnId) {}
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let config = BrokerConfig {
//!     data_dir: dir.path().to_path_buf(),
//!     auth: AuthConfig::insecure_fast(),
//!     ..BrokerConfig::default()
//! };
//! let (sender, frames) = mpsc::channel();
//! let broker = Broker::open(&config, Frames(sender)).unwrap();
//! let mut ingress = broker.ingress();
//! let conn = ConnId(1);
//! ingress.connected(conn).unwrap();
//!
//! // A ping, framed as a client sends it (the ingress takes the frame
//! // without its length prefix).
//! let mut frame = Vec::new();
//! Message::Ping(proto::Ping { nonce: 7, ..Default::default() }).encode_frame(1, &mut frame);
//! ingress.frame(conn, &frame[LENGTH_PREFIX_BYTES..]).unwrap();
//!
//! let (to, reply) = frames.recv().unwrap();
//! assert_eq!(to, conn);
//! let mut buffer = bytes::BytesMut::from(&reply[..]);
//! let reply = courier::codec::FrameDecoder::default().decode(&mut buffer).unwrap().unwrap();
//! assert_eq!(Message::decode(&reply), Ok(Message::Pong(proto::Pong { nonce: 7, ..Default::default() })));
//!
//! drop(ingress);
//! broker.shutdown().unwrap();
//! ```
#![deny(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench;
pub mod broker;
pub mod client;
pub mod codec;
pub mod net;

pub use courier_journal as journal;
pub use courier_ringbuffer as ringbuffer;
