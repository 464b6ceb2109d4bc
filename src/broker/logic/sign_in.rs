//! Registering and logging in: the account commands, which cross three
//! rooms (accounts, sessions, the login gate) and the auth workers. A
//! password is checked (or hashed) off the logic thread: logic leaves a
//! job in the outbox and records the check on the connection; the
//! worker's result comes back as a journaled command (`Registered`,
//! `LoginVerified`) or a refusal.

use std::sync::Arc;

use super::accounts::Accounts;
use super::names::{check_name, check_user_name};
use super::sessions::Check;
use super::{accepts_lz4, user_exists, Logic, PASSWORD_BYTES_MAX};
use crate::broker::auth::AuthJob;
use crate::broker::event::{Intent, Journaled, Outbox, Projection};
use crate::broker::ids::{ConnId, DeviceId, UserId};
use crate::codec::journal_proto::{LoginVerified, Registered};
use crate::codec::proto::{self, login, Compression, ErrorCode};
use crate::codec::Message;

impl Logic {
    pub(super) fn register(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        register: &proto::Register,
        out: &mut Outbox,
    ) {
        let rules_version = self.config.rules_version;
        if let Err(reason) = check_user_name(&register.user, rules_version) {
            out.error(conn, correlation_id, ErrorCode::MalformedFrame, reason);
            return;
        }
        if register.password.is_empty() || register.password.len() > PASSWORD_BYTES_MAX {
            let text = format!("a password has 1 to {PASSWORD_BYTES_MAX} bytes");
            out.error(conn, correlation_id, ErrorCode::MalformedFrame, text);
            return;
        }
        let key = Accounts::registration_key(&register.user, rules_version);
        if self.accounts.taken(&register.user, &key, rules_version) {
            out.error(
                conn,
                correlation_id,
                ErrorCode::UserExists,
                user_exists(&register.user),
            );
            return;
        }
        let job = |cancelled| AuthJob::Hash {
            conn,
            correlation_id,
            user: register.user.clone(),
            password: register.password.clone(),
            cancelled,
        };
        let check = Check::registration(key.clone());
        if self.submit(conn, correlation_id, check, job, out) {
            self.accounts.reserve(key);
        }
    }

    pub(super) fn login(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        login: &proto::Login,
        out: &mut Outbox,
    ) {
        if let Err(reason) = check_name("device id", &login.device_id) {
            out.error(conn, correlation_id, ErrorCode::MalformedFrame, reason);
            return;
        }
        let refuse = |out: &mut Outbox| {
            let text = "wrong user or password";
            out.error(conn, correlation_id, ErrorCode::BadCredentials, text)
        };
        let user_id = self.accounts.find(login.user.as_bytes());
        match &login.secret {
            Some(login::Secret::Password(password)) => {
                let Some(dummy_hash) = &self.dummy_hash else {
                    unreachable!("a password login while replaying");
                };
                // An unknown user's password is checked too, against a hash
                // nobody knows the password of: both take one argon2 check.
                let password_hash = match user_id {
                    Some(user_id) => self.accounts.get(user_id).password_hash.as_str().into(),
                    None => dummy_hash.clone(),
                };
                let job = |cancelled| AuthJob::Verify {
                    conn,
                    correlation_id,
                    user_id,
                    device_id: login.device_id.clone(),
                    delivery_mode: login.delivery_mode,
                    lz4: accepts_lz4(login),
                    password: password.clone(),
                    password_hash,
                    cancelled,
                };
                let check = Check::login(login.user.clone());
                self.submit(conn, correlation_id, check, job, out);
            }
            Some(login::Secret::Token(token)) => {
                // Not limited by the gate: a token login is journaled, and
                // replay must open the same sessions without it. A token
                // is 128 random bits, not a guess away.
                let Some(user_id) = user_id else {
                    return refuse(out);
                };
                let known = self
                    .accounts
                    .get(user_id)
                    .tokens
                    .get(login.device_id.as_str());
                if known.is_none_or(|known| known != token) {
                    return refuse(out);
                }
                let token = token.clone();
                self.open_session(conn, correlation_id, user_id, login, token, out);
            }
            None => refuse(out),
        }
    }

    /// Leaves `check` for `conn` to the auth workers, as the job `job`
    /// builds around the check's cancel flag, and records it on the
    /// connection; false, with an error to the client, if the gate refuses
    /// it or the connection has one under way. (The stage that hands the
    /// job over calls [`Logic::check_not_started`] if the workers refuse.)
    pub(super) fn submit(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        check: Check,
        job: impl FnOnce(Arc<std::sync::atomic::AtomicBool>) -> AuthJob,
        out: &mut Outbox,
    ) -> bool {
        assert!(self.dummy_hash.is_some(), "replay never meets an auth job");
        let Some(state) = self.sessions.conn(conn) else {
            // A gateway that never announced the connection.
            out.error(
                conn,
                correlation_id,
                ErrorCode::Internal,
                "unknown connection",
            );
            return false;
        };
        if state.check.is_some() {
            let text = "one login or registration at a time on a connection: wait for its answer";
            out.error(conn, correlation_id, ErrorCode::Overloaded, text);
            return false;
        }
        let ip = state.ip;
        let login_name = (!check.registration).then_some(check.name.as_bytes());
        if let Err(refusal) = self.gate.check(login_name, ip, self.now_ms) {
            let retry_after_ms = u32::try_from(refusal.retry_after_ms()).unwrap_or(u32::MAX);
            let refused = Message::retry_after(retry_after_ms, refusal.text());
            out.send(conn, correlation_id, &refused);
            return false;
        }
        out.auth.push(job(check.cancelled.clone()));
        self.gate.check_started(ip);
        self.sessions.conn_mut(conn).expect("looked up above").check = Some(check);
        true
    }

    pub(super) fn registered(
        &mut self,
        conn: ConnId,
        registered: &Registered,
        journaled: Option<Journaled>,
        out: &mut Outbox,
    ) {
        let rules_version = self.config.rules_version;
        let key = Accounts::registration_key(&registered.user, rules_version);
        self.accounts.release(&key);
        if self.accounts.taken(&registered.user, &key, rules_version) {
            let text = user_exists(&registered.user);
            out.error(conn, registered.correlation_id, ErrorCode::UserExists, text);
            return;
        }
        let journaled = journaled.expect("a registration is always journaled before logic");
        let user_id = self
            .accounts
            .add(&registered.user, &registered.password_hash);
        self.sessions.add_user();
        self.contacts.add_user();
        self.groups.add_user();
        out.intents.push(Intent::Account {
            name: registered.user.clone(),
        });
        let ok = Message::RegisterOk(proto::RegisterOk { user_id: user_id.0 });
        out.send(conn, registered.correlation_id, &ok);
        out.projections.push(Projection::Account {
            user_id,
            name: registered.user.clone(),
            password_hash: registered.password_hash.clone(),
            created_ms: journaled.timestamp_ns / 1_000_000,
        });
    }

    pub(super) fn login_verified(
        &mut self,
        conn: ConnId,
        verified: &LoginVerified,
        out: &mut Outbox,
    ) {
        let user_id = UserId(verified.user_id);
        if self.sessions.conn(conn).is_none()
            || verified.user_id == 0
            || verified.user_id > self.accounts.len() as u64
        {
            // The device left before its password was checked.
            return;
        }
        let login = proto::Login {
            user: String::new(),
            secret: None,
            device_id: verified.device_id.clone(),
            delivery_mode: verified.delivery_mode,
            accept_compression: if verified.lz4 {
                vec![Compression::Lz4 as i32]
            } else {
                Vec::new()
            },
        };
        let tokens = &mut self.accounts.get_mut(user_id).tokens;
        let device = DeviceId::from(verified.device_id.as_str());
        tokens.insert(device, verified.token.clone());
        let token = verified.token.clone();
        self.open_session(conn, verified.correlation_id, user_id, &login, token, out);
    }
}
