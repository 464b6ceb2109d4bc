//! Syncs: a device pages through its inbox, bodies read back from where
//! they were journaled.

use super::{Delivery, SYNC_BATCH_OVERHEAD_BYTES};
use crate::broker::event::{decode_record, record_body, Command, Outbox};
use crate::broker::ids::{ConnId, UserId};
use crate::codec::proto::{self, ErrorCode};
use crate::codec::Message;
use crate::journal::{JournalReader, Position};

impl Delivery {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sync(
        &self,
        conn: ConnId,
        correlation_id: u64,
        user_id: UserId,
        after: u64,
        limit: u32,
        lz4: bool,
        out: &mut Outbox,
    ) {
        let user = self.user(user_id);
        let head = user.head();
        let after = after.min(head);
        let limit = match limit {
            0 => self.config.sync_limit_max,
            n => n.min(self.config.sync_limit_max),
        };
        // Keep the batch inside the frame limit clients were told of.
        let budget = self.config.frame_size_max - SYNC_BATCH_OVERHEAD_BYTES;
        let mut batch = proto::SyncBatch {
            messages: Vec::new(),
            head_sequence: head,
            more: false,
        };
        let mut size = 0;
        // Expired entries are gone: a sync from before them starts at the
        // oldest one held.
        for (sequence, index) in user.entries(after, head) {
            let entry = self.stored(index);
            if batch.messages.len() as u32 == limit {
                batch.more = true;
                break;
            }
            let body = match self.body(entry.position) {
                Ok(body) => body,
                Err(reason) => {
                    out.error(conn, correlation_id, ErrorCode::Internal, reason);
                    return;
                }
            };
            let deliver = self.deliver(entry, sequence, body);
            let encoded = prost::Message::encoded_len(&deliver) + 4;
            if size + encoded > budget {
                if batch.messages.is_empty() {
                    // Bodies leave room for a Deliver in a batch under the
                    // frame limit they were sent under; only a limit
                    // lowered since can leave one too large. Say which, so
                    // the device can skip it.
                    out.error(
                        conn,
                        correlation_id,
                        ErrorCode::FrameTooLarge,
                        format!(
                            "message {sequence} is larger than this server's frame limit \
                             ({} bytes) allows; sync from after {sequence} to skip it",
                            self.config.frame_size_max
                        ),
                    );
                    return;
                }
                batch.more = true;
                break;
            }
            size += encoded;
            batch.messages.push(deliver);
        }
        out.send_compressible(conn, correlation_id, &Message::SyncBatch(batch), lz4);
    }

    /// Reads a message body back from where the bodies are kept.
    pub(super) fn body(&self, position: Position) -> Result<Vec<u8>, String> {
        self.bodies.body(position)
    }
}

/// Where the fan-out stage reads a stored message's body back from, by
/// the position of the record that carried it: the journal, in a broker.
/// Memory holds 48 bytes per message; the bodies stay where they were
/// journaled.
pub(crate) trait Bodies: Send {
    /// The body of the message journaled at `position`; an error names
    /// what was there instead.
    fn body(&self, position: Position) -> Result<Vec<u8>, String>;
}

impl Bodies for JournalReader {
    fn body(&self, position: Position) -> Result<Vec<u8>, String> {
        let record = self
            .read(position)
            .map_err(|e| format!("message at {position:?} unreadable: {e}"))?;
        match decode_record(record.sequence(), record.record_type(), record.payload()) {
            Ok((_, Command::Send { view, .. })) => {
                Ok(record_body(record.payload())[view.body].to_vec())
            }
            other => Err(format!(
                "record at {position:?} is not a message: {other:?}"
            )),
        }
    }
}
