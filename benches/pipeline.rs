//! The broker's pipeline without sockets: decode → journal → logic →
//! fan-out, driven through the embedding API with an egress that only
//! counts frames. It measures what a message costs the pipeline itself,
//! apart from the kernel's TCP work that `courier-bench` includes: a 1:1
//! message (Send → SendAck + Deliver) and a post to groups of 10, 50 and
//! 500 members (Send → SendAck + one Deliver per other member).
//!
//! ```text
//! cargo bench --bench pipeline              # three rounds, medians
//! cargo bench --bench pipeline -- --quick   # one short round
//! ```
//!
//! A second table prices message retention: each run sends as many
//! messages again as it measures, waits past a retention of one second,
//! then measures while those expire (inboxes trimmed as the new messages
//! arrive), against the same runs with no retention.
//!
//! The publishing thread and the fused pipeline thread share the machine's
//! cores; time is wall time from the first publish to the last frame out,
//! and "broker CPU" is the CPU time of every thread but the publisher's
//! (the pipeline, the journal's helpers) over the same stretch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier::broker::{
    AuthConfig, Broker, BrokerConfig, ConnId, DurabilitySetting, Egress, Ingress,
};
use courier::client::{group_message, send_message};
use courier::codec::proto::{self, login, DeliveryMode};
use courier::codec::{Message, LENGTH_PREFIX_BYTES};

/// Counts the frames the broker sends.
struct Counting(Arc<AtomicU64>);

impl Egress for Counting {
    fn send(&mut self, _: ConnId, _: &[u8]) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn close(&mut self, _: ConnId) {}
}

fn frame(message: &Message) -> Vec<u8> {
    let mut bytes = Vec::new();
    message.encode_frame(1, &mut bytes);
    bytes.split_off(LENGTH_PREFIX_BYTES)
}

/// A broker on a fresh directory with `users` registered and logged in,
/// user i on connection i + 1.
struct Setup {
    broker: Broker,
    ingress: Ingress,
    frames: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new(durability: DurabilitySetting, users: usize, retention_s: u64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            durability,
            message_retention_s: retention_s,
            open_messaging: true,
            auth: AuthConfig::insecure_fast(),
            ..BrokerConfig::default()
        };
        let frames = Arc::new(AtomicU64::new(0));
        let broker = Broker::open(&config, Counting(Arc::clone(&frames))).expect("broker opens");
        let mut setup = Self {
            ingress: broker.ingress(),
            broker,
            frames,
            _dir: dir,
        };
        for user in 0..users {
            let conn = ConnId(user as u64 + 1);
            setup.ingress.connected(conn).expect("running");
            let register = Message::Register(proto::Register {
                user: name(user),
                password: "pw".into(),
            });
            setup
                .ingress
                .frame(conn, &frame(&register))
                .expect("running");
        }
        setup.wait_for(users as u64);
        for user in 0..users {
            let login = Message::Login(proto::Login {
                user: name(user),
                secret: Some(login::Secret::Password("pw".into())),
                device_id: "bench".into(),
                delivery_mode: DeliveryMode::PushMessage as i32,
                accept_compression: Vec::new(),
            });
            setup
                .ingress
                .frame(ConnId(user as u64 + 1), &frame(&login))
                .expect("running");
        }
        setup.wait_for(2 * users as u64);
        setup
    }

    /// Waits until `total` frames have gone out since the start.
    fn wait_for(&self, total: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.frames.load(Ordering::Relaxed) < total {
            assert!(Instant::now() < deadline, "the broker stopped answering");
            std::thread::yield_now();
        }
    }

    /// Publishes `messages` from user 0 and waits for the `per_message`
    /// frames each makes; returns the seconds taken and the broker's CPU
    /// seconds over them.
    fn run(&mut self, messages: &[Vec<u8>], per_message: u64) -> (f64, f64) {
        let start_frames = self.frames.load(Ordering::Relaxed);
        let cpu_start = broker_cpu_seconds();
        let start = Instant::now();
        for message in messages {
            self.ingress.frame(ConnId(1), message).expect("running");
        }
        self.wait_for(start_frames + messages.len() as u64 * per_message);
        (
            start.elapsed().as_secs_f64(),
            broker_cpu_seconds() - cpu_start,
        )
    }

    fn shutdown(self) {
        drop(self.ingress);
        self.broker.shutdown().expect("clean shutdown");
    }
}

/// CPU seconds of every thread of this process but the calling one.
fn broker_cpu_seconds() -> f64 {
    use rustix::time::{clock_gettime, ClockId};
    let seconds = |clock| {
        let time = clock_gettime(clock);
        time.tv_sec as f64 + time.tv_nsec as f64 / 1e9
    };
    seconds(ClockId::ProcessCPUTime) - seconds(ClockId::ThreadCPUTime)
}

fn name(user: usize) -> String {
    format!("user{user}")
}

/// How a run warms up.
#[derive(Clone, Copy)]
enum Warmup {
    /// A tenth of the measured messages.
    Short,
    /// As many messages as are measured, then a pause of 1.2 s: under a
    /// retention of 1 s they all expire during the measured run.
    Expiring,
}

/// (messages per second, broker CPU µs per message) for one shape: a post
/// to a `group` of that many members, or a 1:1 message for `None`.
fn measure(
    durability: DurabilitySetting,
    group: Option<usize>,
    deliveries: usize,
    retention_s: u64,
    warmup: Warmup,
) -> (f64, f64) {
    let users = group.unwrap_or(2);
    let mut setup = Setup::new(durability, users, retention_s);
    let body = [0x5a; 128];
    let (per_message, count, make): (u64, usize, Box<dyn Fn(u64) -> Message>) = match group {
        None => (
            2,
            deliveries,
            Box::new(move |id| send_message("user1", id, &body)),
        ),
        Some(size) => {
            let create = Message::GroupCreate(proto::GroupCreate {
                name: "bench".into(),
                members: (1..size).map(name).collect(),
            });
            let before = setup.frames.load(Ordering::Relaxed);
            setup
                .ingress
                .frame(ConnId(1), &frame(&create))
                .expect("running");
            // The GroupInfo, and a GroupChanged to each other member.
            setup.wait_for(before + size as u64);
            (
                size as u64,
                (deliveries / (size - 1)).max(1),
                Box::new(move |id| group_message(1, id, &body)),
            )
        }
    };
    // Warm up, then measure: new client ids each time (a resend would be
    // acknowledged without a fan-out).
    let warmup_count = match warmup {
        Warmup::Short => count as u64 / 10,
        Warmup::Expiring => count as u64,
    };
    let warmup_messages: Vec<Vec<u8>> = (0..warmup_count).map(|id| frame(&make(id))).collect();
    setup.run(&warmup_messages, per_message);
    if let Warmup::Expiring = warmup {
        std::thread::sleep(Duration::from_millis(1200));
    }
    let messages: Vec<Vec<u8>> = (0..count as u64)
        .map(|id| frame(&make(1_000_000 + id)))
        .collect();
    let (seconds, cpu_seconds) = setup.run(&messages, per_message);
    setup.shutdown();
    (count as f64 / seconds, cpu_seconds * 1e6 / count as f64)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 1 } else { 3 };
    let deliveries = if quick { 50_000 } else { 400_000 };
    let shapes: [(&str, Option<usize>); 4] = [
        ("1:1", None),
        ("group of 10", Some(10)),
        ("group of 50", Some(50)),
        ("group of 500", Some(500)),
    ];
    let policies = [
        ("none", DurabilitySetting::None),
        ("batch", DurabilitySetting::Batch),
    ];
    println!("\n### The pipeline without sockets: about {deliveries} deliveries per run, median of {rounds} rounds\n");
    println!("| durability | shape | messages/s | deliveries/s | broker CPU µs per message | broker CPU ns per delivery |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (policy_name, policy) in policies {
        let mut rates: Vec<Vec<f64>> = shapes.iter().map(|_| Vec::new()).collect();
        let mut cpus: Vec<Vec<f64>> = shapes.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (index, (_, group)) in shapes.iter().enumerate() {
                let (rate, cpu) = measure(policy, *group, deliveries, 0, Warmup::Short);
                rates[index].push(rate);
                cpus[index].push(cpu);
            }
        }
        for (index, (shape, group)) in shapes.iter().enumerate() {
            let rate = median(&mut rates[index]);
            let cpu = median(&mut cpus[index]);
            let per_message = group.map_or(1, |size| size - 1) as f64;
            println!(
                "| {policy_name} | {shape} | {rate:.0} | {:.0} | {cpu:.2} | {:.0} |",
                rate * per_message,
                cpu * 1e3 / per_message
            );
        }
    }
    retention(rounds, deliveries);
}

/// Durability none, with no retention and with one of 1 s, the runs
/// interleaved; the ratio is of the medians.
fn retention(rounds: usize, deliveries: usize) {
    let shapes: [(&str, Option<usize>); 2] = [("1:1", None), ("group of 500", Some(500))];
    println!("\n### Message retention: durability none, about {deliveries} deliveries per run expiring while as many are measured, median of {rounds} rounds\n");
    println!(
        "| shape | retention | messages/s | broker CPU µs per message | CPU vs no retention |"
    );
    println!("| --- | --- | ---: | ---: | ---: |");
    for (shape, group) in shapes {
        let mut runs: [(Vec<f64>, Vec<f64>); 2] = Default::default();
        for _ in 0..rounds {
            for (index, retention_s) in [0, 1].into_iter().enumerate() {
                let (rate, cpu) = measure(
                    DurabilitySetting::None,
                    group,
                    deliveries,
                    retention_s,
                    Warmup::Expiring,
                );
                runs[index].0.push(rate);
                runs[index].1.push(cpu);
            }
        }
        let [(mut kept_rates, mut kept_cpus), (mut expiring_rates, mut expiring_cpus)] = runs;
        let kept_cpu = median(&mut kept_cpus);
        let expiring_cpu = median(&mut expiring_cpus);
        println!(
            "| {shape} | none | {:.0} | {kept_cpu:.2} | 1.00 |",
            median(&mut kept_rates)
        );
        println!(
            "| {shape} | 1 s | {:.0} | {expiring_cpu:.2} | {:.2} |",
            median(&mut expiring_rates),
            expiring_cpu / kept_cpu
        );
    }
}
