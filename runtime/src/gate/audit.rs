//! The audit log: one JSON line per decision, hash-chained, group-committed by a single writer
//! thread, with signed checkpoints and size-based rotation. How durable a batch is before its
//! calls are answered is `[audit] durability`: with `"machine"` (the default) it is on stable
//! storage, in the [`crate::gate::journal`], and the log file is flushed in bulk; with
//! `"process"` the call's own task writes it to the log under the writer's lock (in the kernel:
//! it survives `kill -9`; no hand-off to another thread and back, which costs more here than
//! the write), and a flusher thread flushes the log once a record has waited `flush_interval`.
//!
//! A clean stop ends the log with a checkpoint marked `"stop":true`. A start that finds any
//! other last record writes an `unclean_stop` record naming the last record kept, so that a
//! machine crash's loss (at most `flush_interval` of acknowledged records with `"process"`,
//! none with `"machine"`) is visible where it happened.
//!
//! A line is `{"seq":N,"time":"…","prev":"<hash of N-1>","kind":…,<fields>,"hash":"<hash>"}`
//! where `hash` is the sha256 of the line up to (not including) `,"hash"` closed by `}`. The
//! previous hash inside each line chains the records; a checkpoint signs the chain's head with
//! the ed25519 key kept in the state directory. [`verify`] checks all of it.

use crate::config::audit::{AuditMode, AuditSettings, Durability};
use crate::gate::audit_view::RecordFilter;
use crate::gate::journal::Journal;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_FIELD: &str = ",\"hash\":\"";
/// Most records written (and fsynced) together.
const MAX_BATCH: usize = 4096;
/// The first retry of a broken writer, and the longest wait between retries.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// The log is flushed at least this often while records arrive.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
const KEY_FILE: &str = "audit-key";
const PUBLIC_KEY_FILE: &str = "audit-key.pub";

/// Why a record could not be made durable. The call it belongs to fails with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit log is unavailable: {0}")]
pub struct AuditError(pub String);

/// A record on its way to the writer: its fields as a JSON object, serialised by the caller.
struct Pending {
    body: Vec<u8>,
    /// A request to write a checkpoint now (the body is empty).
    seal: bool,
    durable: oneshot::Sender<Result<u64, AuditError>>,
}

/// The handle calls append through. Cloning shares the one writer.
#[derive(Clone)]
pub struct AuditLog {
    sink: Sink,
    /// `[audit] durability` (`None` when off).
    durability: Option<Durability>,
    /// Why the writer cannot write now (`None`: healthy), shared with it.
    health: Arc<Health>,
    /// The directory of the chain this log writes (`None` when off).
    chain: Option<Arc<Path>>,
}

/// Where records go.
#[derive(Clone)]
enum Sink {
    Off,
    /// `"machine"`: to the writer thread, which group-commits through the journal and answers.
    Thread(mpsc::Sender<Pending>),
    /// `"process"`: written by the caller under the writer's lock; flushed by the flusher.
    Inline(Arc<InlineHandle>),
}

/// The writer of a `"process"` log, shared by the callers and the flusher thread.
struct Inline {
    writer: std::sync::Mutex<Writer>,
    /// Wakes the flusher: a record now waits for a flush, the writer broke, or the log closes
    /// (all three seen under `writer`'s lock).
    wake: std::sync::Condvar,
}

/// Held by the handles only: when the last one goes, the flusher flushes, seals and stops.
struct InlineHandle(Arc<Inline>);

impl Drop for InlineHandle {
    fn drop(&mut self) {
        lock(&self.0.writer).closing = true;
        self.0.wake.notify_one();
    }
}

/// The writer behind its lock. A panic while it was held (a bug) leaves the writer's state in
/// doubt: it is taken as it is, and the chain's own checks show anything amiss at the next
/// start; the flusher's failure handling still applies.
fn lock(writer: &std::sync::Mutex<Writer>) -> std::sync::MutexGuard<'_, Writer> {
    writer.lock().unwrap_or_else(|p| p.into_inner())
}

/// The writer's health, read before every call: a call starts only while the writer can
/// write, so no action is taken that could not be recorded.
#[derive(Default)]
struct Health {
    broken: std::sync::atomic::AtomicBool,
    why: std::sync::Mutex<Option<String>>,
}

impl Health {
    fn set(&self, why: Option<String>) {
        let mut slot = self.why.lock().unwrap_or_else(|p| p.into_inner());
        self.broken
            .store(why.is_some(), std::sync::atomic::Ordering::Release);
        *slot = why;
    }
}

impl AuditLog {
    /// A log that records nothing (`mode = "off"`).
    pub fn off() -> AuditLog {
        AuditLog {
            sink: Sink::Off,
            durability: None,
            health: Arc::default(),
            chain: None,
        }
    }

    /// Open (or create) the log in `settings.dir`, recover its tail, and start the writer.
    /// The signing key is created in `state_dir` on first use.
    pub fn open(settings: &AuditSettings, state_dir: &Path) -> Result<AuditLog, AuditError> {
        if settings.mode == AuditMode::Off {
            tracing::warn!("audit log is off ([audit] mode = \"off\"): decisions are not recorded");
            return Ok(AuditLog::off());
        }
        let key = signing_key(state_dir)?;
        let health = Arc::new(Health::default());
        let writer = Writer::open(settings, key, health.clone())?;
        let chain: Arc<Path> = Arc::from(writer.dir.as_path());
        let unstarted =
            |e: std::io::Error| AuditError(format!("cannot start the audit writer: {e}"));
        let sink = match settings.durability {
            Durability::Machine => {
                let (tx, rx) = mpsc::channel::<Pending>();
                std::thread::Builder::new()
                    .name("airlock-audit".into())
                    .spawn(move || writer.run(rx))
                    .map_err(unstarted)?;
                Sink::Thread(tx)
            }
            Durability::Process => {
                let inline = Arc::new(Inline {
                    writer: std::sync::Mutex::new(writer),
                    wake: std::sync::Condvar::new(),
                });
                let flusher = inline.clone();
                std::thread::Builder::new()
                    .name("airlock-audit-flush".into())
                    .spawn(move || flush_loop(&flusher))
                    .map_err(unstarted)?;
                Sink::Inline(Arc::new(InlineHandle(inline)))
            }
        };
        Ok(AuditLog {
            sink,
            durability: Some(settings.durability),
            health,
            chain: Some(chain),
        })
    }

    /// The directory of the chain this log writes: the audit directory, or `chains/N` in it
    /// when other servers write the first ones.
    pub fn chain_dir(&self) -> Option<&Path> {
        self.chain.as_deref()
    }

    pub fn is_on(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// How durable a record is before its call is answered (`None` when the log is off).
    pub fn durability(&self) -> Option<Durability> {
        self.durability
    }

    /// `Ok` while the writer can write (or the log is off); otherwise why not. Checked before
    /// a call runs: a broken writer refuses calls before they act, and recovers by itself
    /// once its writes succeed again.
    pub fn healthy(&self) -> Result<(), AuditError> {
        if !self
            .health
            .broken
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(());
        }
        let why = self.health.why.lock().unwrap_or_else(|p| p.into_inner());
        match &*why {
            Some(why) => Err(AuditError(why.clone())),
            None => Ok(()),
        }
    }

    /// Append a record and wait until it is written as durably as `durability` says. Returns
    /// its sequence number (0 when off).
    pub async fn append<T: Serialize>(&self, kind: &str, record: &T) -> Result<u64, AuditError> {
        if !self.is_on() {
            return Ok(0);
        }
        let mut body = Vec::with_capacity(512);
        body.extend_from_slice(b"\"kind\":");
        serde_json::to_writer(&mut body, kind).map_err(|e| AuditError(e.to_string()))?;
        let fields = serde_json::to_vec(record).map_err(|e| AuditError(e.to_string()))?;
        // `{…}` → `,…` appended after the kind; an empty object adds nothing.
        if fields.len() > 2 {
            body.push(b',');
            body.extend_from_slice(&fields[1..fields.len() - 1]);
        }
        self.send(body, false).await
    }

    /// Write a checkpoint now and wait until it is on disk (a server stopping cleanly ends its
    /// log sealed). Returns the checkpoint's sequence number (0 when off).
    pub async fn seal(&self) -> Result<u64, AuditError> {
        self.send(Vec::new(), true).await
    }

    async fn send(&self, body: Vec<u8>, seal: bool) -> Result<u64, AuditError> {
        let tx = match &self.sink {
            Sink::Off => return Ok(0),
            Sink::Inline(inline) => return inline.0.write(&body, seal),
            Sink::Thread(tx) => tx,
        };
        let (durable, done) = oneshot::channel();
        tx.send(Pending {
            body,
            seal,
            durable,
        })
        .map_err(|_| AuditError("the audit writer has stopped".into()))?;
        done.await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?
    }
}

impl Inline {
    /// Write one record (or the stop's checkpoint) in the caller's thread. A write of a few
    /// hundred bytes to the page cache takes microseconds; the flush is the flusher's.
    fn write(&self, body: &[u8], seal: bool) -> Result<u64, AuditError> {
        let mut w = lock(&self.writer);
        let (was_unflushed, was_broken) = (w.unflushed_since.is_some(), w.broken.is_some());
        let mut buf = std::mem::take(&mut w.scratch);
        let written = if seal {
            w.seal(&mut buf)
        } else {
            let started = Instant::now();
            let written = w.commit([body], &mut buf).map(|seqs| seqs[0]);
            let m = crate::core::metrics::metrics();
            m.audit_write.observe(started.elapsed().as_secs_f64());
            m.audit_batch.observe(1.0);
            written
        };
        w.scratch = buf;
        // The flusher sleeps until something waits for it: the first unflushed record (its
        // deadline), or a writer that just broke (its retry).
        if (!was_unflushed && w.unflushed_since.is_some()) || (!was_broken && w.broken.is_some()) {
            self.wake.notify_one();
        }
        written
    }
}

/// The flusher of a `"process"` log: flushes once the oldest unflushed record has waited
/// `flush_interval`, retries a broken writer, and on close flushes and seals. The flush itself
/// runs without the lock, so calls keep writing meanwhile.
fn flush_loop(inline: &Inline) {
    let mut w = lock(&inline.writer);
    loop {
        let wake = if w.broken.is_some() {
            Some(w.retry_at)
        } else {
            w.unflushed_since.map(|t| t + w.flush_interval)
        };
        if w.closing {
            break;
        }
        w = match wake {
            None => inline.wake.wait(w).unwrap_or_else(|p| p.into_inner()),
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                inline
                    .wake
                    .wait_timeout(w, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
        if w.closing {
            break;
        }
        if w.broken.is_some() {
            if Instant::now() >= w.retry_at {
                let mut buf = std::mem::take(&mut w.scratch);
                w.try_recover(&mut buf);
                w.scratch = buf;
            }
            continue;
        }
        if let Some(flush) = w.due_flush() {
            drop(w);
            let started = Instant::now();
            let done = flush.file.sync_data();
            crate::core::metrics::metrics()
                .audit_flush
                .observe(started.elapsed().as_secs_f64());
            w = lock(&inline.writer);
            w.flush_done(flush, done);
        }
    }
    // Closing: every handle is gone. Seal (which flushes), after one more try if broken.
    let mut buf = std::mem::take(&mut w.scratch);
    if w.broken.is_some() {
        w.try_recover(&mut buf);
    }
    if !w.sealed {
        let _ = w.seal(&mut buf);
    }
}

/// A flush of a `"process"` log in progress, started under the lock and run without it.
struct Flush {
    /// The flusher's own descriptor of the log file: Linux reports a write-back error once
    /// per open file, so a flush through the writers' descriptor could take an error that a
    /// seal's or a rotation's flush then would not see (or the other way round).
    file: Arc<File>,
    /// Which file it was (a rotation in between flushed that file itself).
    generation: u64,
    /// The file's length when it started: what it makes durable. Then, when.
    upto: u64,
    started: Instant,
}

/// The ed25519 key signing checkpoints, created (mode 0600) on first start.
pub fn signing_key(state_dir: &Path) -> Result<SigningKey, AuditError> {
    let (seed, created) =
        crate::core::files::load_or_create(&state_dir.join(KEY_FILE)).map_err(AuditError)?;
    let key = SigningKey::from_bytes(&seed);
    if created {
        std::fs::write(
            state_dir.join(PUBLIC_KEY_FILE),
            format!("{}\n", hex::encode(key.verifying_key().as_bytes())),
        )
        .map_err(|e| {
            AuditError(format!(
                "cannot write the public key beside {}: {e}",
                state_dir.join(KEY_FILE).display()
            ))
        })?;
        tracing::info!(key = %hex::encode(key.verifying_key().as_bytes()), "created the audit signing key");
    }
    Ok(key)
}

/// The audit key of a state directory that has one (an export must not sign with a key made
/// up for a wrong directory).
pub fn existing_signing_key(state_dir: &Path) -> Result<SigningKey, AuditError> {
    if !state_dir.join(KEY_FILE).is_file() {
        return Err(AuditError(format!(
            "{} has no audit key: is it the server's state directory (--state-dir, or the \
             configuration's state_dir)?",
            state_dir.display()
        )));
    }
    signing_key(state_dir)
}

/// The public half of the state directory's audit key, hex.
pub fn public_key(state_dir: &Path) -> Result<String, AuditError> {
    Ok(hex::encode(
        signing_key(state_dir)?.verifying_key().as_bytes(),
    ))
}

/// The directory of the chains after the first, in the audit directory: `chains/2`, `chains/3`…
const CHAINS_DIR: &str = "chains";
/// Most chains in one audit directory: servers writing to it at once.
pub const MAX_CHAINS: u32 = 64;
/// The public key of the audit directory's chains, written by the first server.
const SIGNER_FILE: &str = "signer.pub";

/// The key (hex) the chains of `audit_dir` are signed with, as its first server wrote it.
pub fn signer_of(audit_dir: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(audit_dir.join(SIGNER_FILE))?
        .trim()
        .to_owned())
}

/// Take the first chain of `audit_dir` no other process writes: the directory itself, then
/// `chains/2`, `chains/3`… Each server on an audit directory writes a chain of its own (one
/// writer per chain, held by the lock returned), and a restarted server continues the first
/// chain free, recovering whatever its last writer left.
/// The chains of one directory are signed by one key: servers of another state directory
/// (another key) are refused, since nobody could verify the directory as a whole.
fn claim_chain(audit_dir: &Path, key: &VerifyingKey) -> Result<(PathBuf, File), AuditError> {
    let fail = |e: std::io::Error| AuditError(format!("{}: {e}", audit_dir.display()));
    std::fs::create_dir_all(audit_dir).map_err(fail)?;
    let signer = audit_dir.join(SIGNER_FILE);
    let ours = format!("{}\n", hex::encode(key.as_bytes()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&signer)
        .and_then(|mut f| f.write_all(ours.as_bytes()).and_then(|()| f.sync_all()));
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let theirs = std::fs::read_to_string(&signer).map_err(fail)?;
            // Empty: another server is writing it this instant, with this directory's key
            // or not; its own check decides.
            if !theirs.is_empty() && theirs != ours {
                return Err(AuditError(format!(
                    "{} is signed by another key ({}, a server of another state directory): \
                     give each state directory its own [audit] dir",
                    audit_dir.display(),
                    theirs.trim()
                )));
            }
        }
        Err(e) => return Err(fail(e)),
    }
    for n in 1..=MAX_CHAINS {
        let dir = chain_path(audit_dir, n);
        let fail = |e: std::io::Error| AuditError(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(fail)?;
        let lock = File::create(dir.join(".lock")).map_err(fail)?;
        let claimed = match lock.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => false,
            Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
        };
        if claimed {
            if n > 1 {
                tracing::info!(
                    chain = n,
                    "the audit directory's first chain is written by another server: this one writes chain {n}"
                );
            }
            return Ok((dir, lock));
        }
    }
    Err(AuditError(format!(
        "{} has {MAX_CHAINS} chains, each written by a running server: no more servers may \
         write to it; give this one its own [audit] dir",
        audit_dir.display()
    )))
}

/// The directory of chain `n` (from 1) of `audit_dir`.
fn chain_path(audit_dir: &Path, n: u32) -> PathBuf {
    if n == 1 {
        audit_dir.to_path_buf()
    } else {
        audit_dir.join(CHAINS_DIR).join(n.to_string())
    }
}

/// The chains of `audit_dir` that hold records, as `(number, directory)`, first chain first.
pub fn chains(audit_dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut found = vec![(1, audit_dir.to_path_buf())];
    match std::fs::read_dir(audit_dir.join(CHAINS_DIR)) {
        Ok(entries) => {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name();
                let name = name.to_str().unwrap_or_default();
                // Written as the writer writes it (`7`, not `07`): one directory per chain.
                if let Some(n) = name
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (2..=MAX_CHAINS).contains(n) && n.to_string() == name)
                {
                    found.push((n, e.path()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    found.sort();
    let mut kept = Vec::with_capacity(found.len());
    for (n, dir) in found {
        if n == 1 || !log_files(&dir)?.is_empty() {
            kept.push((n, dir));
        }
    }
    Ok(kept)
}

fn file_name(first_seq: u64) -> String {
    format!("audit-{first_seq:012}.jsonl")
}

/// The log files in `dir`, oldest first.
pub fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a checkpoint signs: the chain's head at its sequence number, and whether it is the
/// checkpoint of a clean stop (so that a log cut after an ordinary checkpoint cannot be made
/// to read as stopped cleanly by adding `"stop":true` to it).
fn checkpoint_message(seq: u64, prev: &str, stop: bool) -> Vec<u8> {
    let mut m = b"airlock-audit-checkpoint\0".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(prev.as_bytes());
    if stop {
        m.extend_from_slice(b"\0stop");
    }
    m
}

/// Move what is queued into `batch` (up to [`MAX_BATCH`]), stopping at a seal request.
fn drain(rx: &mpsc::Receiver<Pending>, batch: &mut Vec<Pending>, seal: &mut Option<Pending>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) if p.seal => {
                *seal = Some(p);
                break;
            }
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
}

/// The single writer: owns the open file and the chain's head.
struct Writer {
    dir: PathBuf,
    file: File,
    /// The same file opened again for the flusher (`durability = "process"`), whose flush runs
    /// unlocked (see [`Flush::file`]).
    flush_file: Arc<File>,
    /// `file`'s path.
    path: PathBuf,
    file_bytes: u64,
    max_file_bytes: u64,
    checkpoint_every: u64,
    seq: u64,
    head: String,
    key: SigningKey,
    /// Set after a failed write: nothing more is accepted (fail closed) until a retry puts the
    /// log back in a known state (`recover`).
    broken: Option<String>,
    /// Shared with the handles: `broken`, as calls see it.
    health: Arc<Health>,
    /// The next retry of a broken writer, and the wait after it.
    retry_at: Instant,
    backoff: Duration,
    /// The last record written is a checkpoint.
    sealed: bool,
    /// Where each batch is made durable before it is acknowledged.
    journal: Journal,
    /// When the log was last flushed: at least once a second, so that little of it depends
    /// on the journal at any time.
    flushed: Instant,
    /// `[audit] durability`, and with `Process` the longest a written record waits for a flush.
    durability: Durability,
    flush_interval: Duration,
    /// With `Process`: when the oldest record not yet flushed was written, and the bytes
    /// written since the last flush. They are kept until flushed so that a recovery can write
    /// them again: after a failed `fdatasync` the kernel may have dropped those pages, and a
    /// second one would not say so.
    unflushed_since: Option<Instant>,
    unflushed: Vec<u8>,
    /// Counts the files this writer has written (a flush knows whether it is still current).
    generation: u64,
    /// The buffer lines are built in by callers writing inline (`"process"`).
    scratch: Vec<u8>,
    /// Every handle is gone: the flusher seals and stops.
    closing: bool,
    /// The log's durable tail is a clean stop's checkpoint, or the log is empty (just opened
    /// after a clean stop, or just sealed). With `Process` the next batch is then flushed before
    /// it is answered: a machine crash must never leave a clean stop as the last durable record
    /// when answered records followed it (the next start would see nothing amiss).
    tail_is_stop: bool,
    /// Held (locked) for the writer's life: one writer per log.
    _lock: File,
}

impl Writer {
    fn open(
        settings: &AuditSettings,
        key: SigningKey,
        health: Arc<Health>,
    ) -> Result<Writer, AuditError> {
        let (dir, lock) = claim_chain(&settings.dir, &key.verifying_key())?;
        let dir = &dir;
        let fail = |e: std::io::Error| AuditError(format!("{}: {e}", dir.display()));
        let Tail {
            mut seq,
            mut head,
            path,
            stopped,
        } = recover(dir, &key.verifying_key())?;
        let path = path.unwrap_or_else(|| dir.join(file_name(seq + 1)));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(fail)?;
        let mut journal = Journal::open(dir).map_err(fail)?;
        let (replayed, stray) = replay(&journal, &mut file, &mut seq, &mut head)?;
        // Whatever the last process appended may still be only in the page cache (it was
        // killed): flush it before the journal that covers it is overwritten, and erase the
        // journal so that its frames never come back.
        file.sync_data()
            .and_then(|_| journal.invalidate())
            .map_err(fail)?;
        let file_bytes = file.metadata().map_err(fail)?.len();
        // The new file's directory entry must survive a crash too.
        File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
        tracing::info!(
            dir = %dir.display(),
            next = seq + 1,
            durability = settings.durability.name(),
            "audit log open"
        );
        let flush_file = Arc::new(File::open(&path).map_err(fail)?);
        let mut writer = Writer {
            dir: dir.clone(),
            file,
            flush_file,
            path,
            file_bytes,
            max_file_bytes: settings.max_file_bytes.bytes(),
            checkpoint_every: settings.checkpoint_every,
            seq,
            head,
            key,
            broken: None,
            health,
            retry_at: Instant::now(),
            backoff: RETRY_FIRST,
            sealed: false,
            journal,
            flushed: Instant::now(),
            durability: settings.durability,
            flush_interval: settings.flush_interval,
            unflushed_since: None,
            unflushed: Vec::new(),
            generation: 0,
            scratch: Vec::with_capacity(4096),
            closing: false,
            tail_is_stop: stopped,
            _lock: lock,
        };
        if seq > 0 && (!stopped || replayed > 0 || stray > 0) {
            writer.record_unclean_stop()?;
            writer.tail_is_stop = false;
        }
        Ok(writer)
    }

    /// The last process stopped without sealing the log (killed, or the machine stopped): say
    /// so in the log, after the last record kept, durably. With `durability = "process"` a
    /// machine crash may have lost the records acknowledged in the last `flush_interval`
    /// before it; this record is where they would have been.
    fn record_unclean_stop(&mut self) -> Result<(), AuditError> {
        tracing::warn!(
            last = self.seq,
            "the audit log was not closed by a clean stop; its last record is {}: recorded",
            self.seq
        );
        let record = format!(
            "\"kind\":\"audit\",\"event\":\"unclean_stop\",\"last\":{}",
            self.seq
        );
        let mut buf = Vec::new();
        let (seq0, head0) = (self.seq, self.head.clone());
        self.push_line(&mut buf, record.as_bytes());
        if let Err(e) = self
            .file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data())
        {
            (self.seq, self.head) = (seq0, head0);
            return Err(AuditError(format!(
                "{}: recording the unclean stop: {e}",
                self.dir.display()
            )));
        }
        self.file_bytes += buf.len() as u64;
        Ok(())
    }

    fn run(mut self, rx: mpsc::Receiver<Pending>) {
        let mut batch: Vec<Pending> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            // A broken writer wakes up to retry even when nothing arrives (calls are refused
            // before they send anything).
            let first = if self.broken.is_some() {
                let wait = self.retry_at.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(p) => Some(p),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(p) => Some(p),
                    Err(_) => break,
                }
            };
            if self.broken.is_some() && Instant::now() >= self.retry_at {
                self.try_recover(&mut buf);
            }
            let Some(first) = first else { continue };
            let mut seal = None;
            if first.seal {
                seal = Some(first);
            } else {
                batch.push(first);
                // Group commit without waiting: the batch is whatever arrived while the last
                // one was being written. Waiting for more (tried: up to 1 ms while calls were
                // in progress) cost more in latency than the shared writes saved in CPU.
                drain(&rx, &mut batch, &mut seal);
            }
            if !batch.is_empty() {
                let started = Instant::now();
                let committed = self.commit(batch.iter().map(|p| &p.body[..]), &mut buf);
                let m = crate::core::metrics::metrics();
                m.audit_write.observe(started.elapsed().as_secs_f64());
                m.audit_batch.observe(batch.len() as f64);
                match committed {
                    Ok(seqs) => {
                        for (p, seq) in batch.drain(..).zip(seqs) {
                            let _ = p.durable.send(Ok(seq));
                        }
                    }
                    Err(e) => {
                        for p in batch.drain(..) {
                            let _ = p.durable.send(Err(e.clone()));
                        }
                    }
                }
            }
            if let Some(p) = seal {
                let _ = p.durable.send(self.seal(&mut buf));
            }
        }
        // Every handle is gone: seal on the way out, if there is time and no seal came last
        // (a broken writer tries once more first).
        if self.broken.is_some() {
            self.try_recover(&mut buf);
        }
        if !self.sealed {
            let _ = self.seal(&mut buf);
        }
    }

    /// With `durability = "process"`: the flush to run now, if the oldest unflushed record
    /// has waited `flush_interval` (and the writer is not broken).
    fn due_flush(&self) -> Option<Flush> {
        let since = self.unflushed_since?;
        if self.broken.is_some() || since.elapsed() < self.flush_interval {
            return None;
        }
        Some(Flush {
            file: self.flush_file.clone(),
            generation: self.generation,
            upto: self.file_bytes,
            started: Instant::now(),
        })
    }

    /// A flush from [`Writer::due_flush`] ended: what it covered is on stable storage, and what
    /// was written meanwhile waits for the next one (counted from this one's start). A failed
    /// flush breaks the writer like a failed write: calls are refused until a retry writes
    /// the unflushed records again and flushes them.
    fn flush_done(&mut self, flush: Flush, done: std::io::Result<()>) {
        if flush.generation != self.generation {
            // Rotated meanwhile, which flushed the file it was; an error is still an error.
            if let Err(e) = done {
                self.fail(format!("flushing the audit log failed: {e}"));
            }
            return;
        }
        match done {
            Ok(()) => {
                // What was flushed by other means meanwhile (a seal) is gone from `unflushed`
                // already: only the bytes before `upto` that are still in it are drained.
                let start = self.file_bytes - self.unflushed.len() as u64;
                let covered = flush.upto.saturating_sub(start) as usize;
                self.unflushed.drain(..covered.min(self.unflushed.len()));
                if self.unflushed.is_empty() {
                    self.flushed();
                } else {
                    self.unflushed_since = Some(flush.started);
                }
            }
            Err(e) => {
                self.fail(format!(
                    "flushing the audit log failed: {e} (records answered since the last flush are written again before calls are admitted)"
                ));
            }
        }
    }

    /// Everything written is on stable storage.
    fn flushed(&mut self) {
        self.unflushed_since = None;
        self.unflushed.clear();
        if self.unflushed.capacity() > 1 << 20 {
            self.unflushed = Vec::new();
        }
    }

    /// Mark the writer broken: calls are refused from now until a retry succeeds. With
    /// `Process`, the records already answered are flushed at once rather than at the retry
    /// (best effort: the retry writes them again and flushes in any case).
    fn fail(&mut self, why: String) -> AuditError {
        if !self.unflushed.is_empty() {
            let _ = self
                .file
                .set_len(self.file_bytes)
                .and_then(|_| self.file.sync_data());
        }
        if self.broken.is_none() {
            tracing::error!(
                "{why}; calls are refused until the audit log can be written again (retrying)"
            );
            self.backoff = RETRY_FIRST;
            self.retry_at = Instant::now() + self.backoff;
        }
        self.broken = Some(why.clone());
        self.health.set(Some(why.clone()));
        AuditError(why)
    }

    /// Put the log back in a known state after a failed write: cut whatever a failed write
    /// left after the last durable record (with `Process`, after the last flush, and write
    /// again what was answered since), flush, and erase the journal (which may hold frames of
    /// the failed batch, whose calls were told it failed). Then record the outage itself. On success calls are admitted again; otherwise the next retry waits twice as
    /// long, up to [`RETRY_MAX`].
    fn try_recover(&mut self, buf: &mut Vec<u8>) {
        let Some(why) = self.broken.clone() else {
            return;
        };
        let attempt = (|| -> std::io::Result<()> {
            if !self.unflushed.is_empty() {
                // In place, over the same blocks: nothing is cut, so a full disk cannot make
                // this lose what it rewrites. (`file` appends wherever a write is aimed.)
                use std::os::unix::fs::FileExt;
                let at = self.file_bytes - self.unflushed.len() as u64;
                OpenOptions::new()
                    .write(true)
                    .open(&self.path)?
                    .write_all_at(&self.unflushed, at)?;
            }
            self.file.set_len(self.file_bytes)?;
            self.file.sync_data()?;
            // A rotation may have failed after creating the next file.
            File::open(&self.dir)?.sync_all()?;
            self.flushed();
            self.journal.invalidate()?;
            self.journal.reset();
            if self.file_bytes >= self.max_file_bytes {
                self.rotate(buf)?;
            }
            Ok(())
        })();
        if let Err(e) = attempt {
            self.retry_later(&e);
            return;
        }
        self.broken = None;
        let record = format!(
            "\"kind\":\"audit\",\"event\":\"recovered\",\"after\":{}",
            serde_json::Value::String(why.clone())
        );
        let (seq0, head0) = (self.seq, self.head.clone());
        buf.clear();
        self.push_line(buf, record.as_bytes());
        if let Err(e) = self.make_durable(buf) {
            (self.seq, self.head) = (seq0, head0);
            self.broken = Some(why);
            self.retry_later(&e);
            return;
        }
        self.file_bytes += buf.len() as u64;
        self.sealed = false;
        self.health.set(None);
        tracing::warn!(after = %why, "the audit log is writable again; calls are admitted");
    }

    /// A retry failed: the next one waits twice as long, up to [`RETRY_MAX`].
    fn retry_later(&mut self, e: &std::io::Error) {
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        self.retry_at = Instant::now() + self.backoff;
        tracing::warn!(
            retry_in_ms = self.backoff.as_millis() as u64,
            "the audit log is still unavailable: {e}"
        );
    }

    /// Write the checkpoint of a clean stop (`"stop":true`) and fsync it.
    fn seal(&mut self, buf: &mut Vec<u8>) -> Result<u64, AuditError> {
        if let Some(why) = &self.broken {
            return Err(AuditError(why.clone()));
        }
        buf.clear();
        let (seq0, head0) = (self.seq, self.head.clone());
        self.push_checkpoint(buf, true);
        if let Err(e) = self.file.write_all(buf).and_then(|_| self.file.sync_data()) {
            (self.seq, self.head) = (seq0, head0);
            return Err(self.fail(format!("writing the audit log failed: {e}")));
        }
        self.file_bytes += buf.len() as u64;
        self.sealed = true;
        self.tail_is_stop = true;
        self.flushed();
        // The log is flushed: nothing journaled is needed any more, nor may it come back.
        if let Err(e) = self.journal.invalidate() {
            tracing::warn!("cannot erase the audit journal after a checkpoint: {e}");
        }
        Ok(self.seq)
    }

    /// Write the batch (and any checkpoint it reaches), durably. Returns the sequence number
    /// of each of the batch's records.
    fn commit<'b>(
        &mut self,
        batch: impl IntoIterator<Item = &'b [u8]>,
        buf: &mut Vec<u8>,
    ) -> Result<Vec<u64>, AuditError> {
        if let Some(why) = &self.broken {
            return Err(AuditError(why.clone()));
        }
        let (seq0, head0) = (self.seq, self.head.clone());
        buf.clear();
        let batch = batch.into_iter();
        let mut seqs = Vec::with_capacity(batch.size_hint().0);
        for body in batch {
            self.push_line(buf, body);
            seqs.push(self.seq);
            if self.seq.is_multiple_of(self.checkpoint_every) {
                self.push_checkpoint(buf, false);
            }
        }
        let written = self.make_durable(buf);
        if let Err(e) = written {
            (self.seq, self.head) = (seq0, head0);
            return Err(self.fail(format!("writing the audit log failed: {e}")));
        }
        self.file_bytes += buf.len() as u64;
        self.sealed = false;
        if self.file_bytes >= self.max_file_bytes
            && let Err(e) = self.rotate(buf)
        {
            // The batch is durable; only the next file could not be started (retried).
            self.fail(format!("rotating the audit log failed: {e}"));
        }
        Ok(seqs)
    }

    /// Append `lines` to the log, as durably as `durability` asks before their calls are
    /// answered. `Machine`: through the journal, one in-place write (a batch too large for it
    /// goes to the log with a flush). `Process`: written to the log, flushed when due.
    fn make_durable(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if self.durability == Durability::Process {
            self.file.write_all(lines)?;
            if self.tail_is_stop {
                self.file.sync_data()?;
                self.tail_is_stop = false;
                self.flushed();
            } else {
                self.unflushed.extend_from_slice(lines);
                self.unflushed_since.get_or_insert_with(Instant::now);
            }
            return Ok(());
        }
        if !Journal::fits(lines.len()) {
            self.file.write_all(lines)?;
            self.file.sync_data()?;
            self.journal.reset();
            return Ok(());
        }
        if self.journal.must_wrap(lines.len()) {
            // The frames about to be overwritten must be in the log for good first.
            self.file.sync_data()?;
            self.journal.reset();
        }
        self.journal.write(lines)?;
        self.file.write_all(lines)?;
        if self.flushed.elapsed() >= LOG_FLUSH_INTERVAL {
            self.file.sync_data()?;
            self.journal.reset();
            self.flushed = Instant::now();
        }
        Ok(())
    }

    /// Append one record line (with sequence number, time, chain and hash) to `buf`.
    fn push_line(&mut self, buf: &mut Vec<u8>, body: &[u8]) {
        self.seq += 1;
        let start = buf.len();
        let _ = write!(
            buf,
            "{{\"seq\":{},\"time\":\"{}\",\"prev\":\"{}\",",
            self.seq,
            now(),
            self.head
        );
        // In a fleet, each record names the replica that wrote it (`audit merge`).
        if let Some(field) = crate::core::ids::replica_field() {
            buf.extend_from_slice(field.as_bytes());
        }
        buf.extend_from_slice(body);
        buf.push(b'}');
        let hash = sha256_hex(&buf[start..]);
        buf.pop();
        buf.extend_from_slice(HASH_FIELD.as_bytes());
        buf.extend_from_slice(hash.as_bytes());
        buf.extend_from_slice(b"\"}\n");
        self.head = hash;
    }

    /// Append a checkpoint signing the current head; `stop` marks the one a clean stop ends
    /// the log with.
    fn push_checkpoint(&mut self, buf: &mut Vec<u8>, stop: bool) {
        let signature = self
            .key
            .sign(&checkpoint_message(self.seq + 1, &self.head, stop));
        let body = format!(
            "\"kind\":\"checkpoint\",\"key\":\"{}\",\"signature\":\"{}\"{}",
            hex::encode(self.key.verifying_key().as_bytes()),
            hex::encode(signature.to_bytes()),
            if stop { ",\"stop\":true" } else { "" }
        );
        self.push_line(buf, body.as_bytes());
    }

    /// Seal the current file with a checkpoint and continue the chain in a new one.
    fn rotate(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        buf.clear();
        let (seq0, head0) = (self.seq, self.head.clone());
        self.push_checkpoint(buf, false);
        let sealed = self.file.write_all(buf).and_then(|_| self.file.sync_data());
        if let Err(e) = sealed {
            // Cut by the recovery; the checkpoint is written again with the same number.
            (self.seq, self.head) = (seq0, head0);
            return Err(e);
        }
        self.file_bytes += buf.len() as u64;
        // All of this file is durable, whatever happens to the next one.
        self.flushed();
        let path = self.dir.join(file_name(self.seq + 1));
        self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.flush_file = Arc::new(File::open(&path)?);
        self.path = path.clone();
        self.generation += 1;
        // The new file is the one a recovery would cut back: nothing of it is written yet.
        self.file_bytes = 0;
        self.flushed();
        self.journal.reset();
        File::open(&self.dir)?.sync_all()?;
        tracing::info!(file = %path.display(), "audit log rotated");
        Ok(())
    }
}

/// Append to the log (`file`, whose last record is `seq` with hash `head`) the acknowledged
/// records the journal holds beyond it, in order and chained; then flush it. A crash of the
/// machine may have lost the log's unflushed tail, never the journal's. Returns how many
/// records were put back, and how many journaled ones did not continue the log.
fn replay(
    journal: &Journal,
    file: &mut File,
    seq: &mut u64,
    head: &mut String,
) -> Result<(u64, usize), AuditError> {
    let fail = |e: std::io::Error| AuditError(format!("replaying the audit journal: {e}"));
    let mut ahead = std::collections::BTreeMap::new();
    for frame in journal.frames().map_err(fail)? {
        for line in frame.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(text) = std::str::from_utf8(line) else {
                continue;
            };
            if let Ok(r) = check_line(text)
                && r.seq > *seq
            {
                // After a wrap the newest frames come first: the first copy of a record wins.
                ahead.entry(r.seq).or_insert((text.to_owned(), r));
            }
        }
    }
    let mut out = Vec::new();
    let mut replayed = 0u64;
    while let Some((line, r)) = ahead.remove(&(*seq + 1)) {
        if r.prev != *head {
            break;
        }
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        (*seq, *head) = (r.seq, r.hash);
        replayed += 1;
    }
    if replayed > 0 {
        file.write_all(&out)
            .and_then(|_| file.sync_data())
            .map_err(fail)?;
        tracing::warn!(
            records = replayed,
            last = *seq,
            "recovered acknowledged audit records from the journal (the machine stopped before the log was flushed)"
        );
    }
    if !ahead.is_empty() {
        tracing::warn!(
            records = ahead.len(),
            "the audit journal holds records that do not continue the log; ignored"
        );
    }
    Ok((replayed, ahead.len()))
}

/// Where the chain continues, as [`recover`] found it.
struct Tail {
    /// The last complete record's sequence number and hash.
    seq: u64,
    head: String,
    /// The file to append to (none yet: the first file is named after the next record).
    path: Option<PathBuf>,
    /// The last record is the checkpoint of a clean stop.
    stopped: bool,
}

/// Find the chain's head: the last complete record of the newest file. A torn last line (a
/// crash mid-write: never acknowledged) is cut off.
fn recover(dir: &Path, key: &VerifyingKey) -> Result<Tail, AuditError> {
    let files = log_files(dir).map_err(|e| AuditError(format!("{}: {e}", dir.display())))?;
    // A newest file without a complete record (a machine crash right after a rotation lost
    // its content) is still where the chain continues, if its name says so.
    let mut empty_newest: Option<&PathBuf> = None;
    for path in files.iter().rev() {
        let fail = |e: &dyn std::fmt::Display| AuditError(format!("{}: {e}", path.display()));
        let mut bytes = std::fs::read(path).map_err(|e| fail(&e))?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            tracing::warn!(file = %path.display(), bytes = bytes.len() - complete, "cutting a torn last audit record (the journal puts back any that was acknowledged)");
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| fail(&e))?;
            f.set_len(complete as u64)
                .and_then(|_| f.sync_all())
                .map_err(|e| fail(&e))?;
            bytes.truncate(complete);
        }
        let Some(last) = bytes[..complete.saturating_sub(1)]
            .split(|b| *b == b'\n')
            .next_back()
            .filter(|l| !l.is_empty())
        else {
            if empty_newest.is_none() && Some(path) == files.last() {
                empty_newest = Some(path);
            }
            continue;
        };
        let line = std::str::from_utf8(last).map_err(|e| fail(&e))?;
        let record = check_line(line).map_err(|e| {
            AuditError(format!(
                "{}: the last record is damaged ({e}); run `airlock audit verify` and move the damaged file aside",
                path.display()
            ))
        })?;
        let next = empty_newest
            .filter(|p| p.file_name() == Some(std::ffi::OsStr::new(&file_name(record.seq + 1))))
            .unwrap_or(path);
        // A newest file left empty means a rotation after the last record, never a stop; and
        // a stop is one only when its checkpoint signs it (a log cut after an ordinary
        // checkpoint marked `"stop":true` is not a clean stop: the start records it as
        // unclean).
        let signed_stop = record.value["signature"]
            .as_str()
            .and_then(|s| hex::decode(s).ok())
            .and_then(|b| Signature::from_slice(&b).ok())
            .is_some_and(|sig| {
                key.verify(&checkpoint_message(record.seq, &record.prev, true), &sig)
                    .is_ok()
            });
        let stopped = record.kind == "checkpoint"
            && record.value["stop"] == true
            && signed_stop
            && next.as_path() == path.as_path();
        return Ok(Tail {
            seq: record.seq,
            head: record.hash,
            path: Some(next.clone()),
            stopped,
        });
    }
    Ok(Tail {
        seq: 0,
        head: GENESIS.to_owned(),
        path: empty_newest.cloned(),
        stopped: true,
    })
}

/// The chain fields of a line.
struct Checked {
    seq: u64,
    prev: String,
    hash: String,
    kind: String,
    value: serde_json::Value,
}

/// Parse a line and check its own hash.
fn check_line(line: &str) -> Result<Checked, String> {
    let at = line
        .rfind(HASH_FIELD)
        .ok_or_else(|| "no hash field".to_owned())?;
    let claimed = line[at + HASH_FIELD.len()..]
        .strip_suffix("\"}")
        .ok_or_else(|| "malformed hash field".to_owned())?;
    let mut hashed = line[..at].to_owned();
    hashed.push('}');
    if sha256_hex(hashed.as_bytes()) != claimed {
        return Err("its hash does not match its content (edited)".into());
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let seq = value["seq"]
        .as_u64()
        .ok_or_else(|| "no sequence number".to_owned())?;
    let prev = value["prev"]
        .as_str()
        .ok_or_else(|| "no previous hash".to_owned())?
        .to_owned();
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    Ok(Checked {
        seq,
        prev,
        hash: claimed.to_owned(),
        kind,
        value,
    })
}

/// What [`verify`] found in an intact log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub checkpoints: u64,
    pub files: usize,
    pub last_seq: u64,
    /// Whether the last record is a checkpoint (the log was closed cleanly or just rotated).
    pub sealed: bool,
    /// Whether the last record is the checkpoint of a clean stop.
    pub stopped: bool,
    /// `unclean_stop` records: starts after a stop that did not close the log.
    pub unclean_stops: u64,
}

/// A hex ed25519 public key.
pub fn verifying_key(key: &str) -> Result<VerifyingKey, String> {
    let key: [u8; 32] = hex::decode(key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the public key is not 32 hex bytes")?;
    VerifyingKey::from_bytes(&key).map_err(|e| format!("bad public key: {e}"))
}

/// A hash chain checked one record at a time: each line's hash, sequence numbers without gaps
/// or reordering, each `prev` equal to the previous line's hash, and every checkpoint's
/// signature.
pub struct ChainCheck {
    key: VerifyingKey,
    /// The hash the next record must name as `prev` (`None`: whatever the first one names, for
    /// a chain checked from the middle).
    head: Option<String>,
    pub found: Verified,
}

impl ChainCheck {
    /// From record 1 (the genesis hash).
    pub fn from_start(key: VerifyingKey) -> ChainCheck {
        ChainCheck {
            key,
            head: Some(GENESIS.to_owned()),
            found: Verified::default(),
        }
    }

    /// From record `first` on, whatever it follows (an excerpt of a log).
    pub fn from(key: VerifyingKey, first: u64) -> ChainCheck {
        ChainCheck {
            key,
            head: None,
            found: Verified {
                last_seq: first.saturating_sub(1),
                ..Verified::default()
            },
        }
    }

    /// Check the next record, `text` (one line without its newline), found `at` (for the
    /// error).
    pub fn push(&mut self, text: &str, at: &str) -> Result<(), String> {
        let v = &mut self.found;
        let expected = v.last_seq + 1;
        let r = check_line(text).map_err(|e| format!("record {expected} ({at}): {e}"))?;
        if r.seq != expected {
            return Err(format!(
                "record {expected} ({at}) is missing or out of order: found record {} instead",
                r.seq
            ));
        }
        if self.head.as_ref().is_some_and(|h| *h != r.prev) {
            return Err(format!(
                "record {expected} ({at}) does not follow record {}: the chain is broken",
                v.last_seq
            ));
        }
        if r.kind == "checkpoint" {
            let signature = r.value["signature"]
                .as_str()
                .and_then(|s| hex::decode(s).ok())
                .and_then(|b| Signature::from_slice(&b).ok())
                .ok_or_else(|| format!("checkpoint {expected} ({at}) has no valid signature"))?;
            let claims_stop = r.value["stop"] == true;
            let signed = |stop| {
                self.key
                    .verify(&checkpoint_message(r.seq, &r.prev, stop), &signature)
                    .is_ok()
            };
            // A stop the signature does not cover (a log written before stops were signed,
            // or a mark added later) is an ordinary checkpoint: the log is not shown as
            // stopped cleanly.
            let stop = if claims_stop && signed(true) {
                true
            } else if signed(false) {
                false
            } else {
                return Err(format!(
                    "checkpoint {expected} ({at}) is not signed by the given key (forged)"
                ));
            };
            v.checkpoints += 1;
            v.sealed = true;
            v.stopped = stop;
        } else {
            v.records += 1;
            v.sealed = false;
            v.stopped = false;
        }
        if r.kind == "audit" && r.value["event"] == "unclean_stop" {
            v.unclean_stops += 1;
        }
        v.last_seq = r.seq;
        self.head = Some(r.hash);
        Ok(())
    }
}

/// Check `files` (in order) as one chain starting at record 1 ([`ChainCheck`]), every
/// checkpoint's signature against `key` (hex public key). The error names the first bad record.
pub fn verify(files: &[PathBuf], key: &str) -> Result<Verified, String> {
    let mut chain = ChainCheck::from_start(verifying_key(key)?);
    for path in files {
        chain.found.files += 1;
        let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut reader = BufReader::new(f);
        let mut line = String::new();
        let mut n = 0u64;
        loop {
            line.clear();
            let read = reader
                .read_line(&mut line)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if read == 0 {
                break;
            }
            n += 1;
            let at = format!("{} line {n}", path.display());
            let Some(text) = line.strip_suffix('\n') else {
                return Err(format!(
                    "record {} ({at}) is truncated: the line does not end",
                    chain.found.last_seq + 1
                ));
            };
            chain.push(text, &at)?;
        }
    }
    Ok(chain.found)
}

/// A line to print, with its record's time.
type Shown = (Option<SystemTime>, String);

/// One line of the log as `audit tail` and `audit search` print it, if `filter` selects it:
/// the line itself, or with `human` one readable line; with the record's time, by which lines
/// of several chains are put in order (the readable line then starts with its chain's number,
/// `c2`). A line that is not a record (a torn write) is selected only by an empty filter, and
/// shown as it is.
fn shown_line(line: &str, filter: &RecordFilter, human: bool, chain: Option<u32>) -> Option<Shown> {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(r) if filter.matches(&r) => Some((
            crate::gate::audit_view::record_time(&r),
            if human {
                match chain {
                    Some(n) => format!("c{n:<3} {}", crate::gate::audit_view::human(&r)),
                    None => crate::gate::audit_view::human(&r),
                }
            } else {
                crate::core::text::escape_json_controls(line).into_owned()
            },
        )),
        Ok(_) => None,
        // Shown to a person reading everything; JSON output stays JSON.
        Err(_) => (human && filter.is_empty())
            .then(|| (None, crate::core::text::escape_controls(line).into_owned())),
    }
}

/// Lines of several chains (each line's time, chain and place in it), merged by time; the
/// lines of one chain stay as they are (a clock set back does not reorder a chain). A line
/// without a time (a torn write) goes with the line before it in its chain.
fn by_time(lines: Vec<(Option<SystemTime>, usize, usize, String)>) -> Vec<String> {
    let mut keyed = Vec::with_capacity(lines.len());
    let mut last: std::collections::HashMap<usize, Option<SystemTime>> = Default::default();
    for (time, chain, order, line) in lines {
        let time = match time {
            Some(t) => *last.entry(chain).insert_entry(Some(t)).get(),
            None => last.get(&chain).copied().flatten(),
        };
        keyed.push((time, chain, order, line));
    }
    if last.len() > 1 {
        keyed.sort_by_key(|(time, chain, order, _)| (*time, *chain, *order));
    }
    keyed.into_iter().map(|(.., l)| l).collect()
}

/// One chain followed by `audit tail`: its newest file and how far it was read.
struct Followed {
    dir: PathBuf,
    /// The chain's number, shown when there are several.
    number: u32,
    current: Option<PathBuf>,
    offset: u64,
}

impl Followed {
    /// The last `lines` records of the chain in `dir` that `filter` selects, and the chain
    /// followed from its end.
    fn start(
        dir: PathBuf,
        number: u32,
        chain: Option<u32>,
        lines: usize,
        filter: &RecordFilter,
        human: bool,
    ) -> std::io::Result<(Followed, Vec<Shown>)> {
        let files = log_files(&dir)?;
        let mut offset = 0u64;
        // The last `lines` selected records, from the newest file back (a rotation, or a
        // filter, may leave the newest one with fewer).
        let mut selected = std::collections::VecDeque::new();
        let mut newest_read = false;
        for (i, path) in files.iter().enumerate().rev() {
            if selected.len() >= lines {
                break;
            }
            let mut at = 0u64;
            let text = read_complete(path, &mut at)?;
            if i + 1 == files.len() {
                (offset, newest_read) = (at, true);
            }
            let found: Vec<_> = text
                .lines()
                .filter_map(|l| shown_line(l, filter, human, chain))
                .collect();
            let wanted = lines - selected.len();
            for line in found.into_iter().rev().take(wanted) {
                selected.push_front(line);
            }
        }
        if let Some(path) = files.last()
            && !newest_read
        {
            // The newest file was not read above (nothing was wanted): follow from its end.
            read_complete(path, &mut offset)?;
        }
        let followed = Followed {
            dir,
            number,
            current: files.last().cloned(),
            offset,
        };
        Ok((followed, selected.into()))
    }

    /// The records written since the last look, across rotations.
    fn new_lines(&mut self) -> std::io::Result<String> {
        let mut text = match &self.current {
            Some(path) => read_complete(path, &mut self.offset)?,
            None => String::new(),
        };
        // Newer files mean the current one was sealed: finish it, then read each newer one in
        // turn (names sort by their first record).
        let later: Vec<PathBuf> = log_files(&self.dir)?
            .into_iter()
            .filter(|f| self.current.as_ref().is_none_or(|c| f > c))
            .collect();
        for path in later {
            if let Some(current) = &self.current {
                text.push_str(&read_complete(current, &mut self.offset)?);
            }
            self.offset = 0;
            text.push_str(&read_complete(&path, &mut self.offset)?);
            self.current = Some(path);
        }
        Ok(text)
    }
}

/// Print the last `lines` records of the log in `audit_dir` (all its chains, by time) that
/// `filter` selects and, with `follow`, every selected record written after them, across
/// rotations and in chains that servers starting meanwhile begin.
pub async fn tail(
    audit_dir: &Path,
    lines: usize,
    follow: bool,
    filter: &RecordFilter,
    human: bool,
) -> std::io::Result<()> {
    let mut followed = Vec::new();
    let mut first = Vec::new();
    let all = chains(audit_dir)?;
    let several = all.len() > 1;
    for (c, (n, dir)) in all.into_iter().enumerate() {
        let (f, last) = Followed::start(dir, n, several.then_some(n), lines, filter, human)?;
        followed.push(f);
        first.extend(
            last.into_iter()
                .enumerate()
                .map(|(order, (time, line))| (time, c, order, line)),
        );
    }
    let first = by_time(first);
    let mut out = std::io::stdout().lock();
    for line in &first[first.len().saturating_sub(lines)..] {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    drop(out);
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // A chain begun since (another server started): followed from its beginning.
        for (n, dir) in chains(audit_dir)? {
            if !followed.iter().any(|f| f.dir == dir) {
                followed.push(Followed {
                    current: None,
                    dir,
                    number: n,
                    offset: 0,
                });
            }
        }
        let mut new = Vec::new();
        let several = followed.len() > 1;
        for (c, f) in followed.iter_mut().enumerate() {
            let text = f.new_lines()?;
            let chain = several.then_some(f.number);
            new.extend(
                text.lines()
                    .filter_map(|l| shown_line(l, filter, human, chain))
                    .enumerate()
                    .map(|(order, (time, line))| (time, c, order, line)),
            );
        }
        let mut out = std::io::stdout().lock();
        for line in by_time(new) {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
}

/// Print every record of `chains` (each chain's number and files, oldest first; the chains
/// merged by time) that `filter` selects, up to `limit`; how many were selected.
pub fn search(
    chains: &[(u32, Vec<PathBuf>)],
    filter: &RecordFilter,
    human: bool,
    limit: Option<usize>,
) -> std::io::Result<usize> {
    // Each chain's lines, its files opened one at a time.
    type Lines<'a> = Box<dyn Iterator<Item = std::io::Result<String>> + 'a>;
    let mut readers: Vec<Lines<'_>> = chains
        .iter()
        .map(|(_, files)| -> Lines<'_> {
            Box::new(files.iter().flat_map(|path| -> Lines<'_> {
                match File::open(path) {
                    Ok(f) => Box::new(BufReader::new(f).lines()),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            }))
        })
        .collect();
    // Each chain's next selected line.
    let several = chains.len() > 1;
    let next = |chain: &mut dyn Iterator<Item = std::io::Result<String>>, n: u32| {
        for line in chain {
            match line {
                Ok(l) => {
                    if let Some(shown) = shown_line(&l, filter, human, several.then_some(n)) {
                        return Ok(Some(shown));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    };
    let mut heads = Vec::with_capacity(readers.len());
    for (r, (n, _)) in readers.iter_mut().zip(chains) {
        heads.push(next(r, *n)?);
    }
    let mut out = std::io::stdout().lock();
    let mut found = 0;
    while limit.is_none_or(|l| found < l) {
        // The earliest head (a line without a time goes first: it follows its chain's last).
        let Some(c) = (0..heads.len())
            .filter(|&c| heads[c].is_some())
            .min_by_key(|&c| heads[c].as_ref().map(|(time, _)| *time))
        else {
            break;
        };
        let (_, line) = heads[c].take().expect("a head was chosen");
        writeln!(out, "{line}")?;
        found += 1;
        heads[c] = next(&mut readers[c], chains[c].0)?;
    }
    Ok(found)
}

/// The complete lines of `path` from `offset`, which moves past them.
fn read_complete(path: &Path, offset: &mut u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(*offset))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    // Only whole lines (a write may be in progress), decoded once whole.
    bytes.truncate(bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1));
    *offset += bytes.len() as u64;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::units::ByteSize;

    fn settings(dir: &Path, checkpoint_every: u64, max: ByteSize) -> AuditSettings {
        AuditSettings {
            mode: AuditMode::Durable,
            durability: Durability::Machine,
            flush_interval: crate::config::audit::DEFAULT_FLUSH_INTERVAL,
            dir: dir.join("audit"),
            checkpoint_every,
            max_file_bytes: max,
            redact_patterns: vec![],
        }
    }

    #[tokio::test]
    async fn records_chain_rotate_recover_and_verify() {
        let dir = std::env::temp_dir().join(format!("airlock-audit-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = settings(&dir, 3, ByteSize::kib(4));
        let log = AuditLog::open(&s, &dir).unwrap();
        let mut seqs = Vec::new();
        for i in 0..40 {
            let padding = "x".repeat(200);
            seqs.push(
                log.append("call", &serde_json::json!({ "i": i, "pad": padding }))
                    .await
                    .unwrap(),
            );
        }
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
        log.seal().await.unwrap();
        drop(log);
        let key = public_key(&dir).unwrap();
        let v = verify(&log_files(&s.dir).unwrap(), &key).unwrap();
        assert_eq!(v.records, 40);
        assert!(v.files > 1, "{v:?}");
        assert!(v.checkpoints >= 13, "{v:?}");
        assert!(v.sealed);
        assert!(v.stopped, "a clean stop: {v:?}");

        // A log cut after an ordinary checkpoint, with `"stop":true` added to it (its hash made
        // again, as a forger would): it verifies, but not as stopped cleanly.
        let files = log_files(&s.dir).unwrap();
        let first = std::fs::read_to_string(&files[0]).unwrap();
        let lines: Vec<&str> = first.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("\"kind\":\"checkpoint\""))
            .expect("a rotation checkpoint");
        let forged_dir = dir.join("forged");
        std::fs::create_dir_all(&forged_dir).unwrap();
        let checkpoint = lines[at];
        let cut = checkpoint.rfind(HASH_FIELD).unwrap();
        let mut body = checkpoint[..cut].to_owned();
        body.push_str(",\"stop\":true");
        let mut hashed = body.clone();
        hashed.push('}');
        let forged_line = format!("{body}{HASH_FIELD}{}\"}}", sha256_hex(hashed.as_bytes()));
        let mut forged = lines[..at].join("\n");
        forged.push('\n');
        forged.push_str(&forged_line);
        forged.push('\n');
        let forged_file = forged_dir.join(files[0].file_name().unwrap());
        std::fs::write(&forged_file, forged).unwrap();
        let cut_log = verify(&[forged_file], &public_key(&dir).unwrap()).unwrap();
        assert!(cut_log.sealed && !cut_log.stopped, "{cut_log:?}");
        // A server started on it does not take the mark for a clean stop either.
        let forged_settings = AuditSettings {
            dir: forged_dir.clone(),
            ..settings(&dir, 3, ByteSize::kib(4))
        };
        let reopened = AuditLog::open(&forged_settings, &dir).unwrap();
        reopened.seal().await.unwrap();
        drop(reopened);
        let after = verify(&log_files(&forged_dir).unwrap(), &public_key(&dir).unwrap()).unwrap();
        assert_eq!(after.unclean_stops, 1, "{after:?}");

        // Reopening continues the chain.
        let log = AuditLog::open(&s, &dir).unwrap();
        let next = log.append("call", &serde_json::json!({})).await.unwrap();
        assert_eq!(next, v.last_seq + 1);
        let v2 = verify(&log_files(&s.dir).unwrap(), &key).unwrap();
        assert_eq!(v2.records, 41);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A rotation that a crash cut short of any record: the chain continues in the new file.
    #[test]
    fn an_empty_newest_file_is_where_the_chain_continues() {
        let dir = std::env::temp_dir().join(format!("airlock-audit-empty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = settings(&dir, 1000, ByteSize(1));
        let mut w = Writer::open(&s, signing_key(&dir).unwrap(), Arc::default()).unwrap();
        w.commit([&b"\"kind\":\"call\""[..]], &mut Vec::new())
            .unwrap();
        drop(w);
        let files = log_files(&s.dir).unwrap();
        let newest = files.last().unwrap();
        assert_eq!(newest.file_name().unwrap(), file_name(3).as_str());
        assert_eq!(std::fs::metadata(newest).unwrap().len(), 0);
        let tail = recover(&s.dir, &signing_key(&dir).unwrap().verifying_key()).unwrap();
        assert_eq!((tail.seq, tail.path.as_ref()), (2, Some(newest)));
        assert!(!tail.stopped);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What the machine's crash does to an unflushed log: its tail is gone (here: cut mid-way
    /// through a record). The journal puts every acknowledged record back.
    #[test]
    fn the_journal_restores_records_the_log_lost() {
        let dir =
            std::env::temp_dir().join(format!("airlock-audit-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = settings(&dir, 1000, ByteSize::mib(64));
        let key = signing_key(&dir).unwrap();
        let mut w = Writer::open(&s, key.clone(), Arc::default()).unwrap();
        let mut buf = Vec::new();
        for batch in 0..5 {
            let records: Vec<Vec<u8>> = (0..3)
                .map(|i| format!("\"kind\":\"call\",\"n\":{}", batch * 3 + i).into_bytes())
                .collect();
            w.commit(records.iter().map(|r| &r[..]), &mut buf).unwrap();
        }
        let path = log_files(&s.dir).unwrap().pop().unwrap();
        drop(w);
        let text = std::fs::read(&path).unwrap();
        // Keep 4 records and half of the 5th.
        let cut = text
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(3)
            .unwrap()
            .0
            + 40;
        std::fs::write(&path, &text[..cut]).unwrap();
        let w = Writer::open(&s, key.clone(), Arc::default()).unwrap();
        // The 15 records, then the start's record of the unclean stop.
        assert_eq!(w.seq, 16);
        drop(w);
        let after = std::fs::read(&path).unwrap();
        assert_eq!(after[..text.len()], text[..]);
        let last = std::str::from_utf8(&after[text.len()..]).unwrap();
        let last: serde_json::Value = serde_json::from_str(last.trim_end()).unwrap();
        assert_eq!(last["event"], "unclean_stop");
        assert_eq!(last["last"], 15);
        let v = verify(&log_files(&s.dir).unwrap(), &public_key(&dir).unwrap()).unwrap();
        assert_eq!((v.records, v.unclean_stops, v.stopped), (16, 1, false));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Through the handle: records written inline are on file when `append` returns; the
    /// flusher flushes them without being asked; dropping the last handle seals the log.
    #[tokio::test]
    async fn a_process_log_writes_inline_flushes_by_itself_and_seals_on_close() {
        let dir = std::env::temp_dir().join(format!("airlock-audit-inline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = settings(&dir, 3, ByteSize::kib(4));
        s.durability = Durability::Process;
        s.flush_interval = Duration::from_millis(2);
        let log = AuditLog::open(&s, &dir).unwrap();
        assert_eq!(log.durability(), Some(Durability::Process));
        let mut last = 0;
        for i in 0..40 {
            last = log
                .append(
                    "call",
                    &serde_json::json!({ "i": i, "pad": "x".repeat(200) }),
                )
                .await
                .unwrap();
            let text: String = log_files(&s.dir)
                .unwrap()
                .iter()
                .map(|f| std::fs::read_to_string(f).unwrap())
                .collect();
            assert!(
                text.contains(&format!("\"seq\":{last},")),
                "record {last} not written"
            );
        }
        let Sink::Inline(inline) = &log.sink else {
            panic!("a process log writes inline")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&inline.0.writer).unflushed_since.is_some() {
            assert!(Instant::now() < deadline, "never flushed");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(log);
        let key = public_key(&dir).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let v = loop {
            let v = verify(&log_files(&s.dir).unwrap(), &key).unwrap();
            if v.stopped {
                break v;
            }
            assert!(Instant::now() < deadline, "never sealed: {v:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(v.records, 40);
        assert!(v.last_seq > last);
        assert!(v.files > 1, "rotated: {v:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `durability = "process"`: a batch is written to the log (no journal) and answered at
    /// once; the log is flushed once the oldest unflushed record has waited `flush_interval`.
    /// Stopped without a seal (as by `kill -9`), the next start keeps every written record and
    /// records the unclean stop; a clean stop leaves none.
    #[test]
    fn process_durability_writes_then_flushes_within_the_interval() {
        let dir =
            std::env::temp_dir().join(format!("airlock-audit-process-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = settings(&dir, 1000, ByteSize::mib(64));
        s.durability = Durability::Process;
        s.flush_interval = Duration::from_millis(5);
        let key = signing_key(&dir).unwrap();
        let mut w = Writer::open(&s, key.clone(), Arc::default()).unwrap();
        let mut buf = Vec::new();
        let record = |n: u64| format!("\"kind\":\"call\",\"n\":{n}").into_bytes();
        // A new log's first batch is flushed before it is answered: until then the durable
        // tail (nothing) would look like a clean stop.
        w.commit([&record(1)[..]], &mut buf).unwrap();
        assert_eq!(w.unflushed_since, None);
        w.commit([&record(2)[..]], &mut buf).unwrap();
        let since = w.unflushed_since.expect("written, not yet flushed");
        w.commit([&record(3)[..]], &mut buf).unwrap();
        assert_eq!(
            w.unflushed_since,
            Some(since),
            "the oldest unflushed record counts"
        );
        assert_eq!(w.unflushed.iter().filter(|b| **b == b'\n').count(), 2);
        assert!(w.due_flush().is_none(), "not due yet");
        std::thread::sleep(Duration::from_millis(6));
        let flush = w.due_flush().expect("due");
        // Written while the flush runs (unlocked): it waits for the next one.
        w.commit([&record(4)[..]], &mut buf).unwrap();
        let done = flush.file.sync_data();
        let started = flush.started;
        w.flush_done(flush, done);
        assert_eq!(w.unflushed_since, Some(started));
        assert_eq!(w.unflushed.iter().filter(|b| **b == b'\n').count(), 1);
        std::thread::sleep(Duration::from_millis(6));
        let flush = w.due_flush().expect("due");
        let done = flush.file.sync_data();
        w.flush_done(flush, done);
        assert_eq!(w.unflushed_since, None);
        assert!(w.unflushed.is_empty());
        assert!(Journal::open(&s.dir).unwrap().frames().unwrap().is_empty());
        w.commit([&record(5)[..]], &mut buf).unwrap();
        drop(w);

        let mut w = Writer::open(&s, key.clone(), Arc::default()).unwrap();
        assert_eq!(w.seq, 6, "5 records and the unclean stop");
        assert!(!w.tail_is_stop);
        w.seal(&mut buf).unwrap();
        drop(w);
        let mut w = Writer::open(&s, key, Arc::default()).unwrap();
        assert_eq!(w.seq, 7, "a clean stop adds nothing at the next start");
        // After a clean stop the first batch is flushed before it is answered, the next not.
        assert!(w.tail_is_stop);
        w.commit([&record(6)[..]], &mut buf).unwrap();
        assert_eq!((w.unflushed_since, w.tail_is_stop), (None, false));
        w.commit([&record(7)[..]], &mut buf).unwrap();
        assert!(w.unflushed_since.is_some());
        drop(w);
        let v = verify(&log_files(&s.dir).unwrap(), &public_key(&dir).unwrap()).unwrap();
        assert_eq!((v.records, v.checkpoints, v.unclean_stops), (8, 1, 1));
        assert!(!v.stopped);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
