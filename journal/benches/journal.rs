//! Journal benchmarks, every contender in one run, interleaved round by
//! round so that drift on a shared machine hits them alike; medians reported:
//!
//! ```text
//! cargo bench -p courier-journal --bench journal            # everything
//! cargo bench -p courier-journal --bench journal -- append  # one part
//! ```
//!
//! Parts: `append` (records/s and MB/s for 64, 256 and 1,024-byte payloads
//! under each durability policy, beside `BufWriter<File>` writing the same
//! bytes and a memcpy into a pre-faulted `Vec`, the bound), `commit` (group
//! commit: records/s and flush latency by batch size, 1 = an fsync per
//! record), `latency` (each append's time, rolls included), `replay`
//! (reading everything back with checksums, GB/s), `checksum` (a record
//! checksum's latency beside the `crc32c` crate's), `amplification` (bytes
//! written to storage per byte appended under the interval policy),
//! `fresh` (what the machine charges for memory the process has not touched
//! yet: anonymous pages, 4 KiB and huge, and file pages made ready the way
//! the journal makes them, against writing the same memory a second time),
//! `recycle` (appends in steady state, the journal kept to four segments by
//! size retention: each new segment a new file, against retired files
//! written again).
//! Files go to a temporary directory under `$TMPDIR` (default /tmp).
//! `PREPARE_MB=N` sets how far ahead of the appender pages are made ready
//! (`JournalConfig::prepare_ahead_bytes`, 4 MiB by default); `SEGMENT_MB=N`
//! the segment size (64 MiB by default); `OPEN_WAIT_MS=N` waits that long
//! after opening each journal before the append part's clock starts, so
//! that with `PREPARE_MB` as large as the run every page is ready first.

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use courier_journal::{Durability, Journal, JournalConfig};
use hdrhistogram::Histogram;

const HEADER: usize = 32;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn config(durability: Durability) -> JournalConfig {
    let prepare_ahead_bytes = std::env::var("PREPARE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(4)
        << 20;
    let segment_size_bytes = std::env::var("SEGMENT_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(64)
        << 20;
    JournalConfig {
        durability,
        prepare_ahead_bytes,
        segment_size_bytes,
        ..JournalConfig::default()
    }
}

/// Appends `count` records of `payload` bytes; returns the seconds taken.
/// With `batch`, flushes after every `batch` records (group commit).
fn journal_append(
    durability: Durability,
    payload: usize,
    count: usize,
    batch: Option<usize>,
) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut journal = Journal::open(dir.path(), config(durability)).expect("open");
    if let Some(wait) = std::env::var("OPEN_WAIT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        // Time for the preparing threads to get ahead before the clock starts.
        std::thread::sleep(Duration::from_millis(wait));
    }
    let bytes = vec![0x5au8; payload];
    let start = Instant::now();
    for n in 0..count {
        journal.append(1, n as u64, &bytes).expect("append");
        if let Some(batch) = batch {
            if (n + 1) % batch == 0 {
                journal.flush().expect("flush");
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(journal);
    keep_until_settled(dir);
    seconds
}

/// Journals written by earlier runs, deleted together between parts.
static KEPT: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());

/// Keeps a journal's files until [`settle`]. Deleting hundreds of megabytes
/// of written blocks right away slows whatever runs next (ext4 mounted with
/// `discard` frees and discards them in the background): durability-none
/// runs that came after such a deletion measured about a third slower.
fn keep_until_settled(dir: tempfile::TempDir) {
    KEPT.lock().expect("kept").push(dir);
}

/// Deletes the kept journals, syncs, and lets the disk settle.
fn settle() {
    KEPT.lock().expect("kept").clear();
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_secs(2));
}

/// The same bytes (a 32-byte header and the payload per record) through a
/// 64 KiB `BufWriter<File>`, without fsync.
fn bufwriter_append(payload: usize, count: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = std::fs::File::create(dir.path().join("log")).expect("create");
    let mut writer = std::io::BufWriter::with_capacity(64 * 1024, file);
    let header = [0u8; HEADER];
    let bytes = vec![0x5au8; payload];
    let start = Instant::now();
    for n in 0..count {
        let mut header = header;
        header[8..16].copy_from_slice(&(n as u64).to_le_bytes());
        writer.write_all(&header).expect("write");
        writer.write_all(&bytes).expect("write");
    }
    writer.flush().expect("flush");
    start.elapsed().as_secs_f64()
}

/// The same bytes copied into a pre-faulted `Vec`: no I/O at all.
fn memcpy_append(payload: usize, count: usize) -> f64 {
    let stride = (HEADER + payload).next_multiple_of(8);
    let mut target = vec![1u8; stride * count];
    let bytes = vec![0x5au8; payload];
    let start = Instant::now();
    let mut at = 0;
    for n in 0..count {
        target[at + 8..at + 16].copy_from_slice(&(n as u64).to_le_bytes());
        target[at + HEADER..at + HEADER + payload].copy_from_slice(&bytes);
        at += stride;
    }
    black_box(&target);
    start.elapsed().as_secs_f64()
}

/// A named run that returns the seconds it took.
type Contender = (&'static str, Box<dyn Fn() -> f64>);

fn append(quick: bool) {
    let total_bytes = if quick { 32 << 20 } else { 256 << 20 };
    let rounds = if quick { 1 } else { 5 };
    println!(
        "\n### Append: {} MiB of records per run, median of {rounds} interleaved rounds\n",
        total_bytes >> 20
    );
    println!("| payload B | contender | M records/s | MB/s | vs memcpy | vs BufWriter |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: |");
    for payload in [64usize, 256, 1024] {
        let count = total_bytes / (HEADER + payload);
        let contenders: Vec<Contender> = vec![
            (
                "memcpy into Vec (bound)",
                Box::new(move || memcpy_append(payload, count)),
            ),
            (
                "BufWriter<File>",
                Box::new(move || bufwriter_append(payload, count)),
            ),
            (
                "journal, durability none",
                Box::new(move || journal_append(Durability::None, payload, count, None)),
            ),
            (
                "journal, interval 10 ms",
                Box::new(move || {
                    journal_append(
                        Durability::Interval(Duration::from_millis(10)),
                        payload,
                        count,
                        None,
                    )
                }),
            ),
            (
                "journal, batch of 64",
                Box::new(move || journal_append(Durability::Batch, payload, count, Some(64))),
            ),
        ];
        let medians = run_interleaved(&contenders, rounds);
        for (index, (name, _)) in contenders.iter().enumerate() {
            let rate = count as f64 / medians[index];
            println!(
                "| {payload} | {name} | {:.2} | {:.0} | {:.2} | {:.2} |",
                rate / 1e6,
                rate * (HEADER + payload) as f64 / 1e6,
                medians[0] / medians[index],
                medians[1] / medians[index],
            );
        }
    }
}

/// Runs every contender once a round, in turn, for `rounds` rounds, then
/// settles the disk; returns each one's median seconds.
fn run_interleaved(contenders: &[Contender], rounds: usize) -> Vec<f64> {
    let mut seconds: Vec<Vec<f64>> = contenders.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (index, (_, run)) in contenders.iter().enumerate() {
            seconds[index].push(run());
        }
    }
    settle();
    seconds.iter_mut().map(|s| median(s)).collect()
}

/// Appends `warm` records, then times `count` more: durability none, the
/// journal kept to four segments by size retention, with up to
/// `recycled` retired segment files written again (0: every new segment
/// is a new file).
fn steady_append(payload: usize, warm: usize, count: usize, recycled: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(Durability::None);
    config.retention.size_bytes_max = Some(4 * config.segment_size_bytes);
    config.recycled_segments_max = recycled;
    let mut journal = Journal::open(dir.path(), config).expect("open");
    let bytes = vec![0x5au8; payload];
    for n in 0..warm {
        journal.append(1, n as u64, &bytes).expect("append");
    }
    let start = Instant::now();
    for n in warm..warm + count {
        journal.append(1, n as u64, &bytes).expect("append");
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(journal);
    keep_until_settled(dir);
    seconds
}

/// Appends in steady state under retention: segment files made new against
/// retired ones written again.
fn recycle(quick: bool) {
    let total_bytes: usize = if quick { 128 << 20 } else { 512 << 20 };
    let rounds = if quick { 1 } else { 5 };
    println!(
        "\n### Steady state under retention: {} MiB of records timed after as many, \
         the journal kept to 4 segments; median of {rounds} interleaved rounds\n",
        total_bytes >> 20
    );
    println!("| payload B | contender | M records/s | MB/s | vs memcpy |");
    println!("| ---: | --- | ---: | ---: | ---: |");
    for payload in [64usize, 256, 1024] {
        let count = total_bytes / (HEADER + payload);
        let contenders: Vec<Contender> = vec![
            (
                "memcpy into Vec (bound)",
                Box::new(move || memcpy_append(payload, count)),
            ),
            (
                "journal, none, new files",
                Box::new(move || steady_append(payload, count, count, 0)),
            ),
            (
                "journal, none, files reused",
                Box::new(move || steady_append(payload, count, count, 4)),
            ),
        ];
        let medians = run_interleaved(&contenders, rounds);
        for (index, (name, _)) in contenders.iter().enumerate() {
            let rate = count as f64 / medians[index];
            println!(
                "| {payload} | {name} | {:.2} | {:.0} | {:.2} |",
                rate / 1e6,
                rate * (HEADER + payload) as f64 / 1e6,
                medians[0] / medians[index],
            );
        }
    }
}

fn commit(quick: bool) {
    let payload = 256;
    let seconds = if quick { 0.5 } else { 2.0 };
    let rounds = if quick { 1 } else { 3 };
    println!("\n### Group commit: 256-byte records, a flush (msync) after each batch, about {seconds} s per run, median of {rounds} rounds\n");
    println!("| batch | records/s | vs batch 1 | flush p50 µs | flush p99 µs | flush max µs |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let batches = [1usize, 8, 64, 512];
    let mut rates: Vec<Vec<f64>> = batches.iter().map(|_| Vec::new()).collect();
    let mut flushes: Vec<Histogram<u64>> = batches
        .iter()
        .map(|_| Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds"))
        .collect();
    for _ in 0..rounds {
        for (index, &batch) in batches.iter().enumerate() {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut journal = Journal::open(dir.path(), config(Durability::Batch)).expect("open");
            let bytes = vec![0x5au8; payload];
            let start = Instant::now();
            let mut count = 0u64;
            while start.elapsed().as_secs_f64() < seconds {
                for _ in 0..batch {
                    journal.append(1, count, &bytes).expect("append");
                    count += 1;
                }
                let flush_start = Instant::now();
                journal.flush().expect("flush");
                flushes[index].saturating_record(flush_start.elapsed().as_nanos() as u64);
            }
            rates[index].push(count as f64 / start.elapsed().as_secs_f64());
        }
    }
    let base = median(&mut rates[0].clone());
    for (index, &batch) in batches.iter().enumerate() {
        let rate = median(&mut rates[index]);
        let h = &flushes[index];
        println!(
            "| {batch} | {rate:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
            rate / base,
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3
        );
    }
}

fn latency(quick: bool) {
    let total_bytes: usize = if quick { 64 << 20 } else { 512 << 20 };
    let payload = 256;
    let count = total_bytes / (HEADER + payload);
    println!(
        "\n### Append latency: {} MiB of 256-byte records, durability none, 64 MiB segments (rolls included)\n",
        total_bytes >> 20
    );
    println!("| appends | p50 ns | p99 ns | p99.9 ns | p99.99 ns | max µs |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut journal = Journal::open(dir.path(), config(Durability::None)).expect("open");
    let bytes = vec![0x5au8; payload];
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    for n in 0..count {
        let start = Instant::now();
        journal.append(1, n as u64, &bytes).expect("append");
        histogram.saturating_record(start.elapsed().as_nanos() as u64);
    }
    println!(
        "| {count} | {} | {} | {} | {} | {:.1} |",
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.value_at_quantile(0.9999),
        histogram.max() as f64 / 1e3
    );
}

fn replay(quick: bool) {
    let total_bytes: usize = if quick { 64 << 20 } else { 512 << 20 };
    let rounds = if quick { 1 } else { 3 };
    println!(
        "\n### Replay: read {} MiB of 256-byte records back with checksums, median of {rounds} rounds\n",
        total_bytes >> 20
    );
    println!("| reader | records/s | GB/s |");
    println!("| --- | ---: | ---: |");
    let payload = 256;
    let count = total_bytes / (HEADER + payload);
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut journal = Journal::open(dir.path(), config(Durability::None)).expect("open");
        let bytes = vec![0x5au8; payload];
        for n in 0..count {
            journal.append(1, n as u64, &bytes).expect("append");
        }
    }
    let mut seconds = Vec::new();
    for _ in 0..rounds {
        let journal = Journal::open(dir.path(), config(Durability::None)).expect("open");
        let reader = journal.reader();
        let start = Instant::now();
        let mut cursor = reader.cursor_at_start();
        let mut sum = 0u64;
        let mut records = 0;
        while let Some(record) = cursor.next().expect("read") {
            sum = sum.wrapping_add(record.payload()[0] as u64);
            records += 1;
        }
        seconds.push(start.elapsed().as_secs_f64());
        black_box(sum);
        assert_eq!(records, count);
    }
    let seconds = median(&mut seconds);
    println!(
        "| cursor from the start | {:.0} | {:.2} |",
        count as f64 / seconds,
        (count * (HEADER + payload)) as f64 / seconds / 1e9
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    let quick = args.iter().any(|a| a == "--quick");
    let parts: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |part: &str| parts.is_empty() || parts.contains(&part);
    println!(
        "cpu: {}; cores: {}; temp dir: {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |info| info.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_else(|| "unknown".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::temp_dir().display()
    );
    if wants("append") {
        append(quick);
    }
    if wants("commit") {
        commit(quick);
    }
    if wants("latency") {
        latency(quick);
    }
    if wants("replay") {
        replay(quick);
    }
    if wants("checksum") {
        checksum(quick);
    }
    if wants("amplification") {
        amplification(quick);
    }
    if wants("fresh") {
        fresh(quick);
    }
    if wants("recycle") {
        recycle(quick);
    }
}

/// GB/s of filling `map` with `value`.
fn fill_rate(map: &mut [u8], value: u8) -> f64 {
    let start = Instant::now();
    map.fill(value);
    black_box(&map);
    map.len() as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// The cost of fresh memory: the journal's appends write pages the process
/// has never touched, which the kernel must find and zero first (the memcpy
/// bound of the append part writes a `Vec` it has already touched).
fn fresh(quick: bool) {
    use memmap2::{Advice, MmapMut, MmapOptions};
    use std::os::fd::AsRawFd;
    let bytes = if quick { 32 << 20 } else { 256 << 20 };
    let rounds = if quick { 1 } else { 3 };
    println!(
        "\n### Fresh memory: {} MiB written twice, median of {rounds} rounds\n",
        bytes >> 20
    );
    println!("| memory | first write GB/s | second write GB/s | first / second |");
    println!("| --- | ---: | ---: | ---: |");
    let anonymous = |advice: Advice| {
        let mut map = MmapMut::map_anon(bytes).expect("map");
        // Best effort: without transparent huge pages both rows are 4 KiB.
        let _ = map.advise(advice);
        let first = fill_rate(&mut map, 1);
        (first, fill_rate(&mut map, 2))
    };
    let file = || {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("fresh"))
            .expect("create");
        // SAFETY: posix_fallocate reads no memory of ours; the descriptor is
        // open for writing.
        let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, bytes as libc::off_t) };
        assert_eq!(code, 0, "fallocate");
        // SAFETY: the file is this function's own, in a fresh directory;
        // nothing else maps or truncates it.
        let mut map = unsafe { MmapOptions::new().len(bytes).map_mut(&file) }.expect("map");
        let start = Instant::now();
        map.advise(Advice::PopulateWrite).expect("populate");
        let first = bytes as f64 / start.elapsed().as_secs_f64() / 1e9;
        let second = fill_rate(&mut map, 2);
        drop(map);
        keep_until_settled(dir);
        (first, second)
    };
    type Probe<'a> = (&'a str, Box<dyn Fn() -> (f64, f64) + 'a>);
    let probes: Vec<Probe> = vec![
        (
            "anonymous, 4 KiB pages",
            Box::new(move || anonymous(Advice::NoHugePage)),
        ),
        (
            "anonymous, huge pages (`MADV_HUGEPAGE`)",
            Box::new(move || anonymous(Advice::HugePage)),
        ),
        (
            "file, made ready by `MADV_POPULATE_WRITE` (first), then filled",
            Box::new(file),
        ),
    ];
    // Per probe: the first writes' rates, then the second writes'.
    let mut rates: Vec<[Vec<f64>; 2]> = probes.iter().map(|_| Default::default()).collect();
    for _ in 0..rounds {
        for ((_, probe), [firsts, seconds]) in probes.iter().zip(&mut rates) {
            let (first, second) = probe();
            firsts.push(first);
            seconds.push(second);
        }
    }
    settle();
    for ((name, _), [firsts, seconds]) in probes.iter().zip(&mut rates) {
        let (first, second) = (median(firsts), median(seconds));
        println!(
            "| {name} | {first:.2} | {second:.2} | {:.2} |",
            first / second
        );
    }
}

/// Bytes the process has caused to be written to storage (Linux).
fn storage_bytes_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// CPU time of the whole process so far, in seconds (Linux).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks / 100.0)
}

/// Write amplification under the interval policy: 256-byte records
/// appended at a steady rate, each millisecond's share at once, and the
/// bytes the journal's flushes wrote to storage per byte appended.
fn amplification(quick: bool) {
    let seconds = if quick { 1 } else { 3 };
    println!(
        "\n### Write amplification: interval 10 ms, 256-byte records at a steady rate for {seconds} s\n"
    );
    println!("| MB/s appended | MB appended | MB written to storage | written / appended | process CPU ms |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for rate_mb in [2u64, 20, 100] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut journal = Journal::open(
            dir.path(),
            config(Durability::Interval(Duration::from_millis(10))),
        )
        .expect("open");
        let payload = vec![0x5au8; 256];
        let stride = (HEADER + payload.len()) as u64;
        let per_ms = (rate_mb << 20) / stride / 1000;
        let (Some(written_before), Some(cpu_before)) =
            (storage_bytes_written(), process_cpu_seconds())
        else {
            println!("(needs Linux's /proc/self/io)");
            return;
        };
        let start = Instant::now();
        let mut appended = 0u64;
        for ms in 0..seconds * 1000 {
            for n in 0..per_ms {
                journal.append(1, n, &payload).expect("append");
                appended += stride;
            }
            let due = start + Duration::from_millis(ms + 1);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        // The last interval's flush.
        std::thread::sleep(Duration::from_millis(50));
        let written = storage_bytes_written().unwrap_or(0) - written_before;
        let cpu = process_cpu_seconds().unwrap_or(0.0) - cpu_before;
        drop(journal);
        println!(
            "| {rate_mb} | {:.1} | {:.1} | {:.2} | {:.0} |",
            appended as f64 / 1e6,
            written as f64 / 1e6,
            written as f64 / appended as f64,
            cpu * 1e3
        );
    }
}

/// The record checksum's latency: each record's header takes the previous
/// checksum, so every computation waits for the one before, as the
/// appender's does (it needs the checksum before it can write the header).
/// Beside it, the `crc32c` crate over the same bytes in the same chain.
fn checksum(quick: bool) {
    use courier_journal::format::record_checksum_of;
    let iterations = if quick { 1_000_000 } else { 10_000_000 };
    let rounds = if quick { 1 } else { 5 };
    println!(
        "\n### Record checksum latency: ns per record, each depending on the one before; median of {rounds} rounds\n"
    );
    println!("| payload B | crc32c crate | courier-journal | ratio |");
    println!("| ---: | ---: | ---: | ---: |");
    for payload_length in [64usize, 256, 1024] {
        let payload: Vec<u8> = (0..payload_length).map(|i| i as u8).collect();
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&((HEADER + payload_length) as u32).to_le_bytes());
        let crate_chain = |header: &mut [u8; HEADER]| {
            let start = Instant::now();
            for _ in 0..iterations {
                let checksum = crc32c::crc32c_append(
                    crc32c::crc32c_append(crc32c::crc32c(&header[..4]), &header[8..]),
                    black_box(&payload),
                );
                header[8..12].copy_from_slice(&checksum.to_le_bytes());
            }
            start.elapsed().as_secs_f64() * 1e9 / iterations as f64
        };
        let journal_chain = |header: &mut [u8; HEADER]| {
            let start = Instant::now();
            for _ in 0..iterations {
                let checksum = record_checksum_of(header, black_box(&payload));
                header[8..12].copy_from_slice(&checksum.to_le_bytes());
            }
            start.elapsed().as_secs_f64() * 1e9 / iterations as f64
        };
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            theirs.push(crate_chain(&mut header));
            ours.push(journal_chain(&mut header));
        }
        let (ours, theirs) = (median(&mut ours), median(&mut theirs));
        println!(
            "| {payload_length} | {theirs:.1} | {ours:.1} | {:.2} |",
            theirs / ours
        );
    }
}
