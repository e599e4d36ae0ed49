//! A fault-injecting MongoDB wire-protocol proxy: it sits between a binary under test and the
//! test's MongoDB (FerretDB here) and lets a test script what only a cluster does — a primary
//! election (every write refused with NotWritablePrimary), a mongos reporting per-document
//! errors for some documents of a batch, a `writeConcernError`, a write applied but never
//! acknowledged (connection reset after forwarding), slow replies, and a `find` answered from
//! two shards — where two consumers' events may share an `_id`, which one FerretDB cannot hold.
//!
//! Frames are forwarded byte for byte unless a [`Rule`] matches. Only `OP_MSG` (opcode 2013)
//! requests are inspected: the command name is the first key of the body section, and an
//! `insert`'s documents come either in the body's `documents` array or in a `documents`
//! document sequence (section kind 1), as the drivers send them. The driver talks strictly
//! request–reply on a connection (exhaust replies flagged `moreToCome` are followed through), so
//! each client connection is served by one sequential loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const OP_MSG: i32 = 2013;
const HEADER_LEN: usize = 16;
const FLAG_CHECKSUM: u32 = 1;
const FLAG_MORE_TO_COME: u32 = 1 << 1;
/// Larger than any message MongoDB accepts (48 MB), so a corrupt length cannot allocate wildly.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// What the proxy does to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Do not forward; answer `{ok: 0, code, codeName, errmsg, errorLabels}`.
    CommandError {
        code: i32,
        code_name: String,
        labels: Vec<String>,
    },
    /// For `insert`: forward only the documents whose index is not listed, then answer as a
    /// mongos does when some shards failed: the others stored, `writeErrors` for the listed
    /// indexes (with the original indexes) and `n` counting only the stored ones.
    WriteErrors { indexes: Vec<usize>, code: i32 },
    /// For `insert`: as [`Fault::WriteErrors`], for every document whose `consumer` is this
    /// one — but only the first time the proxy sees each such document (by `_id`), so a
    /// retry of it goes through. Whatever way the caller batches, each of those documents fails
    /// exactly once.
    FailEachDocumentOnce { consumer: String, code: i32 },
    /// Forward, then add a `writeConcernError` to the (successful) reply.
    WriteConcernError { code: i32, code_name: String },
    /// Forward, wait for the server's reply, then drop both connections without answering:
    /// the write happened, but the caller never heard.
    ResetAfterForward,
    /// Drop both connections without forwarding.
    ResetBeforeForward,
    /// Forward, and hold the reply this long before answering.
    Delay(Duration),
    /// Hold the request this long, then forward it: the write lands late, as one held up by
    /// a shard's election does, while writes on other connections land meanwhile.
    DelayBeforeForward(Duration),
    /// For `find`: run the same command on `collection` too (same database, same filter), and
    /// answer with the first batch of both, this collection's documents first — as mongos
    /// merges the answers of two shards. A test stores another shard's documents there: on the
    /// shard key `{consumer: "hashed", _id: 1}` `_id` is unique per shard only, so another
    /// consumer's event may have an `_id` this collection holds too. Only that collection's
    /// first batch is added (the test's finds are small).
    FindAlsoIn { collection: String },
}

impl Fault {
    /// A `writeConcernError` WriteConcernFailed (64) on an otherwise successful write.
    pub fn write_concern_failed() -> Self {
        Fault::WriteConcernError {
            code: 64,
            code_name: "WriteConcernFailed".into(),
        }
    }

    /// `NotWritablePrimary` (10107) with the `RetryableWriteError` label, as a shard answers
    /// during an election.
    pub fn not_writable_primary() -> Self {
        Fault::CommandError {
            code: 10107,
            code_name: "NotWritablePrimary".into(),
            labels: vec!["RetryableWriteError".into()],
        }
    }
}

/// Which requests a rule applies to, what it does, and how often.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The command name (`insert`, `find`, `getMore`, `update`, `findAndModify`, …).
    pub command: String,
    /// Only commands on this collection (the command's value), when set.
    pub collection: Option<String>,
    pub fault: Fault,
    /// How many matching requests it applies to; `None`: until removed.
    pub times: Option<usize>,
}

impl Rule {
    pub fn new(command: &str, fault: Fault) -> Self {
        Self {
            command: command.to_owned(),
            collection: None,
            fault,
            times: None,
        }
    }

    pub fn on(mut self, collection: &str) -> Self {
        self.collection = Some(collection.to_owned());
        self
    }

    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// The events' inserts of `consumer` refused for good, each document once: a store's
    /// DocumentValidationFailure (121), which no retry can mend.
    pub fn refuse_consumer_for_good(consumer: &str) -> Self {
        Rule::new(
            "insert",
            Fault::FailEachDocumentOnce {
                consumer: consumer.into(),
                code: 121,
            },
        )
        .on("events")
    }

    /// Every find on the events answered from `collection` too, as from a second shard.
    pub fn events_also_on_shard(collection: &str) -> Self {
        Rule::new(
            "find",
            Fault::FindAlsoIn {
                collection: collection.into(),
            },
        )
        .on("events")
    }
}

#[derive(Default)]
struct Shared {
    rules: Vec<Rule>,
    /// Requests seen per command name (forwarded or not).
    seen: HashMap<String, usize>,
    /// Requests seen per command name and collection.
    seen_on: HashMap<(String, String), usize>,
    /// Faults applied per command name.
    applied: HashMap<String, usize>,
    /// `_id`s already failed by [`Fault::FailEachDocumentOnce`].
    failed_once: std::collections::HashSet<String>,
    /// Documents refused with injected write errors so far.
    documents_failed: usize,
}

/// A running proxy; it stops accepting and drops every connection when dropped.
pub struct WireProxy {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl WireProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy cannot bind 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream = upstream.to_owned();
        let accept = {
            let shared = shared.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let shared = shared.clone();
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        serve(client, server, shared).await;
                    });
                    if let Ok(mut c) = connections.lock() {
                        c.retain(|t| !t.is_finished());
                        c.push(task);
                    }
                }
            })
        };
        Self {
            addr,
            shared,
            accept,
            connections,
        }
    }

    /// Starts a proxy in front of the first host of `uri` and returns it with `uri` rewritten
    /// to go through it (credentials, database and options kept).
    pub async fn in_front_of(uri: &str) -> (Self, String) {
        let rest = uri
            .strip_prefix("mongodb://")
            .unwrap_or_else(|| panic!("the proxy needs a mongodb:// URI, got {uri}"));
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (format!("{u}@"), r),
            None => (String::new(), rest),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (hosts, tail) = rest.split_at(split);
        let first = hosts.split(',').next().unwrap_or(hosts);
        let proxy = Self::start(first).await;
        let tail = if tail.is_empty() { "/" } else { tail };
        let sep = if tail.contains('?') { '&' } else { '?' };
        let tail = if tail.starts_with('?') {
            format!("/{tail}")
        } else {
            tail.to_owned()
        };
        let proxied = format!(
            "mongodb://{userinfo}{}{tail}{sep}directConnection=true",
            proxy.addr
        );
        (proxy, proxied)
    }

    /// A connection string through the proxy. `directConnection`: the driver must not follow
    /// the server's own address from `hello` around the proxy.
    pub fn uri(&self) -> String {
        format!("mongodb://{}/?directConnection=true", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a rule; rules are tried in the order added, the first that matches applies.
    pub fn add(&self, rule: Rule) {
        self.lock().rules.push(rule);
    }

    /// Removes every rule: from now on everything is forwarded untouched.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// How many requests of this command the proxy has seen.
    pub fn seen(&self, command: &str) -> usize {
        self.lock().seen.get(command).copied().unwrap_or(0)
    }

    /// How many requests of this command on this collection the proxy has seen.
    pub fn seen_on(&self, command: &str, collection: &str) -> usize {
        self.lock()
            .seen_on
            .get(&(command.to_owned(), collection.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// How many documents were refused with injected per-document write errors.
    pub fn documents_failed(&self) -> usize {
        self.lock().documents_failed
    }

    /// How many times a fault was applied to this command.
    pub fn applied(&self, command: &str) -> usize {
        self.lock().applied.get(command).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for WireProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(c) = self.connections.lock() {
            for t in c.iter() {
                t.abort();
            }
        }
    }
}

/// One wire message: the 16-byte header and the rest.
struct Frame {
    bytes: Vec<u8>,
}

impl Frame {
    fn request_id(&self) -> i32 {
        i32::from_le_bytes([self.bytes[4], self.bytes[5], self.bytes[6], self.bytes[7]])
    }
    fn op_code(&self) -> i32 {
        i32::from_le_bytes([
            self.bytes[12],
            self.bytes[13],
            self.bytes[14],
            self.bytes[15],
        ])
    }
    fn flags(&self) -> u32 {
        if self.op_code() != OP_MSG || self.bytes.len() < HEADER_LEN + 4 {
            return 0;
        }
        u32::from_le_bytes([
            self.bytes[16],
            self.bytes[17],
            self.bytes[18],
            self.bytes[19],
        ])
    }
}

async fn read_frame(stream: &mut TcpStream) -> Option<Frame> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let total = usize::try_from(i32::from_le_bytes(len)).ok()?;
    if !(HEADER_LEN..=MAX_MESSAGE_BYTES).contains(&total) {
        return None;
    }
    let mut bytes = vec![0u8; total];
    bytes[..4].copy_from_slice(&len);
    stream.read_exact(&mut bytes[4..]).await.ok()?;
    Some(Frame { bytes })
}

/// An OP_MSG taken apart: the body (section 0) and the document sequences (section 1).
struct OpMsg {
    flags: u32,
    body: Document,
    sequences: Vec<(String, Vec<Document>)>,
}

impl OpMsg {
    fn parse(frame: &Frame) -> Option<Self> {
        if frame.op_code() != OP_MSG {
            return None;
        }
        let flags = frame.flags();
        let mut end = frame.bytes.len();
        if flags & FLAG_CHECKSUM != 0 {
            end = end.checked_sub(4)?;
        }
        let mut at = HEADER_LEN + 4;
        let mut body = None;
        let mut sequences = Vec::new();
        while at < end {
            let kind = frame.bytes[at];
            at += 1;
            match kind {
                0 => {
                    let len = doc_len(&frame.bytes[at..])?;
                    body = Some(Document::from_reader(&frame.bytes[at..at + len]).ok()?);
                    at += len;
                }
                1 => {
                    let size = doc_len(&frame.bytes[at..])?;
                    let section_end = at + size;
                    let mut p = at + 4;
                    let nul = frame.bytes[p..section_end].iter().position(|b| *b == 0)?;
                    let name = String::from_utf8(frame.bytes[p..p + nul].to_vec()).ok()?;
                    p += nul + 1;
                    let mut docs = Vec::new();
                    while p < section_end {
                        let len = doc_len(&frame.bytes[p..])?;
                        docs.push(Document::from_reader(&frame.bytes[p..p + len]).ok()?);
                        p += len;
                    }
                    sequences.push((name, docs));
                    at = section_end;
                }
                _ => return None,
            }
        }
        Some(OpMsg {
            flags,
            body: body?,
            sequences,
        })
    }

    fn command(&self) -> Option<&str> {
        self.body.keys().next().map(String::as_str)
    }

    fn collection(&self) -> Option<&str> {
        self.command().and_then(|c| self.body.get_str(c).ok())
    }

    /// Serialises with the given request id and responseTo; drops any checksum.
    fn to_frame(&self, request_id: i32, response_to: i32) -> Frame {
        let mut payload = Vec::new();
        payload.extend_from_slice(&(self.flags & !FLAG_CHECKSUM).to_le_bytes());
        payload.push(0);
        let _ = self.body.to_writer(&mut payload);
        for (name, docs) in &self.sequences {
            let mut section = Vec::new();
            section.extend_from_slice(name.as_bytes());
            section.push(0);
            for d in docs {
                let _ = d.to_writer(&mut section);
            }
            payload.push(1);
            payload.extend_from_slice(&((section.len() + 4) as i32).to_le_bytes());
            payload.extend_from_slice(&section);
        }
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(&((HEADER_LEN + payload.len()) as i32).to_le_bytes());
        bytes.extend_from_slice(&request_id.to_le_bytes());
        bytes.extend_from_slice(&response_to.to_le_bytes());
        bytes.extend_from_slice(&OP_MSG.to_le_bytes());
        bytes.extend_from_slice(&payload);
        Frame { bytes }
    }

    fn reply(body: Document) -> Self {
        OpMsg {
            flags: 0,
            body,
            sequences: vec![],
        }
    }
}

fn doc_len(bytes: &[u8]) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let len = usize::try_from(i32::from_le_bytes(raw)).ok()?;
    (len >= 5 && len <= bytes.len()).then_some(len)
}

/// The rule that applies to this request, if any (counting it as used).
fn take_fault(shared: &Mutex<Shared>, msg: Option<&OpMsg>) -> Option<Fault> {
    let msg = msg?;
    let command = msg.command()?.to_owned();
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    *s.seen.entry(command.clone()).or_default() += 1;
    let collection = msg.collection().map(str::to_owned);
    if let Some(c) = &collection {
        *s.seen_on.entry((command.clone(), c.clone())).or_default() += 1;
    }
    let i = s.rules.iter().position(|r| {
        r.command == command
            && r.times != Some(0)
            && (r.collection.is_none() || r.collection == collection)
    })?;
    let fault = s.rules[i].fault.clone();
    if let Some(n) = s.rules[i].times.as_mut() {
        *n -= 1;
    }
    *s.applied.entry(command).or_default() += 1;
    Some(fault)
}

async fn serve(mut client: TcpStream, mut server: TcpStream, shared: Arc<Mutex<Shared>>) {
    let mut next_id: i32 = 1 << 24;
    while let Some(request) = read_frame(&mut client).await {
        let parsed = OpMsg::parse(&request);
        let fault = take_fault(&shared, parsed.as_ref());
        let expects_reply = request.flags() & FLAG_MORE_TO_COME == 0;
        next_id += 1;
        let (forward, after): (Frame, After) = match (fault, parsed) {
            (None, _) | (Some(_), None) => (request, After::Forward),
            (Some(Fault::ResetBeforeForward), _) => return,
            (
                Some(Fault::CommandError {
                    code,
                    code_name,
                    labels,
                }),
                Some(msg),
            ) => {
                let body = doc! {
                    "ok": 0.0, "errmsg": format!("injected by the test proxy: {code_name}"),
                    "code": code, "codeName": code_name,
                    "errorLabels": labels.into_iter().map(Bson::String).collect::<Vec<_>>(),
                };
                let reply = OpMsg::reply(body).to_frame(next_id, request.request_id());
                let _ = msg;
                if client.write_all(&reply.bytes).await.is_err() {
                    return;
                }
                continue;
            }
            (Some(Fault::FailEachDocumentOnce { consumer, code }), Some(mut msg)) => {
                let indexes = first_sightings(&shared, &msg, &consumer);
                fail_documents(&shared, &request, &mut msg, &indexes, code)
            }
            (Some(Fault::WriteErrors { indexes, code }), Some(mut msg)) => {
                fail_documents(&shared, &request, &mut msg, &indexes, code)
            }
            (Some(Fault::WriteConcernError { code, code_name }), _) => {
                (request, After::WriteConcernError { code, code_name })
            }
            (Some(Fault::ResetAfterForward), _) => (request, After::Reset),
            (Some(Fault::Delay(d)), _) => (request, After::Delay(d)),
            (Some(Fault::DelayBeforeForward(d)), _) => {
                tokio::time::sleep(d).await;
                (request, After::Forward)
            }
            (Some(Fault::FindAlsoIn { collection }), Some(mut msg)) => {
                let Some(command) = msg.command().map(str::to_owned) else {
                    return;
                };
                msg.body.insert(command, collection);
                let other = msg.to_frame(next_id, 0);
                (request, After::AlsoFrom(other))
            }
        };
        let request_id = forward.request_id();
        if server.write_all(&forward.bytes).await.is_err() {
            return;
        }
        if !expects_reply {
            continue;
        }
        // Follow exhaust replies (moreToCome) through to the last one.
        loop {
            let Some(reply) = read_frame(&mut server).await else {
                return;
            };
            let more = reply.flags() & FLAG_MORE_TO_COME != 0;
            let reply = match &after {
                After::Forward => reply,
                After::Reset => return,
                After::Delay(d) => {
                    tokio::time::sleep(*d).await;
                    reply
                }
                After::WriteConcernError { code, code_name } => {
                    edit_reply(&reply, request_id, |body| {
                        body.insert(
                            "writeConcernError",
                            doc! { "code": *code, "codeName": code_name.clone(),
                            "errmsg": "injected by the test proxy: write concern not satisfied" },
                        );
                    })
                }
                After::WriteErrors {
                    kept,
                    dropped,
                    code,
                } => edit_reply(&reply, request_id, |body| {
                    merge_write_errors(body, kept, dropped, *code);
                }),
                After::AlsoFrom(other) => {
                    if server.write_all(&other.bytes).await.is_err() {
                        return;
                    }
                    let Some(theirs) = read_frame(&mut server).await else {
                        return;
                    };
                    edit_reply(&reply, request_id, |body| append_first_batch(body, &theirs))
                }
            };
            if client.write_all(&reply.bytes).await.is_err() {
                return;
            }
            if !more {
                break;
            }
        }
    }
}

enum After {
    Forward,
    Reset,
    Delay(Duration),
    WriteConcernError {
        code: i32,
        code_name: String,
    },
    WriteErrors {
        /// Original indexes of the documents forwarded, in the order forwarded.
        kept: Vec<usize>,
        /// Original indexes of the documents refused by the proxy.
        dropped: Vec<usize>,
        code: i32,
    },
    /// Send this request (the same command on another collection) once the server answered,
    /// and add its first batch to the answer.
    AlsoFrom(Frame),
}

fn insert_documents(msg: &OpMsg) -> Vec<Document> {
    if let Some((_, docs)) = msg.sequences.iter().find(|(n, _)| n == "documents") {
        return docs.clone();
    }
    msg.body
        .get_array("documents")
        .map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect())
        .unwrap_or_default()
}

/// Indexes of the insert's documents of `consumer` not failed before (and marks them failed).
fn first_sightings(shared: &Mutex<Shared>, msg: &OpMsg, consumer: &str) -> Vec<usize> {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    insert_documents(msg)
        .iter()
        .enumerate()
        .filter(|(_, d)| d.get_str("consumer") == Ok(consumer))
        .filter(|(_, d)| {
            let id = d.get("_id").map(|b| b.to_string()).unwrap_or_default();
            s.failed_once.insert(id)
        })
        .map(|(i, _)| i)
        .collect()
}

/// The insert to forward without the documents at `indexes`, and the reply edit that reports
/// them as failed with `code`.
fn fail_documents(
    shared: &Mutex<Shared>,
    request: &Frame,
    msg: &mut OpMsg,
    indexes: &[usize],
    code: i32,
) -> (Frame, After) {
    let (kept, dropped) = split_insert(msg, indexes);
    shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .documents_failed += dropped.len();
    let frame = msg.to_frame(request.request_id(), 0);
    (
        frame,
        After::WriteErrors {
            kept,
            dropped,
            code,
        },
    )
}

/// Removes the listed documents from an insert; returns the original indexes kept and dropped.
fn split_insert(msg: &mut OpMsg, indexes: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    let mut filter = |docs: Vec<Document>| -> Vec<Document> {
        docs.into_iter()
            .enumerate()
            .filter_map(|(i, d)| {
                if indexes.contains(&i) {
                    dropped.push(i);
                    None
                } else {
                    kept.push(i);
                    Some(d)
                }
            })
            .collect()
    };
    if let Some(seq) = msg.sequences.iter_mut().find(|(n, _)| n == "documents") {
        seq.1 = filter(std::mem::take(&mut seq.1));
    } else if let Ok(arr) = msg.body.get_array("documents") {
        let docs: Vec<Document> = arr
            .iter()
            .filter_map(|b| b.as_document().cloned())
            .collect();
        let docs = filter(docs);
        msg.body.insert(
            "documents",
            docs.into_iter().map(Bson::Document).collect::<Vec<_>>(),
        );
    }
    (kept, dropped)
}

/// Rewrites the server's insert reply as mongos would report a partly failed batch: the
/// server's own write errors mapped back to original indexes, plus the injected ones.
fn merge_write_errors(body: &mut Document, kept: &[usize], dropped: &[usize], code: i32) {
    let mut errors: Vec<Document> = body
        .get_array("writeErrors")
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_document().cloned())
                .map(|mut e| {
                    let i = e.get_i32("index").unwrap_or(0) as usize;
                    let original = kept.get(i).copied().unwrap_or(i);
                    e.insert("index", original as i32);
                    e
                })
                .collect()
        })
        .unwrap_or_default();
    for &i in dropped {
        errors.push(doc! {
            "index": i as i32, "code": code,
            "errmsg": "injected by the test proxy: shard write failed",
        });
    }
    if errors.is_empty() {
        return;
    }
    errors.sort_by_key(|e| e.get_i32("index").unwrap_or(0));
    body.insert("ok", 1.0);
    body.insert(
        "writeErrors",
        errors.into_iter().map(Bson::Document).collect::<Vec<_>>(),
    );
}

/// Adds the documents of `other`'s (a `find` reply's) first batch to `body`'s.
fn append_first_batch(body: &mut Document, other: &Frame) {
    let theirs = OpMsg::parse(other)
        .and_then(|m| {
            m.body
                .get_document("cursor")
                .ok()?
                .get_array("firstBatch")
                .ok()
                .cloned()
        })
        .unwrap_or_default();
    if let Ok(batch) = body
        .get_document_mut("cursor")
        .and_then(|c| c.get_array_mut("firstBatch"))
    {
        batch.extend(theirs);
    }
}

fn edit_reply(reply: &Frame, response_to: i32, edit: impl FnOnce(&mut Document)) -> Frame {
    match OpMsg::parse(reply) {
        Some(mut msg) => {
            edit(&mut msg.body);
            msg.to_frame(reply.request_id(), response_to)
        }
        None => Frame {
            bytes: reply.bytes.clone(),
        },
    }
}
