//! Power cuts, not just crashes: `courier serve` runs with its data
//! directory on a filesystem that forgets every change never made durable
//! (`courier-powercut`), under a load whose acknowledgements are recorded
//! (registrations, contact requests, group posts, 1:1 messages). At a
//! random acknowledgement the server is killed and the power cut (the
//! newest unsynced write of each file torn at a sector), then it restarts
//! on what is left and every acknowledged command is looked for.
//!
//! Under `batch` nothing acknowledged may be missing, nor stored twice, and
//! SQLite agrees at the end. Under `interval` what is lost must have been
//! acknowledged within the last flush interval (with slack for a busy
//! machine); under `none` losses are the documented promise and are
//! reported, not failed. Each cycle's figures are printed.
//!
//! `cargo test --test power_loss` runs a few cycles per setting;
//! `COURIER_POWERCUT_CYCLES=N` runs N. It needs `/dev/fuse` and root or
//! `fusermount3` (`.ci/run` installs Debian's `fuse3`); without them it
//! says so and passes, except under CI, where it fails.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier::client::{group_message, send_message, Client, ClientError};
use courier::codec::proto::{self, DeliveryMode, ErrorCode};
use courier::codec::Message;
use courier_powercut::{mount, Mounted};
use util::{listening_address, password};

/// Cycles per durability setting in `cargo test`.
const CYCLES: u64 = 4;
/// Group posts and 1:1 messages each cycle sends (after two
/// registrations and a contact request).
const POSTS: u64 = 40;
const MESSAGES: u64 = 400;
/// The interval flusher's period in these runs.
const FLUSH_INTERVAL_MS: u64 = 20;
/// How late the interval flusher may run on a busy machine.
const INTERVAL_SLACK: Duration = Duration::from_millis(250);

/// How the server under test runs.
#[derive(Debug, Clone, Copy)]
struct Setting {
    durability: &'static str,
    /// `message_retention_s` (0: none). With one, snapshots are taken
    /// while serving and expired segments deleted, through the same
    /// filesystem.
    retention_s: u64,
    /// Bytes of each message body (the message's id, then padding).
    body_bytes: usize,
}

/// A command sent, and what its acknowledgement proves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Acked {
    /// An account exists.
    Registered(String),
    /// ana asked this user to be her friend.
    Requested(String),
    /// A message with this id (its body) is in bo's inbox, once.
    Message(u64),
}

/// The directories of one harness: the disk, the mount point, the stashes.
struct Disk {
    _dir: tempfile::TempDir,
    backing: PathBuf,
    mnt: PathBuf,
    root: PathBuf,
    mounts: u64,
}

impl Disk {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let [backing, mnt] = ["backing", "mnt"].map(|d| root.join(d));
        std::fs::create_dir(&backing).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        Self {
            _dir: dir,
            backing,
            mnt,
            root,
            mounts: 0,
        }
    }

    /// Mounts the filesystem; `None` (said) where FUSE cannot be mounted
    /// outside CI.
    fn mount(&mut self) -> Option<Mounted> {
        self.mounts += 1;
        let stash = self.root.join(format!("stash{}", self.mounts));
        std::fs::create_dir(&stash).unwrap();
        match mount(&self.backing, &self.mnt, &stash) {
            Ok(mounted) => Some(mounted),
            Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipped: cannot mount a FUSE filesystem here ({error})");
                None
            }
            Err(error) => panic!("cannot mount a FUSE filesystem under CI: {error}"),
        }
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `courier serve` with its data directory on the mount, once it listens.
fn spawn(
    mnt: &Path,
    config_dir: &Path,
    setting: Setting,
    warnings: &Arc<Mutex<Vec<String>>>,
) -> (Server, SocketAddr) {
    let mut server = start(mnt, config_dir, setting, warnings);
    let address = listening_address(&mut server.0);
    (server, address)
}

/// `courier serve` with its data directory on the mount, just started.
fn start(
    mnt: &Path,
    config_dir: &Path,
    setting: Setting,
    warnings: &Arc<Mutex<Vec<String>>>,
) -> Server {
    let retention = match setting.retention_s {
        0 => String::new(),
        seconds => format!("message_retention_s = {seconds}\nsnapshot_every_segments = 1\n"),
    };
    let config = config_dir.join("courier.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n[broker]\nsegment_size_mb = 1\nopen_messaging = true\n\
         snapshot_min_records = 50\nflush_interval_ms = {FLUSH_INTERVAL_MS}\n{retention}\
         [broker.auth]\nmemory_kib = 8\niterations = 1\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(mnt.join("data"))
        .args(["--durability", setting.durability])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("courier runs");
    let mut child = child;
    // Its warnings, passed on and kept for the checks.
    let stderr = child.stderr.take().expect("piped");
    let warnings = Arc::clone(warnings);
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            eprintln!("{line}");
            warnings.lock().unwrap().push(line);
        }
    });
    Server(child)
}

/// A small xorshift for kill points and tears.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What one cycle sends, in order: two registrations, a contact request,
/// group posts and 1:1 messages, with what each acknowledgement proves.
fn plan(cycle: u64, group: u64, body_bytes: usize) -> Vec<(Message, Acked)> {
    let body = |id: u64| {
        let mut body = id.to_le_bytes().to_vec();
        body.resize(body_bytes.max(8), 0);
        body
    };
    let base = (cycle + 1) * 1_000_000;
    let users = [format!("c{cycle}a"), format!("c{cycle}b")];
    let mut plan: Vec<(Message, Acked)> = users
        .iter()
        .map(|user| {
            let register = Message::Register(proto::Register {
                user: user.clone(),
                password: password(user),
            });
            (register, Acked::Registered(user.clone()))
        })
        .collect();
    let request = Message::ContactRequest(proto::ContactRequest {
        user: users[0].clone(),
    });
    plan.push((request, Acked::Requested(users[0].clone())));
    for n in 0..POSTS {
        let id = base + n;
        plan.push((group_message(group, id, &body(id)), Acked::Message(id)));
    }
    for n in 0..MESSAGES {
        let id = base + 500_000 + n;
        plan.push((send_message("bo", id, &body(id)), Acked::Message(id)));
    }
    plan
}

/// Sends `plan` pipelined on `ana` (a window of 32); once `kill_after`
/// acknowledgements are in, kills the server with SIGKILL. Returns what
/// was acknowledged, with when.
fn run_until_killed(
    ana: &mut Client,
    plan: &[(Message, Acked)],
    kill_after: usize,
    server: &mut Server,
) -> Vec<(Acked, Instant)> {
    let mut acked = Vec::new();
    let mut sent: BTreeMap<u64, Acked> = BTreeMap::new();
    let mut next = 0;
    let mut killed = false;
    loop {
        while sent.len() < 32 && next < plan.len() {
            let (message, proves) = &plan[next];
            let Ok(correlation_id) = ana.submit(message) else {
                return acked;
            };
            sent.insert(correlation_id, proves.clone());
            next += 1;
        }
        if sent.is_empty() {
            return acked;
        }
        match ana.receive(Duration::from_secs(10)) {
            Ok(Some((correlation_id, reply))) => {
                // Pushes (correlation id 0) are not answers.
                let Some(proves) = sent.remove(&correlation_id) else {
                    continue;
                };
                match reply {
                    Message::RegisterOk(_) | Message::ContactOk(_) | Message::SendAck(_) => {
                        acked.push((proves, Instant::now()))
                    }
                    other => panic!("{proves:?} was answered {other:?}"),
                }
                if acked.len() == kill_after && !killed {
                    killed = true;
                    let _ = server.0.kill();
                }
            }
            Ok(None) if killed => return acked,
            Ok(None) => panic!("no answer within 10 s from a live server"),
            Err(ClientError::Closed | ClientError::Io(_)) => return acked,
            Err(other) => panic!("{other}"),
        }
    }
}

/// Which of `acked` the restarted server at `address` still has.
fn missing(address: SocketAddr, acked: &BTreeSet<Acked>) -> BTreeSet<Acked> {
    let mut bo = Client::connect(address).unwrap();
    bo.login("bo", &password("bo"), "phone", DeliveryMode::PushNotice)
        .unwrap();
    let bodies: Vec<u64> = bo
        .sync_all(0)
        .unwrap()
        .into_iter()
        .map(|m| u64::from_le_bytes(m.body[..8].try_into().unwrap()))
        .collect();
    let stored: BTreeSet<u64> = bodies.iter().copied().collect();
    assert_eq!(stored.len(), bodies.len(), "a message is stored twice");
    let mut ana = Client::connect(address).unwrap();
    ana.login("ana", &password("ana"), "phone", DeliveryMode::PushNotice)
        .unwrap();
    let contacts = Message::ContactSync(proto::ContactSync { after_version: 0 });
    let Ok(Message::ContactList(list)) = ana.request(&contacts) else {
        panic!("ana's contacts")
    };
    let requested: BTreeSet<String> = list.contacts.into_iter().map(|c| c.user).collect();
    acked
        .iter()
        .filter(|proves| match proves {
            Acked::Message(id) => !stored.contains(id),
            Acked::Requested(user) => !requested.contains(user),
            Acked::Registered(user) => {
                let mut client = Client::connect(address).unwrap();
                match client.login(user, &password(user), "d", DeliveryMode::PushNotice) {
                    Ok(_) => false,
                    Err(error) if error.code() == Some(ErrorCode::BadCredentials) => true,
                    Err(other) => panic!("{other}"),
                }
            }
        })
        .cloned()
        .collect()
}

/// Stops the server cleanly (SIGTERM: it drains and flushes).
fn stop(server: &mut Server) {
    let pid = server.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(server.0.wait().unwrap().success(), "a clean stop");
}

/// Registers ana, bo and cy and makes their group; its id.
fn setup(address: SocketAddr) -> u64 {
    for user in ["ana", "bo", "cy"] {
        util::register(address, user);
    }
    let mut ana = util::login(address, "ana", "phone", DeliveryMode::PushMessage);
    ana.group_create("cut", &["bo", "cy"]).unwrap().group_id
}

/// What the cycles of one setting found.
#[derive(Debug, Default)]
struct Totals {
    cycles: u64,
    acknowledged: u64,
    lost: u64,
}

fn power_cuts(setting: Setting) -> Option<Totals> {
    let durability = setting.durability;
    let cycles = std::env::var("COURIER_POWERCUT_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CYCLES)
        // Under a retention, enough cycles for segments to fill, expire
        // and be deleted.
        .max(if setting.retention_s > 0 { 8 } else { 1 });
    let mut disk = Disk::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ durability.len() as u64);
    let mut acked_so_far: BTreeSet<Acked> = BTreeSet::new();
    let mut acked_at: BTreeMap<Acked, Duration> = BTreeMap::new();
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let mut acked_when: BTreeMap<Acked, Instant> = BTreeMap::new();
    let mut totals = Totals::default();
    // The users and their group, made durable by a clean stop (which
    // flushes whatever the setting).
    let mounted = disk.mount()?;
    let (mut server, address) = spawn(&disk.mnt, &disk.root, setting, &warnings);
    let group_id = setup(address);
    stop(&mut server);
    mounted.unmount();
    for cycle in 0..cycles {
        if cycle % 3 == 2 {
            // A cut while the server starts: replaying, writing its
            // snapshot, catching SQLite up, making a segment.
            let mounted = disk.mount()?;
            let mut server = start(&disk.mnt, &disk.root, setting, &warnings);
            std::thread::sleep(Duration::from_millis(rng.next() % 40));
            let _ = server.0.kill();
            let _ = server.0.wait();
            let report = mounted.cut(Some(rng.next()));
            eprintln!(
                "{durability} cycle {cycle}: a cut during a start undid {} changes and names {:?}",
                report.file_changes_undone, report.undone_names
            );
        }
        let mounted = disk.mount()?;
        let (mut server, address) = spawn(&disk.mnt, &disk.root, setting, &warnings);
        // What the cut before this start took.
        let lost = missing(address, &acked_so_far);
        let lost = not_expired(setting, lost, &acked_when, &mut acked_so_far);
        check_losses(
            durability,
            cycle,
            &lost,
            &acked_at,
            &mut acked_so_far,
            &mut totals,
        );
        let plan = plan(cycle, group_id, setting.body_bytes);
        let kill_after = 1 + (rng.next() % plan.len() as u64) as usize;
        let mut ana = util::login(address, "ana", "phone", DeliveryMode::PushMessage);
        let acked = run_until_killed(&mut ana, &plan, kill_after, &mut server);
        let killed_at = Instant::now();
        let _ = server.0.wait();
        // Unsynced writes are dropped whole, or (every other cycle) each
        // file's newest one torn at a sector.
        let tear = (cycle % 2 == 1).then(|| rng.next());
        let counts = mounted.counts();
        let report = mounted.cut(tear);
        eprintln!(
            "{durability} cycle {cycle}: killed after {} of {} acknowledgements ({} writes, {} file \
             and {} directory syncs); the cut undid {} changes ({} bytes, {} writes torn) and {} \
             names {:?}",
            acked.len(),
            plan.len(),
            counts.writes,
            counts.file_syncs,
            counts.directory_syncs,
            report.file_changes_undone,
            report.bytes_undone,
            report.writes_torn,
            report.names_undone,
            report.undone_names
        );
        for (proves, at) in &acked {
            acked_at.insert(proves.clone(), killed_at.duration_since(*at));
            acked_when.insert(proves.clone(), *at);
        }
        totals.acknowledged += acked.len() as u64;
        acked_so_far.extend(acked.into_iter().map(|(proves, _)| proves));
        totals.cycles += 1;
        drop(server);
        if setting.retention_s > 0 {
            // Time for messages to expire, and their segments to go.
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    // The last cut's losses, then SQLite against the accounts.
    let mounted = disk.mount()?;
    let (server, address) = spawn(&disk.mnt, &disk.root, setting, &warnings);
    let lost = missing(address, &acked_so_far);
    let lost = not_expired(setting, lost, &acked_when, &mut acked_so_far);
    check_losses(
        durability,
        cycles,
        &lost,
        &acked_at,
        &mut acked_so_far,
        &mut totals,
    );
    check_sqlite(&disk.mnt, address, &acked_so_far);
    if setting.retention_s == 0 {
        // The snapshot a start writes is never ahead of what SQLite made
        // durable: after a cut, the next start can use it.
        let skipped = warnings
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.contains("snapshot skipped"))
            .count();
        assert_eq!(
            skipped, 0,
            "starts skipped their snapshots after a power cut"
        );
    }
    if setting.retention_s > 0 {
        let first = courier::journal::inspect(disk.mnt.join("data/journal")).unwrap()[0].id;
        assert!(
            first > 0,
            "no segment was deleted: retention was not exercised"
        );
        eprintln!("{durability} under a retention: segments below {first} deleted");
    }
    drop(server);
    mounted.unmount();
    eprintln!(
        "{durability}: {} cycles, {} commands acknowledged, {} lost",
        totals.cycles, totals.acknowledged, totals.lost
    );
    Some(totals)
}

/// Of `lost`, the ones a message retention does not explain: a message
/// acknowledged longer ago than the retention (less a margin for the
/// time between its journaling and its acknowledgement) may have expired,
/// and is no longer expected.
fn not_expired(
    setting: Setting,
    lost: BTreeSet<Acked>,
    acked_when: &BTreeMap<Acked, Instant>,
    acked_so_far: &mut BTreeSet<Acked>,
) -> BTreeSet<Acked> {
    if setting.retention_s == 0 {
        return lost;
    }
    let retention = Duration::from_secs(setting.retention_s) - Duration::from_millis(200);
    let (expired, lost): (BTreeSet<Acked>, BTreeSet<Acked>) =
        lost.into_iter().partition(|proves| {
            matches!(proves, Acked::Message(_))
                && acked_when
                    .get(proves)
                    .is_some_and(|at| at.elapsed() >= retention)
        });
    for proves in &expired {
        acked_so_far.remove(proves);
    }
    lost
}

/// Under `batch` a loss fails the test; under `interval` one acknowledged
/// earlier than the last flush interval before the kill (`acked_at`: how
/// long before) does; otherwise it is counted (and the lost commands no
/// longer expected).
fn check_losses(
    durability: &str,
    cycle: u64,
    lost: &BTreeSet<Acked>,
    acked_at: &BTreeMap<Acked, Duration>,
    acked_so_far: &mut BTreeSet<Acked>,
    totals: &mut Totals,
) {
    if lost.is_empty() {
        return;
    }
    let first: Vec<_> = lost.iter().take(5).collect();
    assert_ne!(
        durability,
        "batch",
        "cycle {cycle}: {} acknowledged commands lost at a power cut, the first {first:?}",
        lost.len()
    );
    if durability == "interval" {
        // Only what was acknowledged within the last flush interval before
        // the kill (with slack for a machine busy with other tests).
        for proves in lost {
            let age = acked_at.get(proves).copied().unwrap_or_default();
            assert!(
                age <= Duration::from_millis(FLUSH_INTERVAL_MS) + INTERVAL_SLACK,
                "cycle {cycle}: {proves:?}, acknowledged {age:?} before the kill, is lost"
            );
        }
    }
    let oldest = lost.iter().filter_map(|p| acked_at.get(p)).max();
    eprintln!(
        "{durability} before cycle {cycle}: {} acknowledged commands lost, the oldest \
         acknowledged {oldest:?} before the kill",
        lost.len()
    );
    totals.lost += lost.len() as u64;
    for proves in lost {
        acked_so_far.remove(proves);
    }
}

/// SQLite holds every account whose registration was acknowledged (and
/// survived), once the server has caught it up.
fn check_sqlite(mnt: &Path, address: SocketAddr, acked: &BTreeSet<Acked>) {
    let accounts: BTreeSet<String> = acked
        .iter()
        .filter_map(|proves| match proves {
            Acked::Registered(user) => Some(user.clone()),
            _ => None,
        })
        .collect();
    Client::connect(address).unwrap().ping(1).unwrap();
    let db = rusqlite::Connection::open(mnt.join("data/courier.db")).unwrap();
    util::eventually(Duration::from_secs(10), "the accounts in SQLite", || {
        let mut names = db.prepare("SELECT name FROM accounts").unwrap();
        let stored: BTreeSet<String> = names
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let absent: Vec<_> = accounts.difference(&stored).collect();
        absent
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("accounts missing from SQLite: {absent:?}"))
    });
}

#[test]
fn batch_keeps_every_acknowledged_command_across_power_cuts() {
    let batch = Setting {
        durability: "batch",
        retention_s: 0,
        body_bytes: 8,
    };
    if let Some(totals) = power_cuts(batch) {
        assert_eq!(totals.lost, 0);
        assert!(totals.acknowledged > 0, "nothing was acknowledged");
    }
}

#[test]
fn interval_loses_at_most_the_last_interval_at_a_power_cut() {
    power_cuts(Setting {
        durability: "interval",
        retention_s: 0,
        body_bytes: 8,
    });
}

#[test]
fn none_reports_what_a_power_cut_takes() {
    power_cuts(Setting {
        durability: "none",
        retention_s: 0,
        body_bytes: 8,
    });
}

#[test]
fn batch_keeps_what_has_not_expired_while_snapshots_delete_segments() {
    let retained = Setting {
        durability: "batch",
        retention_s: 1,
        body_bytes: 2048,
    };
    if let Some(totals) = power_cuts(retained) {
        assert_eq!(totals.lost, 0);
    }
}
