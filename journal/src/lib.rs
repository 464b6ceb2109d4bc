//! courier's journal: append-only, memory-mapped segment files that are the
//! source of truth for every state change.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
