//! The admin listener: a unix socket in the state directory (mode 0600, and only the server's
//! own uid is answered), one JSON request and one JSON response per connection. It is never an
//! MCP endpoint. `airlock ctl` is its client.

use crate::control::live::{Live, Reloaded};
use crate::control::operator::{self, Change, ChangeOutcome};
use crate::gate::overrides::Overrides;
use crate::pipeline::running::CallView;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// What `airlock ctl` asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Status {
        /// In a fleet: every replica's.
        #[serde(default)]
        fleet: bool,
    },
    Calls {
        /// In a fleet: every replica's.
        #[serde(default)]
        fleet: bool,
    },
    Change {
        change: Change,
        /// Accept a kill of a principal no key, configuration or running call names (a
        /// token's subject the server has not seen).
        #[serde(default)]
        force: bool,
    },
    Reload,
    /// The calls waiting for an operator's answer.
    Approvals,
    /// Content-safety detections per tool and rule since the start.
    Detections,
    /// The tools held for review (`airlock.lock`) and what changed in each.
    Catalog,
    /// `ctl catalog approve` wrote `tool`, described as `metadata_sha256`, into the lock:
    /// reload, check that it serves, and record the approval.
    CatalogApproved {
        tool: String,
        metadata_sha256: String,
        /// What the lock approved before, if anything (for the record).
        #[serde(default)]
        previous_metadata_sha256: Option<String>,
    },
    /// Approve or deny one, as `operator` (the name the four-eyes rule compares with the
    /// caller).
    Answer {
        id: String,
        approve: bool,
        operator: String,
        #[serde(default)]
        reason: Option<String>,
    },
}

/// The answer: `{"ok":true,"result":…}` or `{"ok":false,"error":"…"}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Answer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<Status>),
    Calls {
        calls: Vec<CallView>,
    },
    Changed(ChangeOutcome),
    Reloaded(Reloaded),
    Approvals {
        approvals: Vec<crate::gate::approval::PendingView>,
    },
    Answered {
        answered: crate::gate::approval::PendingView,
        approve: bool,
    },
    Detections {
        detections: Vec<crate::gate::safety::TallyView>,
    },
    /// The tools held for review, and the lock file (none: the embedded default).
    Catalog {
        held_tools: Vec<HeldView>,
        lock_file: Option<String>,
    },
    /// A held tool approved: it serves again.
    CatalogApproved {
        approved: String,
        metadata_sha256: String,
    },
    /// Every replica's answer (`--fleet`), and the live replicas that gave none in time.
    Fleet {
        replicas: Vec<ReplicaAnswer>,
        not_answering: Vec<String>,
    },
}

/// A tool held for review, as `ctl catalog diff` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldView {
    pub tool: String,
    pub why: String,
    /// As its component describes it now.
    pub current: crate::config::lock::Pinned,
    /// As the lock approved it, if it does.
    pub locked: Option<crate::config::lock::Pinned>,
}

/// One replica's answer to `ctl … --fleet`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplicaAnswer {
    pub replica: String,
    pub answer: Answer,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// The server's id on its state directory (`ctl --server`).
    pub server: String,
    pub pid: u32,
    /// `stdio`, `http ADDR`, or `call TOOL`.
    pub serving: String,
    /// The directory of this server's audit chain (each server on a state directory writes
    /// its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_chain: Option<String>,
    pub version: String,
    pub config: String,
    pub uptime_s: u64,
    pub components: usize,
    pub tools: usize,
    pub running_calls: usize,
    /// Calls waiting for an operator's answer.
    #[serde(default)]
    pub approvals_waiting: usize,
    pub audit: bool,
    /// Why the audit log cannot be written now (calls are refused until it can).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_unavailable: Option<String>,
    /// `[audit] durability` while the log is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_durability: Option<String>,
    pub overrides: Overrides,
    /// In a fleet: this replica's id and whether it is current (`[fleet]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// Why the server should be sent no calls now (`/readyz` answers 503), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready: Option<String>,
}

/// The directory of the admin sockets in the state directory: one per serving process, so
/// that several servers (one per MCP client on stdio, say) share one state directory.
/// `<id>.sock` is a server's socket, `<id>.lock` is held by it while it runs.
pub const SERVERS_DIR: &str = "servers";

/// Most servers on one state directory at once.
pub const MAX_SERVERS: u32 = 64;

/// This process's admin socket, bound.
pub struct Bound {
    pub listener: std::os::unix::net::UnixListener,
    /// The server's id among those on its state directory: the first number from 1 no running
    /// server holds (a restart takes it again; so does the cgroup named after it).
    pub id: String,
    pub path: PathBuf,
    /// `servers/<id>.lock`, locked for the process's life: what makes the id this server's.
    _claim: std::fs::File,
}

/// A server found on a state directory.
#[derive(Debug, Clone)]
pub struct Running {
    pub id: String,
    pub socket: PathBuf,
}

/// Claim the first free server id on `state_dir` and bind its admin socket,
/// `<state_dir>/servers/<id>.sock`: mode 0600, created under a temporary name and renamed into
/// place so that it is never reachable with looser permissions. Bound before the process
/// confines itself (no unix socket can be made after that) and before any thread exists.
pub fn bind(state_dir: &Path) -> Result<Bound> {
    use std::os::unix::fs::DirBuilderExt;
    // A server of a version before several servers per state directory: it neither locks
    // the overrides nor is found by `ctl`, so a kill would not reach it.
    let legacy = state_dir.join(LEGACY_SOCKET);
    if std::os::unix::net::UnixStream::connect(&legacy).is_ok() {
        bail!(
            "{} answers: an airlock of an earlier version serves with this state directory; \
             stop it first (servers of this version share the directory, that one does not)",
            legacy.display()
        );
    }
    let dir = state_dir.join(SERVERS_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut claimed = None;
    for n in 1..=MAX_SERVERS {
        let id = n.to_string();
        let path = dir.join(format!("{id}.lock"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let lock = options
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match lock.try_lock() {
            Ok(()) => {
                claimed = Some((id, lock));
                break;
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                bail!("cannot lock {}: {e}", path.display())
            }
        }
    }
    let (id, claim) = claimed.with_context(|| {
        format!(
            "{MAX_SERVERS} servers already serve with the state directory {}: no more may",
            state_dir.display()
        )
    })?;
    // The id is ours: a socket left under it is a dead server's.
    let path = dir.join(format!("{id}.sock"));
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot remove the stale socket {}: {e}", path.display()),
    }
    let tmp = dir.join(format!(".{id}.sock.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("cannot bind the admin socket {}", tmp.display()))?;
    listener
        .set_nonblocking(true)
        .context("cannot make the admin socket non-blocking")?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot install the admin socket {}", path.display()))?;
    Ok(Bound {
        listener,
        id,
        path,
        _claim: claim,
    })
}

/// The socket of servers before several per state directory, in the state directory itself.
const LEGACY_SOCKET: &str = "admin.sock";

/// The ids held now on `state_dir` (`<id>.lock` locked by a process), this process's own
/// included: servers running, and servers starting that have no socket yet.
pub fn claimed(state_dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(server_files(state_dir, ".lock")?
        .into_iter()
        .filter(|(_, lock)| is_held(lock))
        .map(|(n, _)| n.to_string())
        .collect())
}

/// The servers on `state_dir` now, by id: every socket in its `servers` directory whose id a
/// process holds. (By the lock, not by connecting: a confined server may not make a unix
/// socket.) A socket whose id nobody holds (its server was killed) is removed.
pub fn running(state_dir: &Path) -> std::io::Result<Vec<Running>> {
    let mut found = Vec::new();
    for (n, socket) in server_files(state_dir, ".sock")? {
        if is_held(&socket.with_file_name(format!("{n}.lock"))) {
            found.push(Running {
                id: n.to_string(),
                socket,
            });
        } else {
            let _ = std::fs::remove_file(&socket);
        }
    }
    Ok(found)
}

/// The files `<id><suffix>` of the `servers` directory, by id (none when it does not exist).
fn server_files(state_dir: &Path, suffix: &str) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let entries = match std::fs::read_dir(state_dir.join(SERVERS_DIR)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for e in entries {
        let e = e?;
        if let Some(n) = id_of(&e.file_name(), suffix) {
            found.push((n, e.path()));
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// The id in `name` (`<id><suffix>`), written as the server writes it (`7`, not `07`).
fn id_of(name: &std::ffi::OsStr, suffix: &str) -> Option<u32> {
    let name = name.to_str()?.strip_suffix(suffix)?;
    let n: u32 = name.parse().ok()?;
    ((1..=MAX_SERVERS).contains(&n) && n.to_string() == name).then_some(n)
}

/// Whether a process holds the lock file `path` (opened read-only: looking creates nothing,
/// and a read-only state directory can be looked at).
fn is_held(path: &Path) -> bool {
    std::fs::File::open(path)
        .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}

/// What a server says of itself in `ctl status` and `ctl ls`.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    /// `stdio`, `http ADDR`, or `call TOOL` (`airlock call`).
    pub serving: String,
    /// Its audit chain's directory, when the log is on.
    pub audit_chain: Option<PathBuf>,
}

/// Answer admin connections until the process ends.
pub async fn serve(bound: Bound, live: Arc<Live>, identity: Identity) {
    let Bound { listener, path, .. } = bound;
    let identity = Arc::new(identity);
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("admin socket unusable, operators cannot reach this server: {e}");
            return;
        }
    };
    let started = Instant::now();
    let me = rustix::process::geteuid().as_raw();
    // In a fleet: `ctl … --fleet` on any replica asks this one too.
    if let Some(fleet) = live.operator().fleet.get().cloned()
        && let Some(mut asks) = fleet.take_asks()
    {
        let (live, identity) = (live.clone(), identity.clone());
        tokio::spawn(async move {
            while let Some(ask) = asks.recv().await {
                let request = match ask.what.as_str() {
                    "status" => Request::Status { fleet: false },
                    "calls" => Request::Calls { fleet: false },
                    _ => continue,
                };
                let answer = match handle(request, &live, "fleet", started, &identity).await {
                    Ok(a) => serde_json::to_value(a).unwrap_or_default(),
                    Err(_) => continue,
                };
                fleet.reply(&ask.reply, answer).await;
            }
        });
    }
    tracing::info!(socket = %path.display(), "admin socket listening");
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("admin socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (uid, pid) = match stream.peer_cred() {
            Ok(c) => (c.uid(), c.pid()),
            Err(e) => {
                tracing::warn!("admin socket: cannot read the peer's credentials, refused: {e}");
                continue;
            }
        };
        if uid != me {
            tracing::warn!(uid, "admin socket: connection from another uid refused");
            continue;
        }
        let live = live.clone();
        let identity = identity.clone();
        tokio::spawn(async move {
            let by = match pid {
                Some(pid) => format!("uid:{uid} pid:{pid}"),
                None => format!("uid:{uid}"),
            };
            if let Err(e) = connection(stream, &live, &by, started, &identity).await {
                tracing::warn!("admin socket: {e:#}");
            }
        });
    }
}

async fn connection(
    stream: UnixStream,
    live: &Live,
    by: &str,
    started: Instant,
    identity: &Identity,
) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST);
    if reader.read_line(&mut line).await? == 0 {
        // Closed without a request (a client that only checked the socket): nothing to answer.
        return Ok(());
    }
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => match handle(request, live, by, started, identity).await {
            Ok(answer) => Response {
                ok: true,
                result: Some(answer),
                error: None,
            },
            Err(e) => Response {
                ok: false,
                result: None,
                error: Some(format!("{e:#}")),
            },
        },
        Err(e) => Response {
            ok: false,
            result: None,
            error: Some(format!("malformed request: {e}")),
        },
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await?;
    Ok(())
}

async fn handle(
    request: Request,
    live: &Live,
    by: &str,
    started: Instant,
    identity: &Identity,
) -> Result<Answer> {
    let operator = live.operator();
    match request {
        Request::Status { fleet: true } | Request::Calls { fleet: true } => {
            let fleet = operator.fleet.get().ok_or_else(|| {
                anyhow::anyhow!("this server is not in a fleet (no [fleet] store)")
            })?;
            let what = if matches!(request, Request::Status { .. }) {
                "status"
            } else {
                "calls"
            };
            let (answers, mut not_answering) =
                fleet.ask_all(what).await.map_err(anyhow::Error::msg)?;
            let mut replicas = Vec::with_capacity(answers.len());
            for a in answers {
                let replica = a["replica"].as_str().unwrap_or("?").to_owned();
                match serde_json::from_value::<ReplicaAnswer>(a) {
                    Ok(r) => replicas.push(r),
                    Err(_) => not_answering
                        .push(format!("{replica} (an answer this version cannot read)")),
                }
            }
            replicas.sort_by(|a, b| a.replica.cmp(&b.replica));
            Ok(Answer::Fleet {
                replicas,
                not_answering,
            })
        }
        Request::Status { .. } => {
            let airlock = live.current();
            Ok(Answer::Status(Box::new(Status {
                server: identity.id.clone(),
                pid: std::process::id(),
                serving: identity.serving.clone(),
                audit_chain: identity
                    .audit_chain
                    .as_ref()
                    .map(|d| d.display().to_string()),
                version: env!("CARGO_PKG_VERSION").into(),
                config: airlock.catalog().policy.origin.clone(),
                uptime_s: started.elapsed().as_secs(),
                components: airlock.catalog().components.len(),
                tools: airlock.tools().len(),
                running_calls: operator.running.len(),
                approvals_waiting: operator.approvals.queue.len(),
                audit: airlock.audit().is_on(),
                audit_unavailable: airlock.audit().healthy().err().map(|e| e.0),
                audit_durability: airlock.audit().durability().map(|d| d.name().to_owned()),
                overrides: Overrides::clone(&operator.overrides.current()),
                not_ready: live.not_ready(),
                fleet: operator.fleet.get().map(|f| match f.admits() {
                    Ok(()) => format!("replica {}, current", f.replica),
                    Err(e) => format!("replica {}, NOT CURRENT: {e}", f.replica),
                }),
            })))
        }
        Request::Calls { .. } => Ok(Answer::Calls {
            calls: operator.running.list(),
        }),
        Request::Change { change, force } => {
            let airlock = live.current();
            let outcome = operator::apply(&airlock, operator, &change, by, force).await?;
            // Also when this server found the change already made: another server on the
            // state directory made it, and this one's clients have not been told yet.
            if matches!(change, Change::Kill { .. } | Change::Revive { .. }) {
                live.tools_changed();
            }
            Ok(Answer::Changed(outcome))
        }
        Request::Reload => Ok(Answer::Reloaded(live.reload(by).await?)),
        Request::Approvals => Ok(Answer::Approvals {
            approvals: operator
                .approvals
                .list()
                .await
                .map_err(anyhow::Error::msg)?,
        }),
        Request::Catalog => {
            let airlock = live.current();
            let catalog = airlock.catalog();
            Ok(Answer::Catalog {
                held_tools: catalog
                    .held()
                    .iter()
                    .map(|(tool, h)| HeldView {
                        tool: tool.clone(),
                        why: h.why.clone(),
                        current: h.current.clone(),
                        locked: h.locked.clone(),
                    })
                    .collect(),
                lock_file: catalog
                    .policy
                    .trust
                    .lock_file
                    .as_ref()
                    .map(|p| p.display().to_string()),
            })
        }
        Request::CatalogApproved {
            tool,
            metadata_sha256,
            previous_metadata_sha256,
        } => {
            // Reloaded here unless the lock's watcher got there first.
            if let Some(h) = live.current().catalog().held().get(&tool) {
                anyhow::ensure!(
                    h.current.metadata_sha256 == metadata_sha256,
                    "tool {tool} describes itself differently again since it was approved; look \
                     at `airlock ctl catalog diff` once more"
                );
                live.reload(&format!("catalog-approve ({by})")).await?;
            }
            let airlock = live.current();
            let catalog = airlock.catalog();
            if let Some(h) = catalog.held().get(&tool) {
                anyhow::bail!("tool {tool} is still held after the reload: {}", h.why);
            }
            let now = catalog
                .lockable()
                .pinned
                .get(&tool)
                .ok_or_else(|| anyhow::anyhow!("no component declares {tool} now"))?;
            anyhow::ensure!(
                now.metadata_sha256 == metadata_sha256,
                "tool {tool} serves as described by {}, not as approved ({metadata_sha256})",
                now.metadata_sha256
            );
            let record = serde_json::json!({
                "action": "catalog_approve",
                "by": by,
                "tool": tool,
                "component": now.component,
                "component_sha256": now.component_sha256,
                "metadata_sha256": metadata_sha256,
                "previous_metadata_sha256": previous_metadata_sha256,
            });
            if airlock.audit().is_on() {
                airlock
                    .audit()
                    .append("operator", &record)
                    .await
                    .map_err(|e| anyhow::anyhow!("the approval's audit record failed: {e}"))?;
            }
            tracing::warn!(target: "airlock::operator", %tool, by, "catalog change approved; the tool serves");
            Ok(Answer::CatalogApproved {
                approved: tool,
                metadata_sha256,
            })
        }
        Request::Detections => Ok(Answer::Detections {
            detections: operator.detections.list(),
        }),
        Request::Answer {
            id,
            approve,
            operator: name,
            reason,
        } => {
            // What the operator typed reaches the caller's result, the audit log and the log:
            // redacted against every secret of the policy, as every other such string is.
            let redactor = live.current().catalog().redactor.clone();
            let name = redactor.redact(&name).into_owned();
            let reason = reason.map(|r| redactor.redact(&r).into_owned());
            let by = format!("operator {name} ({by})");
            let said = reason
                .as_deref()
                .map(|r| crate::core::text::escape_controls(r).into_owned());
            match operator
                .approvals
                .answer(&id, approve, &name, by.clone(), reason)
                .await
            {
                Ok(answered) => {
                    // One line per operator answer, like every other operator action.
                    tracing::warn!(
                        target: "airlock::operator",
                        ticket = %id, tool = %answered.tool, principal = %answered.principal,
                        reason = said.as_deref().unwrap_or(""),
                        "{}: {} {} of {} by {}",
                        crate::core::text::escape_controls(&by),
                        if approve { "approved" } else { "denied" },
                        answered.asking,
                        answered.tool,
                        answered.principal,
                    );
                    // In a fleet the call may wait on another replica, which records the
                    // answer it receives; this one records that its operator gave it.
                    if operator.fleet.get().is_some() {
                        let record = serde_json::json!({
                            "event": "answer_given", "ticket": id, "by": by, "approve": approve,
                            "waiting_on": answered.replica,
                        });
                        let audit = live.current().audit().clone();
                        if audit.is_on() {
                            audit.append("approval", &record).await.map_err(|e| {
                                anyhow::anyhow!(
                                    "the answer was given, but its audit record failed: {e}"
                                )
                            })?;
                        }
                    }
                    Ok(Answer::Answered { answered, approve })
                }
                Err(refused) => {
                    // A refused answer is recorded too: someone tried.
                    let record = serde_json::json!({
                        "event": "refused", "ticket": id, "by": by, "reason": refused.to_string(),
                    });
                    let audit = live.current().audit().clone();
                    if audit.is_on() {
                        audit.append("approval", &record).await.map_err(|e| {
                            anyhow::anyhow!("{refused} (and its audit record failed: {e})")
                        })?;
                    }
                    Err(refused.into())
                }
            }
        }
    }
}

/// How long `ctl` waits for a server's answer: a reload compiles what changed; anything else
/// is answered at once by a server that runs (one still loading, or stopped, is reported
/// rather than waited for: the other servers' answers must not wait behind it).
fn answer_wait(request: &Request) -> std::time::Duration {
    match request {
        // An approval reloads too.
        Request::Reload | Request::CatalogApproved { .. } => std::time::Duration::from_secs(600),
        // In a fleet a change waits for every replica, up to `ack_timeout` (at most 120 s),
        // and so does a question to every replica.
        Request::Change { .. }
        | Request::Status { fleet: true }
        | Request::Calls { fleet: true } => std::time::Duration::from_secs(150),
        _ => std::time::Duration::from_secs(10),
    }
}

/// Send one request to the admin socket at `path` and wait (a while: [`answer_wait`]) for the
/// answer. The socket must belong to this uid: an answer from anyone else's socket could
/// claim a kill that never happened.
pub async fn request(path: &Path, request: &Request) -> Result<Answer> {
    let wait = answer_wait(request);
    match tokio::time::timeout(wait, exchange(path, request)).await {
        Ok(answer) => answer,
        Err(_) => bail!(
            "no answer from {} within {} s (the server is still loading, or stopped)",
            path.display(),
            wait.as_secs()
        ),
    }
}

async fn exchange(path: &Path, request: &Request) -> Result<Answer> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.uid() != me
    {
        bail!(
            "{} belongs to uid {}, not to you (uid {me}); refusing to talk to it",
            path.display(),
            meta.uid()
        );
    }
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "cannot reach the admin socket {} (did that server stop?)",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut out = serde_json::to_vec(request)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    if line.is_empty() {
        bail!("the admin socket closed without an answer (refused: another uid?)");
    }
    let response: Response =
        serde_json::from_str(&line).context("malformed answer from the admin socket")?;
    match (response.ok, response.result, response.error) {
        (true, Some(answer), _) => Ok(answer),
        (_, _, Some(e)) => bail!("{e}"),
        _ => bail!("malformed answer from the admin socket"),
    }
}
