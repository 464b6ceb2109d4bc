//! The `courier` command.

use clap::Parser;

/// courier: the message core of a WeChat-style chat system.
///
/// courier runs chat traffic through an LMAX-disruptor pipeline: the network
/// layer publishes frames into a ring buffer, and staged consumers decode,
/// journal, run the chat logic on one thread and fan out to recipients.
///
/// This build ships the pipeline's foundation, the ring buffer
/// (`courier-ringbuffer`), as a library; its benchmarks are in
/// `cargo bench -p courier-ringbuffer` and docs/BENCHMARKS.md. The broker
/// (`courier serve`) and the journal tools arrive as subcommands of this
/// command.
#[derive(Debug, Parser)]
#[command(name = "courier", version, about, long_about)]
struct Cli {}

fn main() {
    let Cli {} = Cli::parse();
    println!(
        "courier {}: no subcommand to run yet; see `courier --help`.",
        env!("CARGO_PKG_VERSION")
    );
}
