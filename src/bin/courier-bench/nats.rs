//! The baseline: the bench's loads against a NATS server (core NATS: no
//! persistence, no acknowledgements), so that courier's figures can be read
//! against it from one generator on one machine. This is the client side of
//! the NATS text protocol the scenarios need, and the server's start.
//!
//! In the 1:1 scenario receiver *i* subscribes to a subject of its own and
//! sender *i* publishes to it. NATS has no send acknowledgement, so a
//! closed-loop sender's message stays in flight until its receiver has it.
//! (The group and idle scenarios say how they use it.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::load::Conn;
use crate::server::Spawned;
use crate::Common;

/// The longest protocol line accepted before its end (`INFO` carries a JSON
/// object of a few hundred bytes; a `MSG` line a subject and three numbers).
const LINE_BYTES_MAX: usize = 64 * 1024;

/// The largest message payload accepted (NATS's own default limit is 1 MiB).
const PAYLOAD_BYTES_MAX: usize = 64 << 20;

/// One unit of what a NATS server sends a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// A message on a subscription: its payload.
    Msg(&'a [u8]),
    /// The server's keep-alive, to be answered with `PONG`.
    Ping,
    /// The answer to a `PING` of ours.
    Pong,
    /// `+OK` or `INFO`: nothing to do.
    Other,
}

/// Parses the unit at the start of `input`: `Some((op, bytes))`, or `None`
/// if it is not all there yet. A `-ERR` from the server, or anything that is
/// not the protocol, is an error.
pub fn parse(input: &[u8]) -> anyhow::Result<Option<(Op<'_>, usize)>> {
    let Some(newline) = input.iter().position(|&b| b == b'\n') else {
        if input.len() > LINE_BYTES_MAX {
            bail!("a NATS protocol line longer than {LINE_BYTES_MAX} bytes");
        }
        return Ok(None);
    };
    let line = input[..newline]
        .strip_suffix(b"\r")
        .context("a NATS protocol line not ended by CRLF")?;
    let after = newline + 1;
    if let Some(arguments) = line.strip_prefix(b"MSG ") {
        // MSG <subject> <sid> [reply-to] <bytes>
        let size: usize = arguments
            .rsplit(|&b| b == b' ')
            .next()
            .and_then(|field| std::str::from_utf8(field).ok())
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("a MSG line without a size: {:?}", text(line)))?;
        if size > PAYLOAD_BYTES_MAX {
            bail!("a MSG of {size} bytes, over {PAYLOAD_BYTES_MAX}");
        }
        let end = after + size + 2;
        if input.len() < end {
            return Ok(None);
        }
        if &input[after + size..end] != b"\r\n" {
            bail!("a MSG payload not followed by CRLF");
        }
        return Ok(Some((Op::Msg(&input[after..after + size]), end)));
    }
    let op = match line {
        b"PING" => Op::Ping,
        b"PONG" => Op::Pong,
        b"+OK" => Op::Other,
        _ if line.starts_with(b"INFO ") => Op::Other,
        _ if line.starts_with(b"-ERR") => bail!("the NATS server said {:?}", text(line)),
        _ => bail!("not NATS protocol: {:?}", text(line)),
    };
    Ok(Some((op, after)))
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned()
}

/// The JetStream stream of `--jetstream` runs: every subject the load
/// publishes to, kept in files.
pub const STREAM: &str = "COURIER_BENCH";

/// The subject that load messages to `name` go to.
pub fn subject(name: &str) -> String {
    format!("courier-bench.{name}")
}

/// Where JetStream acknowledges what a sender publishes to `subject`.
pub fn reply_inbox(subject: &str) -> String {
    format!("_INBOX.{subject}")
}

/// Appends a `PUB` of `payload` to `subject`, with the subject a reply (a
/// JetStream acknowledgement) should go to, if any.
pub fn publish(output: &mut Vec<u8>, subject: &str, reply: Option<&str>, payload: &[u8]) {
    output.extend_from_slice(b"PUB ");
    output.extend_from_slice(subject.as_bytes());
    output.push(b' ');
    if let Some(reply) = reply {
        output.extend_from_slice(reply.as_bytes());
        output.push(b' ');
    }
    output.extend_from_slice(payload.len().to_string().as_bytes());
    output.extend_from_slice(b"\r\n");
    output.extend_from_slice(payload);
    output.extend_from_slice(b"\r\n");
}

/// Reads what a load connection's socket has, handing each unit to `on_op`
/// but the server's keep-alives, which it answers. Fails if the server
/// closed the connection or sent an error.
pub fn receive(
    conn: &mut Conn,
    mut on_op: impl FnMut(Op<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut pings = 0;
    conn.receive_units(|_, input| {
        let Some((op, used)) = parse(input)? else {
            return Ok(None);
        };
        match op {
            Op::Ping => pings += 1,
            op => on_op(op)?,
        }
        Ok(Some(used))
    })?;
    if pings > 0 {
        conn.output.extend_from_slice(&b"PONG\r\n".repeat(pings));
        conn.flush()?;
    }
    Ok(())
}

/// Reads a publisher's connection, which hears only JetStream's
/// acknowledgements of what it published, in order (one publisher, one
/// stream): settles that many of its messages in flight, recording each
/// one's latency from its due time, and returns how many JetStream refused.
pub fn settle_acks(
    conn: &mut Conn,
    arrived_ns: u64,
    acks: &mut courier::bench::Latencies,
) -> anyhow::Result<u64> {
    let (mut count, mut refused) = (0, 0);
    receive(conn, |op| {
        if let Op::Msg(reply) = op {
            count += 1;
            refused += u64::from(is_error(reply));
        }
        Ok(())
    })?;
    for _ in 0..count {
        let due = conn
            .in_flight
            .pop_front()
            .context("an acknowledgement of nothing in flight")?;
        acks.record(due, arrived_ns);
    }
    Ok(refused)
}

/// A connection that has said `CONNECT` (no `+OK` replies, no echo of its
/// own messages) and, if given a subject, subscribed to it; returned once
/// the server has answered a `PING`, so the subscription is in place.
pub fn connect(address: SocketAddr, subscribe: Option<&str>) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(address)
        .with_context(|| format!("cannot connect to the NATS server at {address}"))?;
    stream.set_nodelay(true)?;
    let mut hello = Vec::from(
        &b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"name\":\"courier-bench\"}\r\n"[..],
    );
    if let Some(subject) = subscribe {
        hello.extend_from_slice(format!("SUB {subject} 1\r\n").as_bytes());
    }
    hello.extend_from_slice(b"PING\r\n");
    stream.write_all(&hello)?;
    await_op(&mut stream, "PONG", |op| (op == Op::Pong).then_some(()))?;
    Ok(stream)
}

/// Reads a blocking connection (answering the server's `PING`s) until
/// `take` accepts a unit, and returns what it made of it. Nothing else may
/// arrive after that unit: it would be lost.
fn await_op<T>(
    stream: &mut TcpStream,
    what: &str,
    mut take: impl FnMut(Op<'_>) -> Option<T>,
) -> anyhow::Result<T> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some((op, used)) = parse(&input)? {
            let ping = op == Op::Ping;
            let taken = take(op);
            input.drain(..used);
            if ping {
                stream.write_all(b"PONG\r\n")?;
            }
            if let Some(taken) = taken {
                stream.set_read_timeout(None)?;
                return Ok(taken);
            }
        }
        let n = stream
            .read(&mut chunk)
            .with_context(|| format!("no {what} from the NATS server"))?;
        if n == 0 {
            bail!("the NATS server closed the connection while the bench waited for {what}");
        }
        input.extend_from_slice(&chunk[..n]);
    }
}

/// Makes the JetStream stream of `--jetstream` runs, kept in files, over
/// every subject the load publishes to (a running server may have it from
/// an earlier run already, with the same settings).
pub fn create_stream(address: SocketAddr) -> anyhow::Result<()> {
    let inbox = reply_inbox("courier-bench-setup");
    let mut stream = connect(address, Some(&inbox))?;
    let config = format!(
        "{{\"name\":\"{STREAM}\",\"subjects\":[\"{}\"],\"storage\":\"file\"}}",
        subject(">")
    );
    let mut request = Vec::new();
    let api = format!("$JS.API.STREAM.CREATE.{STREAM}");
    publish(&mut request, &api, Some(&inbox), config.as_bytes());
    stream.write_all(&request)?;
    let reply = await_op(
        &mut stream,
        "answer to the stream's creation (is JetStream on? nats-server -js)",
        |op| match op {
            Op::Msg(payload) => Some(String::from_utf8_lossy(payload).into_owned()),
            _ => None,
        },
    )?;
    if is_error(reply.as_bytes()) {
        bail!("JetStream did not make the stream (is the server running with -js?): {reply}");
    }
    Ok(())
}

/// Whether a JetStream reply (JSON) reports an error.
pub fn is_error(reply: &[u8]) -> bool {
    const FIELD: &[u8] = b"\"error\"";
    reply.windows(FIELD.len()).any(|window| window == FIELD)
}

/// Starts `nats-server` (from PATH, or `--nats-server-bin`) on a free
/// loopback port and waits until it takes connections.
pub fn spawn(common: &Common) -> anyhow::Result<(Spawned, SocketAddr)> {
    let dir = std::env::temp_dir().join(format!("courier-bench-nats-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // A port the kernel just handed out and took back: free unless another
    // program takes it in the next few milliseconds.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = dir.join("nats.log");
    let mut command = Command::new(&common.nats_server_bin);
    command
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-l"])
        .arg(&log)
        .stdout(Stdio::null());
    if common.jetstream {
        command.arg("-js").arg("-sd").arg(dir.join("jetstream"));
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&dir);
            bail!(
                "cannot run {}: {error} (Debian: apt-get install nats-server)",
                common.nats_server_bin.display()
            );
        }
    };
    let mut spawned = Spawned::new(child, dir);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    loop {
        if let Some(status) = spawned.exited()? {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("nats-server exited at start ({status}); its log:\n{said}");
        }
        if TcpStream::connect(address).is_ok() {
            return Ok((spawned, address));
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("nats-server took no connection on {address} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a server might send: every kind of unit, a payload holding CRLF
    /// and protocol words, and a MSG with a reply subject.
    const STREAM: &[u8] = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n\
        +OK\r\nPONG\r\nMSG a.b 1 5\r\nhello\r\nPING\r\n\
        MSG a.b 1 9\r\nPING\r\nMSG\r\nMSG a.b 1 _INBOX.7 0\r\n\r\n";

    fn all(input: &[u8]) -> anyhow::Result<(Vec<String>, usize)> {
        let mut ops = Vec::new();
        let mut at = 0;
        while let Some((op, used)) = parse(&input[at..])? {
            ops.push(match op {
                Op::Msg(payload) => format!("msg {}", String::from_utf8_lossy(payload)),
                Op::Ping => "ping".into(),
                Op::Pong => "pong".into(),
                Op::Other => "other".into(),
            });
            at += used;
        }
        Ok((ops, at))
    }

    #[test]
    fn parses_every_unit_and_waits_for_the_rest_at_every_cut() {
        let (ops, used) = all(STREAM).unwrap();
        assert_eq!(
            ops,
            [
                "other",
                "other",
                "pong",
                "msg hello",
                "ping",
                "msg PING\r\nMSG",
                "msg "
            ]
        );
        assert_eq!(used, STREAM.len());
        // Cut anywhere, the part before parses to a prefix of the units and
        // stops at the cut unit's start.
        for cut in 0..STREAM.len() {
            let (prefix_ops, used) = all(&STREAM[..cut]).unwrap();
            assert_eq!(prefix_ops[..], ops[..prefix_ops.len()], "cut at {cut}");
            assert!(used <= cut);
            let (rest, _) = all(&STREAM[used..]).unwrap();
            assert_eq!(prefix_ops.len() + rest.len(), ops.len(), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_errors_and_what_is_not_the_protocol() {
        for bad in [
            &b"-ERR 'Slow Consumer'\r\n"[..],
            b"HTTP/1.1 200 OK\r\n",
            b"PING\n",
            b"MSG a 1 x\r\n",
            b"MSG a 1 3\r\nabcde\r\n",
            b"MSG a 1 18446744073709551615\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&vec![b'x'; LINE_BYTES_MAX + 1]).is_err());
        assert!(parse(&vec![b'x'; LINE_BYTES_MAX]).unwrap().is_none());
    }

    #[test]
    fn a_publish_parses_as_the_message_it_carries() {
        let mut with_reply = Vec::new();
        publish(&mut with_reply, "r.7", Some("_INBOX.r.7"), b"x");
        assert_eq!(&with_reply[..], b"PUB r.7 _INBOX.r.7 1\r\nx\r\n");
        let mut output = Vec::new();
        publish(&mut output, "r.7", None, b"body\r\nbytes");
        assert_eq!(&output[..], b"PUB r.7 11\r\nbody\r\nbytes\r\n");
        // The server relays it as MSG with the same framing after the line.
        let relayed = [&b"MSG r.7 1 11\r\n"[..], &output[12..]].concat();
        assert_eq!(
            parse(&relayed).unwrap(),
            Some((Op::Msg(b"body\r\nbytes"), relayed.len()))
        );
    }
}

#[cfg(test)]
mod jetstream_tests {
    use super::*;

    #[test]
    fn replies_with_an_error_field_are_errors() {
        assert!(!is_error(br#"{"stream":"COURIER_BENCH","seq":12}"#));
        assert!(is_error(
            br#"{"error":{"code":503,"description":"no responders"}}"#
        ));
        assert!(is_error(
            br#"{"type":"io.nats.jetstream.api.v1.stream_create_response","error":{"code":400}}"#
        ));
    }
}
