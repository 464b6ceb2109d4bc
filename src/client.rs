//! A blocking client: what the tests, the load tools and `courier chat` use.
//!
//! Requests get a correlation id; [`Client::request`] sends one and reads
//! until its reply arrives, keeping whatever the server pushed meanwhile
//! (deliveries, notices) for [`Client::next_push`]. For pipelining, send with
//! [`Client::submit`] and read replies with [`Client::receive`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::codec::proto::{self, login, DeliveryMode, ErrorCode};
use crate::codec::websocket;
use crate::codec::{decompress, FrameDecoder, Message, MessageError, FLAG_LZ4, PROTOCOL_VERSION};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The server answered with an `Error` frame.
    #[error("server error {code:?}: {message}")]
    Server {
        /// The stable code.
        code: ErrorCode,
        /// The server's text.
        message: String,
        /// With `TOO_MANY_ATTEMPTS`: how long to wait before trying again.
        retry_after_ms: u32,
    },
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// No reply within the client's timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server sent something that is not the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, if the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<MessageError> for ClientError {
    fn from(error: MessageError) -> Self {
        ClientError::Protocol(error.to_string())
    }
}

/// A connection to a courier server.
pub struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    input: BytesMut,
    output: Vec<u8>,
    next_correlation: u64,
    /// Ask for LZ4-compressed large frames at login.
    accept_lz4: bool,
    /// Frames that arrived compressed (for tests and tools).
    compressed_frames: u64,
    /// Frames that arrived while waiting for something else.
    early: VecDeque<(u64, Message)>,
    timeout: Duration,
    /// Over a WebSocket: its framing state.
    websocket: Option<WebSocketState>,
}

/// A client's WebSocket: bytes received and not yet decoded, the masks for
/// what it sends, and a scratch buffer to frame it in.
struct WebSocketState {
    raw: Vec<u8>,
    masks: websocket::Masks,
    framed: Vec<u8>,
}

impl Client {
    /// Connects and says hello.
    pub fn connect(address: impl ToSocketAddrs) -> Result<Self, ClientError> {
        let mut client = Self::connect_raw(address)?;
        client.hello()?;
        Ok(client)
    }

    /// Connects without saying hello.
    pub fn connect_raw(address: impl ToSocketAddrs) -> Result<Self, ClientError> {
        Self::from_stream(TcpStream::connect(address)?)
    }

    /// A client over a connected stream (one bound to a chosen local
    /// address, say), without saying hello.
    pub fn from_stream(stream: TcpStream) -> Result<Self, ClientError> {
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            // Accept what a server may send at most; 16 MiB is the top of
            // its configurable range.
            decoder: FrameDecoder::new(16 << 20),
            input: BytesMut::with_capacity(64 * 1024),
            output: Vec::new(),
            next_correlation: 1,
            accept_lz4: true,
            compressed_frames: 0,
            early: VecDeque::new(),
            timeout: Duration::from_secs(10),
            websocket: None,
        })
    }

    /// Connects through a WebSocket upgrade (as a browser does) and says
    /// hello; the frames then travel in binary messages.
    pub fn connect_websocket(address: impl ToSocketAddrs) -> Result<Self, ClientError> {
        let mut client = Self::connect_websocket_raw(address)?;
        client.hello()?;
        Ok(client)
    }

    /// Connects through a WebSocket upgrade without saying hello.
    pub fn connect_websocket_raw(address: impl ToSocketAddrs) -> Result<Self, ClientError> {
        let mut client = Self::connect_raw(address)?;
        let host = client.stream.peer_addr()?.to_string();
        let key = websocket::client_key();
        client
            .stream
            .write_all(&websocket::client_request(&host, &key))?;
        client.stream.set_read_timeout(Some(client.timeout))?;
        let mut answer = Vec::new();
        let consumed = loop {
            let mut chunk = [0u8; 4096];
            let n = client.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            answer.extend_from_slice(&chunk[..n]);
            if let Some(consumed) =
                websocket::client_response(&answer, &key).map_err(ClientError::Protocol)?
            {
                break consumed;
            }
        };
        client.websocket = Some(WebSocketState {
            raw: answer.split_off(consumed),
            masks: websocket::Masks::new(websocket::Role::Client),
            framed: Vec::new(),
        });
        // Frames may have come with the answer.
        client.take_input(&[])?;
        Ok(client)
    }

    /// Whether the client talks through a WebSocket.
    pub fn is_websocket(&self) -> bool {
        self.websocket.is_some()
    }

    /// Whether logins ask for LZ4-compressed large frames (yes by default).
    pub fn set_accept_lz4(&mut self, accept: bool) {
        self.accept_lz4 = accept;
    }

    /// How many frames arrived compressed so far.
    pub fn compressed_frames(&self) -> u64 {
        self.compressed_frames
    }

    /// How long a request waits for its reply (10 s by default).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The socket, for a load generator that drives it itself. Fails if
    /// frames arrived that were not read yet.
    pub fn into_stream(self) -> Result<TcpStream, ClientError> {
        let undecoded = self.websocket.as_ref().is_some_and(|ws| !ws.raw.is_empty());
        if !self.early.is_empty() || !self.input.is_empty() || undecoded {
            return Err(ClientError::Protocol(
                "unread frames would be lost with the client".into(),
            ));
        }
        Ok(self.stream)
    }

    /// The socket, for tests that misbehave on purpose.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Says hello with this build's protocol version.
    pub fn hello(&mut self) -> Result<proto::HelloOk, ClientError> {
        let hello = Message::Hello(proto::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "courier-client".into(),
        });
        match self.request(&hello)? {
            Message::HelloOk(ok) => Ok(ok),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates an account; returns its user id.
    pub fn register(&mut self, user: &str, password: &str) -> Result<u64, ClientError> {
        let register = Message::Register(proto::Register {
            user: user.into(),
            password: password.into(),
        });
        match self.request(&register)? {
            Message::RegisterOk(ok) => Ok(ok.user_id),
            other => Err(unexpected(&other)),
        }
    }

    /// Logs this connection in as `device` with a password.
    pub fn login(
        &mut self,
        user: &str,
        password: &str,
        device: &str,
        mode: DeliveryMode,
    ) -> Result<proto::LoginOk, ClientError> {
        self.login_with(user, login::Secret::Password(password.into()), device, mode)
    }

    /// Logs this connection in with a token from an earlier login of `device`.
    pub fn login_token(
        &mut self,
        user: &str,
        token: &str,
        device: &str,
        mode: DeliveryMode,
    ) -> Result<proto::LoginOk, ClientError> {
        self.login_with(user, login::Secret::Token(token.into()), device, mode)
    }

    fn login_with(
        &mut self,
        user: &str,
        secret: login::Secret,
        device: &str,
        mode: DeliveryMode,
    ) -> Result<proto::LoginOk, ClientError> {
        let login = Message::Login(proto::Login {
            user: user.into(),
            secret: Some(secret),
            device_id: device.into(),
            delivery_mode: mode as i32,
            accept_compression: if self.accept_lz4 {
                vec![proto::Compression::Lz4 as i32]
            } else {
                Vec::new()
            },
        });
        match self.request(&login)? {
            Message::LoginOk(ok) => Ok(ok),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends a message and waits for its acknowledgement.
    pub fn send(
        &mut self,
        recipient: &str,
        client_message_id: u64,
        body: &[u8],
    ) -> Result<proto::SendAck, ClientError> {
        match self.request(&send_message(recipient, client_message_id, body))? {
            Message::SendAck(ack) => Ok(ack),
            other => Err(unexpected(&other)),
        }
    }

    /// Posts a message to a group and waits for its acknowledgement.
    pub fn send_group(
        &mut self,
        group_id: u64,
        client_message_id: u64,
        body: &[u8],
    ) -> Result<proto::SendAck, ClientError> {
        match self.request(&group_message(group_id, client_message_id, body))? {
            Message::SendAck(ack) => Ok(ack),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates a group with this user as owner and `members` (friends)
    /// added at once.
    pub fn group_create(
        &mut self,
        name: &str,
        members: &[&str],
    ) -> Result<proto::GroupInfo, ClientError> {
        let create = Message::GroupCreate(proto::GroupCreate {
            name: name.into(),
            members: members.iter().map(|&m| m.to_owned()).collect(),
        });
        match self.request(&create)? {
            Message::GroupInfo(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// Invites a friend into a group.
    pub fn group_invite(&mut self, group_id: u64, user: &str) -> Result<(), ClientError> {
        self.group_change(Message::GroupInvite(proto::GroupInvite {
            group_id,
            user: user.into(),
        }))
    }

    /// Joins a group this user was invited to.
    pub fn group_join(&mut self, group_id: u64) -> Result<(), ClientError> {
        self.group_change(Message::GroupJoin(proto::GroupJoin { group_id }))
    }

    /// Leaves a group.
    pub fn group_leave(&mut self, group_id: u64) -> Result<(), ClientError> {
        self.group_change(Message::GroupLeave(proto::GroupLeave { group_id }))
    }

    /// Removes a member (or withdraws an invitation); the owner only.
    pub fn group_remove(&mut self, group_id: u64, user: &str) -> Result<(), ClientError> {
        self.group_change(Message::GroupRemove(proto::GroupRemove {
            group_id,
            user: user.into(),
        }))
    }

    /// Renames a group.
    pub fn group_rename(&mut self, group_id: u64, name: &str) -> Result<(), ClientError> {
        self.group_change(Message::GroupRename(proto::GroupRename {
            group_id,
            name: name.into(),
        }))
    }

    /// A group's name, owner and members.
    pub fn group_members(&mut self, group_id: u64) -> Result<proto::GroupInfo, ClientError> {
        match self.request(&Message::GroupMembers(proto::GroupMembers { group_id }))? {
            Message::GroupInfo(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// Every group this user is in or invited to.
    pub fn groups(&mut self) -> Result<Vec<proto::GroupSummary>, ClientError> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let request = Message::GroupListRequest(proto::GroupListRequest {
                after_group_id: after,
            });
            let list = match self.request(&request)? {
                Message::GroupList(list) => list,
                other => return Err(unexpected(&other)),
            };
            if let Some(last) = list.groups.last() {
                after = last.group_id;
            }
            all.extend(list.groups);
            if !list.more {
                return Ok(all);
            }
        }
    }

    fn group_change(&mut self, change: Message) -> Result<(), ClientError> {
        match self.request(&change)? {
            Message::GroupOk(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Marks the 1:1 conversation with `peer` read up to inbox sequence
    /// `up_to`; returns its read state.
    pub fn mark_read(&mut self, peer: &str, up_to: u64) -> Result<proto::ReadState, ClientError> {
        self.mark(peer.into(), 0, up_to)
    }

    /// Marks a group's conversation read up to inbox sequence `up_to`;
    /// returns its read state.
    pub fn mark_group_read(
        &mut self,
        group_id: u64,
        up_to: u64,
    ) -> Result<proto::ReadState, ClientError> {
        self.mark(String::new(), group_id, up_to)
    }

    fn mark(
        &mut self,
        peer: String,
        group_id: u64,
        up_to: u64,
    ) -> Result<proto::ReadState, ClientError> {
        let mark = Message::MarkRead(proto::MarkRead {
            peer,
            up_to_sequence: up_to,
            group_id,
        });
        match self.request(&mark)? {
            Message::ReadState(state) => Ok(state),
            other => Err(unexpected(&other)),
        }
    }

    /// Pulls up to `limit` messages after inbox sequence `after`.
    pub fn sync(&mut self, after: u64, limit: u32) -> Result<proto::SyncBatch, ClientError> {
        let sync = Message::Sync(proto::Sync {
            after_sequence: after,
            limit,
        });
        match self.request(&sync)? {
            Message::SyncBatch(batch) => Ok(batch),
            other => Err(unexpected(&other)),
        }
    }

    /// Pulls every message after `after`, batch after batch.
    pub fn sync_all(&mut self, mut after: u64) -> Result<Vec<proto::Deliver>, ClientError> {
        let mut all = Vec::new();
        loop {
            let batch = self.sync(after, 0)?;
            if let Some(last) = batch.messages.last() {
                after = last.inbox_sequence;
            }
            all.extend(batch.messages);
            if !batch.more {
                return Ok(all);
            }
        }
    }

    /// A heartbeat round trip that declares the client will ping again
    /// within `interval_ms`; returns the interval the server holds the
    /// connection to (see `Pong.interval_ms`).
    pub fn heartbeat(&mut self, nonce: u64, interval_ms: u32) -> Result<u32, ClientError> {
        match self.request(&Message::Ping(proto::Ping { nonce, interval_ms }))? {
            Message::Pong(pong) if pong.nonce == nonce => Ok(pong.interval_ms),
            other => Err(unexpected(&other)),
        }
    }

    /// A heartbeat round trip.
    pub fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        match self.request(&Message::Ping(proto::Ping {
            nonce,
            ..Default::default()
        }))? {
            Message::Pong(pong) if pong.nonce == nonce => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Logs this device out (its token stops working). No reply is sent.
    pub fn logout(&mut self) -> Result<(), ClientError> {
        self.submit(&Message::Logout(proto::Logout {}))?;
        Ok(())
    }

    /// Sends `message` and returns its reply (an `Error` reply is `Err`).
    pub fn request(&mut self, message: &Message) -> Result<Message, ClientError> {
        let correlation_id = self.submit(message)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(index) = self.early.iter().position(|(c, _)| *c == correlation_id) {
                let (_, reply) = self.early.remove(index).expect("index found above");
                return into_result(reply);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout(self.timeout));
            }
            match self.read_frame(Some(deadline - now))? {
                Some((c, reply)) if c == correlation_id => return into_result(reply),
                Some(other) => self.early.push_back(other),
                None => {}
            }
        }
    }

    /// Sends `message` without waiting; returns its correlation id.
    pub fn submit(&mut self, message: &Message) -> Result<u64, ClientError> {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        self.output.clear();
        message.encode_frame(correlation_id, &mut self.output);
        self.write_output()?;
        Ok(correlation_id)
    }

    /// Sends several messages in one write; returns their correlation ids.
    pub fn submit_many<'a>(
        &mut self,
        messages: impl IntoIterator<Item = &'a Message>,
    ) -> Result<Vec<u64>, ClientError> {
        self.output.clear();
        let mut ids = Vec::new();
        for message in messages {
            ids.push(self.next_correlation);
            message.encode_frame(self.next_correlation, &mut self.output);
            self.next_correlation += 1;
        }
        self.write_output()?;
        Ok(ids)
    }

    /// The next frame from the server, with its correlation id (0 for a
    /// push), waiting at most `timeout`; `None` if nothing came.
    pub fn receive(&mut self, timeout: Duration) -> Result<Option<(u64, Message)>, ClientError> {
        if let Some(early) = self.early.pop_front() {
            return Ok(Some(early));
        }
        self.read_frame(Some(timeout))
    }

    /// The next message the server pushed (a delivery or a notice), waiting
    /// at most `timeout` (a zero timeout still reads what the socket has,
    /// waiting a millisecond at most). Replies to requests are not pushes
    /// and are kept.
    pub fn next_push(&mut self, timeout: Duration) -> Result<Option<Message>, ClientError> {
        if let Some(index) = self.early.iter().position(|(c, _)| *c == 0) {
            return Ok(self.early.remove(index).map(|(_, m)| m));
        }
        let deadline = Instant::now() + timeout;
        // Bounded by the deadline: each round reads a frame or times out.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(Some(left))? {
                Some((0, push)) => return Ok(Some(push)),
                Some(other) => self.early.push_back(other),
                None => return Ok(None),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Reads one frame, waiting at most `timeout`.
    /// Writes the output: as it is, or in one binary message.
    fn write_output(&mut self) -> Result<(), ClientError> {
        match &mut self.websocket {
            None => self.stream.write_all(&self.output)?,
            Some(ws) => {
                ws.framed.clear();
                let mask = ws.masks.next_mask().expect("a client's masks");
                websocket::client_binary(&self.output, mask, &mut ws.framed);
                self.stream.write_all(&ws.framed)?;
            }
        }
        Ok(())
    }

    /// Takes `bytes` read from the socket into the input: as they are, or
    /// decoded from WebSocket frames (answering pings).
    fn take_input(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let Some(ws) = &mut self.websocket else {
            self.input.extend_from_slice(bytes);
            return Ok(());
        };
        ws.raw.extend_from_slice(bytes);
        let mut replies = Vec::new();
        let input = &mut self.input;
        let (used, ending) = websocket::decode(
            &mut ws.raw,
            websocket::Role::Client,
            websocket::CLIENT_PAYLOAD_BYTES_MAX,
            |data| input.extend_from_slice(data),
            &mut ws.masks,
            &mut replies,
        );
        ws.raw.drain(..used);
        if !replies.is_empty() {
            self.stream.write_all(&replies)?;
        }
        match ending {
            None => Ok(()),
            Some(websocket::Ending::PeerClosed) => Err(ClientError::Closed),
            Some(websocket::Ending::Refused(reason)) => Err(ClientError::Protocol(reason)),
        }
    }

    fn read_frame(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(u64, Message)>, ClientError> {
        loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Some(frame)) => {
                    if frame.flags & FLAG_LZ4 != 0 {
                        self.compressed_frames += 1;
                    }
                    let frame = decompress(frame, 16 << 20)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    let message = Message::decode(&frame)?;
                    return Ok(Some((frame.correlation_id, message)));
                }
                Ok(None) => {}
                Err(error) => return Err(ClientError::Protocol(error.to_string())),
            }
            let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
            self.stream.set_read_timeout(timeout)?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.take_input(&chunk[..n])?,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(ClientError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A `Send` message.
pub fn send_message(recipient: &str, client_message_id: u64, body: &[u8]) -> Message {
    Message::Send(proto::Send {
        recipient: recipient.into(),
        client_message_id,
        body: body.to_vec(),
        group_id: 0,
    })
}

/// A `Send` message to a group.
pub fn group_message(group_id: u64, client_message_id: u64, body: &[u8]) -> Message {
    Message::Send(proto::Send {
        recipient: String::new(),
        client_message_id,
        body: body.to_vec(),
        group_id,
    })
}

fn into_result(reply: Message) -> Result<Message, ClientError> {
    match reply {
        Message::Error(error) => Err(ClientError::Server {
            code: ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified),
            message: error.message,
            retry_after_ms: error.retry_after_ms,
        }),
        other => Ok(other),
    }
}

fn unexpected(message: &Message) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {:?}", message.message_type()))
}
