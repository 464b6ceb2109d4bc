//! The disk's own floor: how long one 4 KiB write takes to become durable
//! (`pwrite` then `fdatasync`) in a file already written once, as the
//! journal's preallocated segments are. No server runs; it tells how far a
//! group commit is from the physical limit of the disk under the data
//! directory.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use courier::bench::{Latencies, Percentiles};

/// Options of the disk probe.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The directory to probe (where the data directory would be).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Durable writes to time.
    #[arg(long, default_value_t = 5_000)]
    pub writes: u64,
    /// Bytes per write.
    #[arg(long, default_value_t = 4096)]
    pub bytes: usize,
}

/// Times `args.writes` durable writes and prints their percentiles.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.writes == 0 || args.bytes == 0 {
        bail!("--writes and --bytes must be positive");
    }
    let path = args
        .dir
        .join(format!(".courier-disk-probe-{}", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot make {}", path.display()))?;
    let result = probe(&file, args);
    let _ = std::fs::remove_file(&path);
    let latencies = result?;
    let p = Percentiles::of(&latencies);
    println!(
        "{} durable writes of {} bytes in {}: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        latencies.count(),
        args.bytes,
        args.dir.display(),
        p.p50_us,
        p.p99_us,
        p.p999_us,
        p.max_us
    );
    Ok(())
}

fn probe(file: &std::fs::File, args: &Args) -> anyhow::Result<Latencies> {
    // Written and synced once first, as a preallocated segment is: the
    // writes timed below change data only, no file size or extent.
    let span = 16u64 << 20;
    let zeros = vec![0u8; 1 << 20];
    for offset in (0..span).step_by(zeros.len()) {
        file.write_all_at(&zeros, offset)?;
    }
    file.sync_all()?;
    let block = vec![0x5a; args.bytes];
    let slots = (span / args.bytes as u64).max(1);
    let mut latencies = Latencies::default();
    let epoch = Instant::now();
    for n in 0..args.writes {
        let offset = (n % slots) * args.bytes as u64;
        let start = epoch.elapsed().as_nanos() as u64;
        file.write_all_at(&block, offset)?;
        file.sync_data()?;
        latencies.record(start, epoch.elapsed().as_nanos() as u64);
    }
    Ok(latencies)
}
