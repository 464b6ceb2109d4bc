//! The `courier` command.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use courier::journal;

/// courier: the message core of a WeChat-style chat system.
///
/// courier runs chat traffic through an LMAX-disruptor pipeline: the network
/// layer publishes frames into a ring buffer, and staged consumers decode,
/// journal, run the chat logic on one thread and fan out to recipients. This
/// build ships the pipeline's ring buffer and its journal as libraries, and
/// the tools to look inside a journal. The broker itself (`courier serve`)
/// is not part of this build yet.
#[derive(Debug, Parser)]
#[command(name = "courier", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with a journal directory (the append-only log of every command).
    #[command(subcommand)]
    Journal(JournalCommand),
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// List a journal's segments (records, sequences, bytes, damage) and
    /// optionally dump its records. Reads only: safe on a live journal.
    Inspect {
        /// The journal directory.
        dir: PathBuf,
        /// Also print records, one line each.
        #[arg(long)]
        dump: bool,
        /// With --dump: start at this sequence.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// With --dump: print at most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Journal(JournalCommand::Inspect {
            dir,
            dump,
            from,
            limit,
        }) => inspect(dir, dump, from, limit),
    }
}

fn inspect(dir: PathBuf, dump: bool, from: u64, limit: usize) -> anyhow::Result<()> {
    let segments = journal::inspect(&dir)
        .with_context(|| format!("cannot inspect the journal in {}", dir.display()))?;
    println!(
        "{:>8}  {:>14}  {:>10}  {:>14}  {:>14}  {:>12}  {:>12}  problem",
        "segment", "base seq", "records", "first seq", "last seq", "used bytes", "size bytes"
    );
    let show = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for segment in &segments {
        println!(
            "{:>8}  {:>14}  {:>10}  {:>14}  {:>14}  {:>12}  {:>12}  {}",
            segment.id,
            segment.base_sequence,
            segment.records,
            show(segment.first_sequence),
            show(segment.last_sequence),
            segment.written_bytes,
            segment.size_bytes,
            segment.problem.as_deref().unwrap_or("-"),
        );
    }
    let records: u64 = segments.iter().map(|s| s.records).sum();
    println!("{} segments, {records} records", segments.len());
    if dump {
        println!();
        println!(
            "{:>14}  {:>24}  {:>6}  {:>20}  {:>8}  payload (first 32 bytes)",
            "sequence", "position", "type", "timestamp ns", "bytes"
        );
        journal::dump(&dir, from, limit, |segment, offset, header, payload| {
            let head: String = payload
                .iter()
                .take(32)
                .map(|b| format!("{b:02x}"))
                .collect();
            println!(
                "{:>14}  {:>24}  {:>6}  {:>20}  {:>8}  {head}",
                header.sequence,
                format!("{segment}:{offset}"),
                header.record_type,
                header.timestamp_ns,
                payload.len(),
            );
        })
        .with_context(|| format!("cannot dump the journal in {}", dir.display()))?;
    }
    Ok(())
}
