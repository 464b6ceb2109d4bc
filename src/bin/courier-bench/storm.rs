//! A connection storm: connect, register and log in, as fast as possible.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use courier::bench::{Latencies, Percentiles, Summary};
use courier::codec::proto::DeliveryMode;

use crate::{progress, register_and_login, user_name, Common, Meter, Target};

/// Options of the storm scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Connections to open (each registers a new user and logs in; all stay
    /// open until the end).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
}

pub fn run(
    common: &Common,
    args: &Args,
    target: &Target,
) -> anyhow::Result<(Summary, Vec<(String, Latencies)>)> {
    if args.connections == 0 {
        bail!("--connections must be positive");
    }
    let threads = common.threads.min(args.connections);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU64::new(0));
    let reporter = progress(
        "logged in",
        Arc::clone(&done),
        Arc::clone(&stop),
        common.quiet,
    );
    let rss_before = target.rss_bytes();
    let meter = Meter::start(target);
    let epoch = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let names: Vec<String> = (thread..args.connections)
                .step_by(threads)
                .map(|i| user_name(common, "c", i))
                .collect();
            let endpoint = target.endpoint();
            let done = Arc::clone(&done);
            std::thread::spawn(move || -> anyhow::Result<_> {
                let mut latencies = Latencies::default();
                let mut clients = Vec::with_capacity(names.len());
                for name in names {
                    let started = epoch.elapsed().as_nanos() as u64;
                    let (client, _) =
                        register_and_login(endpoint, &name, DeliveryMode::PushNotice)?;
                    latencies.record(started, epoch.elapsed().as_nanos() as u64);
                    clients.push(client);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok((latencies, clients))
            })
        })
        .collect();
    let mut latencies = Latencies::default();
    let mut clients = Vec::new();
    for handle in handles {
        let (thread_latencies, thread_clients) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        latencies.merge(&thread_latencies);
        clients.extend(thread_clients);
    }
    let (seconds, cpu) = meter.finish(target);
    stop.store(1, Ordering::Relaxed);
    let _ = reporter.join();
    let rss_after = target.rss_bytes();
    let count = clients.len() as f64;
    let mut extra = vec![("connections open at the end".into(), count)];
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        extra.push((
            "server memory per connection (bytes)".into(),
            after.saturating_sub(before) as f64 / count,
        ));
    }
    let (server_cores, server_cpu_us_per_op, server_kernel_share) =
        crate::server::CpuTime::figures(cpu, seconds, count);
    let summary = Summary {
        scenario: "storm".into(),
        shape: format!(
            "{}, register + login each, {}",
            crate::plural(args.connections, "connection"),
            crate::plural(threads, "load thread")
        ),
        seconds,
        rate_per_s: count / seconds,
        latencies: vec![("login".into(), Percentiles::of(&latencies))],
        errors: 0,
        server_cores,
        server_cpu_us_per_op,
        server_kernel_share,
        server_rss_bytes: rss_after,
        server_anon_bytes: target.anon_bytes(),
        extra,
    };
    drop(clients);
    Ok((summary, vec![("login".into(), latencies)]))
}
