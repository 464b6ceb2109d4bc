//! Replay is deterministic: a random history applied live, command by
//! command as the pipeline applies it (logic, then the inboxes), leaves the
//! same state as fresh state that replays the journal the history wrote.

use crate::broker::ids::RecordSeq;
use proptest::prelude::*;
use prost::Message as _;

use super::delivery::{Delivery, DeliveryConfig};
use super::event::{
    decode_frame, decode_inbound, encode_record, Command, Journaled, Origin, Outbox,
};
use super::ids::ConnId;
use super::logic::{Logic, LogicConfig, RULES_VERSION};
use super::recover::{apply_records, cursor_after, replay};
use super::snapshot::{Decoder, Encoder};
use super::stages::carry_out;
use super::store::Store;
use crate::codec::journal_proto::{LoginVerified, Registered, Started};
use crate::codec::proto::{self, DeliveryMode};
use crate::codec::{Message, LENGTH_PREFIX_BYTES};
use crate::journal::{Durability, Journal, JournalConfig};

/// One step of a history.
#[derive(Debug, Clone)]
enum Step {
    Register(u8),
    Connect(u8),
    Login {
        conn: u8,
        user: u8,
        device: u8,
        notice: bool,
    },
    TokenLogin {
        conn: u8,
        user: u8,
        device: u8,
    },
    Send {
        conn: u8,
        to: u8,
        client_id: u8,
    },
    Sync {
        conn: u8,
        after: u8,
    },
    MarkRead {
        conn: u8,
        peer: u8,
        up_to: u8,
    },
    Logout(u8),
    Disconnect(u8),
    Restart,
    Contact {
        conn: u8,
        user: u8,
        op: u8,
    },
    /// A group command: create (with members by bit mask), invite, join,
    /// leave, remove, rename, or post a message.
    Group {
        conn: u8,
        group: u8,
        user: u8,
        op: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    // Few users, devices and connections, so that steps meet: a token login
    // needs an earlier login of the same user and device, a send a
    // registered recipient and a logged-in connection.
    prop_oneof![
        1 => (0u8..3).prop_map(Step::Register),
        2 => (0u8..3).prop_map(Step::Connect),
        2 => (0u8..3, 0u8..3, 0u8..2, any::<bool>())
            .prop_map(|(conn, user, device, notice)| Step::Login { conn, user, device, notice }),
        2 => (0u8..3, 0u8..3, 0u8..2).prop_map(|(conn, user, device)| Step::TokenLogin { conn, user, device }),
        4 => (0u8..3, 0u8..4, 0u8..6).prop_map(|(conn, to, client_id)| Step::Send { conn, to, client_id }),
        1 => (0u8..3, 0u8..8).prop_map(|(conn, after)| Step::Sync { conn, after }),
        1 => (0u8..3).prop_map(Step::Logout),
        1 => (0u8..3).prop_map(Step::Disconnect),
        1 => Just(Step::Restart),
        3 => (0u8..3, 0u8..3, 0u8..6).prop_map(|(conn, user, op)| Step::Contact { conn, user, op }),
        2 => (0u8..3, 0u8..5, 0u8..8).prop_map(|(conn, peer, up_to)| Step::MarkRead { conn, peer, up_to }),
        5 => (0u8..3, 1u8..3, 0u8..8, 0u8..7).prop_map(|(conn, group, user, op)| Step::Group { conn, group, user, op }),
    ]
}

fn frame_body(message: &Message) -> Vec<u8> {
    let mut bytes = Vec::new();
    message.encode_frame(1, &mut bytes);
    bytes.split_off(LENGTH_PREFIX_BYTES)
}

/// A snapshot body in memory: bytes, length, checksum.
type SnapshotBody = (Vec<u8>, u64, u32);

/// Logic and the inboxes, as the pipeline holds them.
struct State {
    logic: Logic,
    delivery: Delivery,
}

/// The configurations of a history's state; messages expire after
/// `retention_ms` of journaled time (each record is a millisecond later).
/// With a retention, any user may message any other (`open_messaging`),
/// so that random histories send often enough for expiry to meet unread
/// entries.
fn configs(retention_ms: u64) -> (LogicConfig, DeliveryConfig) {
    let logic = LogicConfig {
        frame_size_max: 64 * 1024,
        heartbeat_interval_ms: 1000,
        heartbeat_interval_ms_max: 60_000,
        open_messaging: retention_ms > 0,
        group_members_max: 3,
        rules_version: RULES_VERSION,
    };
    let delivery = DeliveryConfig {
        frame_size_max: 64 * 1024,
        dedup_window: 3,
        sync_limit_max: 4,
        message_retention_ms: retention_ms,
        rules_version: RULES_VERSION,
    };
    (logic, delivery)
}

impl State {
    fn new(journal: &Journal, retention_ms: u64) -> Self {
        let (logic, delivery) = configs(retention_ms);
        Self {
            logic: Logic::new(logic),
            delivery: Delivery::new(delivery, journal.reader()),
        }
    }

    /// A snapshot body of this state, as Broker::open writes it.
    fn snapshot(&self) -> SnapshotBody {
        let mut body = Encoder::new(Vec::new());
        self.logic.encode(&mut body);
        self.delivery.encode(&mut body);
        body.finish().unwrap()
    }

    fn from_snapshot(
        journal: &Journal,
        (body, length, checksum): &SnapshotBody,
        retention_ms: u64,
    ) -> Self {
        let (logic, delivery) = configs(retention_ms);
        let mut input = Decoder::new(&body[..], *length, *checksum);
        let state = Self {
            logic: Logic::decode(logic, &mut input).unwrap(),
            delivery: Delivery::decode(delivery, journal.reader(), &mut input).unwrap(),
        };
        input.finish().unwrap();
        state
    }

    fn apply(
        &mut self,
        conn: ConnId,
        command: &Command,
        body: &[u8],
        journaled: Option<Journaled>,
    ) {
        let mut out = Outbox::default();
        self.logic
            .apply(conn, command, body, journaled, 0, &mut out);
        carry_out(
            &mut self.delivery,
            conn,
            &out,
            body,
            journaled,
            &mut Outbox::default(),
        );
        self.logic.check_invariants();
        self.delivery.check_invariants();
    }

    fn digest(&self) -> String {
        self.logic.digest() + &self.delivery.digest()
    }

    fn replayed(journal: &Journal, store: &mut Store, retention_ms: u64) -> Self {
        let mut state = Self::new(journal, retention_ms);
        replay(journal, None, &mut state.logic, &mut state.delivery, store).unwrap();
        state
    }
}

/// Journals `command` (if the pipeline would) and applies it, as the
/// journal, logic and fan-out stages do.
fn apply_live(
    journal: &mut Journal,
    logic: &mut State,
    conn: ConnId,
    origin: Origin,
    body: &[u8],
    clock: &mut u64,
) {
    let command = decode_inbound(origin, body);
    let journaled = command.record_type().map(|record_type| {
        let mut payload = Vec::new();
        encode_record(conn, body, &mut payload);
        *clock += 1_000_000;
        let appended = journal.append(record_type, *clock, &payload).unwrap();
        Journaled {
            sequence: RecordSeq(appended.sequence),
            position: appended.position,
            timestamp_ns: *clock,
        }
    });
    logic.apply(conn, &command, body, journaled);
}

/// A snapshot may be taken at any record, as the compactor takes them:
/// for each record, the state replayed up to it survives a snapshot's
/// round trip, and that snapshot and the journal after it give the live
/// state (`live_digest`).
fn check_snapshots_at_every_record(journal: &Journal, retention_ms: u64, live_digest: &str) {
    for point in 0..journal.next_sequence() {
        let mut state = State::new(journal, retention_ms);
        let mut cursor = journal.reader().cursor_at_start();
        apply_records(
            &mut cursor,
            Some(point),
            &mut state.logic,
            &mut state.delivery,
            |_, _| Ok(true),
        )
        .unwrap();
        let mut restored = State::from_snapshot(journal, &state.snapshot(), retention_ms);
        assert_eq!(restored.digest(), state.digest(), "snapshot at {point}");
        let mut rest = cursor_after(&journal.reader(), Some(point)).unwrap();
        apply_records(
            &mut rest,
            None,
            &mut restored.logic,
            &mut restored.delivery,
            |_, _| Ok(true),
        )
        .unwrap();
        assert_eq!(
            restored.digest(),
            live_digest,
            "snapshot at {point}, then the rest"
        );
    }
}

fn name(user: u8) -> String {
    format!("user{user}")
}

fn token(user: u8, device: u8) -> String {
    format!("token-{user}-{device}")
}

impl Step {
    /// The event the step publishes in run `run` (each run numbers its
    /// connections afresh), or `None` for a restart.
    fn event(&self, run: u64) -> Option<(ConnId, Origin, Vec<u8>)> {
        let conn = |c: u8| ConnId(run * 100 + u64::from(c));
        let frame = |c: u8, message: Message| (conn(c), Origin::Frame, frame_body(&message));
        Some(match *self {
            Step::Register(u) => {
                let registered = Registered {
                    correlation_id: 1,
                    user: name(u),
                    password_hash: "h".into(),
                };
                (conn(0), Origin::Registered, registered.encode_to_vec())
            }
            Step::Connect(c) => (conn(c), Origin::Connected, Vec::new()),
            Step::Disconnect(c) => (conn(c), Origin::Disconnected, Vec::new()),
            Step::Login {
                conn: c,
                user,
                device,
                notice,
            } => {
                let verified = login_verified(user, device, notice);
                (conn(c), Origin::LoginVerified, verified.encode_to_vec())
            }
            Step::TokenLogin {
                conn: c,
                user,
                device,
            } => frame(
                c,
                Message::Login(proto::Login {
                    user: name(user),
                    secret: Some(proto::login::Secret::Token(token(user, device))),
                    device_id: format!("d{device}"),
                    delivery_mode: 0,
                    accept_compression: vec![proto::Compression::Lz4 as i32],
                }),
            ),
            Step::Send {
                conn: c,
                to,
                client_id,
            } => frame(
                c,
                Message::Send(proto::Send {
                    recipient: name(to),
                    client_message_id: u64::from(client_id),
                    body: vec![to, client_id],
                    group_id: 0,
                }),
            ),
            Step::Sync { conn: c, after } => frame(
                c,
                Message::Sync(proto::Sync {
                    after_sequence: u64::from(after),
                    limit: 0,
                }),
            ),
            Step::Logout(c) => frame(c, Message::Logout(proto::Logout {})),
            Step::Contact { conn: c, user, op } => frame(c, contact_message(user, op)),
            Step::MarkRead {
                conn: c,
                peer,
                up_to,
            } => {
                // Peers 3 and 4 are groups 1 and 2.
                let mark = proto::MarkRead {
                    peer: if peer < 3 { name(peer) } else { String::new() },
                    up_to_sequence: u64::from(up_to),
                    group_id: if peer < 3 { 0 } else { u64::from(peer) - 2 },
                };
                frame(c, Message::MarkRead(mark))
            }
            Step::Group {
                conn: c,
                group,
                user,
                op,
            } => frame(c, group_message(group, user, op)),
            Step::Restart => return None,
        })
    }
}

fn login_verified(user: u8, device: u8, notice: bool) -> LoginVerified {
    let mode = if notice {
        DeliveryMode::PushNotice
    } else {
        DeliveryMode::PushMessage
    };
    LoginVerified {
        correlation_id: 1,
        user_id: u64::from(user) + 1,
        device_id: format!("d{device}"),
        delivery_mode: mode as i32,
        token: token(user, device),
        lz4: device == 1,
    }
}

fn contact_message(user: u8, op: u8) -> Message {
    let user = name(user);
    match op {
        0 => Message::ContactRequest(proto::ContactRequest { user }),
        1 => Message::ContactAccept(proto::ContactAccept { user }),
        2 => Message::ContactDecline(proto::ContactDecline { user }),
        3 => Message::ContactRemove(proto::ContactRemove { user }),
        op => Message::ContactBlock(proto::ContactBlock {
            user,
            blocked: op == 4,
        }),
    }
}

/// A group command: create (with members by bit mask), invite, join,
/// leave, remove, rename, or post a message.
fn group_message(group: u8, user: u8, op: u8) -> Message {
    let group_id = u64::from(group);
    match op {
        0 => Message::GroupCreate(proto::GroupCreate {
            name: format!("g{user}"),
            members: (0..3).filter(|u| user & (1 << u) != 0).map(name).collect(),
        }),
        1 => Message::GroupInvite(proto::GroupInvite {
            group_id,
            user: name(user % 3),
        }),
        2 => Message::GroupJoin(proto::GroupJoin { group_id }),
        3 => Message::GroupLeave(proto::GroupLeave { group_id }),
        4 => Message::GroupRemove(proto::GroupRemove {
            group_id,
            user: name(user % 3),
        }),
        5 => Message::GroupRename(proto::GroupRename {
            group_id,
            name: format!("renamed{user}"),
        }),
        _ => Message::Send(proto::Send {
            recipient: String::new(),
            client_message_id: u64::from(user),
            body: vec![group, user],
            group_id,
        }),
    }
}

/// What Broker::open does after replay: a start marker, journaled and
/// applied; its sequence.
fn restart(journal: &mut Journal, live: &mut State, clock: &mut u64, retention_ms: u64) -> u64 {
    let (logic, delivery) = configs(retention_ms);
    let started = Started {
        frame_size_max_bytes: logic.frame_size_max as u32,
        open_messaging: logic.open_messaging,
        group_members_max: logic.group_members_max as u32,
        dedup_window: delivery.dedup_window as u32,
        message_retention_ms: retention_ms,
        rules_version: RULES_VERSION,
    };
    let started_bytes = started.encode_to_vec();
    let mut payload = Vec::new();
    encode_record(ConnId(0), &started_bytes, &mut payload);
    *clock += 1_000_000;
    let start = journal
        .append(super::RECORD_START, *clock, &payload)
        .unwrap();
    let journaled = Journaled {
        sequence: RecordSeq(start.sequence),
        position: start.position,
        timestamp_ns: *clock,
    };
    let command = Command::Start(Some(started));
    live.apply(ConnId(0), &command, &started_bytes, Some(journaled));
    start.sequence
}

/// Applies `history` live, checks that replay agrees, and returns the
/// state's digest.
fn run(history: &[Step]) -> String {
    run_with_retention(history, 0)
}

/// [`run`], with messages expiring after `retention_ms`.
fn run_with_retention(history: &[Step], retention_ms: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let journal_config = JournalConfig {
        segment_size_bytes: 64 * 1024,
        durability: Durability::None,
        create_dir: true,
        ..JournalConfig::default()
    };
    let mut journal = Journal::open(dir.path().join("journal"), journal_config.clone()).unwrap();
    let mut live = State::new(&journal, retention_ms);
    live.logic.set_auth(String::new(), Default::default(), 0);
    let mut clock = 0u64;
    let mut run_number = 0u64;
    let mut snapshot: Option<(u64, SnapshotBody)> = None;
    apply_live(
        &mut journal,
        &mut live,
        ConnId(0),
        Origin::Empty,
        &[],
        &mut clock,
    );
    for step in history {
        if let Some((conn, origin, body)) = step.event(run_number) {
            apply_live(&mut journal, &mut live, conn, origin, &body, &mut clock);
        } else {
            run_number += 1;
            let sequence = restart(&mut journal, &mut live, &mut clock, retention_ms);
            snapshot = Some((sequence, live.snapshot()));
        }
    }
    check_replays(&dir, &journal, snapshot.as_ref(), &live, retention_ms);
    // The journal as reopened from disk replays to the same state too.
    drop(journal);
    let journal = Journal::open(dir.path().join("journal"), journal_config).unwrap();
    let mut store = Store::open(&dir.path().join("courier.db")).unwrap();
    let reopened = State::replayed(&journal, &mut store, retention_ms);
    assert_eq!(reopened.digest(), live.digest());
    live.digest()
}

/// Replay agrees with the `live` state: from the snapshot at the last
/// start (and the journal after it), from a snapshot at every record, and
/// from the whole journal.
fn check_replays(
    dir: &tempfile::TempDir,
    journal: &Journal,
    snapshot: Option<&(u64, SnapshotBody)>,
    live: &State,
    retention_ms: u64,
) {
    if let Some((sequence, body)) = snapshot {
        let mut state = State::from_snapshot(journal, body, retention_ms);
        let mut store = Store::open(&dir.path().join("snapshot-check.db")).unwrap();
        replay(
            journal,
            Some(*sequence),
            &mut state.logic,
            &mut state.delivery,
            &mut store,
        )
        .unwrap();
        assert_eq!(state.digest(), live.digest());
    }
    check_snapshots_at_every_record(journal, retention_ms, &live.digest());
    let mut store = Store::open(&dir.path().join("courier.db")).unwrap();
    let replayed = State::replayed(journal, &mut store, retention_ms);
    assert_eq!(replayed.digest(), live.digest());
}

#[test]
fn a_known_history_replays_to_the_same_state() {
    // Two users on two devices, messages both ways, a resend, a sync, a
    // logout, a restart and a token login after it.
    let history = [
        Step::Register(0),
        Step::Register(1),
        Step::Connect(0),
        Step::Connect(1),
        Step::Login {
            conn: 0,
            user: 0,
            device: 0,
            notice: false,
        },
        Step::Login {
            conn: 1,
            user: 1,
            device: 1,
            notice: true,
        },
        Step::Send {
            conn: 0,
            to: 1,
            client_id: 1,
        },
        Step::Send {
            conn: 0,
            to: 1,
            client_id: 1,
        },
        Step::Send {
            conn: 1,
            to: 0,
            client_id: 2,
        },
        Step::Sync { conn: 1, after: 1 },
        Step::MarkRead {
            conn: 1,
            peer: 0,
            up_to: 1,
        },
        Step::Logout(0),
        Step::Restart,
        Step::Connect(0),
        Step::TokenLogin {
            conn: 0,
            user: 1,
            device: 1,
        },
        Step::Send {
            conn: 0,
            to: 0,
            client_id: 3,
        },
    ];
    run(&history);
}

/// ana (user 0) and bo (user 1) registered, logged in on connections 0
/// and 1, and friends.
fn ana_and_bo_friends() -> Vec<Step> {
    let login = |c: u8| Step::Login {
        conn: c,
        user: c,
        device: 0,
        notice: false,
    };
    vec![
        Step::Register(0),
        Step::Register(1),
        Step::Connect(0),
        Step::Connect(1),
        login(0),
        login(1),
        Step::Contact {
            conn: 0,
            user: 1,
            op: 0,
        },
        Step::Contact {
            conn: 1,
            user: 0,
            op: 1,
        },
    ]
}

/// bo sends ana a message with `client_id`.
fn bo_sends(client_id: u8) -> Step {
    Step::Send {
        conn: 1,
        to: 0,
        client_id,
    }
}

/// ana marks her conversation with bo read up to `up_to`.
fn ana_marks(up_to: u8) -> Step {
    Step::MarkRead {
        conn: 0,
        peer: 1,
        up_to,
    }
}

#[test]
fn read_marks_count_unread_from_scratch_and_replay() {
    // bo sends ana three messages; ana reads the first, then one more,
    // then all: each mark is checked against a count from scratch.
    let mut history = ana_and_bo_friends();
    history.extend([
        bo_sends(1),
        bo_sends(2),
        bo_sends(3),
        ana_marks(1),
        ana_marks(2),
        bo_sends(4),
        ana_marks(4),
    ]);
    let digest = run(&history);
    assert!(digest.contains("read [(2, 4, 0, 5)]"), "{digest}");
}

#[test]
fn a_connection_announced_again_starts_without_the_session_it_had() {
    // ana logs in on connection 0; a gateway then announces connection 0
    // again: her session there ends, in logic and in the inboxes alike.
    let mut history = ana_and_bo_friends();
    let digest = run(&history);
    assert!(digest.contains("online: 2 users, 2 devices"), "{digest}");
    history.push(Step::Connect(0));
    let digest = run(&history);
    assert!(digest.contains("online: 1 users, 1 devices"), "{digest}");
    assert!(
        digest.contains("user 1 user0 [(\"d0\", \"token-0-0\")] online []"),
        "{digest}"
    );
    assert!(
        digest.contains("mailbox 1 user0 expired 0 inbox [] read [] unread 0 devices []"),
        "{digest}"
    );
}

#[test]
fn expired_messages_leave_the_inboxes_and_the_unread_counts() {
    // bo sends ana three messages a millisecond apart; ana reads the
    // first. Five records later (connections opening) bo sends a fourth:
    // with a retention of 3 ms the first three have expired by then. The
    // last mark changes nothing, but checks the counts from scratch.
    let mut history = ana_and_bo_friends();
    history.extend([bo_sends(1), bo_sends(2), bo_sends(3), ana_marks(1)]);
    history.extend((0..5).map(|_| Step::Connect(2)));
    history.extend([bo_sends(4), ana_marks(1), Step::Restart, ana_marks(1)]);
    let digest = run_with_retention(&history, 3);
    let line = |user: u8| {
        digest
            .lines()
            .find(|l| l.starts_with(&format!("mailbox {} ", user + 1)))
            .unwrap()
            .to_owned()
    };
    // Sequences 1 to 3 are gone from both inboxes; ana's read mark stays
    // at 1, and of her unread entries only the fourth is left.
    assert!(line(0).contains("expired 3 inbox [(17,"), "{digest}");
    assert!(line(0).contains("read [(2, 1, 1, 4)] unread 1"), "{digest}");
    assert!(line(1).contains("expired 3 inbox [(17,"), "{digest}");
    assert!(
        digest.contains("messages from 3 expired to 3 held 1"),
        "{digest}"
    );
    // Without a retention, nothing expires.
    let kept = run(&history);
    assert!(kept.contains("expired 0"), "{kept}");
    assert!(
        kept.contains("messages from 0 expired to 0 held 4"),
        "{kept}"
    );
}

#[test]
fn a_group_history_replays_to_the_same_state() {
    let login = |c: u8| Step::Login {
        conn: c,
        user: c,
        device: 0,
        notice: c == 2,
    };
    let contact = |conn, user, op| Step::Contact { conn, user, op };
    let group = |conn, user, op| Step::Group {
        conn,
        group: 1,
        user,
        op,
    };
    // Three friends; user 0 creates group 1 with users 1 and 2, posts;
    // user 1 leaves, is invited back and joins; user 2 is removed.
    let history = [
        Step::Register(0),
        Step::Register(1),
        Step::Register(2),
        Step::Connect(0),
        Step::Connect(1),
        Step::Connect(2),
        login(0),
        login(1),
        login(2),
        contact(0, 1, 0),
        contact(1, 0, 1),
        contact(0, 2, 0),
        contact(2, 0, 1),
        group(0, 0b110, 0),
        group(0, 0, 6),
        group(1, 0, 3),
        group(0, 1, 1),
        group(1, 0, 2),
        group(0, 2, 4),
        group(1, 1, 6),
        Step::MarkRead {
            conn: 1,
            peer: 3,
            up_to: 1,
        },
        Step::Restart,
    ];
    let digest = run(&history);
    // Users 1 (owner) and 2 remain, user 2 rejoined last.
    assert!(
        digest.contains("group 1 \"g6\" owner 1 members [UserId(1), UserId(2)]"),
        "{digest}"
    );
    assert!(digest.contains("group 1 members [1, 2]"), "{digest}");
    // User 0 has both posts; user 1 the first and, after rejoining, its
    // own; user 2 the first only (it had been removed before the second).
    let inbox_len = |user: u8| {
        let line = digest
            .lines()
            .find(|l| l.starts_with(&format!("mailbox {} ", user + 1)))
            .unwrap();
        let inbox = &line[line.find("inbox [").unwrap() + 7..line.find("] read").unwrap()];
        if inbox.is_empty() {
            0
        } else {
            inbox.matches("), (").count() + 1
        }
    };
    assert_eq!(
        (inbox_len(0), inbox_len(1), inbox_len(2)),
        (2, 2, 1),
        "{digest}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn random_histories_replay_to_the_same_state(history in proptest::collection::vec(step(), 0..60)) {
        run(&history);
    }

    /// The same with messages expiring after a few records, so that
    /// expiry meets sends, syncs, read marks, groups and restarts. Every
    /// history starts with three users logged in, so that most sends go
    /// through.
    #[test]
    fn random_histories_with_expiry_replay_to_the_same_state(
        history in proptest::collection::vec(step(), 0..80),
        retention_ms in 1u64..30,
    ) {
        let mut full: Vec<Step> = (0..3).map(Step::Register).collect();
        full.extend((0..3).map(Step::Connect));
        full.extend((0..3).map(|c| Step::Login { conn: c, user: c, device: 0, notice: false }));
        full.extend(history);
        run_with_retention(&full, retention_ms);
    }
}

// decode_frame is used by the pipeline's decode stage; keep the import honest.
#[test]
fn frames_built_here_decode_as_the_pipeline_decodes_them() {
    let send = Message::Send(proto::Send {
        recipient: "a".into(),
        client_message_id: 1,
        body: vec![1],
        group_id: 0,
    });
    assert!(matches!(
        decode_frame(&frame_body(&send)),
        Command::Send { .. }
    ));
}
