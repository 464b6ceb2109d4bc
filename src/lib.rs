//! courier: the message core of a WeChat-style chat system, built as an
//! LMAX-disruptor pipeline.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod codec;

pub use courier_journal as journal;
pub use courier_ringbuffer as ringbuffer;
