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
//! - `P:replicas`: a sorted set, replica id → the time (ms) its presence expires (a heartbeat
//!   pushes it on; an entry past it is not live);
//! - `P:applied`: a hash, replica id → the version it has in force;
//! - channel `P:changes`: `{"version": N, "from": ID, "interrupt": SCOPE|null, "revoked": …}`.

use crate::config::fleet::{FleetSettings, OnStale};
use crate::core::kill_scope::KillScope;
use crate::gate::overrides::{OverrideStore, Overrides};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Why a replica admits no calls now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Stale(pub String);

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
            let put: u8 = redis::Script::new(RESEED)
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

    /// Say this replica is live (until `max_staleness` × 2 from now) and what it applied.
    async fn heartbeat(&self) -> redis::RedisResult<()> {
        let mut conn = self.connection().await?;
        let expires = now_ms() + 2 * self.settings.max_staleness.as_millis() as u64;
        redis::pipe()
            .cmd("ZADD")
            .arg(key(&self.settings, "replicas"))
            .arg(expires)
            .arg(&self.replica)
            .ignore()
            .cmd("HSET")
            .arg(key(&self.settings, "applied"))
            .arg(&self.replica)
            .arg(self.applied.load(Ordering::Acquire))
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(key(&self.settings, "replicas"))
            .arg("-inf")
            .arg(now_ms())
            .ignore()
            .query_async::<()>(&mut conn)
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
                let (written, version): (u8, u64) = redis::Script::new(CHANGE)
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
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// The live replicas that have not applied `version`.
    async fn behind(&self, version: u64) -> redis::RedisResult<Vec<String>> {
        let live = self.live().await?;
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.connection().await?;
        let applied: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(key(&self.settings, "applied"))
            .arg(&live)
            .query_async(&mut conn)
            .await?;
        Ok(live
            .into_iter()
            .zip(applied)
            .filter(|(_, a)| a.is_none_or(|a| a < version))
            .map(|(id, _)| id)
            .collect())
    }

    /// The replicas whose presence has not expired.
    pub async fn live(&self) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.connection().await?;
        redis::cmd("ZRANGEBYSCORE")
            .arg(key(&self.settings, "replicas"))
            .arg(now_ms())
            .arg("+inf")
            .query_async(&mut conn)
            .await
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
    ) {
        use futures_util::StreamExt;
        let beat = self.settings.max_staleness / 4;
        let channel = key(&self.settings, "changes");
        let mut backoff = Duration::from_millis(50);
        loop {
            let subscribed = tokio::time::timeout(self.settings.max_staleness, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
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
                        let Ok(note) = serde_json::from_str::<Announced>(&text) else {
                            tracing::warn!("fleet: an announcement that is not one was ignored");
                            continue;
                        };
                        // Interrupted first: a store lost right after the announcement
                        // does not keep the operator's interruption from these calls.
                        if note.from != self.replica && let Some(i) = &note.interrupt {
                            interrupt(i);
                        }
                        if note.version > self.applied.load(Ordering::Acquire)
                            && !self.resync(&overrides, &adopted).await
                        {
                            break;
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
