//! What travels through the inbound ring, and how a command is written to
//! and read back from the journal.
//!
//! A slot of the inbound ring is an [`Inbound`]: the network layer (or an
//! auth worker) fills its origin and bytes, decode fills the command, the
//! journal stage fills where it was journaled, logic fills the outbox, and
//! fan-out and the store read what logic left there. Every buffer in a slot
//! is reused from one lap of the ring to the next.
//!
//! # Journal records
//!
//! Every record's payload starts with the connection id (u64, little
//! endian); what follows depends on the record type:
//!
//! ```text
//!  type             payload after the 8-byte connection id
//!  START         1  journal.v1.Started (protobuf; empty in older journals):
//!                   a run began, every older connection is gone, and these
//!                   settings apply to the records that follow
//!  CONNECTED     2  the client's IP address (4 or 16 bytes), or nothing
//!                   (a gateway that did not say; journals before it)
//!  DISCONNECTED  3  nothing
//!  FRAME         4  the client's frame without its length prefix:
//!                   type u16 BE | flags u16 BE | correlation u64 BE | protobuf
//!  REGISTERED    5  journal.v1.Registered (protobuf)
//!  LOGIN         6  journal.v1.LoginVerified (protobuf)
//! ```

use std::net::IpAddr;

use prost::Message as _;

use super::ids::{ConnId, DeviceId, GroupId, InboxSeq, Peer, RecordSeq, UserId};
use crate::codec::journal_proto::{LoginVerified, Registered, Started};
use crate::codec::proto::{login, ContactState, DeliveryMode, ErrorCode, MessageType};
use crate::codec::{DeliverRef, Message, MessageError, SendView, FRAME_HEADER_BYTES};
use crate::journal::Position;

/// Record type: a run of the broker started.
pub const RECORD_START: u16 = 1;
/// Record type: a connection opened.
pub const RECORD_CONNECTED: u16 = 2;
/// Record type: a connection closed.
pub const RECORD_DISCONNECTED: u16 = 3;
/// Record type: a client's frame.
pub const RECORD_FRAME: u16 = 4;
/// Record type: an account's password was hashed.
pub const RECORD_REGISTERED: u16 = 5;
/// Record type: a device's password login was verified.
pub const RECORD_LOGIN: u16 = 6;

const CONN_BYTES: usize = 8;

/// Where an inbound event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Origin {
    /// Nothing (a slot not yet used).
    #[default]
    Empty,
    /// A connection opened.
    Connected,
    /// A connection closed.
    Disconnected,
    /// `body` is a client frame without its length prefix.
    Frame,
    /// `body` is a `Registered` from an auth worker.
    Registered,
    /// `body` is a `LoginVerified` from an auth worker.
    LoginVerified,
    /// An auth worker refused a password login; `correlation` says which.
    LoginRefused { correlation_id: u64 },
}

/// A decoded command: what logic applies.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Command {
    /// Nothing to do.
    #[default]
    Empty,
    /// A run started: every connection of earlier runs is gone, and (when
    /// recorded) these settings apply from here on.
    Start(Option<Started>),
    /// A connection opened, from this address where known.
    Connected(Option<IpAddr>),
    /// A connection closed.
    Disconnected,
    /// A client's `Send`, read in place: the ranges point into the frame
    /// body (header included) the command was decoded from.
    Send { correlation_id: u64, view: SendView },
    /// A client's message (any but `Send`).
    Client {
        correlation_id: u64,
        message: Message,
    },
    /// A frame that is not a message this build understands.
    Invalid {
        correlation_id: u64,
        error: MessageError,
    },
    /// An auth worker hashed a registration's password.
    Registered(Registered),
    /// An auth worker verified a login's password.
    LoginVerified(LoginVerified),
    /// An auth worker refused a login's password.
    LoginRefused { correlation_id: u64 },
}

impl Command {
    /// The journal record type this command is written as, or `None` for a
    /// command that changes no state that must survive (a ping, a password
    /// that is still to be hashed, a malformed frame).
    pub(crate) fn record_type(&self) -> Option<u16> {
        match self {
            Command::Start(_) => Some(RECORD_START),
            Command::Connected(_) => Some(RECORD_CONNECTED),
            Command::Disconnected => Some(RECORD_DISCONNECTED),
            Command::Registered(_) => Some(RECORD_REGISTERED),
            Command::Send { .. } => Some(RECORD_FRAME),
            Command::LoginVerified(_) => Some(RECORD_LOGIN),
            Command::Client { message, .. } => match message {
                // A password login is journaled only once verified (as
                // LOGIN, without the password); a token login is journaled
                // as sent, because replay must see the session it opens.
                Message::Login(login) => match login.secret {
                    Some(login::Secret::Token(_)) => Some(RECORD_FRAME),
                    _ => None,
                },
                Message::Logout(_)
                | Message::MarkRead(_)
                | Message::ContactRequest(_)
                | Message::ContactAccept(_)
                | Message::ContactDecline(_)
                | Message::ContactRemove(_)
                | Message::ContactBlock(_)
                | Message::GroupCreate(_)
                | Message::GroupInvite(_)
                | Message::GroupJoin(_)
                | Message::GroupLeave(_)
                | Message::GroupRemove(_)
                | Message::GroupRename(_) => Some(RECORD_FRAME),
                _ => None,
            },
            Command::Empty | Command::Invalid { .. } | Command::LoginRefused { .. } => None,
        }
    }
}

/// Decodes a client frame body (header and payload, no length prefix).
pub(crate) fn decode_frame(body: &[u8]) -> Command {
    if body.len() < FRAME_HEADER_BYTES {
        // The network layer hands over whole frames only; an embedding
        // gateway might not, and gets an error rather than a panic.
        return Command::Invalid {
            correlation_id: 0,
            error: MessageError::Malformed {
                message_type: MessageType::Unspecified,
                reason: format!("a frame of {} bytes has no whole header", body.len()),
            },
        };
    }
    let message_type = u16::from_be_bytes([body[0], body[1]]);
    let correlation_id = u64::from_be_bytes(body[4..12].try_into().expect("8 bytes"));
    if message_type == MessageType::Send as u16 {
        // The hot path: read in place, no allocation.
        return match SendView::parse(&body[FRAME_HEADER_BYTES..]) {
            Ok(view) => Command::Send {
                correlation_id,
                view: view.shifted(FRAME_HEADER_BYTES),
            },
            Err(error) => Command::Invalid {
                correlation_id,
                error: MessageError::Malformed {
                    message_type: MessageType::Send,
                    reason: error.to_string(),
                },
            },
        };
    }
    match Message::decode_parts(message_type, &body[FRAME_HEADER_BYTES..]) {
        Ok(message) => Command::Client {
            correlation_id,
            message,
        },
        Err(error) => Command::Invalid {
            correlation_id,
            error,
        },
    }
}

/// Decodes a frame as it arrives from a client, which may not set flag
/// bits (nothing a client sends is compressed) nor send a type only the
/// server sends: both are refused before the payload is looked at, so the
/// answer does not depend on it. Journaled frames are read back with
/// [`decode_frame`] alone, as they were accepted.
fn decode_client_frame(body: &[u8]) -> Command {
    if let Some(header) = body.get(..FRAME_HEADER_BYTES) {
        let message_type = u16::from_be_bytes([header[0], header[1]]);
        let flags = u16::from_be_bytes([header[2], header[3]]);
        let correlation_id = u64::from_be_bytes(header[4..12].try_into().expect("8 bytes"));
        let invalid = |error| Command::Invalid {
            correlation_id,
            error,
        };
        if flags != 0 {
            return invalid(MessageError::Malformed {
                message_type: MessageType::try_from(i32::from(message_type))
                    .unwrap_or(MessageType::Unspecified),
                reason: format!("flags {flags:#06x}: a client sets no flag bits"),
            });
        }
        if server_only(message_type) {
            return invalid(MessageError::UnknownType(message_type));
        }
    }
    decode_frame(body)
}

/// Whether only the server sends frames of this type.
fn server_only(message_type: u16) -> bool {
    use MessageType as T;
    [
        T::HelloOk,
        T::Pong,
        T::Error,
        T::RegisterOk,
        T::LoginOk,
        T::SendAck,
        T::Deliver,
        T::SyncBatch,
        T::Notify,
        T::ContactOk,
        T::ContactList,
        T::ContactChanged,
        T::ReadState,
        T::GroupOk,
        T::GroupInfo,
        T::GroupList,
        T::GroupChanged,
    ]
    .iter()
    .any(|&t| t as u16 == message_type)
}

/// Decodes an inbound event's bytes into its command.
pub(crate) fn decode_inbound(origin: Origin, body: &[u8]) -> Command {
    match origin {
        Origin::Empty => Command::Empty,
        Origin::Connected => Command::Connected(decode_address(body)),
        Origin::Disconnected => Command::Disconnected,
        Origin::Frame => decode_client_frame(body),
        // Auth workers encode what they publish; a failure here is a bug.
        Origin::Registered => Command::Registered(
            Registered::decode(body).expect("an auth worker encodes a valid Registered"),
        ),
        Origin::LoginVerified => Command::LoginVerified(
            LoginVerified::decode(body).expect("an auth worker encodes a valid LoginVerified"),
        ),
        Origin::LoginRefused { correlation_id } => Command::LoginRefused { correlation_id },
    }
}

/// The bytes a connection's address travels as: 4 for IPv4, 16 for IPv6.
pub(crate) fn encode_address(ip: IpAddr) -> ([u8; 16], usize) {
    let mut bytes = [0; 16];
    match ip {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            (bytes, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

/// Reads what [`encode_address`] wrote; anything else is no address.
fn decode_address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Why a journal record cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal record {sequence}: {reason}")]
pub struct RecordError {
    /// The record's sequence.
    pub sequence: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Reads a journal record back into its connection and command; a `Send`'s
/// ranges point into [`record_body`] of the same payload.
pub(crate) fn decode_record(
    sequence: u64,
    record_type: u16,
    payload: &[u8],
) -> Result<(ConnId, Command), RecordError> {
    let error = |reason: String| RecordError { sequence, reason };
    let Some((conn, rest)) = payload.split_first_chunk::<CONN_BYTES>() else {
        return Err(error(format!("payload of {} bytes", payload.len())));
    };
    let conn = ConnId(u64::from_le_bytes(*conn));
    let command = match record_type {
        RECORD_START if rest.is_empty() => Command::Start(None),
        RECORD_START => Command::Start(Some(
            Started::decode(rest).map_err(|e| error(format!("Started: {e}")))?,
        )),
        RECORD_CONNECTED => Command::Connected(decode_address(rest)),
        RECORD_DISCONNECTED => Command::Disconnected,
        RECORD_FRAME => match decode_frame(rest) {
            command @ (Command::Client { .. } | Command::Send { .. }) => command,
            other => return Err(error(format!("undecodable frame: {other:?}"))),
        },
        RECORD_REGISTERED => Command::Registered(
            Registered::decode(rest).map_err(|e| error(format!("Registered: {e}")))?,
        ),
        RECORD_LOGIN => Command::LoginVerified(
            LoginVerified::decode(rest).map_err(|e| error(format!("LoginVerified: {e}")))?,
        ),
        other => return Err(error(format!("unknown record type {other}"))),
    };
    Ok((conn, command))
}

/// A record payload's bytes after the connection id: what the event's
/// `body` was.
pub(crate) fn record_body(payload: &[u8]) -> &[u8] {
    payload.get(CONN_BYTES..).unwrap_or_default()
}

/// Writes a journal record's payload for `conn` and the event's bytes.
pub(crate) fn encode_record(conn: ConnId, body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&conn.0.to_le_bytes());
    out.extend_from_slice(body);
}

/// Where and when a command was journaled: what logic takes its ids and
/// time from, so replay reaches the same state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Journaled {
    pub(crate) sequence: RecordSeq,
    pub(crate) position: Position,
    pub(crate) timestamp_ns: u64,
}

/// A change logic made that the SQLite store projects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Projection {
    /// An account was created.
    Account {
        user_id: UserId,
        name: String,
        password_hash: String,
        created_ms: u64,
    },
    /// An entry of `owner`'s contact list changed.
    Contact {
        owner: UserId,
        contact: UserId,
        state: ContactState,
        version: u64,
    },
    /// A group was created, renamed or changed owner; `owner` is `None`
    /// once its last member left.
    Group {
        group: GroupId,
        name: String,
        owner: Option<UserId>,
    },
    /// A user joined (`member`) or left a group.
    Member {
        group: GroupId,
        user: UserId,
        member: bool,
    },
}

/// Inbox work logic hands to the fan-out stage, which owns the inboxes:
/// logic checks a command against accounts, sessions, contacts and
/// groups; the fan-out stage appends to inboxes, acknowledges, pushes and
/// answers syncs. Each refers to the event's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Intent {
    /// A run started: every device is offline; with the run's settings,
    /// its dedup window and message retention apply from here on.
    Start {
        dedup_window: Option<usize>,
        message_retention_ms: Option<u64>,
        /// The run's rules (see `Started.rules_version`).
        rules_version: u32,
    },
    /// An account was created, with the next user id.
    Account { name: String },
    /// The connection logged in as `user`; answer `LoginOk`.
    SessionOpened {
        user: UserId,
        /// The device's id, which keys its resends.
        device_id: DeviceId,
        mode: DeliveryMode,
        lz4: bool,
        correlation_id: u64,
        token: Box<str>,
    },
    /// The connection's session as `user` ended.
    SessionClosed { user: UserId },
    /// `sender` sent a message to `to`; the body is this range of the
    /// event's bytes.
    Message {
        sender: UserId,
        to: Peer,
        correlation_id: u64,
        client_message_id: u64,
        body: std::ops::Range<usize>,
        /// Logic refused it (not a member, not a friend): store nothing,
        /// and answer this error unless it is the resend of a message
        /// stored before.
        /// (Boxed: it is rare, and the intent stays small on the hot path.)
        refused: Option<Box<(ErrorCode, String)>>,
    },
    /// `user` pulls inbox entries after `after`.
    Sync {
        user: UserId,
        correlation_id: u64,
        after: InboxSeq,
        limit: u32,
        lz4: bool,
    },
    /// `user` marks the conversation with `peer` read up to `up_to`.
    MarkRead {
        user: UserId,
        correlation_id: u64,
        peer: Peer,
        up_to: InboxSeq,
        /// `peer` is a group `user` is not a member of: the mark stands
        /// only if messages from the group reached `user` while a member.
        former_member: bool,
    },
    /// `user` joined (`joined`) or left `group`.
    Member {
        group: GroupId,
        user: UserId,
        joined: bool,
    },
}

// An intent per command sits in every ring slot's outbox: keep it small.
const _: () = assert!(std::mem::size_of::<Intent>() <= 64);

/// What logic wants sent: frames to connections, and connections to close.
/// Frames are encoded back to back into one reused buffer. It also carries
/// the changes the SQLite store projects.
#[derive(Debug, Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    items: Vec<OutItem>,
    pub(crate) projections: Vec<Projection>,
    pub(crate) intents: Vec<Intent>,
    /// Password work for the auth workers, which the logic stage hands
    /// over (calling [`super::logic::Logic::check_not_started`] for a job
    /// the workers' queue refuses). Replay never makes any.
    pub(crate) auth: Vec<super::auth::AuthJob>,
    /// Frames and closes are dropped, not queued: replay keeps only the
    /// intents and projections, and nobody would read the frames.
    muted: bool,
}

/// One thing in an [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutItem {
    Frame {
        conn: ConnId,
        start: usize,
        end: usize,
        compress: bool,
    },
    Close {
        conn: ConnId,
    },
}

/// What an [`Outbox`] yields: a whole encoded frame for a connection, or
/// the order to close one (after what was sent to it before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out<'a> {
    /// Send these bytes (one whole frame, length prefix included).
    Frame(ConnId, &'a [u8]),
    /// As `Frame`, but the device accepts LZ4: compress it if it is large.
    Compressible(ConnId, &'a [u8]),
    /// Close the connection once its output is written.
    Close(ConnId),
}

impl Outbox {
    /// An outbox that keeps intents and projections but no frames, for
    /// replay.
    pub(crate) fn muted() -> Self {
        Self {
            muted: true,
            ..Self::default()
        }
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
        self.projections.clear();
        self.intents.clear();
        self.auth.clear();
    }

    /// Queues `message` for `conn`.
    pub(crate) fn send(&mut self, conn: ConnId, correlation_id: u64, message: &Message) {
        self.send_compressible(conn, correlation_id, message, false);
    }

    /// Queues `message` for `conn`, to be compressed on its way out (by the
    /// fan-out stage, off the logic thread) if `compress` and it is large.
    pub(crate) fn send_compressible(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        message: &Message,
        compress: bool,
    ) {
        if self.muted {
            return;
        }
        let start = self.bytes.len();
        message.encode_frame(correlation_id, &mut self.bytes);
        self.items.push(OutItem::Frame {
            conn,
            start,
            end: self.bytes.len(),
            compress,
        });
    }

    /// Queues a `Deliver` frame for `conn`, encoded from borrowed fields.
    pub(crate) fn send_deliver(&mut self, conn: ConnId, deliver: &DeliverRef<'_>) {
        if self.muted {
            return;
        }
        let start = self.bytes.len();
        deliver.encode_frame(0, &mut self.bytes);
        self.items.push(OutItem::Frame {
            conn,
            start,
            end: self.bytes.len(),
            compress: false,
        });
    }

    /// Queues an `Error` frame for `conn`.
    pub(crate) fn error(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        code: ErrorCode,
        text: impl Into<String>,
    ) {
        if self.muted {
            return;
        }
        self.send(conn, correlation_id, &Message::error(code, text));
    }

    /// Queues the closing of `conn`.
    pub(crate) fn close(&mut self, conn: ConnId) {
        if self.muted {
            return;
        }
        self.items.push(OutItem::Close { conn });
    }

    /// What is queued, in order.
    pub fn iter(&self) -> impl Iterator<Item = Out<'_>> + '_ {
        self.items.iter().map(|item| match *item {
            OutItem::Frame {
                conn,
                start,
                end,
                compress: false,
            } => Out::Frame(conn, &self.bytes[start..end]),
            OutItem::Frame {
                conn,
                start,
                end,
                compress: true,
            } => Out::Compressible(conn, &self.bytes[start..end]),
            OutItem::Close { conn } => Out::Close(conn),
        })
    }
}

/// A slot of the inbound ring.
#[derive(Debug, Default)]
pub struct Inbound {
    pub(crate) conn: ConnId,
    pub(crate) origin: Origin,
    /// When it was published ([`super::latency::monotonic_ns`]), for the
    /// stage latency histograms.
    pub(crate) published_ns: u64,
    /// The frame (without length prefix) or the internal record's protobuf.
    pub(crate) body: Vec<u8>,
    /// Set by decode.
    pub(crate) command: Command,
    /// Set by the journal stage for a journaled command.
    pub(crate) journaled: Option<Journaled>,
    /// Set by logic.
    pub(crate) outbox: Outbox,
}

impl Inbound {
    /// Fills the slot for a new event, keeping the buffers' capacity.
    pub(crate) fn fill(&mut self, conn: ConnId, origin: Origin, body: &[u8], published_ns: u64) {
        self.conn = conn;
        self.origin = origin;
        self.published_ns = published_ns;
        self.body.clear();
        self.body.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::proto;
    use proptest::prelude::*;

    fn frame_body(message: &Message, correlation_id: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        message.encode_frame(correlation_id, &mut bytes);
        bytes.split_off(crate::codec::LENGTH_PREFIX_BYTES)
    }

    #[test]
    fn a_muted_outbox_keeps_intents_and_projections_but_no_frames() {
        let fill = |out: &mut Outbox| {
            let pong = Message::Pong(proto::Pong {
                nonce: 1,
                ..Default::default()
            });
            out.send(ConnId(1), 1, &pong);
            out.error(ConnId(1), 2, ErrorCode::Internal, "no");
            out.close(ConnId(1));
            out.intents.push(Intent::SessionClosed { user: UserId(1) });
        };
        let mut loud = Outbox::default();
        fill(&mut loud);
        assert_eq!(loud.iter().count(), 3);
        let mut muted = Outbox::muted();
        fill(&mut muted);
        assert_eq!(muted.iter().count(), 0);
        assert_eq!(muted.intents.len(), 1);
    }

    #[test]
    fn journaled_commands_round_trip_through_records() {
        let send = Message::Send(proto::Send {
            recipient: "bo".into(),
            client_message_id: 7,
            body: b"hi".to_vec(),
            group_id: 0,
        });
        let registered = Registered {
            correlation_id: 3,
            user: "ana".into(),
            password_hash: "$argon2id$...".into(),
        };
        // Each case: the event as the network or a worker publishes it.
        let cases = [
            (Origin::Connected, Vec::new()),
            (Origin::Disconnected, Vec::new()),
            (Origin::Frame, frame_body(&send, 9)),
            (Origin::Registered, registered.encode_to_vec()),
        ];
        let mut payload = Vec::new();
        for (origin, body) in cases {
            let command = decode_inbound(origin, &body);
            let record_type = command.record_type().expect("journaled");
            encode_record(ConnId(77), &body, &mut payload);
            let (conn, replayed) = decode_record(1, record_type, &payload).unwrap();
            assert_eq!(conn, ConnId(77));
            assert_eq!(replayed, command);
        }
    }

    #[test]
    fn secrets_and_noise_are_not_journaled() {
        let password_login = Message::Login(proto::Login {
            user: "ana".into(),
            secret: Some(proto::login::Secret::Password("pw".into())),
            device_id: "d".into(),
            delivery_mode: 0,
            accept_compression: Vec::new(),
        });
        let register = Message::Register(proto::Register {
            user: "ana".into(),
            password: "pw".into(),
        });
        let ping = Message::Ping(proto::Ping {
            nonce: 1,
            ..Default::default()
        });
        for message in [password_login, register, ping] {
            let command = decode_frame(&frame_body(&message, 1));
            assert_eq!(command.record_type(), None, "{message:?}");
        }
    }

    #[test]
    fn a_client_frame_with_flags_or_a_server_type_is_refused_whatever_its_payload() {
        let ping = frame_body(
            &Message::Ping(proto::Ping {
                nonce: 1,
                ..Default::default()
            }),
            4,
        );
        let mut flagged = ping.clone();
        flagged[3] = 0x01; // the compression bit
        let mut unknown_flag = ping.clone();
        unknown_flag[2] = 0x80;
        let mut server_type = ping.clone();
        server_type[..2].copy_from_slice(&(MessageType::SendAck as u16).to_be_bytes());
        let mut garbage = server_type.clone();
        garbage.extend_from_slice(&[0xff; 3]);
        // Each case: a frame body and the error code it gets.
        let cases = [
            (flagged, ErrorCode::MalformedFrame),
            (unknown_flag, ErrorCode::MalformedFrame),
            (server_type, ErrorCode::UnknownMessageType),
            (garbage, ErrorCode::UnknownMessageType),
        ];
        for (body, code) in cases {
            match decode_inbound(Origin::Frame, &body) {
                Command::Invalid {
                    correlation_id,
                    error,
                } => assert_eq!((correlation_id, error.code()), (4, code), "{body:?}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
        assert!(matches!(
            decode_inbound(Origin::Frame, &ping),
            Command::Client { .. }
        ));
    }

    #[test]
    fn bad_records_are_errors() {
        // Each case: a record type and payload replay must refuse.
        let cases: [(u16, &[u8]); 3] = [
            (RECORD_FRAME, b"short"),
            (99, &[0; 8]),
            (RECORD_FRAME, &[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0]),
        ];
        for (record_type, payload) in cases {
            assert!(decode_record(5, record_type, payload).is_err());
        }
    }

    proptest! {
        /// Any bytes from a client decode to a command or an error, never a panic.
        #[test]
        fn arbitrary_frame_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode_frame(&body);
        }
    }
}
