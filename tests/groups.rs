//! Groups over real sockets: fan-out on write to members on several devices
//! and offline, the member limit, who may post and read, leaving, read
//! state across devices, the SQLite projection, and bad requests.

mod util;

use std::collections::BTreeSet;

use courier::client::Client;
use courier::codec::proto::{self, group_changed::Change, ContactState, DeliveryMode, ErrorCode};
use courier::codec::Message;
use util::*;

/// The next push, which must be a Deliver.
fn expect_deliver(client: &mut Client) -> proto::Deliver {
    match expect_push(client) {
        Message::Deliver(deliver) => deliver,
        other => panic!("expected a Deliver, got {other:?}"),
    }
}

fn expect_change(client: &mut Client, change: Change, user: &str) -> proto::GroupChanged {
    match expect_push(client) {
        Message::GroupChanged(changed) => {
            assert_eq!((changed.change(), changed.user.as_str()), (change, user));
            changed
        }
        other => panic!("expected a GroupChanged, got {other:?}"),
    }
}

#[test]
fn a_three_member_group_reaches_every_device_and_the_offline_member_on_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.broker.open_messaging = false;
    let server = courier::net::start(config.clone()).unwrap();
    let address = server.local_addr();
    for user in ["ana", "bo", "cy", "dan"] {
        register(address, user);
    }
    befriend(address, "ana", "bo");
    befriend(address, "ana", "cy");
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut ana_laptop = login(address, "ana", "laptop", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    let mut bo_watch = login(address, "bo", "watch", DeliveryMode::PushNotice);
    let mut dan = login(address, "dan", "phone", DeliveryMode::PushMessage);

    // cy is offline; ana creates the group with bo and cy.
    let info = ana.group_create("family", &["bo", "cy"]).unwrap();
    assert_eq!((info.name.as_str(), info.owner.as_str()), ("family", "ana"));
    assert_eq!(info.members, ["ana", "bo", "cy"]);
    let group = info.group_id;
    expect_change(&mut bo, Change::Created, "");
    expect_change(&mut bo_watch, Change::Created, "");
    expect_change(&mut ana_laptop, Change::Created, "");

    // Three messages: every online device of every member but the sending
    // one gets each (the watch a notice), with the group named.
    let mut server_ids = Vec::new();
    for n in 1..=3u64 {
        let ack = ana
            .send_group(group, n, format!("hello {n}").as_bytes())
            .unwrap();
        assert_eq!(ack.inbox_sequence, n);
        server_ids.push(ack.server_message_id);
        for device in [&mut bo, &mut ana_laptop] {
            let deliver = expect_deliver(device);
            assert_eq!((deliver.group_id, deliver.sender.as_str()), (group, "ana"));
            assert_eq!(deliver.recipient, "");
            assert_eq!(deliver.body, format!("hello {n}").as_bytes());
            assert_eq!(deliver.server_message_id, ack.server_message_id);
        }
        match expect_push(&mut bo_watch) {
            Message::Notify(notify) => {
                assert_eq!((notify.head_sequence, notify.unread_count), (n, n))
            }
            other => panic!("expected a Notify, got {other:?}"),
        }
    }
    expect_no_push(&mut ana);
    expect_no_push(&mut dan);
    // A resend is acknowledged with the same ids and stored once.
    let again = ana.send_group(group, 2, b"hello 2").unwrap();
    assert_eq!(again.server_message_id, server_ids[1]);
    expect_no_push(&mut bo);

    // A non-member can neither post nor read.
    expect_code(dan.send_group(group, 1, b"let me in"), ErrorCode::NotMember);
    expect_code(dan.group_members(group), ErrorCode::NotMember);
    assert!(dan.sync_all(0).unwrap().is_empty());

    // cy comes online: three unread, synced in order, one entry each.
    let mut cy = Client::connect(address).unwrap();
    let ok = cy
        .login("cy", &password("cy"), "phone", DeliveryMode::PushMessage)
        .unwrap();
    assert_eq!((ok.head_sequence, ok.unread_count), (3, 3));
    for (user, client) in [("ana", &mut ana), ("bo", &mut bo), ("cy", &mut cy)] {
        let inbox = client.sync_all(0).unwrap();
        let ids: Vec<u64> = inbox.iter().map(|m| m.server_message_id).collect();
        assert_eq!(ids, server_ids, "{user}'s inbox");
        assert!(inbox.iter().all(|m| m.group_id == group));
    }

    // Read state agrees across cy's devices and comes back at login.
    let mut cy_tablet = login(address, "cy", "tablet", DeliveryMode::PushMessage);
    let state = cy.mark_group_read(group, 2).unwrap();
    assert_eq!(state.group_id, group);
    assert_eq!(
        (
            state.up_to_sequence,
            state.conversation_unread,
            state.unread_total
        ),
        (2, 1, 1)
    );
    match expect_push(&mut cy_tablet) {
        Message::ReadState(pushed) => assert_eq!(pushed, state),
        other => panic!("expected a ReadState, got {other:?}"),
    }
    let relogin = Client::connect(address)
        .unwrap()
        .login("cy", &password("cy"), "laptop", DeliveryMode::PushMessage)
        .unwrap();
    assert_eq!(relogin.unread_count, 1);

    // bo leaves: the others hear of it, and nothing more reaches bo.
    bo.group_leave(group).unwrap();
    expect_change(&mut ana, Change::Left, "bo");
    expect_change(&mut bo_watch, Change::Left, "bo");
    ana.send_group(group, 4, b"after bo left").unwrap();
    expect_change(&mut cy, Change::Left, "bo");
    assert_eq!(expect_deliver(&mut cy).body, b"after bo left");
    expect_no_push(&mut bo);
    assert_eq!(bo.sync_all(0).unwrap().len(), 3);
    expect_code(
        bo.send_group(group, 9, b"still here?"),
        ErrorCode::NotMember,
    );
    assert_eq!(ana.group_members(group).unwrap().members, ["ana", "cy"]);
    server.shutdown().unwrap();

    // Groups and members are projected into SQLite.
    let db = rusqlite::Connection::open(dir.path().join("courier.db")).unwrap();
    let members: Vec<String> = db
        .prepare(
            "SELECT a.name FROM group_members m JOIN accounts a ON a.user_id = m.user_id
             WHERE m.group_id = ?1 ORDER BY a.name",
        )
        .unwrap()
        .query_map([group as i64], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(members, ["ana", "cy"]);
    let (name, owner): (String, i64) = db
        .query_row(
            "SELECT name, owner_id FROM groups WHERE group_id = ?1",
            [group as i64],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((name.as_str(), owner), ("family", 1));
}

#[test]
fn a_500_member_group_gives_every_member_one_entry_per_message() {
    const MEMBERS: usize = 500;
    const ONLINE: usize = 120;
    const MESSAGES: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &[]);
    let names: Vec<String> = (0..MEMBERS).map(|i| format!("m{i:03}")).collect();
    for name in &names {
        register(address, name);
    }
    register(address, "late");
    let mut owner = login(address, &names[0], "phone", DeliveryMode::PushMessage);
    let others: Vec<&str> = names[1..].iter().map(String::as_str).collect();

    // One more than the limit is refused with a clear error; the limit is not.
    let mut too_many = others.clone();
    too_many.push("late");
    expect_code(
        owner.group_create("too big", &too_many),
        ErrorCode::GroupFull,
    );
    let info = owner.group_create("everyone", &others).unwrap();
    assert_eq!(info.members.len(), MEMBERS);
    let group = info.group_id;
    expect_code(owner.group_invite(group, "late"), ErrorCode::GroupFull);

    // Members 1..ONLINE online (the first ten on a second device in
    // notify mode); the rest offline.
    let mut online: Vec<Client> = names[1..ONLINE]
        .iter()
        .map(|name| login(address, name, "phone", DeliveryMode::PushMessage))
        .collect();
    let mut watches: Vec<Client> = names[1..11]
        .iter()
        .map(|name| login(address, name, "watch", DeliveryMode::PushNotice))
        .collect();
    let mut sent = Vec::new();
    for n in 1..=MESSAGES {
        let ack = owner.send_group(group, n, &n.to_le_bytes()).unwrap();
        assert_eq!(ack.inbox_sequence, n);
        sent.push(ack.server_message_id);
    }
    for client in &mut online {
        let got: Vec<u64> = (0..MESSAGES)
            .map(|_| expect_deliver(client).server_message_id)
            .collect();
        assert_eq!(got, sent);
    }
    for watch in &mut watches {
        for n in 1..=MESSAGES {
            match expect_push(watch) {
                Message::Notify(notify) => assert_eq!(notify.head_sequence, n),
                other => panic!("expected a Notify, got {other:?}"),
            }
        }
    }
    // Every member, online or not, has exactly one entry per message.
    for name in &names[ONLINE..] {
        let mut member = login(address, name, "phone", DeliveryMode::PushNotice);
        let inbox: Vec<u64> = member
            .sync_all(0)
            .unwrap()
            .iter()
            .map(|m| m.server_message_id)
            .collect();
        assert_eq!(inbox, sent, "{name}");
    }
    let mut late = login(address, "late", "phone", DeliveryMode::PushMessage);
    assert!(late.sync_all(0).unwrap().is_empty());
    expect_code(late.group_members(group), ErrorCode::NotMember);
    server.shutdown().unwrap();
}

#[test]
fn bad_group_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.broker.open_messaging = false;
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    for user in ["ana", "bo", "cy"] {
        register(address, user);
    }
    befriend(address, "ana", "bo");
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    let mut cy = login(address, "cy", "phone", DeliveryMode::PushMessage);

    // An unknown group, for every kind of request.
    expect_code(ana.send_group(42, 1, b"x"), ErrorCode::UnknownGroup);
    expect_code(ana.group_join(42), ErrorCode::UnknownGroup);
    expect_code(ana.group_members(42), ErrorCode::UnknownGroup);
    expect_code(ana.group_invite(42, "bo"), ErrorCode::UnknownGroup);
    expect_code(ana.mark_group_read(42, 0), ErrorCode::UnknownGroup);
    // Creating with a stranger, or naming a recipient and a group at once.
    expect_code(ana.group_create("g", &["cy"]), ErrorCode::NotFriends);
    expect_code(ana.group_create("", &[]), ErrorCode::MalformedFrame);
    let info = ana.group_create("pair", &[]).unwrap();
    let group = info.group_id;
    let both = Message::Send(proto::Send {
        recipient: "bo".into(),
        client_message_id: 1,
        body: b"x".to_vec(),
        group_id: group,
    });
    expect_code(ana.request(&both), ErrorCode::MalformedFrame);

    // Joining without an invitation; inviting a non-friend.
    expect_code(bo.group_join(group), ErrorCode::NotInvited);
    expect_code(ana.group_invite(group, "cy"), ErrorCode::NotFriends);
    expect_code(
        ana.group_invite(group, "nobody"),
        ErrorCode::UnknownRecipient,
    );
    // bo is invited (and told), joins; a second join is refused.
    ana.group_invite(group, "bo").unwrap();
    expect_change(&mut bo, Change::Invited, "bo");
    let listed = bo.groups().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].invited);
    bo.group_join(group).unwrap();
    expect_change(&mut ana, Change::Joined, "bo");
    expect_code(bo.group_join(group), ErrorCode::AlreadyMember);
    expect_code(ana.group_invite(group, "bo"), ErrorCode::AlreadyMember);
    // Only the owner removes; cy is no member at all.
    expect_code(bo.group_remove(group, "ana"), ErrorCode::NotOwner);
    expect_code(ana.group_remove(group, "cy"), ErrorCode::NotMember);
    expect_code(cy.group_rename(group, "mine"), ErrorCode::NotMember);
    expect_code(cy.group_leave(group), ErrorCode::NotMember);
    // Marking read past the head.
    expect_code(bo.mark_group_read(group, 1), ErrorCode::BadSequence);

    // Nothing changed: the members, the owner, the name.
    let after = bo.group_members(group).unwrap();
    assert_eq!(after.members, ["ana", "bo"]);
    assert_eq!((after.owner.as_str(), after.name.as_str()), ("ana", "pair"));
    let summary = bo.groups().unwrap();
    assert_eq!(summary.len(), 1);
    assert!(!summary[0].invited);
    assert_eq!(summary[0].member_count, 2);

    // The owner leaves: bo owns the group; bo leaves: it is dissolved.
    ana.group_leave(group).unwrap();
    let changed = expect_change(&mut bo, Change::Left, "ana");
    assert_eq!(changed.owner, "bo");
    bo.group_rename(group, "just bo").unwrap();
    bo.group_leave(group).unwrap();
    expect_code(bo.group_members(group), ErrorCode::UnknownGroup);
    expect_code(ana.group_join(group), ErrorCode::UnknownGroup);
    let contacts = bo
        .request(&Message::ContactSync(proto::ContactSync {
            after_version: 0,
        }))
        .unwrap();
    let Message::ContactList(list) = contacts else {
        panic!("expected a ContactList")
    };
    assert_eq!(list.contacts[0].state, ContactState::Friend as i32);
    let ids: BTreeSet<u64> = bo.groups().unwrap().iter().map(|g| g.group_id).collect();
    assert!(ids.is_empty());
    server.shutdown().unwrap();
}
