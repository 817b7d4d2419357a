//! Streamable HTTP sessions belong to the principal that opened them. rmcp keeps the sessions
//! but never sees who sends a request, so this layer, just inside authentication, remembers
//! the principal of each session it saw created and answers a request carrying another
//! principal's session id exactly as rmcp answers an unknown one (404), with an audit record.
//! Session ids are never logged whole: records and log lines show a short digest.

use crate::control::live::Live;
use crate::core::principal::Principal;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The header that carries a session id.
const SESSION_HEADER: &str = "mcp-session-id";
/// The map is pruned of sessions rmcp has ended when it grows past twice its size after the
/// last pruning, and never below this.
const PRUNE_FLOOR: usize = 256;

/// Which principal owns each live session, and how many each may have.
pub struct SessionOwners {
    live: Arc<Live>,
    manager: Arc<LocalSessionManager>,
    owners: Mutex<HashMap<Arc<str>, Arc<str>>>,
    prune_at: AtomicUsize,
    max_total: usize,
    max_per_principal: usize,
}

impl SessionOwners {
    pub fn new(
        live: Arc<Live>,
        manager: Arc<LocalSessionManager>,
        max_total: usize,
        max_per_principal: usize,
    ) -> Arc<SessionOwners> {
        Arc::new(SessionOwners {
            live,
            manager,
            owners: Mutex::new(HashMap::new()),
            prune_at: AtomicUsize::new(PRUNE_FLOOR),
            max_total,
            max_per_principal,
        })
    }

    /// A `session` audit record of a refusal (a failure to write it is logged: the refusal
    /// stands either way).
    async fn record(&self, record: &impl Serialize) {
        if let Err(e) = self.live.current().audit().append("session", record).await {
            tracing::error!(target: "airlock::auth", "cannot record a refused session: {}", e.0);
        }
    }

    /// Why `principal` may not open another session now, if it may not.
    fn over_cap(&self, principal: &str) -> Option<String> {
        let owners = self.owners();
        let mine = owners.values().filter(|p| ***p == *principal).count();
        if mine >= self.max_per_principal {
            return Some(format!(
                "session limit: principal {principal} has {mine} sessions open \
                 (max_sessions_per_principal = {}); end one (DELETE) or let an idle one expire",
                self.max_per_principal
            ));
        }
        if owners.len() >= self.max_total {
            return Some(format!(
                "session limit: {} sessions are open (max_sessions = {}); try again later",
                owners.len(),
                self.max_total
            ));
        }
        None
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<str>>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget the sessions rmcp no longer has (closed, deleted, idle too long).
    async fn prune(&self) {
        // rmcp's map stays read-locked while ours is pruned: no session can be created (and so
        // bound) in between and be dropped by mistake.
        let live = self.manager.sessions.read().await;
        let mut owners = self.owners();
        owners.retain(|id, _| live.contains_key(id));
        self.prune_at
            .store((owners.len() * 2).max(PRUNE_FLOOR), Ordering::Relaxed);
    }
}

/// A session id as logs and records show it: the first 12 hex digits of its sha256.
pub fn short_id(id: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(id.as_bytes())[..6])
}

/// The audit record of a refused session.
#[derive(Serialize)]
struct SessionRecord<'a> {
    event: &'static str,
    principal: &'a str,
    owner: &'a str,
    session: String,
    method: &'a str,
}

/// rmcp's answer to an unknown session, byte for byte: the refused caller learns nothing more.
fn not_found() -> axum::response::Response {
    let mut response =
        axum::response::Response::new(axum::body::Body::from("Not Found: Session not found"));
    *response.status_mut() = http::StatusCode::NOT_FOUND;
    response
}

/// The session layer in front of `/mcp` (inside authentication, which put the [`Principal`]
/// in the request's extensions).
pub async fn bind_session(
    axum::extract::State(sessions): axum::extract::State<Arc<SessionOwners>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(principal) = request.extensions().get::<Principal>().cloned() else {
        return not_found();
    };
    let presented: Option<Arc<str>> = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(Arc::from);
    if let Some(id) = &presented {
        let owner = sessions.owners().get(id).cloned();
        let refused = match &owner {
            Some(owner) => **owner != *principal.name,
            // A live session that was never bound (it cannot happen: every session is
            // created through this layer) is refused rather than shared.
            None => sessions.manager.sessions.read().await.contains_key(id),
        };
        if refused {
            let owner = owner.as_deref().unwrap_or("unknown");
            let short = short_id(id);
            let method = request.method().as_str().to_owned();
            static REFUSALS: crate::core::throttle::LogThrottle =
                crate::core::throttle::LogThrottle::new();
            if let Some(refused) = REFUSALS.admit() {
                tracing::warn!(
                    target: "airlock::auth",
                    principal = %principal.name, owner, session = %short, method, refused,
                    "request on another principal's session refused"
                );
            }
            let record = SessionRecord {
                event: "refused",
                principal: &principal.name,
                owner,
                session: short,
                method: &method,
            };
            sessions.record(&record).await;
            count_refusal("not_owner");
            return not_found();
        }
    }
    // Only a 2025-era POST without a session can open one (2026-07-28 requests name their
    // method in a header and are stateless).
    let opening = presented.is_none()
        && request.method() == http::Method::POST
        && !request.headers().contains_key("mcp-method");
    if opening && sessions.over_cap(&principal.name).is_some() {
        // Sessions rmcp has ended (idle, deleted) do not count.
        sessions.prune().await;
        if let Some(why) = sessions.over_cap(&principal.name) {
            return refuse_session(&sessions, &principal, why).await;
        }
    }
    let response = next.run(request).await;
    if presented.is_none()
        && let Some(created) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        // Bound before the response (and so the id) reaches anyone. Several openings at once
        // may all have passed the check above: the one that finds the cap taken is undone.
        let created: Arc<str> = Arc::from(created);
        let over = sessions.over_cap(&principal.name);
        if let Some(why) = over {
            let _ =
                rmcp::transport::streamable_http_server::session::SessionManager::close_session(
                    &*sessions.manager,
                    &created,
                )
                .await;
            return refuse_session(&sessions, &principal, why).await;
        }
        crate::core::metrics::metrics().sessions_opened.inc();
        let len = {
            let mut owners = sessions.owners();
            owners
                .entry(created)
                .or_insert_with(|| principal.name.clone());
            owners.len()
        };
        if len > sessions.prune_at.load(Ordering::Relaxed) {
            sessions.prune().await;
        }
    }
    response
}

fn count_refusal(reason: &'static str) {
    crate::core::metrics::metrics()
        .sessions_refused
        .get_or_create(&crate::core::metrics::ReasonLabels { reason })
        .inc();
}

/// The record of a session that was not opened, for the audit log.
#[derive(Serialize)]
struct SessionLimitRecord<'a> {
    event: &'static str,
    principal: &'a str,
    reason: &'a str,
}

/// 429 with the reason, as a JSON-RPC error, and an audit record.
async fn refuse_session(
    sessions: &SessionOwners,
    principal: &Principal,
    why: String,
) -> axum::response::Response {
    // One throttle per cap: a flood against one does not hide the first refusal of the other.
    static REFUSALS: [crate::core::throttle::LogThrottle; 2] =
        [const { crate::core::throttle::LogThrottle::new() }; 2];
    let per_principal = why.contains("max_sessions_per_principal");
    if let Some(refused) = REFUSALS[usize::from(per_principal)].admit() {
        tracing::warn!(target: "airlock::auth", principal = %principal.name, refused, "{why}");
    }
    count_refusal(if per_principal {
        "max_sessions_per_principal"
    } else {
        "max_sessions"
    });
    let record = SessionLimitRecord {
        event: "limit",
        principal: &principal.name,
        reason: &why,
    };
    sessions.record(&record).await;
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32000, "message": why, "data": {"airlock/outcome": "session_limit"}}
    });
    let mut response = axum::response::Response::new(axum::body::Body::from(body.to_string()));
    *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
