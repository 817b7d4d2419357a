//! The fleet store (`[fleet]`): the operator overrides shared by every replica through Redis (or
//! Valkey), with a version; replicas' presence and the version each applied; changes announced
//! on a channel. Each replica keeps a local copy (the [`OverrideStore`]) that calls read
//! lock-free, confirms at every heartbeat that it is the store's current version, and stops
//! admitting calls when it could not for longer than `max_staleness` (unless `on_stale =
//! "serve"`).
//!
//! Keys, under the fleet's prefix `P`:
//! - `P:state`: `{"version": N, "overrides": {…}}`, written only by [`CHANGE`] (compare the
//!   version, write, publish), so no two changes can both build on one version;
//! - `P:replicas`: a sorted set, replica id → the time (ms, the store's clock) its presence
//!   expires (a heartbeat pushes it on; an entry past it is not live);
//! - `P:applied`: a hash, replica id → the version it has in force (replicas no longer live
//!   are pruned every [`PRUNE_EVERY`] heartbeats);
//! - channel `P:changes`: `{"version": N, "from": ID, "interrupt": SCOPE|null}`;
//! - `P:ticket-key`: the key every replica seals approval tickets with (the first replica's),
//!   and `P:ticket:ID`, one per ticket redeemed, until the ticket expires (single use);
//! - `P:ticket-epoch`: when the ticket key was put in the store (its record of redeemed
//!   tickets is complete from then on);
//! - `P:question:ID`: a question waiting for an operator on some replica (its view, JSON),
//!   until it times out, and `P:questions`, a sorted set of their ids by expiry;
//!   `P:answer:ID`: an operator's answer, for the replica where the question waits, woken by
//!   its id on channel `P:answers`;
//! - `P:rate:principal:NAME`, `P:rate:tool:NAME`: shared rate-limit buckets ([`TAKE`]);
//! - channel `P:asks` and lists `P:reply:ID`: `ctl status --fleet` and `ctl calls --fleet`.

use crate::config::fleet::{FleetSettings, OnStale};
use crate::core::kill_scope::KillScope;
use crate::gate::overrides::{OverrideStore, Overrides};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

/// Compare the version, write the new state, announce it. KEYS: state. ARGV: expected version,
/// new overrides (JSON), channel, the announcement's `from` and `interrupt` (JSON).
const CHANGE: &str = r#"
local cur = redis.call('GET', KEYS[1])
local v = 0
if cur then v = cjson.decode(cur)['version'] end
if v ~= tonumber(ARGV[1]) then return {0, v} end
local nv = string.format('%d', v + 1)
redis.call('SET', KEYS[1], '{"version":' .. nv .. ',"overrides":' .. ARGV[2] .. '}')
redis.call('PUBLISH', ARGV[3], '{"version":' .. nv .. ',"from":' .. ARGV[4] .. ',"interrupt":' .. ARGV[5] .. '}')
return {1, tonumber(nv)}
"#;

/// Put a replica's overrides back into a store that lost them (restarted without persistence:
/// its version is below the replica's). KEYS: state. ARGV: the replica's version, its
/// overrides (JSON), channel, `from`.
const RESEED: &str = r#"
local cur = redis.call('GET', KEYS[1])
local v = 0
if cur then v = cjson.decode(cur)['version'] end
if v >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], '{"version":' .. ARGV[1] .. ',"overrides":' .. ARGV[2] .. '}')
redis.call('PUBLISH', ARGV[3], '{"version":' .. ARGV[1] .. ',"from":' .. ARGV[4] .. ',"interrupt":null}')
return 1
"#;

/// Take up to `want` tokens from a token bucket, on the store's clock (no replica's clock
/// matters). KEYS: bucket. ARGV: capacity, tokens refilled per ms, want. Returns the tokens
/// taken and, when none, how long (ms) until one is there.
const TAKE: &str = r#"
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 't', 'n')
local tokens = cap
if b[1] and b[2] then
  tokens = math.min(cap, tonumber(b[2]) + math.max(0, now - tonumber(b[1])) * rate)
end
local got = math.min(want, math.floor(tokens))
if got == 0 then
  -- Nothing taken, nothing written: refused attempts, however frequent, never hold back the
  -- refill (a slow bucket's refill per attempt would round away).
  return {0, math.ceil((1 - tokens) / rate)}
end
tokens = tokens - got
redis.call('HSET', KEYS[1], 't', string.format('%d', now), 'n', string.format('%.17g', tokens))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 1000)
return {got, 0}
"#;

/// An operator's answer to a question waiting anywhere in the fleet: taken once (the entry
/// goes), under the four-eyes rule, kept (until the question would have expired) for the
/// replica where it waits, which is woken on the answers channel (and looks for it anyway,
/// should the wake-up be lost). KEYS: question, questions, answer. ARGV: id, approve (1|0),
/// operator, channel, the answer (JSON). Returns {0, ''} when nothing waits, {2, ''} when the
/// four-eyes rule refuses, else {1, the question's view}.
const ANSWER: &str = r#"
local q = redis.call('GET', KEYS[1])
if not q then return {0, ''} end
local v = cjson.decode(q)
if ARGV[2] == '1' and v['four_eyes'] and v['principal'] == ARGV[3] then return {2, ''} end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 1000 then ttl = 1000 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[5], 'PX', ttl)
redis.call('PUBLISH', ARGV[4], ARGV[1])
return {1, q}
"#;

/// The fleet's ticket key and epoch: the epoch names the store's record of redeemed tickets
/// (a random token), and a store that lost either key (restarted without persistence, say)
/// lost that record too, so a new epoch starts and tickets of the old one are refused. No
/// clock is compared. KEYS: key, epoch. ARGV: the key this replica would put there, a new
/// epoch.
const TICKET_KEY: &str = r#"
local k = redis.call('GET', KEYS[1])
local e = redis.call('GET', KEYS[2])
if not k or not e then
  if not k then
    k = ARGV[1]
    redis.call('SET', KEYS[1], k)
  end
  e = ARGV[2]
  redis.call('SET', KEYS[2], e)
end
return {k, e}
"#;

/// Redeem a ticket of epoch ARGV[1] once: -1 when the store's epoch is another (the ticket
/// predates the store's record), 0 when it was redeemed already, 1 now. KEYS: epoch, the
/// ticket's mark. ARGV: the ticket's epoch, the replica, the mark's lifetime (ms).
const REDEEM: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"#;

/// How long past its own lifetime a redeemed ticket stays marked in the store: replicas'
/// clocks (which check expiry) may run behind the ticket's issuer by this much.
const TICKET_MARK_MARGIN_MS: u64 = 5 * 60 * 1000;

/// The questions waiting in the fleet: the ones whose keys have not expired (on the store's
/// clock); the ids of the others leave the set. At most ARGV[1]. KEYS: questions. ARGV:
/// most, key prefix of a question.
const QUESTIONS: &str = r#"
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do
  local q = redis.call('GET', ARGV[2] .. id)
  if q then table.insert(out, q) else redis.call('ZREM', KEYS[1], id) end
end
return out
"#;

/// A question's wait ended here (its time is up): take it out of the queue, unless an
/// operator's answer took it first, and return that answer (so that it is neither lost nor
/// given to no one). KEYS: question, questions, answer. ARGV: id.
const CLOSE: &str = r#"
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[3])
  return false
end
return redis.call('GETDEL', KEYS[3])
"#;

/// How much before the call stops waiting a question leaves the fleet's queue.
const QUESTION_MARGIN: Duration = Duration::from_millis(500);

/// Questions listed at most (every replica's queue together).
const MAX_LISTED: usize = 10_000;

/// Say a replica is live and what it applied, on the store's clock (replicas' clocks may
/// disagree); drop the presences that expired; every [`PRUNE_EVERY`] beats also forget the
/// applied versions of replicas no longer live (ids are new at each start, so the hash would
/// grow by one field per start). KEYS: replicas, applied. ARGV: replica id, version applied,
/// presence lifetime (ms), prune (1|0).
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[3])), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
if ARGV[4] == '1' then
  local live = {}
  for _, r in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%d', now), '+inf')) do live[r] = true end
  for _, r in ipairs(redis.call('HKEYS', KEYS[2])) do
    if not live[r] then redis.call('HDEL', KEYS[2], r) end
  end
end
return 1
"#;

/// The live replicas (presence not expired on the store's clock) and the version each
/// applied (false: none). KEYS: replicas, applied.
const LIVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%d', now), '+inf')
local applied = {}
for i, r in ipairs(live) do applied[i] = redis.call('HGET', KEYS[2], r) end
return {live, applied}
"#;

/// Heartbeats between two prunings of the applied versions ([`HEARTBEAT`]).
const PRUNE_EVERY: u32 = 64;

/// The scripts, hashed once (each call sends `EVALSHA`, and the script itself only when the
/// store does not know it yet).
static CHANGE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CHANGE));
static RESEED_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RESEED));
static TAKE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TAKE));
static ANSWER_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ANSWER));
static TICKET_KEY_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(TICKET_KEY));
static REDEEM_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REDEEM));
static HEARTBEAT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(HEARTBEAT));
static LIVE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(LIVE));
static QUESTIONS_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(QUESTIONS));
static CLOSE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CLOSE));

/// An invocation of one of the scripts above.
fn script(s: &redis::Script) -> redis::ScriptInvocation<'_> {
    s.prepare_invoke()
}

/// Most attempts of one change against changes made at the same moment elsewhere.
const MAX_ATTEMPTS: u32 = 16;

/// What the store holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u64,
    overrides: Overrides,
}

/// An announcement on the changes channel.
#[derive(Debug, Deserialize)]
struct Announced {
    version: u64,
    from: String,
    interrupt: Option<Interrupt>,
}

/// Calls a change stops on every replica (`--interrupt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interrupt {
    /// The calls a kill of this scope covers.
    Kill(KillScope),
    /// The calls of a component whose grant was revoked.
    Component(String),
}

/// An operator's answer to a question, for the replica where it waits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetAnswer {
    pub id: String,
    pub approve: bool,
    pub by: String,
    pub reason: Option<String>,
}

/// A question for every replica (`ctl status --fleet`, `ctl calls --fleet`): the replica
/// answers with [`Fleet::reply`] to `reply`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetAsk {
    pub what: String,
    pub reply: String,
}

/// Asks from other replicas kept for this replica's answerer; beyond it they go unanswered
/// (the asking `ctl` names the replica as not answering).
const ASKS_KEPT: usize = 16;

/// Why a replica admits no calls now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Stale(pub String);

/// What became of an operator's answer in the fleet's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answering {
    /// This answer was taken; the question's view (JSON).
    Taken(String),
    /// Nothing waits under that id (answered, timed out, or never asked).
    NotWaiting,
    /// The operator is the caller and the question needs another's yes.
    FourEyes,
}

/// What a change did across the fleet.
#[derive(Debug, Clone)]
pub struct Changed {
    pub changed: bool,
    pub version: u64,
    /// Live replicas that had not applied the version when the wait ended.
    pub laggards: Vec<String>,
}

/// This replica's link to the fleet store.
pub struct Fleet {
    settings: FleetSettings,
    /// This replica's id in the fleet.
    pub replica: String,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    /// The store's version this replica has in force.
    applied: AtomicU64,
    /// When it last confirmed that version is the store's (ms since `epoch`); 0: never.
    confirmed_ms: AtomicU64,
    epoch: Instant,
    /// Said once per outage in the log.
    stale_logged: AtomicBool,
    /// Serialises reading the store and putting what it holds in force (the run task's sync
    /// and an operator's change), so that an older read never replaces a newer change.
    applying: tokio::sync::Mutex<()>,
    /// The key approval tickets are sealed with in this fleet, and the time (ms) before which
    /// no ticket is taken, as last read from the store.
    ticket_key: std::sync::Mutex<Option<([u8; 32], String)>>,
    /// Asks from `ctl … --fleet` on any replica, for this one's admin plane to answer.
    asks: tokio::sync::mpsc::Sender<FleetAsk>,
    asks_received: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<FleetAsk>>>,
    /// Heartbeats so far (a pruning every [`PRUNE_EVERY`]).
    beats: std::sync::atomic::AtomicU32,
}

/// Versions beyond this are refused: Redis's Lua numbers are doubles, exact only up to 2^53.
const MAX_VERSION: u64 = 1 << 53;

fn key(settings: &FleetSettings, name: &str) -> String {
    format!("{}:{name}", settings.prefix)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Fleet {
    /// A link for `settings`, as replica `replica`; nothing is connected yet ([`Fleet::run`]).
    pub fn new(settings: &FleetSettings, replica: String) -> Result<Arc<Fleet>, String> {
        use redis::IntoConnectionInfo;
        let scheme = if settings.tls { "rediss" } else { "redis" };
        let host = if settings.host.contains(':') {
            format!("[{}]", settings.host)
        } else {
            settings.host.clone()
        };
        let url = format!("{scheme}://{host}:{}/{}", settings.port, settings.db);
        let info = url
            .into_connection_info()
            .map_err(|e| format!("fleet › store: {e}"))?;
        let mut redis_info = info.redis_settings().clone();
        if let Some(user) = &settings.username {
            redis_info = redis_info.set_username(user);
        }
        if let Some(password) = &settings.password {
            redis_info = redis_info.set_password(password.expose());
        }
        let client = redis::Client::open(info.set_redis_settings(redis_info))
            .map_err(|e| format!("fleet › store: {e}"))?;
        let (asks, asks_received) = tokio::sync::mpsc::channel(ASKS_KEPT);
        Ok(Arc::new(Fleet {
            settings: settings.clone(),
            replica,
            client,
            conn: tokio::sync::Mutex::new(None),
            applied: AtomicU64::new(0),
            confirmed_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            stale_logged: AtomicBool::new(false),
            applying: tokio::sync::Mutex::new(()),
            ticket_key: std::sync::Mutex::new(None),
            asks,
            asks_received: std::sync::Mutex::new(Some(asks_received)),
            beats: std::sync::atomic::AtomicU32::new(0),
        }))
    }

    fn since_epoch_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// `Ok` while this replica may admit calls: it confirmed within `max_staleness` that it
    /// has the fleet's current overrides (or `on_stale = "serve"`). Read on every call: two
    /// atomic loads.
    pub fn admits(&self) -> Result<(), Stale> {
        let confirmed = self.confirmed_ms.load(Ordering::Acquire);
        if confirmed == 0 {
            // Even with on_stale = "serve": a replica that never read the fleet's state has
            // none of its kills.
            return Err(Stale(
                "this replica has not read the fleet's operator state yet".into(),
            ));
        }
        if self.settings.on_stale == OnStale::Serve {
            return Ok(());
        }
        let age = self.since_epoch_ms().saturating_sub(confirmed);
        if age <= self.settings.max_staleness.as_millis() as u64 {
            return Ok(());
        }
        Err(Stale(format!(
            "this replica could not confirm the fleet's operator state for longer than \
             max_staleness ({} ms)",
            self.settings.max_staleness.as_millis()
        )))
    }

    /// The connection, made when there is none. Its commands time out at `max_staleness`.
    async fn connection(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let wait = self.settings.max_staleness;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(wait))
            .set_response_timeout(Some(wait))
            .set_number_of_retries(1);
        let c = self
            .client
            .get_connection_manager_with_config(config)
            .await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn read_state(&self) -> redis::RedisResult<State> {
        let mut conn = self.connection().await?;
        let text: Option<String> = redis::cmd("GET")
            .arg(key(&self.settings, "state"))
            .query_async(&mut conn)
            .await?;
        match text {
            None => Ok(State::default()),
            Some(t) => {
                let state: State = serde_json::from_str(&t).map_err(|e| {
                    redis::RedisError::from((
                        redis::ErrorKind::Parse,
                        "the fleet's operator state is not valid",
                        e.to_string(),
                    ))
                })?;
                if state.version > MAX_VERSION {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Parse,
                        "the fleet's operator state is not valid",
                        format!("version {} is beyond 2^53", state.version),
                    )));
                }
                Ok(state)
            }
        }
    }

    /// Read the store's state and put it in force here if it is newer; confirm the version.
    /// Returns the overrides before and after, when they changed.
    async fn sync(
        &self,
        overrides: &OverrideStore,
    ) -> redis::RedisResult<Option<crate::gate::overrides::Adopted>> {
        let _one = self.applying.lock().await;
        self.sync_locked(overrides).await
    }

    /// [`Fleet::sync`], under `applying`.
    async fn sync_locked(
        &self,
        overrides: &OverrideStore,
    ) -> redis::RedisResult<Option<crate::gate::overrides::Adopted>> {
        // Taken before the read: what is confirmed is the store as it was then at the latest.
        let asked = self.since_epoch_ms();
        let mut state = self.read_state().await?;
        let applied = self.applied.load(Ordering::Acquire);
        // The store lost what it held (a restart without persistence), or holds nothing yet
        // while this replica has overrides (from before it joined): what this replica has in
        // force goes into the store, so that no override is lost; a replica that got there
        // first with a newer version wins. Then the store is read again (once: a store that
        // keeps losing its state leaves this replica unconfirmed).
        let empty_store = state.version == 0 && !overrides.current().is_empty();
        if state.version < applied || empty_store {
            let applied = applied.max(1);
            let body = serde_json::to_string(&*overrides.current()).unwrap_or_default();
            let mut conn = self.connection().await?;
            let put: u8 = script(&RESEED_SCRIPT)
                .key(key(&self.settings, "state"))
                .arg(applied)
                .arg(body)
                .arg(key(&self.settings, "changes"))
                .arg(serde_json::to_string(&self.replica).unwrap_or_default())
                .invoke_async(&mut conn)
                .await?;
            if put == 1 {
                tracing::warn!(
                    version = applied,
                    "the fleet store had lost the operator state (restarted without persistence?): this replica's overrides were put back"
                );
            }
            state = self.read_state().await?;
            if state.version < applied {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "the fleet store keeps losing the operator state",
                )));
            }
        }
        self.share_ticket_key().await?;
        let mut adopted = None;
        if state.version > applied {
            adopted = overrides.adopt(state.overrides).map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "cannot keep the overrides",
                    e.to_string(),
                ))
            })?;
            self.applied.store(state.version, Ordering::Release);
        }
        self.confirmed_ms.store(asked, Ordering::Release);
        if self.stale_logged.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                version = state.version,
                "fleet store reachable again: this replica is current and admits calls"
            );
        }
        self.heartbeat().await?;
        Ok(adopted)
    }

    /// Read the fleet's ticket key and epoch ([`TICKET_KEY`]), putting this replica's key
    /// and a new epoch there when the store lacks them (the first replica, or a store that
    /// lost its data).
    async fn share_ticket_key(&self) -> redis::RedisResult<()> {
        let mut conn = self.connection().await?;
        let mut fresh = [0u8; 32];
        getrandom::getrandom(&mut fresh).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "no entropy for a ticket key",
                e.to_string(),
            ))
        })?;
        let mine = self.ticket_key().map_or(fresh, |(k, _)| k);
        let (held, epoch): (String, String) = script(&TICKET_KEY_SCRIPT)
            .key(key(&self.settings, "ticket-key"))
            .key(key(&self.settings, "ticket-epoch"))
            .arg(hex::encode(mine))
            .arg(crate::core::ids::random_id())
            .invoke_async(&mut conn)
            .await?;
        let mut held_key = [0u8; 32];
        if hex::decode_to_slice(held.as_bytes(), &mut held_key).is_err() || epoch.is_empty() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "the fleet's ticket key is not 32 bytes of hex with its epoch",
            )));
        }
        *self.ticket_key.lock().unwrap_or_else(|p| p.into_inner()) = Some((held_key, epoch));
        Ok(())
    }

    /// The key tickets are sealed with in this fleet and the epoch of the store's record of
    /// redeemed tickets, once this replica has read them.
    pub fn ticket_key(&self) -> Option<([u8; 32], String)> {
        self.ticket_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Tokens leased at once from a shared bucket of `capacity` (`rate_lease`).
    pub fn lease_for(&self, capacity: u32) -> u32 {
        self.settings.lease_for(capacity)
    }

    /// The store could not be used for a call's check: the call is refused.
    fn unavailable(&self, e: &redis::RedisError) -> Stale {
        // The error names no store (`fleet_unavailable` reaches clients).
        tracing::warn!(store = %self.settings.store, "fleet store: {e}");
        Stale("the fleet store cannot be reached".into())
    }

    /// Redeem ticket `id` (of `epoch`, valid for `lifetime`) fleet-wide, once: `Some(true)`
    /// the first time, on any replica; `Some(false)` after; `None` when the store's record of
    /// redeemed tickets is another epoch's (the ticket predates it: refused).
    pub async fn redeem_ticket(
        &self,
        id: &str,
        epoch: &str,
        lifetime: Duration,
    ) -> Result<Option<bool>, Stale> {
        let go = async {
            let mut conn = self.connection().await?;
            let redeemed: i8 = script(&REDEEM_SCRIPT)
                .key(key(&self.settings, "ticket-epoch"))
                .key(key(&self.settings, &format!("ticket:{id}")))
                .arg(epoch)
                .arg(&self.replica)
                .arg(lifetime.as_millis() as u64 + TICKET_MARK_MARGIN_MS)
                .invoke_async(&mut conn)
                .await?;
            redis::RedisResult::Ok(match redeemed {
                -1 => None,
                1 => Some(true),
                _ => Some(false),
            })
        };
        go.await.map_err(|e| self.unavailable(&e))
    }

    /// Give back a redeemed ticket whose call did not run (best effort: a store that cannot
    /// be reached keeps it used, and the client is asked again).
    pub async fn release_ticket(&self, id: &str) {
        if let Ok(mut conn) = self.connection().await {
            let _ = redis::cmd("DEL")
                .arg(key(&self.settings, &format!("ticket:{id}")))
                .query_async::<()>(&mut conn)
                .await;
        }
    }

    /// Post a question waiting here for an operator, so that `ctl` on any replica lists and
    /// answers it. `view` is its JSON (with `principal` and `four_eyes`); it expires with
    /// the question.
    pub async fn post_question(
        &self,
        id: &str,
        view: &str,
        timeout: Duration,
    ) -> Result<(), Stale> {
        let go = async {
            let mut conn = self.connection().await?;
            // On the store's clock, ending a little before the call stops waiting: an answer
            // given in time reaches the call, one given after finds nothing to answer.
            let lifetime = timeout.saturating_sub(QUESTION_MARGIN).max(QUESTION_MARGIN);
            redis::pipe()
                .cmd("SET")
                .arg(key(&self.settings, &format!("question:{id}")))
                .arg(view)
                .arg("PX")
                .arg(lifetime.as_millis() as u64)
                .ignore()
                .cmd("ZADD")
                .arg(key(&self.settings, "questions"))
                .arg(now_ms())
                .arg(id)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        };
        go.await.map_err(|e| self.unavailable(&e))
    }

    /// The call's wait for question `id` ended: out of the fleet's queue it goes, unless an
    /// operator answered it meanwhile: then that answer ([`CLOSE`]).
    pub async fn close_question(&self, id: &str) -> Option<FleetAnswer> {
        let mut conn = self.connection().await.ok()?;
        let text: Option<String> = script(&CLOSE_SCRIPT)
            .key(key(&self.settings, &format!("question:{id}")))
            .key(key(&self.settings, "questions"))
            .key(key(&self.settings, &format!("answer:{id}")))
            .arg(id)
            .invoke_async(&mut conn)
            .await
            .ok()?;
        let answer: FleetAnswer = serde_json::from_str(&text?).ok()?;
        (answer.id == id).then_some(answer)
    }

    /// Take a question that no longer waits out of the fleet's queue (in the background).
    pub fn withdraw_question(self: &Arc<Self>, id: &str) {
        let (fleet, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            if let Ok(mut conn) = fleet.connection().await {
                let _ = redis::pipe()
                    .cmd("DEL")
                    .arg(key(&fleet.settings, &format!("question:{id}")))
                    .ignore()
                    .cmd("ZREM")
                    .arg(key(&fleet.settings, "questions"))
                    .arg(&id)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await;
            }
        });
    }

    /// Every question waiting in the fleet, as posted (JSON), at most [`MAX_LISTED`].
    pub async fn questions(&self) -> Result<Vec<String>, String> {
        let go = async {
            let mut conn = self.connection().await?;
            script(&QUESTIONS_SCRIPT)
                .key(key(&self.settings, "questions"))
                .arg(MAX_LISTED)
                .arg(key(&self.settings, "question:"))
                .invoke_async::<Vec<String>>(&mut conn)
                .await
        };
        go.await
            .map_err(|e| format!("the fleet's approval queue cannot be read: {e}"))
    }

    /// Answer a question waiting anywhere in the fleet, once ([`ANSWER`]): the question's view
    /// when this answer is the one taken.
    pub async fn answer_question(
        &self,
        answer: &FleetAnswer,
        operator: &str,
    ) -> Result<Answering, String> {
        let note = serde_json::to_string(answer).map_err(|e| e.to_string())?;
        let go = async {
            let mut conn = self.connection().await?;
            let (status, view): (u8, String) = script(&ANSWER_SCRIPT)
                .key(key(&self.settings, &format!("question:{}", answer.id)))
                .key(key(&self.settings, "questions"))
                .key(key(&self.settings, &format!("answer:{}", answer.id)))
                .arg(&answer.id)
                .arg(if answer.approve { "1" } else { "0" })
                .arg(operator)
                .arg(key(&self.settings, "answers"))
                .arg(&note)
                .invoke_async(&mut conn)
                .await?;
            redis::RedisResult::Ok(match status {
                1 => Answering::Taken(view),
                2 => Answering::FourEyes,
                _ => Answering::NotWaiting,
            })
        };
        go.await
            .map_err(|e| format!("the fleet's approval queue cannot be reached: {e}"))
    }

    /// The answer an operator gave (on any replica) to question `id`, if one did: taken from
    /// the store, so that it is delivered once.
    pub async fn taken_answer(&self, id: &str) -> Option<FleetAnswer> {
        let mut conn = self.connection().await.ok()?;
        let text: Option<String> = redis::cmd("GETDEL")
            .arg(key(&self.settings, &format!("answer:{id}")))
            .query_async(&mut conn)
            .await
            .ok()?;
        let answer: FleetAnswer = serde_json::from_str(&text?).ok()?;
        (answer.id == id).then_some(answer)
    }

    /// Take up to `want` tokens from the shared bucket `bucket` (of `capacity`, refilled at
    /// `per_ms` tokens a millisecond): the tokens taken and, when none, the wait for one.
    pub async fn take_tokens(
        &self,
        bucket: &str,
        capacity: u32,
        per_ms: f64,
        want: u32,
    ) -> Result<(u32, Duration), Stale> {
        let go = async {
            let mut conn = self.connection().await?;
            let (got, wait): (u32, u64) = script(&TAKE_SCRIPT)
                .key(key(&self.settings, &format!("rate:{bucket}")))
                .arg(capacity)
                .arg(format!("{per_ms:.9}"))
                .arg(want)
                .invoke_async(&mut conn)
                .await?;
            redis::RedisResult::Ok((got, Duration::from_millis(wait)))
        };
        go.await.map_err(|e| self.unavailable(&e))
    }

    /// Record the first use of something single-use (a DPoP proof, by `id`) fleet-wide until
    /// `until` (seconds since the epoch): `Ok(false)` when a replica recorded it before.
    pub async fn first_use(&self, kind: &str, id: &[u8; 32], until: u64) -> Result<bool, Stale> {
        let ttl_ms = until
            .saturating_sub(crate::gate::verified_tokens::now_secs())
            .saturating_add(1)
            .saturating_mul(1000);
        let go = async {
            let mut conn = self.connection().await?;
            let set: Option<String> = redis::cmd("SET")
                .arg(key(&self.settings, &format!("{kind}:{}", hex::encode(id))))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut conn)
                .await?;
            redis::RedisResult::Ok(set.is_some())
        };
        go.await.map_err(|e| self.unavailable(&e))
    }

    /// The asks of `ctl … --fleet` this replica should answer; taken once, by the admin
    /// plane.
    pub fn take_asks(&self) -> Option<tokio::sync::mpsc::Receiver<FleetAsk>> {
        self.asks_received.lock().ok()?.take()
    }

    /// Answer an ask ([`FleetAsk::reply`]) with this replica's `answer` (JSON).
    pub async fn reply(&self, reply: &str, answer: serde_json::Value) {
        let body = serde_json::json!({"replica": self.replica, "answer": answer}).to_string();
        if let Ok(mut conn) = self.connection().await {
            let _ = redis::pipe()
                .cmd("RPUSH")
                .arg(reply)
                .arg(body)
                .ignore()
                .cmd("PEXPIRE")
                .arg(reply)
                .arg(10_000)
                .ignore()
                .query_async::<()>(&mut conn)
                .await;
        }
    }

    /// Ask every live replica (this one too) `what` (`status`, `calls`) and wait (at most
    /// `ack_timeout`) for their answers: each answer under its replica's id, and the live
    /// replicas that did not answer.
    pub async fn ask_all(
        &self,
        what: &str,
    ) -> Result<(Vec<serde_json::Value>, Vec<String>), String> {
        let fail = |e: redis::RedisError| format!("the fleet store cannot be reached: {e}");
        let live = self.live().await.map_err(fail)?;
        let id = crate::core::ids::random_id();
        let reply = key(&self.settings, &format!("reply:{id}"));
        let ask = serde_json::to_string(&FleetAsk {
            what: what.to_owned(),
            reply: reply.clone(),
        })
        .map_err(|e| e.to_string())?;
        let mut conn = self.connection().await.map_err(fail)?;
        redis::cmd("PUBLISH")
            .arg(key(&self.settings, "asks"))
            .arg(ask)
            .query_async::<()>(&mut conn)
            .await
            .map_err(fail)?;
        let deadline = Instant::now() + self.settings.ack_timeout;
        let mut answers: Vec<String> = Vec::new();
        while Instant::now() < deadline {
            let n: usize = redis::cmd("LLEN")
                .arg(&reply)
                .query_async(&mut conn)
                .await
                .map_err(fail)?;
            if n >= live.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (got,): (Vec<String>,) = redis::pipe()
            .cmd("LRANGE")
            .arg(&reply)
            .arg(0)
            .arg(-1)
            .cmd("DEL")
            .arg(&reply)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(fail)?;
        answers.extend(got);
        let answers: Vec<serde_json::Value> = answers
            .iter()
            .filter_map(|a| serde_json::from_str(a).ok())
            .collect();
        let missing = live
            .into_iter()
            .filter(|r| !answers.iter().any(|a| a["replica"] == r.as_str()))
            .collect();
        Ok((answers, missing))
    }

    /// Say this replica is live (until `max_staleness` × 2 from now) and what it applied.
    async fn heartbeat(&self) -> redis::RedisResult<()> {
        let mut conn = self.connection().await?;
        let prune = self.beats.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1;
        script(&HEARTBEAT_SCRIPT)
            .key(key(&self.settings, "replicas"))
            .key(key(&self.settings, "applied"))
            .arg(&self.replica)
            .arg(self.applied.load(Ordering::Acquire))
            .arg(2 * self.settings.max_staleness.as_millis() as u64)
            .arg(if prune { "1" } else { "0" })
            .invoke_async::<()>(&mut conn)
            .await
    }

    /// Apply `change` to the fleet's overrides (on the store's current version), put the
    /// result in force here, announce it with `interrupt`, and wait (at most `ack_timeout`)
    /// for every live replica to apply it.
    pub async fn update(
        &self,
        overrides: &OverrideStore,
        change: &(dyn Fn(&mut Overrides) -> bool + Sync),
        interrupt: Option<Interrupt>,
    ) -> Result<Changed, String> {
        let fail = |e: redis::RedisError| {
            format!(
                "the fleet store {} cannot be reached, nothing changed: {e}",
                self.settings.store
            )
        };
        let from = serde_json::to_string(&self.replica).unwrap_or_default();
        let interrupt_json = serde_json::to_string(&interrupt).unwrap_or_else(|_| "null".into());
        let one = self.applying.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let state = self.read_state().await.map_err(fail)?;
            if state.version < self.applied.load(Ordering::Acquire) {
                // The store lost what it held: put this replica's state back first, or the
                // change would build on the loss.
                self.sync_locked(overrides).await.map_err(fail)?;
                continue;
            }
            let mut next = state.overrides.clone();
            let changed = change(&mut next);
            let mut conn = self.connection().await.map_err(fail)?;
            let version = if changed {
                let body = serde_json::to_string(&next).map_err(|e| e.to_string())?;
                let (written, version): (u8, u64) = script(&CHANGE_SCRIPT)
                    .key(key(&self.settings, "state"))
                    .arg(state.version)
                    .arg(body)
                    .arg(key(&self.settings, "changes"))
                    .arg(&from)
                    .arg(&interrupt_json)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(fail)?;
                if written == 0 {
                    continue; // another replica changed it meanwhile: build on that
                }
                version
            } else {
                if interrupt.is_some() {
                    let note = format!(
                        "{{\"version\":{},\"from\":{from},\"interrupt\":{interrupt_json}}}",
                        state.version
                    );
                    redis::cmd("PUBLISH")
                        .arg(key(&self.settings, "changes"))
                        .arg(note)
                        .query_async::<()>(&mut conn)
                        .await
                        .map_err(fail)?;
                }
                state.version
            };
            if version > self.applied.load(Ordering::Acquire) {
                overrides.adopt(next).map_err(|e| {
                    format!(
                        "the change is in the fleet store (version {version}), but this replica \
                         cannot keep it: {e}"
                    )
                })?;
                self.applied.store(version, Ordering::Release);
                let _ = self.heartbeat().await;
            }
            // The others are waited for without holding up this replica's own confirmations.
            drop(one);
            let laggards = self.wait_applied(version).await;
            return Ok(Changed {
                changed,
                version,
                laggards,
            });
        }
        Err(format!(
            "the fleet's overrides changed {MAX_ATTEMPTS} times while this change was being made; nothing changed, try again"
        ))
    }

    /// Wait until every live replica applied `version`, at most `ack_timeout`; the ones that
    /// had not.
    async fn wait_applied(&self, version: u64) -> Vec<String> {
        let deadline = Instant::now() + self.settings.ack_timeout;
        loop {
            let behind = self.behind(version).await;
            match behind {
                Ok(b) if b.is_empty() => return b,
                Ok(b) if Instant::now() >= deadline => return b,
                Err(e) if Instant::now() >= deadline => {
                    return vec![format!("(the store could not be read: {e})")];
                }
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }

    /// The live replicas that have not applied `version`.
    async fn behind(&self, version: u64) -> redis::RedisResult<Vec<String>> {
        Ok(self
            .live_applied()
            .await?
            .into_iter()
            .filter(|(_, a)| a.is_none_or(|a| a < version))
            .map(|(id, _)| id)
            .collect())
    }

    /// The replicas whose presence has not expired, with the version each applied.
    async fn live_applied(&self) -> redis::RedisResult<Vec<(String, Option<u64>)>> {
        let mut conn = self.connection().await?;
        let (live, applied): (Vec<String>, Vec<Option<u64>>) = script(&LIVE_SCRIPT)
            .key(key(&self.settings, "replicas"))
            .key(key(&self.settings, "applied"))
            .invoke_async(&mut conn)
            .await?;
        Ok(live.into_iter().zip(applied).collect())
    }

    /// The replicas whose presence has not expired.
    pub async fn live(&self) -> redis::RedisResult<Vec<String>> {
        Ok(self
            .live_applied()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Keep this replica current until the process ends: follow the changes channel, confirm
    /// the version at every heartbeat (a quarter of `max_staleness`), re-read everything after
    /// any reconnect. `adopted` is told of each change another replica made (to log, record
    /// and tell clients); `interrupt` of each interruption another replica asked for.
    pub async fn run(
        self: Arc<Fleet>,
        overrides: Arc<OverrideStore>,
        adopted: impl Fn(crate::gate::overrides::Adopted, u64) + Send + 'static,
        interrupt: impl Fn(&Interrupt) + Send + 'static,
        answered: impl Fn(String) + Send + 'static,
    ) {
        use futures_util::StreamExt;
        let beat = self.settings.max_staleness / 4;
        let channel = key(&self.settings, "changes");
        let (answers, asks) = (key(&self.settings, "answers"), key(&self.settings, "asks"));
        let mut backoff = Duration::from_millis(50);
        loop {
            let subscribed = tokio::time::timeout(self.settings.max_staleness, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&[&channel, &answers, &asks]).await?;
                redis::RedisResult::Ok(pubsub)
            })
            .await;
            let pubsub = match subscribed {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    self.lost(&e.to_string()).await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(beat);
                    continue;
                }
                Err(_) => {
                    self.lost("no answer").await;
                    continue;
                }
            };
            // Subscribed first, then read: no change can fall between the two.
            if !self.resync(&overrides, &adopted).await {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(beat);
                continue;
            }
            backoff = Duration::from_millis(50);
            let mut messages = pubsub.into_on_message();
            let mut ticks = tokio::time::interval(beat);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    message = messages.next() => {
                        let Some(message) = message else {
                            self.lost("the changes channel closed").await;
                            break;
                        };
                        let Ok(text) = message.get_payload::<String>() else { continue };
                        if message.get_channel_name() == answers {
                            // Only a wake-up: the answer itself is read from where the
                            // ANSWER script kept it.
                            answered(text);
                            continue;
                        }
                        if message.get_channel_name() == asks {
                            if let Ok(a) = serde_json::from_str::<FleetAsk>(&text)
                                && a.reply.starts_with(&format!("{}:reply:", self.settings.prefix))
                                && self.asks.try_send(a).is_err()
                            {
                                tracing::warn!("fleet: too many asks from ctl at once; one went unanswered");
                            }
                            continue;
                        }
                        let Ok(note) = serde_json::from_str::<Announced>(&text) else {
                            tracing::warn!("fleet: an announcement that is not one was ignored");
                            continue;
                        };
                        // Interrupted first: a store lost right after the announcement
                        // does not keep the operator's interruption from these calls.
                        let remote = note.interrupt.as_ref().filter(|_| note.from != self.replica);
                        if let Some(i) = remote {
                            interrupt(i);
                        }
                        if note.version > self.applied.load(Ordering::Acquire)
                            && !self.resync(&overrides, &adopted).await
                        {
                            break;
                        }
                        // And again once the kill is in force here: a call admitted between
                        // the first stop and the kill taking effect passed its own check
                        // before the kill was seen, and is stopped now.
                        if let Some(i) = remote {
                            interrupt(i);
                        }
                    }
                    _ = ticks.tick() => {
                        if !self.resync(&overrides, &adopted).await {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// [`Fleet::sync`], telling `adopted` of a change; false when the store could not be used
    /// (said in the log).
    async fn resync(
        &self,
        overrides: &OverrideStore,
        adopted: &impl Fn(crate::gate::overrides::Adopted, u64),
    ) -> bool {
        match self.sync(overrides).await {
            Ok(Some(a)) => {
                adopted(a, self.applied.load(Ordering::Acquire));
                true
            }
            Ok(None) => true,
            Err(e) => {
                self.lost(&e.to_string()).await;
                false
            }
        }
    }

    /// The store could not be used: drop the connection (the next use makes a new one) and
    /// say so once per outage.
    async fn lost(&self, why: &str) {
        *self.conn.lock().await = None;
        if !self.stale_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(
                store = %self.settings.store,
                "fleet store unreachable ({why}); this replica {} once it has not confirmed the fleet's state for {} ms",
                match self.settings.on_stale {
                    OnStale::Refuse => "refuses calls (fleet_unavailable)",
                    OnStale::Serve => "goes on serving under its last overrides (on_stale = \"serve\")",
                },
                self.settings.max_staleness.as_millis()
            );
        }
    }
}
