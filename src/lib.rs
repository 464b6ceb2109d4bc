//! courier: the message core of a WeChat-style chat system, built as an
//! LMAX-disruptor pipeline.
//!
//! - [`codec`]: the client protocol without sockets (frames, messages).
//! - [`broker`]: the pipeline (decode → journal → logic → fan-out, with the
//!   SQLite store and the auth workers beside it), embeddable behind any
//!   gateway through [`broker::Ingress`] and [`broker::Egress`].
//! - [`net`]: the mio TCP server, the broker's first gateway.
//! - [`client`]: a blocking client, for tests, tools and `courier chat`.
//! - [`bench`]: the load generator's schedule, latency recording and reports.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bench;
pub mod broker;
pub mod client;
pub mod codec;
pub mod net;

pub use courier_journal as journal;
pub use courier_ringbuffer as ringbuffer;
