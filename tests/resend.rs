//! The resend key over real sockets: (user, device, client message id),
//! 0 as no key, a reused id with other content refused; and across a
//! restart, resends still stored once.

mod util;

use courier::codec::proto::{DeliveryMode, ErrorCode};
use courier::codec::Message;
use util::*;

/// Every body in `user`'s inbox, oldest first (a fresh device syncs it).
fn inbox_bodies(address: std::net::SocketAddr, user: &str) -> Vec<Vec<u8>> {
    let mut device = login(address, user, "reader", DeliveryMode::PushNotice);
    let synced = device.sync_all(0).unwrap();
    synced.into_iter().map(|m| m.body).collect()
}

#[test]
fn client_id_zero_is_no_resend_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    // A client that never sets the field: every Send is a new message.
    let first = ana.send("bo", 0, b"one").unwrap();
    let second = ana.send("bo", 0, b"two").unwrap();
    assert_ne!(first.server_message_id, second.server_message_id);
    assert_eq!((first.inbox_sequence, second.inbox_sequence), (1, 2));
    assert_eq!(
        inbox_bodies(address, "bo"),
        [b"one".to_vec(), b"two".to_vec()]
    );
}

#[test]
fn devices_number_their_ids_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, address) = start_with_users(dir.path(), &["ana", "bo", "cy"]);
    let mut phone = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut laptop = login(address, "ana", "laptop", DeliveryMode::PushMessage);
    let mut cy = login(address, "cy", "phone", DeliveryMode::PushMessage);
    let to_bo = phone.send("bo", 1, b"for bo").unwrap();
    let to_cy = laptop.send("cy", 1, b"for cy").unwrap();
    assert_ne!(to_bo.server_message_id, to_cy.server_message_id);
    let Message::Deliver(delivered) = expect_push(&mut cy) else {
        panic!("cy gets the laptop's message")
    };
    assert_eq!(delivered.body, b"for cy");
    // Each device's resend is still recognised as its own.
    let again = laptop.send("cy", 1, b"for cy").unwrap();
    assert_eq!(again.server_message_id, to_cy.server_message_id);
    let again = phone.send("bo", 1, b"for bo").unwrap();
    assert_eq!(again.server_message_id, to_bo.server_message_id);
    assert_eq!(inbox_bodies(address, "cy"), [b"for cy".to_vec()]);
}

#[test]
fn a_reused_id_with_other_content_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, address) = start_with_users(dir.path(), &["ana", "bo", "cy"]);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let original = ana.send("bo", 5, b"hello").unwrap();
    // Each case: a recipient and body sent again under id 5.
    let cases: [(&str, &[u8]); 2] = [("bo", b"hello, changed"), ("cy", b"hello")];
    for (recipient, body) in cases {
        expect_code(ana.send(recipient, 5, body), ErrorCode::ClientIdReused);
    }
    let resend = ana.send("bo", 5, b"hello").unwrap();
    assert_eq!(resend.server_message_id, original.server_message_id);
    assert_eq!(inbox_bodies(address, "bo"), [b"hello".to_vec()]);
    assert!(inbox_bodies(address, "cy").is_empty());
}

#[test]
fn a_resend_after_a_restart_is_stored_once_on_the_same_device() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let original = ana.send("bo", 9, b"before").unwrap();
    drop(ana);
    server.shutdown().unwrap();
    let server = start(dir.path());
    let address = server.local_addr();
    let mut phone = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let resend = phone.send("bo", 9, b"before").unwrap();
    assert_eq!(resend.server_message_id, original.server_message_id);
    // Another device's id 9 is a message of its own.
    let mut laptop = login(address, "ana", "laptop", DeliveryMode::PushMessage);
    let other = laptop.send("bo", 9, b"other").unwrap();
    assert_ne!(other.server_message_id, original.server_message_id);
    assert_eq!(
        inbox_bodies(address, "bo"),
        [b"before".to_vec(), b"other".to_vec()]
    );
}

#[test]
fn marking_a_group_read_needs_membership_or_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, address) = start_with_users(dir.path(), &["ana", "bo", "cy"]);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    let mut cy = login(address, "cy", "phone", DeliveryMode::PushMessage);
    let group = ana.group_create("trip", &["bo"]).unwrap().group_id;
    ana.send_group(group, 1, b"hi").unwrap();
    // cy was never in it.
    expect_code(cy.mark_group_read(group, 0), ErrorCode::NotMember);
    // bo leaves, and may still mark what reached him read.
    bo.group_leave(group).unwrap();
    let state = bo.mark_group_read(group, 1).unwrap();
    assert_eq!(state.conversation_unread, 0);
}

/// A message stored while its sender was a member is still acknowledged
/// when resent after the sender left (its first acknowledgement may have
/// been lost); a new message after leaving is refused.
#[test]
fn a_resend_after_leaving_the_group_gets_the_original_ack() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, address) = start_with_users(dir.path(), &["ana", "bo", "cy"]);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    let group = ana.group_create("trip", &["bo", "cy"]).unwrap().group_id;
    let original = bo.send_group(group, 7, b"from bo").unwrap();
    bo.group_leave(group).unwrap();
    let resend = bo.send_group(group, 7, b"from bo").unwrap();
    assert_eq!(
        (resend.server_message_id, resend.inbox_sequence),
        (original.server_message_id, original.inbox_sequence)
    );
    expect_code(bo.send_group(group, 8, b"new"), ErrorCode::NotMember);
    expect_code(
        bo.send_group(group, 7, b"other body"),
        ErrorCode::ClientIdReused,
    );
    let bodies = inbox_bodies(address, "cy");
    assert_eq!(bodies, [b"from bo".to_vec()], "stored once, nothing after");
    drop(ana);
}
