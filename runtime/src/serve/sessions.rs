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

/// Which principal owns each live session.
pub struct SessionOwners {
    live: Arc<Live>,
    manager: Arc<LocalSessionManager>,
    owners: Mutex<HashMap<Arc<str>, Arc<str>>>,
    prune_at: AtomicUsize,
}

impl SessionOwners {
    pub fn new(live: Arc<Live>, manager: Arc<LocalSessionManager>) -> Arc<SessionOwners> {
        Arc::new(SessionOwners {
            live,
            manager,
            owners: Mutex::new(HashMap::new()),
            prune_at: AtomicUsize::new(PRUNE_FLOOR),
        })
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<str>>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget the sessions rmcp no longer has (closed, deleted, idle too long).
    async fn prune(&self) {
        let live: Vec<Arc<str>> = self.manager.sessions.read().await.keys().cloned().collect();
        let mut owners = self.owners();
        owners.retain(|id, _| live.contains(id));
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
            tracing::warn!(
                target: "airlock::auth",
                principal = %principal.name, owner, session = %short, method,
                "request on another principal's session refused"
            );
            let record = SessionRecord {
                event: "refused",
                principal: &principal.name,
                owner,
                session: short,
                method: &method,
            };
            if let Err(e) = sessions
                .live
                .current()
                .audit()
                .append("session", &record)
                .await
            {
                tracing::error!(target: "airlock::auth", "cannot record a refused session: {}", e.0);
            }
            return not_found();
        }
    }
    let response = next.run(request).await;
    if presented.is_none()
        && let Some(created) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        // Bound before the response (and so the id) reaches anyone.
        let len = {
            let mut owners = sessions.owners();
            owners
                .entry(Arc::from(created))
                .or_insert_with(|| principal.name.clone());
            owners.len()
        };
        if len > sessions.prune_at.load(Ordering::Relaxed) {
            sessions.prune().await;
        }
    }
    response
}
