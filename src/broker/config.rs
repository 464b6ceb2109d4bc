//! The broker's configuration, as read from TOML.
//!
//! Names of settings and constants that hold a bare number end in its
//! unit, and a bound comes after the unit: `flush_interval_ms`,
//! `segment_size_mb`, `frame_size_max_bytes`, `NAME_BYTES_MAX`,
//! `MESSAGE_RETENTION_S_MAX`. A count needs no unit (`ring_slots`,
//! `group_members_max`); a `Duration` carries its own.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::AuthConfig;
use super::clock::Clock;
use crate::codec::FRAME_SIZE_MAX_BYTES_DEFAULT;
use crate::journal::Durability;
use crate::ringbuffer::{Placement, ThreadSpec, WaitStrategy};

/// When journaled commands reach the disk (see the journal's `Durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilitySetting {
    /// Group commit: each batch is flushed (msync) before logic acknowledges
    /// any of it. Survives power loss. The default.
    Batch,
    /// A background flush every `flush_interval_ms`; acknowledged commands
    /// survive a crash of the process, and a power loss takes at most the
    /// last interval.
    Interval,
    /// Page cache only: survives a crash of the process, not of the machine.
    None,
}

/// How the pipeline's stages map to threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementSetting {
    /// The default: [`Inline`](Self::Inline) where the gateway runs the
    /// stages itself (`courier serve` does: measured, it costs the least CPU
    /// per message at every load on a small machine), otherwise
    /// [`Fused`](Self::Fused). [`super::Broker::open`] takes it as fused.
    Auto,
    /// Every stage on one thread, the SQLite store included (it commits once
    /// per batch that creates accounts, and WAL commits do not fsync).
    Fused,
    /// Three threads: decode and journal on one, the flush (group commit)
    /// on one, logic, fan-out and store on one, so the journal appends a
    /// batch while the disk takes the one before and logic works on the
    /// one before that.
    Split,
    /// Each stage on a thread of its own.
    PerStage,
    /// No stage thread: the gateway runs every stage on a thread of its own
    /// through [`super::Broker::take_driver`] (the mio server: on its first
    /// I/O thread, right after it reads). A frame read, journaled, applied
    /// and answered on one thread needs no hand-off and no wake-up between
    /// threads, which is most of what a message costs at moderate load; the
    /// price is that reading waits while the stages (and under batch
    /// durability, the disk) work.
    Inline,
}

/// How an idle stage waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitSetting {
    /// Spin briefly, yield, then sleep: no CPU when idle. The default.
    Blocking,
    /// Spin, then yield; never sleeps (a core's worth of CPU when idle).
    Yield,
    /// Busy-spin: lowest latency, a full core per stage thread, always.
    Spin,
}

/// The longest message retention accepted: 100 years, in seconds.
const MESSAGE_RETENTION_S_MAX: u64 = 100 * 366 * 24 * 3600;
/// Far more segments than a journal holds between two snapshots.
const SNAPSHOT_EVERY_SEGMENTS_MAX: u64 = 1 << 20;
/// Kept files take a segment of disk each.
const SEGMENTS_KEPT_FOR_REUSE_MAX: usize = 64;

/// Everything the broker (without its network layer) is configured by.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Where the journal (`journal/`) and the SQLite projection
    /// (`courier.db`) live; created if missing.
    pub data_dir: PathBuf,
    /// When acknowledged commands reach the disk.
    pub durability: DurabilitySetting,
    /// The flush interval of `durability = "interval"`.
    pub flush_interval_ms: u64,
    /// Size of each journal segment file.
    pub segment_size_mb: u64,
    /// Slots of the inbound ring (a power of two).
    pub ring_slots: usize,
    /// Which threads run the stages.
    pub placement: PlacementSetting,
    /// How idle stages wait.
    pub wait: WaitSetting,
    /// With `wait = "blocking"`: how long an idle stage yields its core
    /// before it sleeps. Longer saves wake-ups (and their system calls)
    /// under steady load; an idle server sleeps after this long all the same.
    pub wait_yield_us: u64,
    /// Largest frame (header and payload) accepted or sent.
    pub frame_size_max_bytes: usize,
    /// How often clients should ping; told in HelloOk. Also the shortest
    /// interval a client may declare.
    pub heartbeat_interval_ms: u32,
    /// The longest interval between pings a client may declare (a phone
    /// keeping its radio asleep as long as its NAT mapping lasts); a
    /// connection that declared one is closed after three intervals of
    /// silence (or `heartbeat_timeout_ms`, if longer).
    pub heartbeat_interval_ms_max: u32,
    /// How many of a sender's latest client message ids are remembered, so
    /// that resending one is acknowledged without storing it twice.
    pub dedup_window: usize,
    /// Most messages in one SyncBatch.
    pub sync_limit_max: u32,
    /// How long a message stays in the inboxes, in seconds (0, the default:
    /// for ever). Older messages leave memory, and Sync no longer returns
    /// them; journal segments that hold only expired messages are deleted
    /// by the snapshots taken while the broker runs (see
    /// `snapshot_every_segments`) and at a start that writes one.
    pub message_retention_s: u64,
    /// Let any user send 1:1 messages to any other, as a plain broker does.
    /// Off by default: messages go to friends only. It also lets any user
    /// invite any other into a group.
    pub open_messaging: bool,
    /// The most members a group may have (500, as WeChat allows). A group's
    /// member list must fit one frame: at most about 67 bytes a member.
    pub group_members_max: usize,
    /// Take a snapshot of all state as the broker opens, so that the next
    /// start replays only the journal after it.
    pub snapshots: bool,
    /// With `snapshots`: take one only when this many journal records had
    /// to be replayed (a snapshot costs about as much to write as the
    /// state's size).
    pub snapshot_min_records: u64,
    /// With `snapshots` and a message retention: a background thread takes
    /// a snapshot once the journal has grown by this many segments since
    /// the last one (and by at least that snapshot's size), then deletes
    /// the segments that neither it nor a message still held needs. 0
    /// takes them only at a start.
    pub snapshot_every_segments: u64,
    /// Up to this many journal segment files that retention deletes are
    /// kept, while every page of them is still in memory, and written again
    /// as the next segments: a new file's pages cost the kernel an
    /// allocation and zeroing each. They take disk beside the journal. 0
    /// deletes each one.
    pub segments_kept_for_reuse: usize,
    /// Password hashing.
    pub auth: AuthConfig,
    /// Where time comes from: the system's clocks, or a manual
    /// [`Clock`] a test or an embedder moves (not read from TOML).
    #[serde(skip)]
    pub clock: Clock,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            durability: DurabilitySetting::Batch,
            flush_interval_ms: 10,
            segment_size_mb: 64,
            ring_slots: 4096,
            placement: PlacementSetting::Auto,
            wait: WaitSetting::Blocking,
            wait_yield_us: 5,
            frame_size_max_bytes: FRAME_SIZE_MAX_BYTES_DEFAULT,
            heartbeat_interval_ms: 30_000,
            heartbeat_interval_ms_max: 600_000,
            dedup_window: 4096,
            sync_limit_max: 500,
            message_retention_s: 0,
            open_messaging: false,
            group_members_max: 500,
            snapshots: true,
            snapshot_min_records: 1_000_000,
            snapshot_every_segments: 4,
            segments_kept_for_reuse: 4,
            auth: AuthConfig::default(),
            clock: Clock::system(),
        }
    }
}

impl BrokerConfig {
    /// Checks the settings that cannot be typed; the error says which.
    pub fn validate(&self) -> Result<(), String> {
        if !self.ring_slots.is_power_of_two() || self.ring_slots < 64 {
            return Err(format!(
                "ring_slots must be a power of two, at least 64 (is {})",
                self.ring_slots
            ));
        }
        if self.frame_size_max_bytes < 2048 || self.frame_size_max_bytes > 16 << 20 {
            return Err(format!(
                "frame_size_max_bytes must be between 2 KiB and 16 MiB (is {})",
                self.frame_size_max_bytes
            ));
        }
        if self.segment_size_mb == 0 || self.segment_size_mb > 4096 {
            return Err(format!(
                "segment_size_mb must be between 1 and 4096 (is {})",
                self.segment_size_mb
            ));
        }
        if (self.segment_size_mb as usize) << 20 < 2 * self.frame_size_max_bytes {
            return Err(
                "a journal segment must hold at least two frames of the largest size".into(),
            );
        }
        if self.durability == DurabilitySetting::Interval && self.flush_interval_ms == 0 {
            return Err("flush_interval_ms must be positive".into());
        }
        if self.heartbeat_interval_ms == 0 {
            return Err("heartbeat_interval_ms must be positive".into());
        }
        if self.heartbeat_interval_ms_max < self.heartbeat_interval_ms {
            return Err(format!(
                "heartbeat_interval_ms_max ({}) must be at least heartbeat_interval_ms ({})",
                self.heartbeat_interval_ms_max, self.heartbeat_interval_ms
            ));
        }
        if self.message_retention_s > MESSAGE_RETENTION_S_MAX {
            return Err(format!(
                "message_retention_s must be at most {MESSAGE_RETENTION_S_MAX} (100 years; 0 keeps \
                 messages for ever), is {}",
                self.message_retention_s
            ));
        }
        if self.snapshot_every_segments > SNAPSHOT_EVERY_SEGMENTS_MAX {
            return Err(format!(
                "snapshot_every_segments must be at most {SNAPSHOT_EVERY_SEGMENTS_MAX} (0 takes \
                 snapshots only at a start), is {}",
                self.snapshot_every_segments
            ));
        }
        if self.segments_kept_for_reuse > SEGMENTS_KEPT_FOR_REUSE_MAX {
            return Err(format!(
                "segments_kept_for_reuse must be at most {SEGMENTS_KEPT_FOR_REUSE_MAX} (0 deletes \
                 each segment retention takes out), is {}",
                self.segments_kept_for_reuse
            ));
        }
        if self.sync_limit_max == 0 {
            return Err("sync_limit_max must be positive".into());
        }
        let group_members_fit = (self.frame_size_max_bytes
            - super::logic::GROUP_INFO_OVERHEAD_BYTES)
            / super::logic::GROUP_INFO_BYTES_PER_MEMBER;
        if self.group_members_max < 2 || self.group_members_max > group_members_fit {
            return Err(format!(
                "group_members_max must be between 2 and {group_members_fit} (what a member list \
                 in a frame of frame_size_max_bytes holds), is {}",
                self.group_members_max
            ));
        }
        if self.auth.workers == 0 {
            return Err("auth.workers must be positive".into());
        }
        self.auth
            .argon2()
            .map_err(|error| format!("auth: invalid argon2 parameters: {error}"))?;
        Ok(())
    }

    pub(crate) fn journal_durability(&self) -> Durability {
        match self.durability {
            DurabilitySetting::Batch => Durability::Batch,
            DurabilitySetting::Interval => {
                Durability::Interval(Duration::from_millis(self.flush_interval_ms))
            }
            DurabilitySetting::None => Durability::None,
        }
    }

    pub(crate) fn ring_placement(&self) -> Placement {
        match self.placement {
            PlacementSetting::Auto | PlacementSetting::Fused => Placement::Fused,
            PlacementSetting::Split => Placement::Threads(vec![
                ThreadSpec::new(["decode", "journal"]),
                ThreadSpec::new(["flush"]),
                ThreadSpec::new(["logic", "fan-out", "store"]),
            ]),
            PlacementSetting::PerStage => Placement::ThreadPerStage,
            PlacementSetting::Inline => Placement::Caller,
        }
    }

    pub(crate) fn wait_strategy(&self) -> WaitStrategy {
        match self.wait {
            WaitSetting::Blocking => WaitStrategy::Blocking {
                spin: Duration::ZERO,
                yield_for: Duration::from_micros(self.wait_yield_us),
            },
            WaitSetting::Yield => WaitStrategy::Yield {
                spin: Duration::from_micros(10),
            },
            WaitSetting::Spin => WaitStrategy::SpinHint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(BrokerConfig::default().validate(), Ok(()));
        // Each case: a change to the defaults and a word its error names.
        type Change = fn(&mut BrokerConfig);
        let cases: [(Change, &str); 9] = [
            (|c| c.message_retention_s = u64::MAX, "message_retention_s"),
            (
                |c| c.segments_kept_for_reuse = 1000,
                "segments_kept_for_reuse",
            ),
            (
                |c| c.snapshot_every_segments = u64::MAX,
                "snapshot_every_segments",
            ),
            (|c| c.group_members_max = 1, "group_members_max"),
            (|c| c.group_members_max = 2000, "group_members_max"),
            (|c| c.ring_slots = 1000, "ring_slots"),
            (|c| c.frame_size_max_bytes = 10, "frame_size_max_bytes"),
            (|c| c.auth.memory_kib = 1, "argon2"),
            (|c| c.segment_size_mb = 0, "segment_size_mb"),
        ];
        for (change, word) in cases {
            let mut config = BrokerConfig::default();
            change(&mut config);
            let error = config.validate().unwrap_err();
            assert!(error.contains(word), "{error}");
        }
    }

    #[test]
    fn toml_fills_in_defaults_and_refuses_unknown_keys() {
        let config: BrokerConfig = toml::from_str(
            "durability = \"none\"\nplacement = \"per-stage\"\n[auth]\nworkers = 2\n",
        )
        .unwrap();
        assert_eq!(config.durability, DurabilitySetting::None);
        assert_eq!(config.placement, PlacementSetting::PerStage);
        assert_eq!(config.auth.workers, 2);
        assert_eq!(config.ring_slots, 4096);
        assert!(toml::from_str::<BrokerConfig>("ring_slot = 8").is_err());
    }
}
