//! What expiry costs with many users: a probe that prints, not a test that
//! asserts (timings belong to benchmarks). Run it in a release build:
//!
//! ```text
//! cargo test --release --lib expiry_probe -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use super::*;
use crate::journal::{Durability, Journal, JournalConfig};

const USERS: u64 = 1_000_000;
const MESSAGES: u64 = 2 * USERS;

#[test]
#[ignore = "a probe that prints timings; run it in release"]
fn expiry_probe() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(
        dir.path(),
        JournalConfig {
            durability: Durability::None,
            create_dir: true,
            ..JournalConfig::default()
        },
    )
    .unwrap();
    let config = DeliveryConfig {
        frame_size_max: 65536,
        dedup_window: 16,
        sync_limit_max: 500,
        message_retention_ms: 0,
        rules_version: crate::broker::logic::RULES_VERSION,
    };
    let mut delivery = Delivery::new(config, journal.reader());
    let mut out = Outbox::default();
    for user in 0..USERS {
        let account = Intent::Account {
            name: format!("u{user}"),
        };
        delivery.apply(ConnId(0), &account, &[], None, &mut out);
    }
    // Message m, at m ms, goes from one user to another far away: their
    // inboxes are spread over the whole memory.
    for m in 0..MESSAGES {
        let intent = Intent::Message {
            sender: UserId(m % USERS + 1),
            to: Peer::user(UserId((m * 7919) % USERS + 1)),
            correlation_id: 0,
            client_message_id: m,
            body: 0..0,
            refused: None,
        };
        let journaled = Journaled {
            sequence: crate::broker::ids::RecordSeq(m),
            position: Position {
                segment: 0,
                offset: 0,
            },
            timestamp_ns: m * 1_000_000,
        };
        out = Outbox::default();
        delivery.apply(ConnId(0), &intent, &[], Some(journaled), &mut out);
    }
    // A retention of MESSAGES ms: at time MESSAGES + k, the first k
    // messages have expired.
    delivery.config.message_retention_ms = MESSAGES;
    let start = Instant::now();
    delivery.expire(MESSAGES + 1_000, None);
    println!(
        "{USERS} users, {MESSAGES} 1:1 messages: expiring 1,000 messages at once took {:?}",
        start.elapsed()
    );
    let mut events = 0u32;
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    let mut now = MESSAGES + 101_000;
    loop {
        let event = Instant::now();
        delivery.expire(now, Some(EXPIRY_INBOXES_PER_EVENT_SERVED));
        worst = worst.max(event.elapsed());
        events += 1;
        now += 1;
        let backlog = delivery
            .fronts
            .peek()
            .is_some_and(|&Reverse((front, _))| front < delivery.expire_end);
        if !backlog {
            break;
        }
    }
    let total = start.elapsed();
    println!(
        "expiring 100,000 more at once, worked off by {events} events of at most \
         {EXPIRY_INBOXES_PER_EVENT_SERVED} inboxes: {:?} each on average, {worst:?} at most",
        total / events
    );
}
