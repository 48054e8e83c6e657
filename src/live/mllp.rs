//! The MLLP listener: HL7 v2 messages framed `0x0B <message> 0x1C 0x0D` over TCP, one
//! acknowledgement per message.
//!
//! Each connection is read into a [`Deframer`], which tolerates frames split across reads and
//! several frames in one read. Each frame is classified ([`super::classify`]), appended to
//! the feed's write-ahead log and, once the log says it is durable, acknowledged:
//! `MSH` (sender and receiver swapped) and `MSA|AA|<MSH-10>`; `AE` or `AR` with the reason in
//! MSA-3 and an `ERR` segment. A resend (same sender and MSH-10 as a logged message) is
//! acknowledged as the first was, and not logged again. Bytes outside frames are skipped with
//! a warning naming the peer and byte offset; a frame longer than the limit is refused (AR)
//! and the connection closed, since where it ends cannot be trusted.
//!
//! Each connection's ingests are audited ([`Tally`]): per sender (`MSH-3^MSH-4`), one
//! record when the connection ends and at most every [`AUDIT_EVERY`] while it stays open,
//! naming the peer address, the messages logged (AA, AE, AR), the resends acknowledged
//! without logging, and the log records written.
//!
//! With the server's authentication on (and `[live] mllp_auth = "certificate"`, the
//! default), a connection is admitted once, after its TLS handshake, by its client
//! certificate: the principal `[auth.mtls]` maps it to must have the `ingest` permission.
//! A connection that is not admitted is audited once as denied, its first message is
//! answered AR with the reason (nothing is logged), and it is closed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::wal::{Appended, Status, Wal};
use super::{classify, LiveConfig, Running, Verdict};
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::ingest::Context;
use crate::security::audit::{AuditEntry, AuditLog, Outcome};
use crate::security::auth::{Principal, RequestContext};
use crate::security::gate::Security;
use crate::security::note::AuditNote;
use crate::security::policy::Action;

/// The name MLLP connections have in the audit trail.
pub const AUDIT_RPC: &str = "mllp";

/// A connection that stays open writes its audit records at most this often.
pub const AUDIT_EVERY: Duration = Duration::from_secs(60);

/// Start of a frame.
pub const START: u8 = 0x0B;
/// First byte of the end of a frame.
pub const END: u8 = 0x1C;
/// Second byte of the end of a frame.
pub const END2: u8 = 0x0D;

/// What the deframer found next in a connection's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete frame's content; `offset` is its first byte's position in the stream.
    Frame {
        /// Stream offset of the content's first byte.
        offset: u64,
        /// The content, without the frame bytes.
        bytes: Vec<u8>,
    },
    /// Bytes outside any frame (whitespace between frames is not reported), or a frame
    /// abandoned by a new start byte before its end.
    Garbage {
        /// Stream offset of the first skipped byte.
        offset: u64,
        /// How many bytes were skipped.
        len: usize,
    },
    /// A frame longer than the limit; the stream cannot be read further.
    Oversize {
        /// Stream offset of the frame's content.
        offset: u64,
        /// The limit, in bytes.
        limit: usize,
    },
}

/// Cuts a byte stream into MLLP frames.
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
    in_frame: bool,
    /// How far into `buf` the end of the current frame was already looked for.
    scanned: usize,
    max: usize,
    /// Set once a frame was too long: nothing after it can be trusted.
    failed: bool,
}

impl Deframer {
    /// A deframer accepting frames of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Deframer {
            buf: Vec::new(),
            base: 0,
            in_frame: false,
            scanned: 0,
            max,
            failed: false,
        }
    }

    /// Adds bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that are not yet a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
        self.base += n as u64;
        self.scanned = 0;
    }

    /// The next event, or `None` when more bytes are needed (or, after
    /// [`Event::Oversize`], ever again).
    pub fn next_event(&mut self) -> Option<Event> {
        if self.failed {
            return None;
        }
        loop {
            if !self.in_frame {
                let start = self.buf.iter().position(|b| *b == START);
                let skip = start.unwrap_or(self.buf.len());
                let junk = self.buf[..skip].iter().any(|b| !b.is_ascii_whitespace());
                let offset = self.base;
                match start {
                    Some(i) => {
                        self.consume(i + 1);
                        self.in_frame = true;
                    }
                    None => self.consume(skip),
                }
                if junk {
                    return Some(Event::Garbage { offset, len: skip });
                }
                start?;
                continue;
            }
            let from = self.scanned;
            let found = self.buf[from..]
                .iter()
                .position(|b| *b == END || *b == START)
                .map(|k| from + k);
            let Some(k) = found else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max {
                    self.failed = true;
                    return Some(Event::Oversize {
                        offset: self.base,
                        limit: self.max,
                    });
                }
                return None;
            };
            if self.buf[k] == START {
                // An unterminated frame, then a new one: the first is skipped.
                let offset = self.base;
                self.consume(k + 1);
                return Some(Event::Garbage { offset, len: k });
            }
            if k > self.max {
                self.failed = true;
                return Some(Event::Oversize {
                    offset: self.base,
                    limit: self.max,
                });
            }
            if k + 1 == self.buf.len() {
                // The end byte arrived without the CR after it yet.
                self.scanned = k;
                return None;
            }
            let offset = self.base;
            let bytes = self.buf[..k].to_vec();
            // `0x1C 0x0D` ends a frame; a lone `0x1C` is tolerated as an end too.
            let end = if self.buf[k + 1] == END2 {
                k + 2
            } else {
                k + 1
            };
            self.consume(end);
            self.in_frame = false;
            return Some(Event::Frame { offset, bytes });
        }
    }
}

/// Wraps a message in MLLP frame bytes.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message);
    out.extend_from_slice(&[END, END2]);
    out
}

/// The acknowledgement code of a status.
pub fn ack_code(status: Status) -> &'static str {
    match status {
        Status::Accepted => "AA",
        Status::Error => "AE",
        Status::Refused => "AR",
    }
}

/// Escapes text for an HL7 v2 field written with `header`'s separators; line breaks become
/// spaces.
fn escape(text: &str, fs: char, enc: &str) -> String {
    let mut chars = enc.chars();
    let comp = chars.next().unwrap_or('^');
    let rep = chars.next().unwrap_or('~');
    let esc = chars.next().unwrap_or('\\');
    let sub = chars.next().unwrap_or('&');
    let mut out = String::with_capacity(text.len());
    for c in text.chars().take(1000) {
        match c {
            c if c == esc => out.push_str(&format!("{esc}E{esc}")),
            c if c == fs => out.push_str(&format!("{esc}F{esc}")),
            c if c == comp => out.push_str(&format!("{esc}S{esc}")),
            c if c == rep => out.push_str(&format!("{esc}R{esc}")),
            c if c == sub => out.push_str(&format!("{esc}T{esc}")),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The acknowledgement of a message: `MSH` (the message's separators, sender and receiver
/// swapped), `MSA|<code>|<MSH-10>[|<reason>]` and, unless `AA`, `ERR` with the reason (ERR-3
/// HL7 table 0357 code, ERR-4 severity `E`, ERR-8 the reason). Segments end with CR.
pub fn ack(
    code: &str,
    verdict: &Verdict,
    ack_id: &str,
    now: DateTime<Utc>,
    reason: &str,
) -> Vec<u8> {
    let h = verdict.header.as_ref();
    let fs = h.map_or('|', |h| h.field_sep);
    let enc = h.map_or("^~\\&", |h| h.encoding.as_str());
    let enc = if enc.is_empty() { "^~\\&" } else { enc };
    let comp = enc.chars().next().unwrap_or('^');
    let field = |f: Option<&str>| f.unwrap_or("").to_string();
    let trigger = h
        .and_then(|h| h.kind.split('^').nth(1).map(str::to_string))
        .unwrap_or_default();
    let msg_type = if trigger.is_empty() {
        "ACK".to_string()
    } else {
        format!("ACK{comp}{trigger}{comp}ACK")
    };
    let processing = h.map_or("P", |h| {
        if h.processing_id.is_empty() {
            "P"
        } else {
            h.processing_id.as_str()
        }
    });
    let version = h.map_or("2.5.1", |h| {
        if h.version.is_empty() {
            "2.5.1"
        } else {
            h.version.as_str()
        }
    });
    let control = escape(&verdict.control_id(), fs, enc);
    let mut msh = vec![
        "MSH".to_string(),
        enc.to_string(),
        field(h.map(|h| h.receiving_application.as_str())),
        field(h.map(|h| h.receiving_facility.as_str())),
        field(h.map(|h| h.sending_application.as_str())),
        field(h.map(|h| h.sending_facility.as_str())),
        now.format("%Y%m%d%H%M%S").to_string(),
        String::new(),
        msg_type,
        escape(ack_id, fs, enc),
        processing.to_string(),
        version.to_string(),
    ];
    // MSH-1 is the separator itself: join the rest after it.
    let head = msh.remove(0);
    let mut out = format!("{head}{fs}{}\r", msh.join(&fs.to_string()));
    if code == "AA" {
        out.push_str(&format!("MSA{fs}{code}{fs}{control}\r"));
    } else {
        let reason = escape(reason, fs, enc);
        out.push_str(&format!("MSA{fs}{code}{fs}{control}{fs}{reason}\r"));
        let err_code = if code == "AR" {
            format!("200{comp}Unsupported message type{comp}HL70357")
        } else {
            format!("207{comp}Application internal error{comp}HL70357")
        };
        let err_code = if code == "AR" && verdict.header.is_some() {
            format!("100{comp}Segment sequence error{comp}HL70357")
        } else {
            err_code
        };
        out.push_str(&format!(
            "ERR{fs}{fs}{fs}{err_code}{fs}E{fs}{fs}{fs}{fs}{reason}\r"
        ));
    }
    out.into_bytes()
}

/// The listener's shared state.
#[derive(Debug)]
struct Shared {
    wal: Wal,
    name: String,
    clock: SharedClock,
    cfg: LiveConfig,
    audit: Option<Arc<AuditLog>>,
    security: Option<Arc<Security>>,
}

/// What one sender sent on one connection since the last audit record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    accepted: u64,
    error: u64,
    refused: u64,
    resent: u64,
    not_stored: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
}

/// A connection's ingests per sender, turned into audit records.
#[derive(Debug)]
pub struct Tally {
    peer: String,
    feed: String,
    /// The connection's principal, when senders authenticate ([`MllpAuth`]).
    ///
    /// [`MllpAuth`]: super::MllpAuth
    principal: Option<Principal>,
    senders: BTreeMap<String, Counts>,
    since: Instant,
}

impl Tally {
    fn new(peer: &str, feed: &str, principal: Option<Principal>) -> Self {
        Tally {
            peer: peer.to_string(),
            feed: feed.to_string(),
            principal,
            senders: BTreeMap::new(),
            since: Instant::now(),
        }
    }

    /// Counts one message: its status and what the log did (`None`: not stored).
    fn count(&mut self, sender: &str, status: Status, appended: Option<Appended>) {
        let c = self.senders.entry(sender.to_string()).or_default();
        match appended {
            None => c.not_stored += 1,
            Some(Appended::Duplicate(_)) => c.resent += 1,
            Some(Appended::Logged(seq)) => {
                match status {
                    Status::Accepted => c.accepted += 1,
                    Status::Error => c.error += 1,
                    Status::Refused => c.refused += 1,
                }
                c.first_seq.get_or_insert(seq);
                c.last_seq = Some(seq);
            }
        }
    }

    /// The audit records of what was counted (one per sender), and a fresh start.
    fn take(&mut self) -> Vec<AuditEntry> {
        self.since = Instant::now();
        std::mem::take(&mut self.senders)
            .into_iter()
            .map(|(sender, c)| {
                let mut e = match &self.principal {
                    None => {
                        let mut e = AuditEntry::new(
                            AUDIT_RPC,
                            Outcome::Allowed,
                            "MLLP carries no credential: allowed by reaching the listener",
                        );
                        e.principal = Some(sender);
                        e.auth = Some("none".into());
                        e
                    }
                    Some(p) => {
                        let mut e = AuditEntry::new(
                            AUDIT_RPC,
                            Outcome::Allowed,
                            format!(
                                "authenticated by client certificate, granted ingest; MSH sender {sender}"
                            ),
                        );
                        e.principal = Some(p.subject.clone());
                        e.auth = Some(p.source.as_str().to_string());
                        e.roles = p.roles.iter().cloned().collect();
                        e.issuer.clone_from(&p.issuer);
                        e
                    }
                };
                e.client = Some(self.peer.clone());
                e.action = Some("ingest".into());
                e.outcome = Some("ok".into());
                let logged = c.accepted + c.error + c.refused;
                e.reason = format!(
                    "{}; feed {}: {logged} messages logged (AA {}, AE {}, AR {}){}, {} resends acknowledged without logging, {} not stored (AR, send again)",
                    e.reason,
                    self.feed,
                    c.accepted,
                    c.error,
                    c.refused,
                    match (c.first_seq, c.last_seq) {
                        (Some(a), Some(b)) => format!(" as log records {a} to {b}"),
                        _ => String::new(),
                    },
                    c.resent,
                    c.not_stored
                );
                e
            })
            .collect()
    }

    /// Writes the records of what was counted into `log` (errors are reported, not
    /// returned: the messages are already acknowledged).
    async fn flush(&mut self, log: Option<&Arc<AuditLog>>) {
        let Some(log) = log.cloned() else {
            self.senders.clear();
            return;
        };
        let entries = self.take();
        if entries.is_empty() {
            return;
        }
        let peer = self.peer.clone();
        let write = move || {
            for e in entries {
                if let Err(err) = log.append(e) {
                    tracing::error!(peer, "audit: cannot record an MLLP ingest: {err}");
                }
            }
        };
        if let Err(e) = tokio::task::spawn_blocking(write).await {
            tracing::error!("audit task failed: {e}");
        }
    }
}

/// Opens the feed's log under `store_root` and listens for MLLP connections on `addr` (one
/// task per connection, as many connections as senders open). With `security`, each
/// connection is admitted by its TLS client certificate (the module's doc). Prints `mllp
/// listening on ADDR (feed F)` to standard error once bound. The log is under `store`'s
/// local root, sealed with its keys when it is encrypted
/// ([`super::wal::Wal::open_with_keys`]).
///
/// # Errors
/// Configuration, log recovery and bind errors.
pub async fn start(
    addr: SocketAddr,
    store: &crate::store::Store,
    cfg: &LiveConfig,
    audit: Option<Arc<AuditLog>>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    security: Option<Arc<Security>>,
) -> Result<Running> {
    let clock: SharedClock = store.clock().clone();
    let keys = store.encryption().map(|c| c.keyring().clone());
    let store_root = &store.local_root("a live feed's log")?;
    cfg.validate()?;
    // The server's TLS configuration (the same certificates, reloaded in place, and client
    // certificates as configured), without the gRPC server's ALPN protocols.
    let tls = tls.map(|c| {
        let mut c = (*c).clone();
        c.alpn_protocols.clear();
        tokio_rustls::TlsAcceptor::from(Arc::new(c))
    });
    let dir = super::wal::feed_dir(store_root, &cfg.feed);
    let (wal, opened) = Wal::open_with_keys(&dir, clock.clone(), cfg.segment_bytes, keys)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::precondition(format!("mllp {addr}"), format!("cannot listen: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::precondition(format!("mllp {addr}"), e.to_string()))?;
    eprintln!(
        "mllp listening on {local}{} (feed {}, {} records in the log, next sequence number {}; {})",
        if tls.is_some() { " over TLS" } else { "" },
        cfg.feed,
        opened.records,
        opened.next_seq,
        if security.is_some() {
            "senders need a client certificate granting ingest"
        } else {
            "senders unauthenticated"
        }
    );
    let shared = Arc::new(Shared {
        wal: wal.clone(),
        name: super::input_name(&cfg.feed),
        clock,
        cfg: cfg.clone(),
        audit,
        security,
    });
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let _ = stream.set_nodelay(true);
                        let r = match tls {
                            None => connection(stream, peer, None, shared).await,
                            Some(acceptor) => {
                                // A handshake that does not finish in the idle timeout is
                                // dropped, as an idle connection is.
                                let idle = shared.cfg.idle_timeout();
                                match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => {
                                        let cert = s
                                            .get_ref()
                                            .1
                                            .peer_certificates()
                                            .and_then(|c| c.first())
                                            .map(|c| c.as_ref().to_vec());
                                        connection(s, peer, cert, shared).await
                                    }
                                    Ok(Err(e)) => Err(e),
                                    Err(_) => Err(std::io::Error::new(
                                        std::io::ErrorKind::TimedOut,
                                        "TLS handshake not finished within the idle timeout",
                                    )),
                                }
                            }
                        };
                        if let Err(e) = r {
                            tracing::warn!(%peer, "mllp connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("mllp accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(Running {
        addr: local,
        wal,
        sealed: Arc::new(tokio::sync::Notify::new()),
    })
}

/// Serves one connection until the peer closes it, it stays idle too long, or a frame is
/// too long; then writes the audit records of its ingests. With authentication, admits
/// the connection by its client certificate `cert` first, or refuses it.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    cert: Option<Vec<u8>>,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let principal = match &shared.security {
        None => None,
        Some(security) => {
            let mut ctx = RequestContext::new(AUDIT_RPC).with_peer(peer);
            if let Some(c) = cert {
                ctx = ctx.with_client_cert(c);
            }
            let note = AuditNote::default();
            match security.admit_action(&ctx, Action::Ingest, &note) {
                Ok(p) => Some(p),
                Err(e) => return refuse_connection(stream, peer, &shared, &note, &e).await,
            }
        }
    };
    let mut tally = Tally::new(&peer.to_string(), &shared.cfg.feed, principal);
    let r = serve_connection(stream, peer, &shared, &mut tally).await;
    tally.flush(shared.audit.as_ref()).await;
    r
}

/// A connection whose sender is not admitted: audited once as denied; its first message
/// (if one comes within the idle timeout) answered AR with the reason, nothing logged;
/// then closed.
async fn refuse_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    shared: &Shared,
    note: &AuditNote,
    e: &Error,
) -> std::io::Result<()> {
    let entry = note.entry(AUDIT_RPC, Some(peer), Err(e));
    if let Err(ae) = super::http::record(shared.audit.as_ref(), entry).await {
        tracing::error!(%peer, "audit: cannot record a refused MLLP sender: {ae}");
    }
    tracing::warn!(%peer, "mllp: sender refused: {e}");
    let reason = format!("sender not admitted, nothing logged: {e}");
    let mut de = Deframer::new(shared.cfg.max_frame_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + shared.cfg.idle_timeout();
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        de.push(&buf[..n]);
        while let Some(ev) = de.next_event() {
            let bytes = match ev {
                Event::Frame { bytes, .. } => bytes,
                Event::Garbage { .. } => continue,
                Event::Oversize { .. } => Vec::new(),
            };
            let now = shared.clock.now();
            let mut verdict = classify(&shared.name, &bytes, &Context::new(now));
            verdict.status = Status::Refused;
            stream
                .write_all(&frame(&ack("AR", &verdict, "W0", now, &reason)))
                .await?;
            return stream.shutdown().await;
        }
    }
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    shared: &Shared,
    tally: &mut Tally,
) -> std::io::Result<()> {
    let mut de = Deframer::new(shared.cfg.max_frame_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    let peer_name = peer.to_string();
    loop {
        if tally.since.elapsed() >= AUDIT_EVERY {
            tally.flush(shared.audit.as_ref()).await;
        }
        let n = match tokio::time::timeout(shared.cfg.idle_timeout(), stream.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                tracing::info!(%peer, "mllp connection idle too long; closed");
                return Ok(());
            }
        };
        if n == 0 {
            if de.buffered() > 0 {
                tracing::warn!(%peer, bytes = de.buffered(), "mllp connection closed inside a frame; its bytes were dropped, never acknowledged");
            }
            return Ok(());
        }
        de.push(&buf[..n]);
        let mut out = Vec::new();
        while let Some(ev) = de.next_event() {
            match ev {
                Event::Frame { offset, bytes } => {
                    out.extend(frame(
                        &handle(shared, &peer_name, offset, &bytes, tally).await,
                    ));
                }
                Event::Garbage { offset, len } => {
                    tracing::warn!(%peer, offset, len, "mllp: skipped bytes outside any frame");
                }
                Event::Oversize { offset, limit } => {
                    let verdict = Verdict {
                        status: Status::Refused,
                        header: None,
                        reason: String::new(),
                        bad: Vec::new(),
                    };
                    let reason = format!(
                        "frame at byte {offset} of the connection from {peer} exceeds {limit} bytes (live.max_frame_bytes); connection closed"
                    );
                    tracing::warn!(%peer, "{reason}");
                    out.extend(frame(&ack(
                        "AR",
                        &verdict,
                        &format!("WAR{offset}"),
                        shared.clock.now(),
                        &reason,
                    )));
                    stream.write_all(&out).await?;
                    return Ok(());
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
    }
}

/// Classifies, logs and acknowledges one message.
async fn handle(
    shared: &Shared,
    peer: &str,
    offset: u64,
    bytes: &[u8],
    tally: &mut Tally,
) -> Vec<u8> {
    let now = shared.clock.now();
    let verdict = classify(&shared.name, bytes, &Context::new(now));
    let sender = verdict.sender(peer);
    let control = verdict.control_id();
    match shared
        .wal
        .append(verdict.status, &sender, &control, bytes)
        .await
    {
        Ok(a) => {
            tally.count(&sender, verdict.status, Some(a));
            let (seq, dup) = match a {
                Appended::Logged(s) => (s, false),
                Appended::Duplicate(s) => (s, true),
            };
            let code = ack_code(verdict.status);
            if verdict.status != Status::Accepted {
                tracing::warn!(
                    peer,
                    sender,
                    control_id = control,
                    offset,
                    seq,
                    "mllp: {code}: {}",
                    verdict.reason
                );
            } else {
                tracing::debug!(peer, sender, control_id = control, seq, dup, "mllp: logged");
            }
            ack(code, &verdict, &format!("W{seq}"), now, &verdict.reason)
        }
        Err(e) => {
            tally.count(&sender, verdict.status, None);
            let reason = format!("not stored, send again later: {e}");
            tracing::error!(peer, sender, control_id = control, offset, "mllp: {reason}");
            ack("AR", &verdict, "W0", now, &reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(de: &mut Deframer) -> Vec<Event> {
        std::iter::from_fn(|| de.next_event()).collect()
    }

    #[test]
    fn split_reads_and_several_frames_per_read() {
        let mut stream = frame(b"MSH|one\r");
        stream.extend(frame(b"MSH|two\r"));
        stream.extend(b"\r\n");
        stream.extend(frame(b"MSH|three\r"));
        // Every split point, including inside the two end bytes.
        for cut in 0..stream.len() {
            let mut de = Deframer::new(1024);
            de.push(&stream[..cut]);
            let mut got = frames(&mut de);
            de.push(&stream[cut..]);
            got.extend(frames(&mut de));
            let texts: Vec<Vec<u8>> = got
                .into_iter()
                .map(|e| match e {
                    Event::Frame { bytes, .. } => bytes,
                    other => panic!("cut {cut}: {other:?}"),
                })
                .collect();
            assert_eq!(
                texts,
                vec![
                    b"MSH|one\r".to_vec(),
                    b"MSH|two\r".to_vec(),
                    b"MSH|three\r".to_vec()
                ],
                "cut {cut}"
            );
        }
        // Byte by byte.
        let mut de = Deframer::new(1024);
        let mut n = 0;
        for b in &stream {
            de.push(&[*b]);
            n += frames(&mut de).len();
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn garbage_is_reported_with_its_offset_and_frames_after_it_survive() {
        let mut stream = b"hello".to_vec();
        stream.extend(frame(b"MSH|a\r"));
        stream.extend([START]);
        stream.extend(b"MSH|unterminated\r");
        stream.extend(frame(b"MSH|b\r"));
        let mut de = Deframer::new(1024);
        de.push(&stream);
        let got = frames(&mut de);
        assert_eq!(got[0], Event::Garbage { offset: 0, len: 5 });
        assert_eq!(
            got[1],
            Event::Frame {
                offset: 6,
                bytes: b"MSH|a\r".to_vec()
            }
        );
        assert_eq!(
            got[2],
            Event::Garbage {
                offset: 15,
                len: 17
            }
        );
        assert!(matches!(&got[3], Event::Frame { bytes, .. } if bytes == b"MSH|b\r"));
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn an_oversize_frame_is_refused_complete_or_not() {
        let mut de = Deframer::new(10);
        de.push(&frame(b"MSH|0123456789abc\r"));
        assert_eq!(
            frames(&mut de),
            vec![Event::Oversize {
                offset: 1,
                limit: 10
            }]
        );
        let mut de = Deframer::new(10);
        de.push(&[START]);
        de.push(&[b'x'; 11]);
        assert!(matches!(de.next_event(), Some(Event::Oversize { .. })));
        // Exactly at the limit is fine.
        let mut de = Deframer::new(10);
        de.push(&frame(b"0123456789"));
        assert!(matches!(de.next_event(), Some(Event::Frame { .. })));
    }

    #[test]
    fn acks_swap_sender_and_receiver_and_escape_the_reason() {
        let msg = b"MSH|^~\\&|LAB|HOSP|WARD|DC|20240101120000||ORU^R01^ORU_R01|M1|P|2.5.1\rPID|1||P1^^^H^MR\r";
        let v = classify("feed.hl7", msg, &Context::new(Utc::now()));
        assert_eq!(v.status, Status::Accepted, "{}", v.reason);
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let a = String::from_utf8(ack("AA", &v, "W1", now, "")).expect("utf8");
        assert_eq!(
            a,
            "MSH|^~\\&|WARD|DC|LAB|HOSP|20231114221320||ACK^R01^ACK|W1|P|2.5.1\rMSA|AA|M1\r"
        );
        let e = String::from_utf8(ack("AE", &v, "W1", now, "bad | value^x")).expect("utf8");
        assert!(e.contains("MSA|AE|M1|bad \\F\\ value\\S\\x\r"), "{e}");
        assert!(
            e.contains("\rERR|||207^Application internal error^HL70357|E||||bad"),
            "{e}"
        );
    }

    #[test]
    fn the_tally_audits_each_sender_with_its_counts() {
        let mut t = Tally::new("127.0.0.1:5000", "adt", None);
        t.count("LAB^HOSP", Status::Accepted, Some(Appended::Logged(3)));
        t.count("LAB^HOSP", Status::Error, Some(Appended::Logged(4)));
        t.count("LAB^HOSP", Status::Accepted, Some(Appended::Duplicate(3)));
        t.count("ADT^HOSP", Status::Refused, None);
        let entries = t.take();
        assert_eq!(entries.len(), 2);
        let lab = &entries[1];
        assert_eq!(lab.principal.as_deref(), Some("LAB^HOSP"));
        assert_eq!(lab.client.as_deref(), Some("127.0.0.1:5000"));
        assert!(
            lab.reason.contains(
                "feed adt: 2 messages logged (AA 1, AE 1, AR 0) as log records 3 to 4, 1 resends"
            ),
            "{}",
            lab.reason
        );
        assert!(
            entries[0].reason.contains("1 not stored"),
            "{}",
            entries[0].reason
        );
        assert!(t.take().is_empty());
    }

    #[test]
    fn classify_refuses_what_cannot_be_applied() {
        let ctx = Context::new(Utc::now());
        let v = classify("f.hl7", b"hello world", &ctx);
        assert_eq!(v.status, Status::Refused);
        assert!(v.header.is_none());
        let v = classify(
            "f.hl7",
            b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|\rPID|1||P1\r",
            &ctx,
        );
        assert_eq!(v.status, Status::Refused);
        assert!(v.reason.contains("MSH-10"), "{}", v.reason);
        let two = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1\rMSH|^~\\&|A|B|C|D|20240101||ADT^A08|2\r";
        assert_eq!(classify("f.hl7", two, &ctx).status, Status::Refused);
        // No PID-3: the batch parser's own check makes it a bad record: AE.
        let v = classify(
            "f.hl7",
            b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|9\rPV1|1|I\r",
            &ctx,
        );
        assert_eq!(v.status, Status::Error, "{}", v.reason);
        assert!(v.reason.contains("PID-3"), "{}", v.reason);
    }
}
