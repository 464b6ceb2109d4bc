//! `courier chat`: a terminal client for one user on one device.
//!
//! It shows what is unread at login, then what arrives, each message with
//! its inbox sequence in brackets and its time (UTC); what it shows it
//! marks read, so the user's other devices see it read. A message typed is
//! kept until the server acknowledges it: if the connection drops first,
//! the client reconnects, pulls what it missed, and sends the message again
//! under the same client message id (the server stores it once). Lines
//! typed while disconnected are refused aloud.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::Context;
use courier::client::{Client, ClientError};
use courier::codec::proto::{self, ContactState, DeliveryMode, ErrorCode};
use courier::codec::Message;

/// Prints a line for the user; with nobody left to read the terminal's
/// output (a closed pipe), there is nothing to chat for: exit quietly.
macro_rules! say {
    ($($arg:tt)*) => {
        say(format_args!($($arg)*))
    };
}

fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ChatArgs {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:7420")]
    server: String,
    /// Your user name.
    #[arg(long)]
    user: String,
    /// Your password (or set COURIER_PASSWORD).
    #[arg(long, env = "COURIER_PASSWORD", hide_env_values = true)]
    password: String,
    /// This device's id; each device syncs on its own.
    #[arg(long, default_value = "terminal")]
    device: String,
    /// Create the account first.
    #[arg(long)]
    register: bool,
    /// Receive only notices (head sequence, unread count), not messages.
    #[arg(long)]
    notices: bool,
    /// Connect through a WebSocket upgrade, as a browser does.
    #[arg(long)]
    websocket: bool,
}

/// What `courier chat` understands, printed at login and by `/help`.
const CHAT_HELP: &str = "\
type `name: text` to send, `#id: text` to post to group id; messages show as
`[sequence] time(UTC) sender → whom: text`.
  contacts: /friend name, /accept name, /decline name, /remove name,
            /block name, /unblock name, /contacts
  groups:   /group name member..., /groups, /members id, /invite id name,
            /join id, /leave id, /kick id name, /rename id new name
  inbox:    /sync [after] pulls messages, /read marks all shown read
  /help shows this, /quit leaves";

/// Every `/command` (for telling a misspelt one from a misused one).
const COMMANDS: [&str; 19] = [
    "friend", "accept", "decline", "remove", "block", "unblock", "contacts", "group", "groups",
    "members", "invite", "join", "leave", "kick", "rename", "sync", "read", "help", "quit",
];

/// How long a request waits for its answer before the connection counts
/// as lost (and the client reconnects).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Whom a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    User(String),
    Group(u64),
}

/// A message typed and not yet acknowledged.
#[derive(Debug, Clone)]
struct Pending {
    client_message_id: u64,
    to: Target,
    text: String,
}

/// A conversation, as read marks name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Conversation {
    User(String),
    Group(u64),
}

/// A `courier chat` session; see the module docs.
struct Chat {
    args: ChatArgs,
    mode: DeliveryMode,
    client: Client,
    heartbeat: Duration,
    last_ping: Instant,
    next_id: u64,
    /// The newest inbox sequence shown (or there at login): after a
    /// reconnection, what came since is pulled with Sync.
    seen: u64,
    pending: Vec<Pending>,
    /// The newest sequence shown per conversation, as marked read.
    marked: BTreeMap<Conversation, u64>,
}

/// What the chat loop does after a turn.
enum Turn {
    Go,
    Quit,
}

/// Whether an error means the connection is gone (rather than the server
/// refusing one request).
fn connection_lost(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Io(_) | ClientError::Closed | ClientError::Timeout(_)
    )
}

pub(crate) fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let mode = if args.notices {
        DeliveryMode::PushNotice
    } else {
        DeliveryMode::PushMessage
    };
    let (client, heartbeat, ok) = session(&args, mode, args.register)?;
    let mut chat = Chat {
        args,
        mode,
        client,
        heartbeat,
        last_ping: Instant::now(),
        // Ids from the clock, so a restarted terminal on the same device
        // does not reuse one the server still remembers.
        next_id: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64),
        seen: ok.head_sequence,
        pending: Vec::new(),
        marked: BTreeMap::new(),
    };
    say!("{CHAT_HELP}");
    if ok.unread_count > 0 && mode == DeliveryMode::PushMessage {
        let from = ok.first_unread_sequence.max(1) - 1;
        let unread = chat.client.sync_all(from).context("cannot pull unread")?;
        say!("unread since [{from}]:");
        chat.show(unread).context("cannot mark messages read")?;
    }
    let (lines_sender, lines) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_sender.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let lost = match chat.turn(&lines) {
            Ok(Turn::Go) => continue,
            Ok(Turn::Quit) => return Ok(()),
            Err(lost) => lost,
        };
        say!("! connection lost ({lost}); reconnecting, /quit to leave");
        if !chat.pending.is_empty() {
            say!(
                "! {} not acknowledged yet: sent again once reconnected",
                plural(chat.pending.len(), "message")
            );
        }
        if !chat.reconnect(&lines)? {
            return Ok(());
        }
    }
}

/// A connection: connected, greeted, registered if asked, logged in; with
/// the heartbeat interval the server asked for and its `LoginOk`.
fn session(
    args: &ChatArgs,
    mode: DeliveryMode,
    register: bool,
) -> anyhow::Result<(Client, Duration, proto::LoginOk)> {
    let connected = if args.websocket {
        Client::connect_websocket_raw(args.server.as_str())
    } else {
        Client::connect_raw(args.server.as_str())
    };
    let mut client = connected.with_context(|| format!("cannot reach {}", args.server))?;
    // A person waiting longer than this for an answer wants to know.
    client.set_timeout(REPLY_TIMEOUT);
    let hello = client.hello().map_err(|error| match error {
        // A length prefix over any frame limit, or bytes that do not
        // parse: something else listens there.
        ClientError::Protocol(_) => anyhow::anyhow!(
            "{} does not speak the courier protocol (is it a courier server?)",
            args.server
        ),
        other => anyhow::Error::new(other).context("the server refused the hello"),
    })?;
    let heartbeat = Duration::from_millis(u64::from(hello.heartbeat_interval_ms.max(1000)));
    if register {
        match client.register(&args.user, &args.password) {
            Ok(id) => say!("registered {} as user {id}", args.user),
            Err(error) if error.code() == Some(ErrorCode::UserExists) => {
                say!("{} exists already; logging in", args.user)
            }
            Err(error) => return Err(error).context("cannot register"),
        }
    }
    let ok = client
        .login(&args.user, &args.password, &args.device, mode)
        .context("cannot log in")?;
    say!(
        "logged in as {} on {}: {}, {} unread",
        args.user,
        args.device,
        plural(ok.head_sequence as usize, "message"),
        ok.unread_count
    );
    Ok((client, heartbeat, ok))
}

/// `count` and `word`, with an s where it is not 1.
fn plural(count: usize, word: &str) -> String {
    if count == 1 {
        format!("1 {word}")
    } else {
        format!("{count} {word}s")
    }
}

impl Chat {
    /// One turn: a typed line if there is one, a heartbeat when due, and
    /// what the server pushed. An error is a lost connection.
    fn turn(&mut self, lines: &crossbeam_channel::Receiver<String>) -> Result<Turn, ClientError> {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let line = line.trim();
                if line == "/quit" {
                    return Ok(Turn::Quit);
                }
                match self.line(line) {
                    Ok(()) => {}
                    Err(error) if connection_lost(&error) => return Err(error),
                    Err(error) => say!("! {}", refusal(&error)),
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(Turn::Quit),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        if self.last_ping.elapsed() >= self.heartbeat {
            // Tells the server the link is alive while the user is quiet.
            self.client.ping(0)?;
            self.last_ping = Instant::now();
        }
        let mut delivered = Vec::new();
        while let Some(push) = self.client.next_push(Duration::ZERO)? {
            match push {
                Message::Deliver(deliver) => delivered.push(deliver),
                other => print_push(&other),
            }
        }
        self.show(delivered)?;
        Ok(Turn::Go)
    }

    /// Reconnects (once a second) until it can, then pulls what was missed
    /// and sends what was not acknowledged; false if the user quit.
    fn reconnect(&mut self, lines: &crossbeam_channel::Receiver<String>) -> anyhow::Result<bool> {
        let mut last_failure = String::new();
        loop {
            match lines.recv_timeout(Duration::from_secs(1)) {
                Ok(line) if line.trim() == "/quit" => return Ok(false),
                Ok(_) => say!("! not connected: that line was not sent"),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(false),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            let (client, heartbeat) = match session(&self.args, self.mode, false) {
                Ok((client, heartbeat, _)) => (client, heartbeat),
                Err(error) => {
                    // Said once, not every second while it lasts.
                    let why = format!("{error:#}");
                    if why != last_failure {
                        say!("! still not connected: {why}");
                        last_failure = why;
                    }
                    continue;
                }
            };
            (self.client, self.heartbeat) = (client, heartbeat);
            self.last_ping = Instant::now();
            match self.catch_up() {
                Ok(()) => return Ok(true),
                Err(error) if connection_lost(&error) => {
                    say!("! connection lost again ({error}); reconnecting");
                }
                Err(error) => return Err(error).context("cannot catch up after reconnecting"),
            }
        }
    }

    /// After a reconnection: shows what arrived meanwhile, then sends again
    /// each message that was never acknowledged, under its own id.
    fn catch_up(&mut self) -> Result<(), ClientError> {
        let missed = self.client.sync_all(self.seen)?;
        say!(
            "reconnected: {} since [{}]",
            plural(missed.len(), "message"),
            self.seen
        );
        self.show(missed)?;
        while let Some(pending) = self.pending.first().cloned() {
            match self.send(&pending) {
                Ok(sequence) => say!("  sent [{sequence}] (again, after reconnecting)"),
                Err(error) if connection_lost(&error) => return Err(error),
                Err(error) => say!("! not sent: {}", refusal(&error)),
            }
            self.pending.remove(0);
        }
        Ok(())
    }

    /// Sends (or sends again) a message; its inbox sequence once
    /// acknowledged.
    fn send(&mut self, pending: &Pending) -> Result<u64, ClientError> {
        let text = pending.text.as_bytes();
        let ack = match &pending.to {
            Target::User(user) => self.client.send(user, pending.client_message_id, text)?,
            Target::Group(id) => self
                .client
                .send_group(*id, pending.client_message_id, text)?,
        };
        // This terminal's own message counts as shown if it follows the
        // newest shown directly (inbox sequences have no gaps), so that a
        // reconnection neither shows it again nor skips one not yet shown.
        if ack.inbox_sequence == self.seen + 1 {
            self.seen = ack.inbox_sequence;
        }
        Ok(ack.inbox_sequence)
    }

    /// Types a message: kept as pending until acknowledged.
    fn send_typed(&mut self, to: Target, text: &str) -> Result<(), ClientError> {
        self.next_id += 1;
        let pending = Pending {
            client_message_id: self.next_id,
            to,
            text: text.to_owned(),
        };
        self.pending.push(pending.clone());
        let result = self.send(&pending);
        if !matches!(&result, Err(error) if connection_lost(error)) {
            self.pending.pop();
        }
        say!("  sent [{}]", result?);
        Ok(())
    }

    /// Prints messages and marks each conversation read up to the newest
    /// of them shown.
    fn show(&mut self, messages: Vec<proto::Deliver>) -> Result<(), ClientError> {
        let mut newest: BTreeMap<Conversation, u64> = BTreeMap::new();
        for message in messages {
            print_deliver(&message);
            self.seen = self.seen.max(message.inbox_sequence);
            if message.sender == self.args.user && message.group_id == 0 {
                continue; // one's own 1:1 messages are never unread
            }
            let conversation = if message.group_id != 0 {
                Conversation::Group(message.group_id)
            } else {
                Conversation::User(message.sender.clone())
            };
            newest.insert(conversation, message.inbox_sequence);
        }
        for (conversation, up_to) in newest {
            self.mark_read(conversation, up_to)?;
        }
        Ok(())
    }

    fn mark_read(&mut self, conversation: Conversation, up_to: u64) -> Result<u64, ClientError> {
        let state = match &conversation {
            Conversation::User(user) => self.client.mark_read(user, up_to),
            Conversation::Group(id) => self.client.mark_group_read(*id, up_to),
        };
        let state = match state {
            Ok(state) => state,
            Err(error) if connection_lost(&error) => return Err(error),
            // A group left since, say: nothing to mark.
            Err(_) => return Ok(0),
        };
        self.marked.insert(conversation, up_to);
        Ok(state.unread_total)
    }

    /// Does what a typed line says.
    fn line(&mut self, line: &str) -> Result<(), ClientError> {
        if line == "/help" {
            say!("{CHAT_HELP}");
            return Ok(());
        }
        if let Some(command) = line.strip_prefix('/') {
            return self.command(command);
        }
        if let Some(rest) = line.strip_prefix('#') {
            let Some((id, text)) = rest.split_once(':') else {
                say!("? `#id: text` posts to a group");
                return Ok(());
            };
            let id = group_id(id.trim())?;
            return match nonempty(text) {
                Some(text) => self.send_typed(Target::Group(id), text),
                None => {
                    say!("? nothing to post: `#id: text`");
                    Ok(())
                }
            };
        }
        let Some((recipient, text)) = line.split_once(':') else {
            if !line.is_empty() {
                say!("? `name: text` sends text to name (/help lists the rest)");
            }
            return Ok(());
        };
        match nonempty(text) {
            Some(text) => self.send_typed(Target::User(recipient.trim().to_owned()), text),
            None => {
                say!("? nothing to send: `name: text`");
                Ok(())
            }
        }
    }

    /// A `/command` line, without its slash.
    fn command(&mut self, command: &str) -> Result<(), ClientError> {
        let mut words = command.split_whitespace();
        let name = words.next().unwrap_or("");
        let args: Vec<&str> = words.collect();
        match (name, args.as_slice()) {
            ("sync", []) | ("sync", [_]) => {
                let after = args.first().map_or(Ok(0), |a| sequence(a))?;
                let messages = self.client.sync_all(after)?;
                if messages.is_empty() {
                    say!("  nothing new after [{after}]");
                }
                self.show(messages)
            }
            ("read", []) => {
                let marked: Vec<_> = self.marked.clone().into_iter().collect();
                let mut unread = None;
                for (conversation, up_to) in marked {
                    unread = Some(self.mark_read(conversation, up_to)?);
                }
                match unread {
                    Some(unread) => say!("  all shown marked read; {unread} unread in all"),
                    None => say!("  nothing shown yet (/sync pulls messages)"),
                }
                Ok(())
            }
            ("contacts", []) => {
                let sync = Message::ContactSync(proto::ContactSync { after_version: 0 });
                if let Message::ContactList(list) = self.client.request(&sync)? {
                    if list.contacts.is_empty() {
                        say!("  no contacts yet: /friend name");
                    }
                    list.contacts.iter().for_each(print_contact);
                }
                Ok(())
            }
            ("friend" | "accept" | "decline" | "remove" | "block" | "unblock", [user]) => {
                self.contact(name, user)
            }
            _ => match self.group_command(name, &args)? {
                Some(done) => {
                    say!("  {done}");
                    Ok(())
                }
                None if COMMANDS.contains(&name) => {
                    say!("? /{name} takes other words: /help shows them");
                    Ok(())
                }
                None => {
                    say!("? no command /{name}: /help lists them");
                    Ok(())
                }
            },
        }
    }

    fn contact(&mut self, command: &str, user: &str) -> Result<(), ClientError> {
        let user = user.to_owned();
        let (message, done) = match command {
            "friend" => (
                Message::ContactRequest(proto::ContactRequest { user: user.clone() }),
                format!("asked {user}"),
            ),
            "accept" => (
                Message::ContactAccept(proto::ContactAccept { user: user.clone() }),
                format!("{user} is a friend"),
            ),
            "decline" => (
                Message::ContactDecline(proto::ContactDecline { user: user.clone() }),
                format!("declined {user}"),
            ),
            "remove" => (
                Message::ContactRemove(proto::ContactRemove { user: user.clone() }),
                format!("{user} is no longer a friend"),
            ),
            blocking => {
                let blocked = blocking == "block";
                let done = if blocked { "blocked" } else { "unblocked" };
                (
                    Message::ContactBlock(proto::ContactBlock {
                        user: user.clone(),
                        blocked,
                    }),
                    format!("{done} {user}"),
                )
            }
        };
        self.client.request(&message)?;
        say!("  {done}");
        Ok(())
    }

    /// A group command, if `name` is one: what was done.
    fn group_command(&mut self, name: &str, args: &[&str]) -> Result<Option<String>, ClientError> {
        let client = &mut self.client;
        let done = match (name, args) {
            ("group", [group, members @ ..]) => {
                let info = client.group_create(group, members)?;
                format!(
                    "group #{} {}: {}",
                    info.group_id,
                    info.name,
                    info.members.join(", ")
                )
            }
            ("groups", []) => {
                let groups = client.groups()?;
                let mut text = plural(groups.len(), "group");
                for g in &groups {
                    let invited = if g.invited { " (invited: /join)" } else { "" };
                    text += &format!(
                        "\n  #{} {} ({}, owner {}){invited}",
                        g.group_id,
                        g.name,
                        plural(g.member_count as usize, "member"),
                        g.owner
                    );
                }
                text
            }
            ("members", [id]) => {
                let info = client.group_members(group_id(id)?)?;
                format!(
                    "#{} {} (owner {}): {}",
                    info.group_id,
                    info.name,
                    info.owner,
                    info.members.join(", ")
                )
            }
            ("invite", [id, user]) => {
                client.group_invite(group_id(id)?, user)?;
                format!("invited {user} to #{}", group_id(id)?)
            }
            ("kick", [id, user]) => {
                client.group_remove(group_id(id)?, user)?;
                format!("removed {user} from #{}", group_id(id)?)
            }
            ("join", [id]) => {
                client.group_join(group_id(id)?)?;
                format!("joined #{}", group_id(id)?)
            }
            ("leave", [id]) => {
                client.group_leave(group_id(id)?)?;
                format!("left #{}", group_id(id)?)
            }
            ("rename", [id, words @ ..]) if !words.is_empty() => {
                let new_name = words.join(" ");
                client.group_rename(group_id(id)?, &new_name)?;
                format!("#{} is now {new_name}", group_id(id)?)
            }
            _ => return Ok(None),
        };
        Ok(Some(done))
    }
}

/// A group id as typed (`3` or `#3`).
fn group_id(word: &str) -> Result<u64, ClientError> {
    word.trim_start_matches('#')
        .parse()
        .map_err(|_| ClientError::Protocol(format!("{word:?} is not a group id (a number)")))
}

/// An inbox sequence as typed (`3` or `[3]`).
fn sequence(word: &str) -> Result<u64, ClientError> {
    word.trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| ClientError::Protocol(format!("{word:?} is not an inbox sequence")))
}

/// The text of a message typed after its `:`, unless there is none.
fn nonempty(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|text| !text.is_empty())
}

/// What the server said when it refused a request, for a person.
fn refusal(error: &ClientError) -> String {
    match error {
        ClientError::Server { message, .. } => message.clone(),
        ClientError::Protocol(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A time of day (UTC) from milliseconds since the Unix epoch.
fn clock(timestamp_ms: u64) -> String {
    let minutes = timestamp_ms / 60_000 % (24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

fn print_deliver(m: &proto::Deliver) {
    let whom = if m.group_id != 0 {
        format!("#{}", m.group_id)
    } else {
        m.recipient.clone()
    };
    say!(
        "[{}] {} {} → {whom}: {}",
        m.inbox_sequence,
        clock(m.timestamp_ms),
        m.sender,
        String::from_utf8_lossy(&m.body)
    );
}

fn print_contact(contact: &proto::Contact) {
    let user = &contact.user;
    match ContactState::try_from(contact.state) {
        Ok(ContactState::RequestReceived) => {
            say!("[contact] {user} asks to be your friend: /accept {user} or /decline {user}")
        }
        Ok(ContactState::RequestSent) => say!("[contact] you asked {user}"),
        Ok(ContactState::Friend) => say!("[contact] {user} is your friend"),
        Ok(ContactState::Blocked) => say!("[contact] {user} is blocked"),
        Ok(ContactState::None) | Err(_) => say!("[contact] {user}: no longer a contact"),
    }
}

/// A push other than a message.
fn print_push(message: &Message) {
    match message {
        Message::GroupChanged(changed) => {
            let change = changed.change().as_str_name().to_lowercase();
            let about = if changed.user.is_empty() {
                String::new()
            } else {
                format!(" {}", changed.user)
            };
            say!(
                "[group #{} {}]{about} {change}, by {}",
                changed.group_id,
                changed.name,
                changed.by
            );
        }
        Message::ContactChanged(changed) => {
            if let Some(contact) = &changed.contact {
                print_contact(contact);
            }
        }
        Message::Notify(n) => say!(
            "[notice] {}, {} unread: /sync to read",
            plural(n.head_sequence as usize, "message"),
            n.unread_count
        ),
        // Read elsewhere: another device of this user marked it.
        Message::ReadState(_) => {}
        other => say!("[{:?}]", other.message_type()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_times_read_as_a_person_expects() {
        // Each case: a count and its words.
        for (count, text) in [(0, "0 messages"), (1, "1 message"), (2, "2 messages")] {
            assert_eq!(plural(count, "message"), text);
        }
        assert_eq!(clock(0), "00:00");
        assert_eq!(clock((13 * 60 + 5) * 60_000 + 59_999), "13:05");
        assert_eq!(clock(86_400_000 + 61_000), "00:01", "the next day");
        assert_eq!(group_id("#3").unwrap(), 3);
        assert_eq!(sequence("[9]").unwrap(), 9);
        assert!(group_id("trip").is_err());
    }
}
