//! The auth workers: argon2 hashing and verification, off the logic thread.
//!
//! Logic hands a job to the pool through a bounded queue (a full queue is an
//! `OVERLOADED` error to the client, never a wait). A worker does the slow
//! part and publishes the result into the inbound ring as an internal
//! command, which is journaled (without the password) and applied by logic
//! like any other. A job whose connection closed before a worker took it
//! is skipped.
//!
//! Each worker keeps one argon2 memory area (19 MiB at the default cost)
//! for all its jobs, so the server's memory holds exactly one per worker:
//! a fresh area per job, freed after it, was kept by the allocator in
//! several copies (60 to 120 MiB after a few logins).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use crossbeam_channel::{Receiver, Sender};
use prost::Message as _;

use super::event::{Inbound, Origin};
use super::ids::{ConnId, UserId};
use super::latency::monotonic_ns;
use crate::codec::journal_proto::{LoginVerified, Registered};
use crate::ringbuffer::MultiProducer;

/// Argon2id cost settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Worker threads.
    pub workers: usize,
    /// Jobs that may wait for a worker before logins are refused as
    /// overloaded.
    pub queue_slots: usize,
    /// Argon2 memory cost in KiB (19,456 = 19 MiB, the OWASP minimum).
    pub memory_kib: u32,
    /// Argon2 passes over memory.
    pub iterations: u32,
    /// Password checks (logins and registrations) one client address may
    /// have under way at once; 0 for no limit (a load test from one
    /// machine). Behind a NAT many users share an address.
    pub checks_per_address_max: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            queue_slots: 1024,
            memory_kib: 19 * 1024,
            iterations: 2,
            checks_per_address_max: 4,
        }
    }
}

impl AuthConfig {
    /// The cheapest settings argon2 allows: for tests, never for production.
    pub fn insecure_fast() -> Self {
        Self {
            memory_kib: 8,
            iterations: 1,
            ..Self::default()
        }
    }

    pub(crate) fn argon2(&self) -> Result<Argon2<'static>, argon2::Error> {
        let params = Params::new(self.memory_kib, self.iterations, 1, None)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Slow work for a worker.
#[derive(Debug)]
pub(crate) enum AuthJob {
    /// Hash a new account's password.
    Hash {
        conn: ConnId,
        correlation_id: u64,
        user: String,
        password: String,
        /// Set once the connection closed: the job is skipped.
        cancelled: Arc<AtomicBool>,
    },
    /// Check a login's password against the account's hash; with no
    /// account (`user_id` is `None`), against a hash nobody knows the
    /// password of, so that an unknown user costs what a wrong password
    /// does and is refused the same way.
    Verify {
        conn: ConnId,
        correlation_id: u64,
        user_id: Option<UserId>,
        device_id: String,
        delivery_mode: i32,
        lz4: bool,
        password: String,
        password_hash: Arc<str>,
        /// Set once the connection closed: the job is skipped.
        cancelled: Arc<AtomicBool>,
    },
}

impl AuthJob {
    /// The connection that asked, and its request's correlation id.
    pub(crate) fn asker(&self) -> (ConnId, u64) {
        let (AuthJob::Hash {
            conn,
            correlation_id,
            ..
        }
        | AuthJob::Verify {
            conn,
            correlation_id,
            ..
        }) = self;
        (*conn, *correlation_id)
    }

    fn cancelled(&self) -> bool {
        let (AuthJob::Hash { cancelled, .. } | AuthJob::Verify { cancelled, .. }) = self;
        // Relaxed: a hint; a job that starts just before its connection
        // closes runs, and logic drops its result.
        cancelled.load(Ordering::Relaxed)
    }
}

/// The running workers.
pub(crate) struct AuthPool {
    threads: Vec<JoinHandle<()>>,
}

impl AuthPool {
    /// The queue logic submits to, and its receiving end for the workers.
    pub(crate) fn queue(config: &AuthConfig) -> (Sender<AuthJob>, Receiver<AuthJob>) {
        crossbeam_channel::bounded(config.queue_slots.max(1))
    }

    /// Starts the workers. They stop when the queue's senders are gone or
    /// the ring halts.
    pub(crate) fn start(
        config: &AuthConfig,
        jobs: Receiver<AuthJob>,
        ingress: MultiProducer<Inbound>,
    ) -> std::io::Result<Self> {
        let argon2 = config
            .argon2()
            .expect("the config's argon2 parameters were checked at open");
        let threads = (0..config.workers.max(1))
            .map(|index| {
                let jobs = jobs.clone();
                let mut ingress = ingress.clone();
                let mut hasher = Hasher::new(argon2.clone());
                std::thread::Builder::new()
                    .name(format!("courier-auth-{index}"))
                    .spawn(move || {
                        for job in jobs.iter().filter(|job| !job.cancelled()) {
                            let (conn, origin, body) = work(&mut hasher, job);
                            if ingress
                                .publish(|event| event.fill(conn, origin, &body, monotonic_ns()))
                                .is_err()
                            {
                                return; // the pipeline stopped
                            }
                        }
                    })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { threads })
    }

    /// Waits for the workers to finish (after the queue's senders are gone).
    pub(crate) fn join(self) {
        for thread in self.threads {
            // A worker panic is a bug in argon2 or here; the pipeline has
            // stopped by now, so report it and go on.
            if thread.join().is_err() {
                tracing::error!("an auth worker panicked");
            }
        }
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes
}

/// A hash of a random password, for logins of unknown users to be checked
/// against: nobody can know its password.
pub(crate) fn dummy_hash(config: &AuthConfig) -> String {
    let argon2 = config
        .argon2()
        .expect("the config's argon2 parameters were checked at open");
    Hasher::new(argon2).hash(&random_bytes::<32>())
}

/// argon2 with one memory area kept for every job (see the module docs).
struct Hasher {
    argon2: Argon2<'static>,
    blocks: Vec<Block>,
}

impl Hasher {
    fn new(argon2: Argon2<'static>) -> Self {
        Self {
            argon2,
            blocks: Vec::new(),
        }
    }

    /// The memory area for `params`, grown (once) if it is too small.
    fn blocks(&mut self, params: &Params) -> &mut [Block] {
        let count = params.block_count();
        if self.blocks.len() < count {
            self.blocks.resize(count, Block::new());
        }
        &mut self.blocks[..count]
    }

    /// A PHC string (argon2id, a random 16-byte salt) for `password`.
    fn hash(&mut self, password: &[u8]) -> String {
        let salt =
            SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes make a valid salt");
        let mut salt_bytes = [0u8; 16];
        salt.decode_b64(&mut salt_bytes)
            .expect("the salt was encoded from 16 bytes");
        let argon2 = self.argon2.clone();
        let params = argon2.params().clone();
        let mut output = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
        argon2
            .hash_password_into_with_memory(
                password,
                &salt_bytes,
                &mut output,
                self.blocks(&params),
            )
            .expect("argon2 hashes any password within its limits");
        PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).expect("checked parameters encode"),
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&output).expect("the output length is valid")),
        }
        .to_string()
    }

    /// Whether `password` matches the PHC string `phc` (under the cost it
    /// was hashed with); a malformed string matches nothing.
    fn verify(&mut self, password: &[u8], phc: &str) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return false;
        };
        let (Ok(algorithm), Ok(version), Ok(params), Some(salt), Some(expected)) = (
            Algorithm::try_from(hash.algorithm),
            hash.version
                .map_or(Ok(Version::default()), Version::try_from),
            Params::try_from(&hash),
            hash.salt,
            hash.hash,
        ) else {
            return false;
        };
        let mut salt_bytes = [0u8; 64];
        let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
            return false;
        };
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let mut output = vec![0u8; expected.len()];
        argon2
            .hash_password_into_with_memory(password, salt_bytes, &mut output, self.blocks(&params))
            .is_ok()
            // `Output`'s comparison takes the same time wherever they differ.
            && Output::new(&output).is_ok_and(|output| output == expected)
    }
}

fn work(hasher: &mut Hasher, job: AuthJob) -> (ConnId, Origin, Vec<u8>) {
    match job {
        AuthJob::Hash {
            conn,
            correlation_id,
            user,
            password,
            cancelled: _,
        } => {
            let registered = Registered {
                correlation_id,
                user,
                password_hash: hasher.hash(password.as_bytes()),
            };
            (conn, Origin::Registered, registered.encode_to_vec())
        }
        AuthJob::Verify {
            conn,
            correlation_id,
            user_id,
            device_id,
            delivery_mode,
            lz4,
            password,
            password_hash,
            cancelled: _,
        } => {
            let ok = hasher.verify(password.as_bytes(), &password_hash);
            let (true, Some(user_id)) = (ok, user_id) else {
                return (conn, Origin::LoginRefused { correlation_id }, Vec::new());
            };
            let token: String = random_bytes::<16>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let verified = LoginVerified {
                correlation_id,
                user_id: user_id.0,
                device_id,
                delivery_mode,
                token,
                lz4,
            };
            (conn, Origin::LoginVerified, verified.encode_to_vec())
        }
    }
}

/// A worker that runs jobs when a test says, on the test's thread: the
/// simulation's auth pool (a cancelled job is skipped, as a worker does).
#[cfg(test)]
pub(crate) struct InlineWorker(Hasher);

#[cfg(test)]
impl InlineWorker {
    pub(crate) fn new(config: &AuthConfig) -> Self {
        Self(Hasher::new(config.argon2().expect("valid test costs")))
    }

    /// The event a worker would publish for `job`.
    pub(crate) fn run(&mut self, job: AuthJob) -> Option<(ConnId, Origin, Vec<u8>)> {
        (!job.cancelled()).then(|| work(&mut self.0, job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn verify_job(password: &str, password_hash: &str, user_id: Option<UserId>) -> AuthJob {
        AuthJob::Verify {
            conn: ConnId(1),
            correlation_id: 3,
            user_id,
            device_id: "phone".into(),
            delivery_mode: 0,
            lz4: false,
            password: password.into(),
            password_hash: password_hash.into(),
            cancelled: Arc::default(),
        }
    }

    #[test]
    fn hashes_verify_and_wrong_passwords_do_not() {
        let mut hasher = Hasher::new(AuthConfig::insecure_fast().argon2().unwrap());
        let (_, origin, body) = work(
            &mut hasher,
            AuthJob::Hash {
                conn: ConnId(1),
                correlation_id: 2,
                user: "ana".into(),
                password: "secret".into(),
                cancelled: Arc::default(),
            },
        );
        assert_eq!(origin, Origin::Registered);
        let registered = Registered::decode(&body[..]).unwrap();
        assert!(registered.password_hash.starts_with("$argon2id$"));
        assert!(!registered.password_hash.contains("secret"));
        // Each case: the password tried, the account, and whether it logs in.
        let cases = [
            ("secret", Some(UserId(1)), true),
            ("Secret", Some(UserId(1)), false),
            ("", Some(UserId(1)), false),
            ("secret", None, false), // no account: refused even if it matched
        ];
        for (password, user_id, ok) in cases {
            let job = verify_job(password, &registered.password_hash, user_id);
            let (_, origin, _) = work(&mut hasher, job);
            assert_eq!(origin == Origin::LoginVerified, ok, "{password:?}");
        }
    }

    #[test]
    fn the_kept_memory_area_agrees_with_the_crate_both_ways() {
        // Two costs, so that a worker's area is grown and reused.
        for config in [
            AuthConfig::insecure_fast(),
            AuthConfig {
                memory_kib: 64,
                ..AuthConfig::insecure_fast()
            },
        ] {
            let argon2 = config.argon2().unwrap();
            let mut hasher = Hasher::new(argon2.clone());
            let ours = hasher.hash(b"pass");
            let parsed = PasswordHash::new(&ours).unwrap();
            assert!(argon2.verify_password(b"pass", &parsed).is_ok(), "{ours}");
            assert!(argon2.verify_password(b"pas", &parsed).is_err());
            let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
            let theirs = argon2.hash_password(b"pass", &salt).unwrap().to_string();
            // Each case: a password and whether it matches their hash.
            for (password, ok) in [(&b"pass"[..], true), (b"pass ", false)] {
                assert_eq!(hasher.verify(password, &theirs), ok);
            }
            assert!(!hasher.verify(b"pass", "$argon2id$not a hash"));
        }
    }

    #[test]
    fn a_dummy_hash_is_a_valid_hash_of_an_unknown_password() {
        let dummy = dummy_hash(&AuthConfig::insecure_fast());
        let mut hasher = Hasher::new(AuthConfig::insecure_fast().argon2().unwrap());
        assert!(PasswordHash::new(&dummy).is_ok());
        assert!(!hasher.verify(b"", &dummy));
    }
}
