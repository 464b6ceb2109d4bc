//! Interleaved rounds of one scenario against several servers, reported as
//! medians and as ratios to the first server: the way to compare on a
//! shared, noisy machine, where only figures from the same sitting can be
//! set side by side.
//!
//! Each run is this binary started again with `--spawn` and one server's
//! flags; its `summary.json` carries what it measured.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::Common;

/// Options of `compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Rounds; each runs every server once, in the order given.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The servers, comma-separated; the others are compared with the
    /// first. courier-none, courier-interval and courier-batch are courier
    /// with that durability; nats is NATS core; jetstream is NATS keeping
    /// each message in a JetStream stream (one-to-one and group only).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nats,courier-none,courier-batch"
    )]
    pub servers: Vec<Server>,
    /// The scenario and its options, after `--`: `-- one-to-one --rate 0`.
    /// `-- durability` runs the three shapes that price durability, one
    /// table each: 1:1 closed loop with 8 pairs (a window of 64 each), with
    /// one pair and a deep window (4,096), and an open loop at 20,000
    /// messages/s (for the tail).
    #[arg(last = true, required = true, value_name = "SCENARIO")]
    pub scenario: Vec<String>,
}

/// A server `compare` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    CourierNone,
    CourierInterval,
    CourierBatch,
    Nats,
    Jetstream,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::CourierNone => "courier-none",
            Server::CourierInterval => "courier-interval",
            Server::CourierBatch => "courier-batch",
            Server::Nats => "nats",
            Server::Jetstream => "jetstream",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Server::CourierNone => &["--durability", "none"],
            Server::CourierInterval => &["--durability", "interval"],
            Server::CourierBatch => &["--durability", "batch"],
            Server::Nats => &["--nats"],
            Server::Jetstream => &["--nats", "--jetstream"],
        }
    }
}

/// What one run measured, read back from its summary.json.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    rate: f64,
    latency_name: String,
    p50_us: f64,
    p99_us: f64,
    cores: Option<f64>,
    cpu_us_per_op: Option<f64>,
    /// The kernel's part of `cpu_us_per_op`.
    kernel_us_per_op: Option<f64>,
}

pub fn run(common: &Common, args: &Args) -> anyhow::Result<()> {
    if common.server.is_some() || common.nats {
        bail!("compare starts each server itself: leave out --server and --nats");
    }
    if args.rounds == 0 || args.servers.is_empty() {
        bail!("--rounds and --servers must not be empty");
    }
    let kept = common.out.clone();
    let scratch = Scratch(kept.is_none().then(|| {
        std::env::temp_dir().join(format!("courier-bench-compare-{}", std::process::id()))
    }));
    let root = kept
        .as_deref()
        .or(scratch.0.as_deref())
        .context("a directory for the runs")?;
    let exe = std::env::current_exe()?;
    let shapes: Vec<Vec<String>> = if args.scenario == ["durability"] {
        DURABILITY_SHAPES
            .iter()
            .map(|shape| shape.iter().map(|word| word.to_string()).collect())
            .collect()
    } else {
        vec![args.scenario.clone()]
    };
    for (number, scenario) in shapes.iter().enumerate() {
        // runs[s][r]: server s in round r.
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); args.servers.len()];
        for round in 1..=args.rounds {
            for (index, server) in args.servers.iter().enumerate() {
                let dir = root.join(format!("shape-{number}-round-{round}-{}", server.name()));
                if !common.quiet {
                    eprintln!("{}, round {round}: {}", scenario.join(" "), server.name());
                }
                runs[index].push(run_once(&exe, common, *server, scenario, &dir)?);
            }
        }
        let shape = Args {
            scenario: scenario.clone(),
            ..args.clone()
        };
        print!("{}", table(&args.servers, &runs, &shape, common.seconds));
        println!();
    }
    if let Some(dir) = kept {
        println!("  each run's files are under {}", dir.display());
    }
    Ok(())
}

/// The shapes `-- durability` runs.
const DURABILITY_SHAPES: [&[&str]; 3] = [
    &["one-to-one", "--rate", "0"],
    &[
        "one-to-one",
        "--rate",
        "0",
        "--pairs",
        "1",
        "--window",
        "4096",
    ],
    &["one-to-one", "--rate", "20000"],
];

/// A directory for the runs' files that nobody asked to keep: removed at
/// the end, also when a run fails.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts this binary on one server and reads back what it measured.
fn run_once(
    exe: &Path,
    common: &Common,
    server: Server,
    scenario: &[String],
    dir: &Path,
) -> anyhow::Result<Run> {
    let mut command = Command::new(exe);
    command
        .args(["--spawn", "--quiet", "--out"])
        .arg(dir)
        .args(["--seconds", &common.seconds.to_string()])
        .args(["--warmup", &common.warmup.to_string()])
        .args(["--threads", &common.threads.to_string()])
        .arg("--nats-server-bin")
        .arg(&common.nats_server_bin)
        .args(server.flags());
    if !matches!(server, Server::Nats | Server::Jetstream) {
        command.args(["--placement", &common.placement]);
        for setting in &common.server_settings {
            command.args(["--server-setting", setting]);
        }
        for setting in &common.broker_settings {
            command.args(["--broker-setting", setting]);
        }
    }
    let output = command.args(scenario).output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = &lines[lines.len().saturating_sub(20)..];
        bail!("the {} run failed:\n{}", server.name(), tail.join("\n"));
    }
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_summary(&text).with_context(|| format!("cannot understand {}", path.display()))
}

fn parse_summary(text: &str) -> anyhow::Result<Run> {
    let json: serde_json::Value = serde_json::from_str(text)?;
    let first = &json["latencies"][0];
    Ok(Run {
        rate: json["rate_per_s"].as_f64().context("no rate")?,
        latency_name: first[0].as_str().context("no latency")?.to_owned(),
        p50_us: first[1]["p50_us"].as_f64().context("no p50")?,
        p99_us: first[1]["p99_us"].as_f64().context("no p99")?,
        cores: json["server_cores"].as_f64(),
        cpu_us_per_op: json["server_cpu_us_per_op"].as_f64(),
        kernel_us_per_op: json["server_cpu_us_per_op"]
            .as_f64()
            .zip(json["server_kernel_share"].as_f64())
            .map(|(cpu, share)| cpu * share),
    })
}

/// The median of `values` (the lower middle one for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}

fn list(values: &[f64], digits: usize) -> String {
    let texts: Vec<String> = values.iter().map(|v| format!("{v:.digits$}")).collect();
    texts.join(", ")
}

/// The Markdown table of medians, runs in brackets, and each server's CPU
/// per operation against the first server's in the same round.
fn table(servers: &[Server], runs: &[Vec<Run>], args: &Args, seconds: f64) -> String {
    let latency = runs[0][0].latency_name.clone();
    let first = servers[0].name();
    let mut out = format!(
        "{}: {} rounds of {} s, medians (runs in brackets)\n\n\
         | server | rate /s | {latency} p50 / p99 µs | server cores | CPU µs per op | of it in the kernel | CPU vs {first} |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: |\n",
        args.scenario.join(" "),
        args.rounds,
        seconds,
    );
    for (server, runs_of) in servers.iter().zip(runs) {
        let rates: Vec<f64> = runs_of.iter().map(|r| r.rate).collect();
        let cpu: Option<Vec<f64>> = runs_of.iter().map(|r| r.cpu_us_per_op).collect();
        let cores: Option<Vec<f64>> = runs_of.iter().map(|r| r.cores).collect();
        let kernel: Option<Vec<f64>> = runs_of.iter().map(|r| r.kernel_us_per_op).collect();
        let ratio = cpu.as_ref().and_then(|cpu| {
            let base: Option<Vec<f64>> = runs[0].iter().map(|r| r.cpu_us_per_op).collect();
            let ratios: Vec<f64> = cpu.iter().zip(base?).map(|(c, b)| c / b).collect();
            Some(median(ratios))
        });
        out.push_str(&format!(
            "| {} | {:.0} [{}] | {:.1} / {:.1} | {} | {} | {} | {} |\n",
            server.name(),
            median(rates.clone()),
            list(&rates, 0),
            median(runs_of.iter().map(|r| r.p50_us).collect()),
            median(runs_of.iter().map(|r| r.p99_us).collect()),
            cores.map_or("-".into(), |c| format!("{:.2}", median(c))),
            cpu.as_ref().map_or("-".into(), |c| format!(
                "{:.3} [{}]",
                median(c.clone()),
                list(c, 3)
            )),
            kernel.map_or("-".into(), |k| format!("{:.3}", median(k))),
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64, cpu: f64) -> Run {
        Run {
            rate,
            latency_name: "delivery".into(),
            p50_us: rate / 10.0,
            p99_us: rate,
            cores: Some(1.0),
            cpu_us_per_op: Some(cpu),
            kernel_us_per_op: Some(cpu / 4.0),
        }
    }

    #[test]
    fn medians_take_the_middle_run_and_ratios_pair_runs_of_a_round() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.0);
        // Round by round the second server costs half the first, though
        // the machine sped up between rounds: the ratio says 0.50 where the
        // medians alone would say 2.0 / 3.0.
        let runs = vec![
            vec![run(100.0, 2.0), run(100.0, 3.0), run(100.0, 4.0)],
            vec![run(50.0, 1.0), run(50.0, 1.5), run(50.0, 2.0)],
        ];
        let args = Args {
            rounds: 3,
            servers: vec![Server::Nats, Server::CourierNone],
            scenario: vec!["one-to-one".into()],
        };
        let text = table(&args.servers, &runs, &args, 1.0);
        assert!(text.contains("| nats | 100 [100, 100, 100] | 10.0 / 100.0 | 1.00 | 3.000 [2.000, 3.000, 4.000] | 0.750 | 1.00 |"), "{text}");
        assert!(text.contains("| courier-none | 50 [50, 50, 50] | 5.0 / 50.0 | 1.00 | 1.500 [1.000, 1.500, 2.000] | 0.375 | 0.50 |"), "{text}");
    }

    #[test]
    fn a_summary_reads_back() {
        let text = r#"{"scenario":"one-to-one","shape":"x","seconds":1.0,"rate_per_s":1234.5,
            "latencies":[["delivery",{"count":3,"p50_us":10.0,"p90_us":11.0,"p99_us":12.5,"p999_us":13.0,"max_us":14.0}]],
            "errors":0,"server_cores":0.5,"server_cpu_us_per_op":2.25,"server_kernel_share":0.4,"server_rss_bytes":1,"extra":[]}"#;
        let run = parse_summary(text).unwrap();
        assert_eq!(
            run,
            Run {
                rate: 1234.5,
                latency_name: "delivery".into(),
                p50_us: 10.0,
                p99_us: 12.5,
                cores: Some(0.5),
                cpu_us_per_op: Some(2.25),
                kernel_us_per_op: Some(0.9),
            }
        );
        assert!(parse_summary(r#"{"rate_per_s":1}"#).is_err());
    }
}
