//! The auth workers: argon2 hashing and verification, off the logic thread.
//!
//! Logic hands a job to the pool through a bounded queue (a full queue is an
//! `OVERLOADED` error to the client, never a wait). A worker does the slow
//! part and publishes the result into the inbound ring as an internal
//! command, which is journaled (without the password) and applied by logic
//! like any other.

use std::thread::JoinHandle;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
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
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            queue_slots: 1024,
            memory_kib: 19 * 1024,
            iterations: 2,
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
    },
    /// Check a login's password against the account's hash.
    Verify {
        conn: ConnId,
        correlation_id: u64,
        user_id: UserId,
        device_id: String,
        delivery_mode: i32,
        lz4: bool,
        password: String,
        password_hash: String,
    },
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
                let argon2 = argon2.clone();
                std::thread::Builder::new()
                    .name(format!("courier-auth-{index}"))
                    .spawn(move || {
                        for job in jobs {
                            let (conn, origin, body) = work(&argon2, job);
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

fn work(argon2: &Argon2<'_>, job: AuthJob) -> (ConnId, Origin, Vec<u8>) {
    match job {
        AuthJob::Hash {
            conn,
            correlation_id,
            user,
            password,
        } => {
            let salt =
                SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes make a valid salt");
            let password_hash = argon2
                .hash_password(password.as_bytes(), &salt)
                .expect("argon2 hashes any password within its limits")
                .to_string();
            let registered = Registered {
                correlation_id,
                user,
                password_hash,
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
        } => {
            let ok = PasswordHash::new(&password_hash)
                .is_ok_and(|hash| argon2.verify_password(password.as_bytes(), &hash).is_ok());
            if !ok {
                return (conn, Origin::LoginRefused { correlation_id }, Vec::new());
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_wrong_passwords_do_not() {
        let argon2 = AuthConfig::insecure_fast().argon2().unwrap();
        let (_, origin, body) = work(
            &argon2,
            AuthJob::Hash {
                conn: ConnId(1),
                correlation_id: 2,
                user: "ana".into(),
                password: "secret".into(),
            },
        );
        assert_eq!(origin, Origin::Registered);
        let registered = Registered::decode(&body[..]).unwrap();
        assert!(registered.password_hash.starts_with("$argon2id$"));
        assert!(!registered.password_hash.contains("secret"));
        // Each case: the password tried, and whether it logs in.
        for (password, ok) in [("secret", true), ("Secret", false), ("", false)] {
            let (_, origin, _) = work(
                &argon2,
                AuthJob::Verify {
                    conn: ConnId(1),
                    correlation_id: 3,
                    user_id: UserId(1),
                    device_id: "phone".into(),
                    delivery_mode: 0,
                    lz4: false,
                    password: password.into(),
                    password_hash: registered.password_hash.clone(),
                },
            );
            assert_eq!(origin == Origin::LoginVerified, ok, "{password:?}");
        }
    }
}
