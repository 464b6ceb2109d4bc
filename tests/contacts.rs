//! Contacts over real sockets: the friend flow, friends-only messaging,
//! versions for incremental contact sync, blocking, and bad requests.

mod util;

use courier::client::Client;
use courier::codec::proto::{self, ContactState, DeliveryMode, ErrorCode};
use courier::codec::Message;
use util::*;

fn request(client: &mut Client, message: Message) -> Result<u64, courier::client::ClientError> {
    match client.request(&message)? {
        Message::ContactOk(ok) => Ok(ok.version),
        other => panic!("unexpected {other:?}"),
    }
}

fn contact_request(user: &str) -> Message {
    Message::ContactRequest(proto::ContactRequest { user: user.into() })
}

fn contacts(client: &mut Client, after: u64) -> proto::ContactList {
    let sync = Message::ContactSync(proto::ContactSync {
        after_version: after,
    });
    match client.request(&sync).unwrap() {
        Message::ContactList(list) => list,
        other => panic!("unexpected {other:?}"),
    }
}

fn expect_changed(client: &mut Client, user: &str, state: ContactState) {
    let Message::ContactChanged(changed) = expect_push(client) else {
        panic!("expected a contact change")
    };
    let contact = changed.contact.unwrap();
    assert_eq!((contact.user.as_str(), contact.state), (user, state as i32));
}

#[test]
fn friends_request_accept_chat_remove_and_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.broker.open_messaging = false;
    let server = courier::net::start(config.clone()).unwrap();
    let address = server.local_addr();
    for user in ["ana", "bo", "cy"] {
        register(address, user);
    }
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut ana_laptop = login(address, "ana", "laptop", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);

    // Strangers cannot message each other.
    expect_code(ana.send("bo", 1, b"hi"), ErrorCode::NotFriends);

    // Request: bo hears of it, ana's other device too.
    let version = request(&mut ana, contact_request("bo")).unwrap();
    assert_eq!(version, 1);
    expect_changed(&mut bo, "ana", ContactState::RequestReceived);
    expect_changed(&mut ana_laptop, "bo", ContactState::RequestSent);
    // Accept: friends on both sides.
    request(
        &mut bo,
        Message::ContactAccept(proto::ContactAccept { user: "ana".into() }),
    )
    .unwrap();
    expect_changed(&mut ana, "bo", ContactState::Friend);
    expect_changed(&mut ana_laptop, "bo", ContactState::Friend);
    ana.send("bo", 1, b"hi friend").unwrap();
    assert!(matches!(expect_push(&mut bo), Message::Deliver(_)));

    // A new device gets the whole list; an old one only what changed.
    let all = contacts(&mut ana_laptop, 0);
    assert_eq!(all.contacts.len(), 1);
    assert_eq!(all.contacts[0].state, ContactState::Friend as i32);
    assert!(contacts(&mut ana_laptop, all.version).contacts.is_empty());

    // Bad requests change nothing.
    let bad = [
        (
            Message::ContactAccept(proto::ContactAccept { user: "cy".into() }),
            ErrorCode::ContactState,
        ),
        (contact_request("nobody"), ErrorCode::UnknownRecipient),
        (contact_request("ana"), ErrorCode::ContactState),
        (contact_request("bo"), ErrorCode::ContactState),
        (
            Message::ContactRemove(proto::ContactRemove { user: "cy".into() }),
            ErrorCode::ContactState,
        ),
    ];
    for (message, code) in bad {
        expect_code(request(&mut ana, message), code);
    }
    assert_eq!(contacts(&mut ana, 0).version, all.version);

    // Remove ends the friendship on both sides, and messaging with it.
    request(
        &mut bo,
        Message::ContactRemove(proto::ContactRemove { user: "ana".into() }),
    )
    .unwrap();
    let changes = contacts(&mut ana, all.version);
    assert_eq!(changes.contacts.len(), 1);
    assert_eq!(changes.contacts[0].state, ContactState::None as i32);
    expect_code(ana.send("bo", 2, b"still there?"), ErrorCode::NotFriends);

    // cy blocks ana: ana's request goes nowhere, and is not told why.
    let mut cy = login(address, "cy", "phone", DeliveryMode::PushMessage);
    request(
        &mut cy,
        Message::ContactBlock(proto::ContactBlock {
            user: "ana".into(),
            blocked: true,
        }),
    )
    .unwrap();
    request(&mut ana, contact_request("cy")).unwrap();
    expect_no_push(&mut cy);
    let cy_list = contacts(&mut cy, 0);
    assert_eq!(cy_list.contacts.len(), 1);
    assert_eq!(cy_list.contacts[0].state, ContactState::Blocked as i32);
    server.shutdown().unwrap();

    // Everything survives a restart, and SQLite has the lists.
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    let mut cy = login(address, "cy", "tablet", DeliveryMode::PushMessage);
    assert_eq!(contacts(&mut cy, 0), cy_list);
    server.shutdown().unwrap();
    let db = rusqlite::Connection::open(dir.path().join("courier.db")).unwrap();
    let blocked: i64 = db
        .query_row(
            "SELECT count(*) FROM contacts WHERE state = 'BLOCKED'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(blocked, 1);
}

#[test]
fn a_long_contact_list_comes_in_pages_that_each_fit_a_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.broker.frame_size_max_bytes = 2048;
    // A member list must fit a frame too.
    config.broker.group_members_max = 20;
    config.output_cap_bytes = 1 << 20;
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    register(address, "ana");
    let others: Vec<String> = (0..150).map(|i| format!("friend{i:03}")).collect();
    for name in &others {
        register(address, name);
    }
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    for name in &others {
        request(&mut ana, contact_request(name)).unwrap();
    }
    // Page through from version 0: every entry once, in version order.
    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = contacts(&mut ana, after);
        pages += 1;
        assert!(
            page.version > after || !page.more,
            "each page makes progress"
        );
        seen.extend(page.contacts.iter().map(|c| c.user.clone()));
        after = page.version;
        if !page.more {
            break;
        }
    }
    assert!(pages > 1, "150 entries do not fit one 2 KiB frame");
    assert_eq!(seen, others);
    server.shutdown().unwrap();
}

/// A request made while blocked is kept from the blocker, and arrives
/// when they unblock: both lists then agree, and it can be accepted.
#[test]
fn a_request_made_while_blocked_arrives_at_the_unblock() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.broker.open_messaging = false;
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    register(address, "ana");
    register(address, "bo");
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    let block = |blocked| {
        Message::ContactBlock(proto::ContactBlock {
            user: "bo".into(),
            blocked,
        })
    };
    request(&mut ana, block(true)).unwrap();
    request(&mut bo, contact_request("ana")).unwrap();
    let state_of = |list: proto::ContactList| {
        list.contacts
            .iter()
            .find(|c| c.user == "bo")
            .map(|c| c.state)
    };
    assert_eq!(
        state_of(contacts(&mut ana, 0)),
        Some(ContactState::Blocked as i32)
    );
    request(&mut ana, block(false)).unwrap();
    assert_eq!(
        state_of(contacts(&mut ana, 0)),
        Some(ContactState::RequestReceived as i32),
        "the request bo made while blocked"
    );
    let accept = Message::ContactAccept(proto::ContactAccept { user: "bo".into() });
    request(&mut ana, accept).unwrap();
    ana.send("bo", 1, b"friends now").unwrap();
    server.shutdown().unwrap();
}
