//! Connections and sessions: which connection is logged in as whom, on
//! which device, and each user's devices online.
//!
//! # Invariants
//! - A connection with a session is in its user's `online` list, once,
//!   and a connection in a list has a session of that user.
//! - `devices_online` is the number of sessions, `users_online` the number
//!   of users with a device online.
//! - A connection has at most one password check under way.

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use super::{ConnId, DeviceId, UserId};
use crate::broker::snapshot::{Decoder, Encoder, SnapshotError};

#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) user: UserId,
    pub(super) device_id: DeviceId,
    /// The device accepts LZ4-compressed frames.
    pub(super) lz4: bool,
}

/// The state of one live connection.
#[derive(Debug, Default)]
pub(super) struct Conn {
    pub(super) session: Option<Session>,
    /// The client's address, where the network layer said.
    pub(super) ip: Option<IpAddr>,
    /// The password check this connection has at the auth workers (one at
    /// a time).
    pub(super) check: Option<Check>,
}

/// A password check under way for a connection (live state, never in a
/// snapshot: replay sees only the checks' journaled results).
#[derive(Debug)]
pub(super) struct Check {
    /// Set when the connection closes, so a worker skips the job.
    pub(super) cancelled: Arc<AtomicBool>,
    /// The name a login was for (its failures count against it), or the
    /// key a registration holds in the accounts' pending set.
    pub(super) name: String,
    pub(super) registration: bool,
}

impl Check {
    pub(super) fn login(name: String) -> Self {
        Self {
            cancelled: Arc::default(),
            name,
            registration: false,
        }
    }

    pub(super) fn registration(key: String) -> Self {
        Self {
            cancelled: Arc::default(),
            name: key,
            registration: true,
        }
    }
}

/// Every live connection, and who is online.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    conns: HashMap<ConnId, Conn>,
    /// Per user (index = id - 1): the connections logged in as the user,
    /// in the order they logged in.
    online: Vec<Vec<ConnId>>,
    /// Users with at least one device logged in.
    pub(super) users_online: u64,
    /// Devices (sessions) logged in.
    pub(super) devices_online: u64,
}

impl Sessions {
    /// Makes room for a new user's devices.
    pub(super) fn add_user(&mut self) {
        self.online.push(Vec::new());
    }

    /// Forgets every connection (a new run starts: none survives).
    pub(super) fn clear(&mut self) {
        self.conns.clear();
        for devices in &mut self.online {
            devices.clear();
        }
        self.users_online = 0;
        self.devices_online = 0;
    }

    /// Opens `conn` afresh, from `ip`.
    pub(super) fn connect(&mut self, conn: ConnId, ip: Option<IpAddr>) {
        let state = Conn {
            ip,
            ..Conn::default()
        };
        self.conns.insert(conn, state);
    }

    /// Forgets `conn` (after its session ended).
    pub(super) fn remove(&mut self, conn: ConnId) -> Option<Conn> {
        self.conns.remove(&conn)
    }

    pub(super) fn conn(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(&conn)
    }

    pub(super) fn conn_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&conn)
    }

    pub(super) fn session(&self, conn: ConnId) -> Option<&Session> {
        self.conns.get(&conn).and_then(|c| c.session.as_ref())
    }

    /// The connections logged in as `user`.
    pub(super) fn devices(&self, user: UserId) -> &[ConnId] {
        &self.online[(user.0 - 1) as usize]
    }

    /// Logs `conn` in as `session` (after [`Sessions::close`] of any
    /// session it had); false if the connection is unknown.
    pub(super) fn open(&mut self, conn: ConnId, session: Session) -> bool {
        let Some(state) = self.conns.get_mut(&conn) else {
            return false;
        };
        assert!(state.session.is_none(), "one session per connection");
        let devices = &mut self.online[(session.user.0 - 1) as usize];
        devices.push(conn);
        if devices.len() == 1 {
            self.users_online += 1;
        }
        self.devices_online += 1;
        state.session = Some(session);
        true
    }

    /// Ends the session of `conn`, if it has one.
    pub(super) fn close(&mut self, conn: ConnId) -> Option<Session> {
        let session = self.conns.get_mut(&conn)?.session.take()?;
        let devices = &mut self.online[(session.user.0 - 1) as usize];
        devices.retain(|&c| c != conn);
        if devices.is_empty() {
            self.users_online -= 1;
        }
        self.devices_online -= 1;
        Some(session)
    }

    /// Writes user `id`'s devices online (in the order they logged in).
    pub(super) fn encode_user<W: std::io::Write>(&self, id: UserId, out: &mut Encoder<W>) {
        let devices = self.devices(id);
        out.count(devices.len());
        for conn in devices {
            out.u64(conn.0);
        }
    }

    /// Reads what [`Sessions::encode_user`] wrote, for the next user.
    pub(super) fn decode_user<R: std::io::Read>(
        &mut self,
        input: &mut Decoder<R>,
    ) -> Result<(), SnapshotError> {
        let mut devices = Vec::new();
        for _ in 0..input.count(8)? {
            devices.push(ConnId(input.u64()?));
        }
        self.online.push(devices);
        Ok(())
    }

    /// Writes the connections and their sessions.
    pub(super) fn encode_conns<W: std::io::Write>(&self, out: &mut Encoder<W>) {
        // Sorted, so that equal states write equal bytes.
        let mut conns: Vec<_> = self.conns.iter().collect();
        conns.sort_unstable_by_key(|(conn, _)| **conn);
        out.count(conns.len());
        for (conn, state) in conns {
            out.u64(conn.0);
            match &state.session {
                None => out.u64(0),
                Some(session) => {
                    out.u64(session.user.0);
                    out.str(session.device_id.as_str());
                    out.u32(u32::from(session.lz4));
                }
            }
        }
    }

    /// Reads what [`Sessions::encode_conns`] wrote, after every user's
    /// part, and checks that the two agree.
    pub(super) fn decode_conns<R: std::io::Read>(
        &mut self,
        input: &mut Decoder<R>,
    ) -> Result<(), SnapshotError> {
        let user_count = self.online.len() as u64;
        for _ in 0..input.count(16)? {
            let conn = ConnId(input.u64()?);
            let session = match input.u64()? {
                0 => None,
                user if user > user_count => {
                    return Err(input.error("a session of a user out of range"));
                }
                user => Some(Session {
                    user: UserId(user),
                    device_id: DeviceId::from(input.str()?.as_str()),
                    lz4: input.u32()? != 0,
                }),
            };
            let state = Conn {
                session,
                ..Conn::default()
            };
            if self.conns.insert(conn, state).is_some() {
                return Err(input.error("a connection twice"));
            }
        }
        // Each device in its user's list, once, and nowhere else.
        let mut listed = rustc_hash::FxHashSet::default();
        for (index, devices) in self.online.iter().enumerate() {
            for conn in devices {
                if !listed.insert(*conn) {
                    return Err(input.error("a device online twice"));
                }
                let owner = self.session(*conn).map(|session| session.user.0);
                if owner != Some(index as u64 + 1) {
                    return Err(input.error("a device online without its session"));
                }
            }
        }
        let sessions = self.conns.values().filter(|c| c.session.is_some()).count();
        if listed.len() != sessions {
            return Err(input.error("a session without its device online"));
        }
        self.devices_online = sessions as u64;
        self.users_online = self.online.iter().filter(|d| !d.is_empty()).count() as u64;
        Ok(())
    }

    /// User `id`'s devices online, in the replay tests' canonical form.
    #[cfg(test)]
    pub(super) fn digest_user(&self, id: UserId) -> String {
        let mut online = self.devices(id).to_vec();
        online.sort();
        format!("online {online:?}")
    }

    /// The connections and their sessions, in canonical text form.
    #[cfg(test)]
    pub(super) fn digest(&self) -> String {
        let mut sessions: Vec<_> = self
            .conns
            .iter()
            .map(|(conn, c)| {
                let session = c.session.as_ref();
                (
                    conn.0,
                    session.map(|s| (s.user.0, s.device_id.clone(), s.lz4)),
                )
            })
            .collect();
        sessions.sort();
        format!(
            "sessions {sessions:?}\nonline: {} users, {} devices\n",
            self.users_online, self.devices_online
        )
    }

    /// Checks the module's `# Invariants`; `pending` says whether a
    /// registration key is held by the accounts.
    #[cfg(test)]
    pub(super) fn check_invariants(&self, pending: impl Fn(&str) -> bool) {
        let sessions = self.conns.values().filter(|c| c.session.is_some()).count();
        let online_users = self.online.iter().filter(|d| !d.is_empty()).count();
        let online_devices: usize = self.online.iter().map(Vec::len).sum();
        assert_eq!(self.devices_online as usize, sessions, "devices online");
        assert_eq!(
            self.devices_online as usize, online_devices,
            "devices listed"
        );
        assert_eq!(self.users_online as usize, online_users, "users online");
        for (conn, state) in &self.conns {
            if let Some(session) = &state.session {
                let listed = self.devices(session.user);
                let times = listed.iter().filter(|c| *c == conn).count();
                assert_eq!(times, 1, "{conn:?} online once as its user");
            }
            if let Some(check) = state.check.as_ref().filter(|c| c.registration) {
                assert!(pending(&check.name), "{conn:?} pending");
            }
        }
        for (index, devices) in self.online.iter().enumerate() {
            for conn in devices {
                let user = self.session(*conn).map(|s| s.user.0);
                assert_eq!(user, Some(index as u64 + 1), "{conn:?} listed");
            }
        }
    }
}
