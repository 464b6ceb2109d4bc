//! The client protocol without sockets: frames (length-prefixed, with a
//! small header) and the typed messages inside them. Bytes go in, frames and
//! messages come out; nothing here does I/O, so the network layer, an
//! embedding gateway and the tests all use the same code.

mod compress;
mod frame;
mod heartbeat;
mod message;
mod order;
mod send_view;
pub mod websocket;

pub use compress::{compress_frame, decompress, DecompressError, COMPRESS_BYTES_MIN, FLAG_LZ4};
pub use frame::{
    Frame, FrameDecoder, FrameError, FRAME_HEADER_BYTES, FRAME_SIZE_MAX_BYTES_DEFAULT,
    LENGTH_PREFIX_BYTES,
};
pub use heartbeat::{accepted_heartbeat_interval, declared_heartbeat_interval};
pub use message::{DeliverRef, Message, MessageError, PROTOCOL_VERSION};
pub use order::AnswerGate;
pub use send_view::{SendView, SendViewError};

/// The protobuf types generated from `proto/courier.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/courier.v1.rs"));
}

/// The protobuf types of the journal's internal records, generated from
/// `proto/journal.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod journal_proto {
    include!(concat!(env!("OUT_DIR"), "/courier.journal.v1.rs"));
}
