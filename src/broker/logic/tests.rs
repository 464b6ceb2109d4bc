//! Logic alone, without the pipeline: what its outbox holds.

use super::*;
use crate::broker::event::{decode_frame, Out};

fn logic() -> Logic {
    let mut logic = Logic::new(LogicConfig {
        frame_size_max: 64 * 1024,
        heartbeat_interval_ms: 1000,
        heartbeat_interval_ms_max: 60_000,
        open_messaging: true,
        group_members_max: 10,
        rules_version: RULES_VERSION,
    });
    logic.set_auth("dummy".into(), Arc::default(), 0);
    logic
}

fn apply(logic: &mut Logic, conn: ConnId, message: &Message) -> Outbox {
    let mut frame = Vec::new();
    message.encode_frame(1, &mut frame);
    let body = &frame[crate::codec::LENGTH_PREFIX_BYTES..];
    let mut out = Outbox::default();
    logic.apply(conn, &decode_frame(body), body, None, 0, &mut out);
    out
}

fn error_codes(out: &Outbox) -> Vec<ErrorCode> {
    out.iter()
        .filter_map(|item| match item {
            Out::Frame(_, frame) => {
                use crate::codec::{FRAME_HEADER_BYTES, LENGTH_PREFIX_BYTES};
                let header = &frame[LENGTH_PREFIX_BYTES..];
                let message_type = u16::from_be_bytes([header[0], header[1]]);
                let payload = &header[FRAME_HEADER_BYTES..];
                match Message::decode_parts(message_type, payload) {
                    Ok(Message::Error(error)) => ErrorCode::try_from(error.code).ok(),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_job_the_workers_refuse_ends_its_check_and_frees_the_name() {
    let mut logic = logic();
    let conn = ConnId(1);
    logic.apply(
        conn,
        &Command::Connected(None),
        &[],
        None,
        0,
        &mut Outbox::default(),
    );
    let register = Message::Register(proto::Register {
        user: "ana".into(),
        password: "pw".into(),
    });
    let out = apply(&mut logic, conn, &register);
    assert_eq!(out.auth.len(), 1, "the hash leaves as a job");
    // The name is held while it is hashed; another waits for the
    // first one's answer.
    assert_eq!(
        error_codes(&apply(&mut logic, ConnId(2), &register)),
        [ErrorCode::UserExists]
    );
    let other = Message::Register(proto::Register {
        user: "bo".into(),
        password: "pw".into(),
    });
    assert_eq!(
        error_codes(&apply(&mut logic, conn, &other)),
        [ErrorCode::Overloaded]
    );
    // The queue was full: the client hears so, and may try again.
    let mut out = Outbox::default();
    logic.check_not_started(conn, 1, false, &mut out);
    assert_eq!(error_codes(&out), [ErrorCode::Overloaded]);
    logic.check_invariants();
    let again = apply(&mut logic, conn, &register);
    assert_eq!(again.auth.len(), 1, "the name was released");
    assert!(error_codes(&again).is_empty());
    logic.check_invariants();
}
