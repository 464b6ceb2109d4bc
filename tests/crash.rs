//! SIGKILL the real server mid-stream: every acknowledged message survives
//! the restart, and resends under the same client ids are not duplicated.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use courier::client::{send_message, Client, ClientError};
use courier::codec::proto::DeliveryMode;
use courier::codec::Message;
use util::*;

/// A server process, killed when dropped (so a failing test leaves none).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `courier serve` on an ephemeral port; returns it and its address.
fn spawn_server(dir: &Path, durability: &str) -> (Server, SocketAddr) {
    spawn_server_with(dir, durability, "")
}

/// [`spawn_server`], with `broker` settings added to its configuration.
fn spawn_server_with(dir: &Path, durability: &str, broker: &str) -> (Server, SocketAddr) {
    spawn_server_logging(dir, durability, broker, Stdio::inherit())
}

/// [`spawn_server_with`], its warnings and errors going to `stderr`.
fn spawn_server_logging(
    dir: &Path,
    durability: &str,
    broker: &str,
    stderr: Stdio,
) -> (Server, SocketAddr) {
    let config = dir.join("courier.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:0\"\n[broker]\nsegment_size_mb = 1\nopen_messaging = true\nsnapshot_min_records = 50\n{broker}[broker.auth]\nmemory_kib = 8\niterations = 1\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--durability", durability])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("courier runs");
    let address = util::listening_address(&mut child);
    (Server(child), address)
}

/// Sends `ids` pipelined (a window of 32); once `kill_after`
/// acknowledgements are in, kills process `pid` with SIGKILL (messages are
/// still in flight then) and reads until the connection dies. Returns the
/// acknowledgements received.
fn send_until_killed(
    client: &mut Client,
    ids: &[u64],
    kill_after: usize,
    pid: u32,
) -> BTreeMap<u64, u64> {
    let mut acks = BTreeMap::new();
    let mut in_flight = 0usize;
    let mut next = 0usize;
    loop {
        while in_flight < 32 && next < ids.len() {
            let id = ids[next];
            if client
                .submit(&send_message("bo", id, &id.to_le_bytes()))
                .is_err()
            {
                return acks;
            }
            next += 1;
            in_flight += 1;
        }
        if in_flight == 0 {
            return acks;
        }
        match client.receive(Duration::from_secs(10)) {
            Ok(Some((_, Message::SendAck(ack)))) => {
                acks.insert(ack.client_message_id, ack.server_message_id);
                in_flight -= 1;
                if acks.len() == kill_after {
                    // SIGKILL: no drain, no flush, no destructor.
                    Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status()
                        .unwrap();
                }
            }
            Ok(Some((_, other))) => panic!("unexpected {other:?}"),
            Ok(None) => panic!("no acknowledgement within 10 s from a live server"),
            Err(ClientError::Closed | ClientError::Io(_)) => return acks,
            Err(other) => panic!("{other}"),
        }
    }
}

fn bodies_of_bo(address: SocketAddr) -> Vec<u64> {
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushNotice);
    bo.sync_all(0)
        .unwrap()
        .into_iter()
        .map(|m| u64::from_le_bytes(m.body.try_into().unwrap()))
        .collect()
}

fn kill_cycles(durability: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut address) = spawn_server(dir.path(), durability);
    register(address, "ana");
    register(address, "bo");
    let mut acked_total: BTreeMap<u64, u64> = BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let per_cycle = 3_000u64;
    let mut interrupted = false;
    for cycle in 0..3u64 {
        let ids: Vec<u64> = (cycle * per_cycle + 1..=(cycle + 1) * per_cycle).collect();
        let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 1 + (seed % (per_cycle - 100)) as usize;
        let acks = send_until_killed(&mut ana, &ids, kill_after, child.0.id());
        let _ = child.0.wait();
        acked_total.extend(acks.iter());
        eprintln!(
            "cycle {cycle}: killed after {} of {per_cycle} acknowledgements",
            acks.len()
        );
        interrupted |= acks.len() < ids.len();

        let (restarted, address_now) = spawn_server(dir.path(), durability);
        child = restarted;
        address = address_now;
        // Every acknowledged message is in bo's inbox after the restart.
        let stored = bodies_of_bo(address_now);
        let stored_set: BTreeSet<u64> = stored.iter().copied().collect();
        assert_eq!(stored.len(), stored_set.len(), "no message is stored twice");
        for id in acked_total.keys() {
            assert!(
                stored_set.contains(id),
                "cycle {cycle}: acknowledged message {id} is lost"
            );
        }
        // Resending the whole cycle is idempotent: acknowledged ids come back
        // with their original server ids, and afterwards each id is stored once.
        let mut ana = login(address_now, "ana", "phone", DeliveryMode::PushMessage);
        for &id in &ids {
            let ack = ana.send("bo", id, &id.to_le_bytes()).unwrap();
            if let Some(&original) = acks.get(&id) {
                assert_eq!(ack.server_message_id, original, "resend of {id}");
            }
        }
        let stored = bodies_of_bo(address_now);
        let expected: Vec<u64> = (1..=(cycle + 1) * per_cycle).collect();
        let mut sorted = stored.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected, "cycle {cycle}: every id exactly once");
        acked_total.extend(ids.iter().map(|&id| (id, 0)));
    }
    drop(child);
    assert!(
        interrupted,
        "no kill landed mid-stream: the test proved nothing"
    );
    // The restarts wrote snapshots (more than 50 records to replay), and
    // the later ones started from them.
    let snapshots = std::fs::read_dir(dir.path().join("data/snapshots")).unwrap();
    assert!(snapshots.count() > 0, "no snapshot was written");
}

/// Under a message retention, SIGKILL mid-stream and restart: every
/// acknowledged message younger than the retention is there, the ones of
/// earlier cycles (older than it) are gone, and resends are idempotent.
#[test]
fn sigkill_under_message_retention_keeps_what_has_not_expired() {
    const RETENTION_S: u64 = 4;
    let broker = format!("message_retention_s = {RETENTION_S}\n");
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut address) = spawn_server_with(dir.path(), "batch", &broker);
    register(address, "ana");
    register(address, "bo");
    let per_cycle = 2_000u64;
    let mut interrupted = false;
    for cycle in 0..3u64 {
        if cycle > 0 {
            // The earlier cycles' messages expire.
            std::thread::sleep(Duration::from_millis(RETENTION_S * 1000 + 500));
        }
        let ids: Vec<u64> = (cycle * per_cycle + 1..=(cycle + 1) * per_cycle).collect();
        let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
        let kill_after = 200 + (cycle as usize * 700);
        let acks = send_until_killed(&mut ana, &ids, kill_after, child.0.id());
        let _ = child.0.wait();
        interrupted |= acks.len() < ids.len();
        let (restarted, address_now) = spawn_server_with(dir.path(), "batch", &broker);
        child = restarted;
        address = address_now;
        let stored: BTreeSet<u64> = bodies_of_bo(address).into_iter().collect();
        for id in acks.keys() {
            assert!(
                stored.contains(id),
                "cycle {cycle}: acknowledged message {id} is lost"
            );
        }
        assert!(
            stored.iter().all(|id| ids.contains(id)),
            "cycle {cycle}: an earlier cycle's message outlived the retention"
        );
        let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
        for (&id, &original) in &acks {
            let ack = ana.send("bo", id, &id.to_le_bytes()).unwrap();
            assert_eq!(ack.server_message_id, original, "resend of {id}");
        }
    }
    drop(child);
    assert!(
        interrupted,
        "no kill landed mid-stream: the test proved nothing"
    );
}

/// Snapshots taken while serving hold the sessions open then: SIGKILL
/// after some were taken, and the restart loads the newest (no warning
/// says it was skipped), with every acknowledged message there and
/// resends idempotent.
#[test]
fn sigkill_after_snapshots_taken_while_serving_loses_nothing() {
    // Nothing expires in the test; a snapshot once the journal has grown by
    // a segment (1 MiB).
    let broker = "message_retention_s = 3600\nsnapshot_every_segments = 1\n";
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        Stdio::from(file)
    };
    let (mut child, mut address) = spawn_server_logging(dir.path(), "batch", broker, log());
    register(address, "ana");
    register(address, "bo");
    let snapshots = |dir: &Path| -> Vec<u64> {
        std::fs::read_dir(dir.join("data/snapshots"))
            .map(|entries| {
                entries
                    .filter_map(|e| {
                        e.ok()?
                            .file_name()
                            .to_str()?
                            .split('.')
                            .next()?
                            .parse()
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut acknowledged = BTreeMap::new();
    for cycle in 0..2u64 {
        // bo stays online on a second device: a session in the snapshots.
        let _bo = login(address, "bo", "tablet", DeliveryMode::PushMessage);
        let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
        // Twice, 80 messages of 16 KiB: more than a segment, so a snapshot
        // falls due. The second goes on from the state the first replayed.
        for round in 0..2u64 {
            let before = snapshots(dir.path()).into_iter().max();
            for n in 0..80 {
                let id = cycle * 10_000 + round * 100 + n + 1;
                let mut body = vec![0u8; 16 * 1024];
                body[..8].copy_from_slice(&id.to_le_bytes());
                let ack = ana.send("bo", id, &body).unwrap();
                acknowledged.insert(id, ack.server_message_id);
            }
            eventually(
                Duration::from_secs(30),
                "a snapshot taken while serving",
                || {
                    if snapshots(dir.path()).into_iter().max() != before {
                        return Ok(());
                    }
                    // A message now and then: the projection records its
                    // progress with a batch, and the snapshot stops where it has.
                    ana.ping(1).unwrap();
                    Err("none yet".into())
                },
            );
        }
        let ids: Vec<u64> = (cycle * 10_000 + 1_000..cycle * 10_000 + 3_000).collect();
        let acks = send_until_killed(&mut ana, &ids, 300 + cycle as usize * 500, child.0.id());
        let _ = child.0.wait();
        acknowledged.extend(acks);
        let (restarted, address_now) = spawn_server_logging(dir.path(), "batch", broker, log());
        child = restarted;
        address = address_now;
        let mut bo = login(address, "bo", "phone", DeliveryMode::PushNotice);
        let stored: BTreeSet<u64> = bo
            .sync_all(0)
            .unwrap()
            .into_iter()
            .map(|m| u64::from_le_bytes(m.body[..8].try_into().unwrap()))
            .collect();
        for id in acknowledged.keys() {
            assert!(
                stored.contains(id),
                "cycle {cycle}: acknowledged message {id} is lost"
            );
        }
        let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
        for (&id, &original) in acknowledged.iter().rev().take(50) {
            let ack = ana.send("bo", id, &id.to_le_bytes()).unwrap();
            assert_eq!(ack.server_message_id, original, "resend of {id}");
        }
    }
    drop(child);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("snapshot skipped"), "{log}");
    assert!(!log.contains("cannot take a snapshot"), "{log}");
}

#[test]
fn sigkill_loses_no_acknowledged_message_under_batch_durability() {
    kill_cycles("batch");
}

#[test]
fn sigkill_loses_no_acknowledged_message_under_no_fsync() {
    // Page cache only: a crash of the process (not the machine) loses nothing.
    kill_cycles("none");
}

#[test]
fn sqlite_catches_up_exactly_after_sigkill_during_registrations() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = spawn_server(dir.path(), "batch");
    let names: Vec<String> = (0..400).map(|i| format!("user{i}")).collect();
    let mut client = Client::connect(address).unwrap();
    let batch: Vec<Message> = names
        .iter()
        .map(|name| {
            Message::Register(courier::codec::proto::Register {
                user: name.clone(),
                password: "pw".into(),
            })
        })
        .collect();
    client.submit_many(&batch).unwrap();
    let mut acknowledged = 0;
    while acknowledged < 50 {
        match client.receive(Duration::from_secs(10)).unwrap() {
            Some((_, Message::RegisterOk(_))) => acknowledged += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(server); // SIGKILL while registrations are in flight

    let (_server, address) = spawn_server(dir.path(), "batch");
    let mut client = Client::connect(address).unwrap();
    let mut existing = 0;
    for name in &names {
        match client.register(name, "pw") {
            Err(error) if error.code() == Some(courier::codec::proto::ErrorCode::UserExists) => {
                existing += 1
            }
            Ok(_) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert!(existing >= acknowledged, "acknowledged accounts survive");
    // Every account exists once in SQLite, the ones made before the kill
    // and after it alike.
    client.ping(1).unwrap();
    let db = rusqlite::Connection::open(dir.path().join("data/courier.db")).unwrap();
    eventually(Duration::from_secs(10), "every account in SQLite", || {
        let count: i64 = db
            .query_row("SELECT count(*) FROM accounts", [], |row| row.get(0))
            .unwrap();
        (count == names.len() as i64)
            .then_some(())
            .ok_or_else(|| format!("{count} accounts of {}", names.len()))
    });
}

#[test]
fn sigkill_keeps_groups_members_contacts_and_read_state() {
    let dir = tempfile::tempdir().unwrap();
    let (child, address) = spawn_server(dir.path(), "batch");
    for user in ["ana", "bo", "cy"] {
        register(address, user);
    }
    befriend(address, "ana", "bo");
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let group = ana.group_create("trip", &["bo", "cy"]).unwrap().group_id;
    for n in 1..=3u64 {
        ana.send_group(group, n, &n.to_le_bytes()).unwrap();
    }
    let mut cy = login(address, "cy", "phone", DeliveryMode::PushNotice);
    cy.mark_group_read(group, 2).unwrap();
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushNotice);
    bo.group_rename(group, "trip 2027").unwrap();
    cy.group_leave(group).unwrap();
    // Acknowledged, so journaled: SIGKILL now loses none of it.
    drop(child);

    let (_child, address) = spawn_server(dir.path(), "batch");
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let info = ana.group_members(group).unwrap();
    assert_eq!(
        (info.name.as_str(), info.owner.as_str()),
        ("trip 2027", "ana")
    );
    assert_eq!(info.members, ["ana", "bo"]);
    let mut cy = Client::connect(address).unwrap();
    let ok = cy
        .login("cy", &password("cy"), "phone", DeliveryMode::PushMessage)
        .unwrap();
    assert_eq!((ok.head_sequence, ok.unread_count), (3, 1));
    let contacts = Message::ContactSync(courier::codec::proto::ContactSync { after_version: 0 });
    let Ok(Message::ContactList(list)) =
        login(address, "bo", "tablet", DeliveryMode::PushMessage).request(&contacts)
    else {
        panic!("expected a ContactList")
    };
    assert_eq!(list.contacts.len(), 1);
    assert_eq!(list.contacts[0].user, "ana");
    // The fan-out stage knows the members again: bo gets the next post,
    // cy (who left) does not.
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    ana.send_group(group, 4, b"after the crash").unwrap();
    match expect_push(&mut bo) {
        Message::Deliver(deliver) => assert_eq!(deliver.body, b"after the crash"),
        other => panic!("expected a Deliver, got {other:?}"),
    }
    expect_no_push(&mut cy);
    assert_eq!(cy.sync_all(0).unwrap().len(), 3);
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (child, address) = spawn_server(dir.path(), "batch");
    register(address, "ana");
    register(address, "bo");
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let batch: Vec<Message> = (1..=500u64)
        .map(|id| send_message("bo", id, &id.to_le_bytes()))
        .collect();
    ana.submit_many(&batch).unwrap();
    // Stop while the batch is in flight.
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let mut child = child;
    let status = eventually(Duration::from_secs(20), "the server to stop", || {
        child.0.try_wait().unwrap().ok_or_else(|| "running".into())
    });
    assert!(status.success(), "{status}");
    // Whatever was acknowledged before the stop is there after it.
    let mut acked = BTreeSet::new();
    while let Ok(Some((_, Message::SendAck(ack)))) = ana.receive(Duration::from_millis(500)) {
        acked.insert(ack.client_message_id);
    }
    let (_server, address) = spawn_server(dir.path(), "batch");
    let stored: BTreeSet<u64> = bodies_of_bo(address).into_iter().collect();
    assert!(acked.is_subset(&stored));
}

/// Mounts a tmpfs of `size` on `path`; false where this machine does not
/// allow it (no root, or no mount rights in this container).
fn mount_tmpfs(path: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_full_disk_stops_the_server_with_an_error_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    if !mount_tmpfs(&data, "6m") {
        eprintln!("could not mount a small tmpfs (no root or no mount rights): skipped");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());
    let (mut server, address) = spawn_server(dir.path(), "batch");
    register(address, "ana");
    register(address, "bo");
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    // 1 MiB segments on a 6 MiB disk: 40 KiB messages fill it within ~150.
    let body = vec![1u8; 40 * 1024];
    let mut acknowledged = 0u64;
    let mut refused = None;
    for id in 1..=400u64 {
        match ana.send("bo", id, &body) {
            Ok(_) => acknowledged += 1,
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    assert!(refused.is_some(), "the disk never filled up");
    // The server stops by itself, with a failure status.
    let status = eventually(
        Duration::from_secs(20),
        "the server to stop on a full disk",
        || server.0.try_wait().unwrap().ok_or_else(|| "running".into()),
    );
    assert!(!status.success(), "a full disk is an error exit");
    // Room again (a bigger disk): everything acknowledged is there.
    Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&data)
        .status()
        .unwrap();
    let (_server, address) = spawn_server(dir.path(), "batch");
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushNotice);
    let stored = bo.sync_all(0).unwrap().len() as u64;
    assert!(
        stored >= acknowledged,
        "{stored} stored, {acknowledged} acknowledged"
    );
}
