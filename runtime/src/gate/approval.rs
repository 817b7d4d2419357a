//! Human approval: the questions a call puts to a person (approve this call, confirm this
//! step, fill in this form), the channels that carry them (the client's user through MCP
//! elicitation, or the operator queue), and the tickets that carry answers across the rounds
//! of a 2026-07-28 call.
//!
//! Every question and answer is an audit record (`kind = "approval"`). No answer before the
//! rule's timeout is a denial.

use crate::config::risk::{ApprovalPolicy, Via};
use crate::core::failure::{CallFailure, TicketProblem};
use crate::core::interaction::{Asking, Reply};
use crate::core::units::Span;
use crate::gate::audit::AuditLog;
use crate::gate::fleet::{Answering, Fleet, FleetAnswer};
use crate::sandbox::clock::Pause;
#[allow(deprecated)]
// Sampling and roots are deprecated by SEP-2577 but still in the protocol.
use rmcp::model::{
    CreateMessageRequest, ElicitRequest, ElicitRequestParams, InputRequest, InputRequests,
    InputResponses, JsonObject, ListRootsRequest, RequestStateCodec,
};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// The file in the state directory holding the key that seals request state.
pub const STATE_KEY_FILE: &str = "request-state.key";
/// Questions one top-level call (with its nested calls) may ask; a tool asking in a loop is
/// refused beyond it.
pub const MAX_QUESTIONS: u32 = 16;
/// Calls one principal may have waiting in the operator queue at once.
pub const MAX_QUEUED_PER_PRINCIPAL: usize = 32;
/// Calls waiting in the operator queue at once, all principals together.
pub const MAX_QUEUED: usize = 1024;

/// One question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    pub asking: Asking,
    pub tool: String,
    /// Shown to the person.
    pub message: String,
    /// The form: the fixed yes/no form for approvals and confirmations.
    pub schema: JsonObject,
    /// The same question asked again (a retried call, a re-run tool) has the same key.
    pub key: String,
    /// The tool's own name for it (`ask`), which the client sees as its `inputRequests` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<String>,
    /// A sampling request's parameters (MCP `CreateMessageRequestParams`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<JsonObject>,
}

impl Question {
    /// May `principal` run `tool` with these arguments? `shown` is what the person reads of the
    /// arguments (redacted); `digest` binds the question to them exactly.
    pub fn approval(tool: &str, principal: &str, shown: &str, digest: &str) -> Question {
        Question::yes_no(
            Asking::Approval,
            tool,
            format!("Allow {principal} to run the tool \"{tool}\" with arguments {shown}?"),
            digest,
        )
    }

    /// The tool's own `confirm(prompt, details)`.
    pub fn confirm(tool: &str, prompt: &str, details: &str) -> Question {
        let message = if details.is_empty() {
            format!("{tool}: {prompt}")
        } else {
            format!("{tool}: {prompt}\n\n{details}")
        };
        Question::yes_no(Asking::Confirm, tool, message, "")
    }

    /// The tool's own `elicit(message, schema)`.
    pub fn elicit(tool: &str, message: &str, schema: JsonObject) -> Question {
        let key = key(
            Asking::Elicit,
            tool,
            message,
            &serde_json::to_string(&schema).unwrap_or_default(),
        );
        Question {
            asking: Asking::Elicit,
            tool: tool.to_owned(),
            message: format!("{tool}: {message}"),
            schema,
            key,
            wire: None,
            params: None,
        }
    }

    /// A request of the tool's `ask`, under the tool's own key `wire`: a form (`schema` set),
    /// a sampling request (`params` set) or a request for the client's roots.
    pub fn asked(
        asking: Asking,
        tool: &str,
        wire: &str,
        message: &str,
        schema: JsonObject,
        params: Option<JsonObject>,
    ) -> Question {
        let body = serde_json::to_string(&(&schema, &params)).unwrap_or_default();
        Question {
            asking,
            tool: tool.to_owned(),
            message: format!("{tool}: {message}"),
            key: key(asking, tool, &format!("{wire}\n{message}"), &body),
            schema,
            wire: Some(wire.to_owned()),
            params,
        }
    }

    /// What the client is sent: the question as an MCP request.
    #[allow(deprecated)] // Sampling and roots: see the import.
    pub fn input_request(&self) -> Result<InputRequest, String> {
        Ok(match self.asking {
            Asking::Sample => {
                let params = serde_json::from_value(serde_json::Value::Object(
                    self.params.clone().unwrap_or_default(),
                ))
                .map_err(|e| format!("not an MCP sampling request: {e}"))?;
                InputRequest::CreateMessage(CreateMessageRequest::new(params))
            }
            Asking::Roots => InputRequest::ListRoots(ListRootsRequest::default()),
            _ => InputRequest::Elicitation(ElicitRequest::new(self.elicitation()?)),
        })
    }

    fn yes_no(asking: Asking, tool: &str, message: String, bound: &str) -> Question {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "approve": {
                    "type": "boolean",
                    "title": "Approve",
                    "description": "Yes to let it go ahead; no to refuse.",
                    "default": false
                }
            },
            "required": ["approve"]
        });
        let serde_json::Value::Object(schema) = schema else {
            unreachable!("a JSON object literal")
        };
        Question {
            asking,
            tool: tool.to_owned(),
            key: key(asking, tool, &message, bound),
            message,
            schema,
            wire: None,
            params: None,
        }
    }

    /// The same question bound to the arguments of the call asking it and to how often this
    /// run asked it before: the second `confirm` with the same text is another question.
    pub fn bound_to(mut self, arguments_sha256: &str, occurrence: u32) -> Question {
        self.key = key(
            self.asking,
            &self.tool,
            &self.key,
            &format!("{arguments_sha256}#{occurrence}"),
        );
        self
    }

    /// The MCP form of the question.
    pub fn elicitation(&self) -> Result<ElicitRequestParams, String> {
        let schema = serde_json::from_value(serde_json::Value::Object(self.schema.clone()))
            .map_err(|e| format!("not an MCP elicitation form: {e}"))?;
        Ok(ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: self.message.clone(),
            requested_schema: schema,
        })
    }
}

fn key(asking: Asking, tool: &str, message: &str, bound: &str) -> String {
    let mut h = sha2::Sha256::new();
    for part in [tool, message, bound] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("airlock.{asking:?}.{}", &hex::encode(h.finalize())[..24]).to_ascii_lowercase()
}

/// The audit event of `reply` to a question of `asking`.
fn reply_event(reply: &Reply, asking: Asking) -> &'static str {
    match reply {
        _ if !asking.is_data() && reply.is_yes() => "granted",
        Reply::Accept { .. } | Reply::Returned { .. } if asking.is_data() => "answered",
        Reply::Cancel => "cancelled",
        _ => "denied",
    }
}

/// An answer and who gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answered {
    pub reply: Reply,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Asks the client (its user, its model, its roots), inline: revisions before 2026-07-28,
/// which allow server requests. The answer is the client's result as it sent it.
pub trait Elicitor: Send + Sync {
    fn ask(
        &self,
        request: InputRequest,
    ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send + 'static>>;
}

/// What the client of a call declared it can be asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCaps {
    pub elicitation: bool,
    pub sampling: bool,
    pub roots: bool,
}

impl ClientCaps {
    fn allows(&self, asking: Asking) -> bool {
        match asking {
            Asking::Approval | Asking::Confirm | Asking::Elicit => self.elicitation,
            Asking::Sample => self.sampling,
            Asking::Roots => self.roots,
        }
    }
}

/// How the client's user can be reached during this call.
pub enum ClientChannel {
    /// A server request while the call waits.
    Inline(Arc<dyn Elicitor>),
    /// A 2026-07-28 `input_required` result and a retry.
    Rounds,
    /// The client declared no elicitation support.
    Unable,
}

/// What a 2026-07-28 retry brought back.
pub struct Retry {
    /// The sealed state of the round that asked; a retry without one may still answer the
    /// tool's own data questions by their keys (see [`Interaction::ask`]).
    pub request_state: Option<String>,
    pub input_responses: InputResponses,
}

/// One top-level call's conversation with people, shared by its nested calls.
pub struct Interaction {
    principal: Arc<str>,
    client: ClientChannel,
    /// What the client said it supports.
    pub caps: ClientCaps,
    retry: Mutex<Option<Retry>>,
    /// Answers a retry carried in, by question key. A yes to an approval or a confirmation
    /// is taken out when the execution it authorises starts: it authorises that one alone.
    answers: Mutex<HashMap<String, Answered>>,
    /// How often each question (with the arguments of the call asking it) was asked in this
    /// top-level call, nested calls included: the n-th asking is its own question, so one
    /// answer never covers two executions, and a retry round, which runs the call again from
    /// the start, meets its questions in the same order.
    asked: Mutex<HashMap<(String, String), u32>>,
    /// The client's yeses this round used: its retry runs those executions again, each of
    /// which needs a yes of its own, so the round's `input_required` asks for them again.
    spent: Mutex<Vec<Question>>,
    /// Questions asked this round that only a retry can answer, with the shortest timeout.
    unanswered: Mutex<(Vec<Question>, Option<Duration>)>,
    /// The ticket this round will issue if it ends with questions; named in its records.
    next_ticket: std::sync::OnceLock<String>,
    /// The ticket a retry redeemed, whose answers this round uses.
    redeemed: Mutex<Option<String>>,
    /// What a retry without a request state brought, by key: answers the tool's own forms,
    /// sampling and roots requests may take (never an approval or a confirmation).
    unsolicited: Mutex<InputResponses>,
    /// The top-level call's tool and argument digest, which a ticket issued by this round binds.
    root: std::sync::OnceLock<(String, String)>,
    pub pause: Arc<Pause>,
    /// Nested calls made beneath the top-level call so far.
    pub nested_calls: AtomicU32,
    /// Questions put to people so far (answers a retry brought back are not counted again).
    questions: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Interaction {
    pub fn new(
        principal: Arc<str>,
        client: ClientChannel,
        caps: ClientCaps,
        retry: Option<Retry>,
    ) -> Interaction {
        Interaction {
            principal,
            client,
            caps,
            retry: Mutex::new(retry),
            answers: Mutex::new(HashMap::new()),
            asked: Mutex::new(HashMap::new()),
            spent: Mutex::new(Vec::new()),
            unanswered: Mutex::new((Vec::new(), None)),
            next_ticket: std::sync::OnceLock::new(),
            redeemed: Mutex::new(None),
            unsolicited: Mutex::new(InputResponses::new()),
            root: std::sync::OnceLock::new(),
            pause: Arc::default(),
            nested_calls: AtomicU32::new(0),
            questions: AtomicU32::new(0),
        }
    }

    /// `question`, bound to the arguments of the call asking it and to how often the same
    /// question with the same arguments was asked before in this top-level call.
    pub fn occurrence(&self, question: Question, arguments_sha256: &str) -> Question {
        let mut asked = lock(&self.asked);
        let n = asked
            .entry((question.key.clone(), arguments_sha256.to_owned()))
            .or_insert(0);
        *n += 1;
        question.bound_to(arguments_sha256, *n)
    }

    /// Made only when a call asks (most never do): it costs a system call.
    fn next_ticket(&self) -> &str {
        self.next_ticket.get_or_init(crate::core::ids::random_id)
    }

    /// A call with no one to ask (library use, benches).
    pub fn unattended(principal: Arc<str>) -> Interaction {
        Interaction::new(
            principal,
            ClientChannel::Unable,
            ClientCaps::default(),
            None,
        )
    }

    /// Open the ticket a retry presented, once per call: it must be genuine, for this caller,
    /// tool and arguments, unexpired and unused. Its answers become this call's.
    pub async fn redeem(
        &self,
        approvals: &Approvals,
        tool: &str,
        digest: &str,
    ) -> Result<Option<String>, CallFailure> {
        let _ = self.root.set((tool.to_owned(), digest.to_owned()));
        let Some(retry) = lock(&self.retry).take() else {
            return Ok(None);
        };
        if retry.request_state.is_none() {
            // Answers without a round that asked: only the tool's own data questions may take
            // them, by their keys, and only when well formed; nothing else is redeemed.
            *lock(&self.unsolicited) = retry.input_responses;
            return Ok(None);
        }
        let (id, answers) = approvals
            .redeem(&retry, &self.principal, tool, digest)
            .await?;
        *lock(&self.answers) = answers;
        *lock(&self.redeemed) = Some(id.clone());
        Ok(Some(id))
    }

    /// The questions this round ended with, as an MCP `input_required` result's requests and
    /// sealed state (carrying every answer so far).
    pub fn input_required(&self, approvals: &Approvals) -> Result<(InputRequests, String), String> {
        let (tool, digest) = self
            .root
            .get()
            .ok_or("no top-level call asked a question")?;
        let (mut questions, timeout) = std::mem::take(&mut *lock(&self.unanswered));
        // The retry runs again what this round ran on the client's yeses: each execution
        // needs its own, so they are asked for again now rather than one round at a time.
        for q in std::mem::take(&mut *lock(&self.spent)) {
            if !questions.iter().any(|p| p.key == q.key) {
                questions.push(q);
            }
        }
        let mut requests = InputRequests::new();
        let mut pending = Vec::with_capacity(questions.len());
        for q in &questions {
            // The tool's own key (which may not take the host's `airlock.` form), or the host's.
            // A tool asking under one key twice in a round (two nested calls, say) is refused.
            let wire = q.wire.clone().unwrap_or_else(|| q.key.clone());
            if requests.contains_key(&wire) {
                return Err(format!("two questions of one round use the key \"{wire}\""));
            }
            requests.insert(wire.clone(), q.input_request()?);
            pending.push(Pending {
                key: q.key.clone(),
                wire,
                asking: q.asking,
            });
        }
        let state = approvals.issue(Ticket {
            v: TICKET_VERSION,
            id: self.next_ticket().to_owned(),
            server: String::new(),
            principal: self.principal.to_string(),
            tool: tool.to_owned(),
            arguments_sha256: digest.to_owned(),
            issued_ms: now_ms(),
            expires_ms: now_ms() + timeout.unwrap_or(Duration::from_secs(300)).as_millis() as u64,
            epoch: String::new(),
            answers: lock(&self.answers)
                .iter()
                .map(|(k, a)| (k.clone(), a.clone()))
                .collect(),
            pending,
        })?;
        Ok((requests, state))
    }

    /// Put `question` to a person as `policy` says and wait for the answer. An approval that
    /// is not a yes ends the call; confirmations and forms return the answer to the tool.
    pub async fn ask(
        &self,
        approvals: &Approvals,
        audit: &AuditLog,
        call: &AskingCall<'_>,
        question: Question,
        policy: &ApprovalPolicy,
    ) -> Result<Answered, CallFailure> {
        let known = {
            let mut answers = lock(&self.answers);
            match answers.get(&question.key) {
                // A yes that authorises an execution is used up by it.
                Some(a) if !question.asking.is_data() && a.reply.is_yes() => {
                    answers.remove(&question.key)
                }
                other => other.cloned(),
            }
        };
        let client_can_ask =
            !matches!(self.client, ClientChannel::Unable) && self.caps.allows(question.asking);
        let via = match policy.via {
            // An operator cannot fill in the user's form, nor answer for the client's model.
            _ if question.asking.is_data() => Via::Client,
            Via::Client if !client_can_ask && policy.fallback_operator => Via::Operator,
            via => via,
        };
        let make = |event: &'static str, ticket: &str, by: Option<&str>, reason: Option<&str>| {
            ApprovalRecord {
                event,
                asking: question.asking,
                ticket: ticket.to_owned(),
                principal: &self.principal,
                tool: &question.tool,
                call_id: call.call_id,
                arguments_sha256: call.digest,
                via,
                by: by.map(str::to_owned),
                reason: reason.map(str::to_owned),
            }
        };
        let record = |event: &'static str, ticket: &str, by: Option<&str>, reason: Option<&str>| {
            make(event, ticket, by, reason).write(audit)
        };
        if let Some(answered) = known {
            // An answer the retry brought back in its ticket.
            if !question.asking.is_data() && answered.reply.is_yes() {
                lock(&self.spent).push(question.clone());
            }
            let ticket = lock(&self.redeemed).clone().unwrap_or_default();
            let event = reply_event(&answered.reply, question.asking);
            record(
                event,
                &ticket,
                Some(&answered.by),
                answered.reason.as_deref(),
            )
            .await?;
            return Ok(answered);
        }
        // An answer sent before it was asked (a retry without a request state) is data the
        // client could have given when asked: a data question of the tool's takes a well-formed
        // one under its key. An approval or a confirmation never does.
        if let Some(wire) = question
            .wire
            .as_deref()
            .filter(|_| question.asking.is_data())
        {
            let given = lock(&self.unsolicited).remove(wire);
            if let Some(reply) = given.and_then(|v| Reply::well_formed(question.asking, &v)) {
                let by = format!("client user of {}", self.principal);
                record(reply_event(&reply, question.asking), "", Some(&by), None).await?;
                let answered = Answered {
                    reply,
                    by,
                    reason: None,
                };
                lock(&self.answers).insert(question.key.clone(), answered.clone());
                return Ok(answered);
            }
        }
        if self.questions.fetch_add(1, Ordering::AcqRel) >= MAX_QUESTIONS {
            record("refused", "", None, Some("too many questions in one call")).await?;
            return Err(CallFailure::TooManyQuestions {
                tool: question.tool.clone(),
                limit: MAX_QUESTIONS,
            });
        }
        // What the record says if the call ends while the question waits.
        let abandoned = |ticket: &str| {
            let r = make(
                "abandoned",
                ticket,
                None,
                Some("the call ended while waiting"),
            );
            (audit.clone(), serde_json::to_value(&r).unwrap_or_default())
        };
        // A client that did not declare what the question needs cannot be asked it.
        let channel = if client_can_ask {
            &self.client
        } else {
            &ClientChannel::Unable
        };
        let answered = match (via, channel) {
            // Forms, sampling and roots are the client's to give: a client that did not declare
            // them gets MCP's missing-capability error. (An approval or a confirmation it cannot
            // show is refused by name below, or went to the operator above.)
            (Via::Client, ClientChannel::Unable) if question.asking.is_data() => {
                record(
                    "unavailable",
                    "",
                    None,
                    Some("the client did not declare the capability"),
                )
                .await?;
                return Err(CallFailure::MissingCapability {
                    capability: question.asking.capability(),
                });
            }
            (Via::Client, ClientChannel::Unable) => {
                record(
                    "unavailable",
                    "",
                    None,
                    Some("the client cannot ask its user"),
                )
                .await?;
                return Err(CallFailure::CannotAsk {
                    tool: question.tool.clone(),
                    asking: question.asking,
                });
            }
            (Via::Client, ClientChannel::Rounds) => {
                record("requested", self.next_ticket(), None, None).await?;
                let mut pending = lock(&self.unanswered);
                pending.1 = Some(
                    pending
                        .1
                        .map_or(policy.timeout.0, |t| t.min(policy.timeout.0)),
                );
                if !pending.0.iter().any(|q| q.key == question.key) {
                    pending.0.push(question);
                }
                return Err(CallFailure::InputRequired);
            }
            (Via::Client, ClientChannel::Inline(elicitor)) => {
                let id = crate::core::ids::random_id();
                let params = question
                    .input_request()
                    .map_err(|e| CallFailure::InvalidArguments(format!("ask: {e}")))?;
                record("requested", &id, None, None).await?;
                let mut open = Open {
                    queue: None,
                    record: Some(abandoned(&id)),
                };
                let asked = self
                    .pause
                    .during(tokio::time::timeout(policy.timeout.0, elicitor.ask(params)))
                    .await;
                open.settle();
                let by = format!("client user of {}", self.principal);
                match asked {
                    Err(_) => {
                        self.pause.forfeit(policy.timeout.0);
                        record("timed_out", &id, None, None).await?;
                        return Err(timed_out(&question, policy.timeout));
                    }
                    Ok(Err(e)) => {
                        record("cancelled", &id, Some(&by), Some(&e)).await?;
                        Answered {
                            reply: Reply::Cancel,
                            by,
                            reason: Some(e),
                        }
                    }
                    Ok(Ok(v)) => {
                        let reply = Reply::from_response(question.asking, &v);
                        record(reply_event(&reply, question.asking), &id, Some(&by), None).await?;
                        Answered {
                            reply,
                            by,
                            reason: None,
                        }
                    }
                }
            }
            (Via::Operator, _) => {
                let (id, rx) = approvals
                    .queue
                    .enqueue(&question, &self.principal, call, policy)?;
                let mut open = Open {
                    queue: Some((approvals, id.clone())),
                    record: None,
                };
                // In a fleet, posted where every replica's operator sees it (and can answer).
                approvals.post(&id, policy.timeout.0).await?;
                open.record = Some(abandoned(&id));
                record("requested", &id, None, None).await?;
                if let Some(events) = call.events {
                    let _ = events.try_send(crate::sandbox::store::GuestEvent::Progress {
                        progress: 0.0,
                        total: None,
                        message: Some(format!(
                            "waiting for an operator's {} of {} (airlock ctl approvals approve {id})",
                            question.asking, question.tool
                        )),
                    });
                }
                let waited = self
                    .pause
                    .during(approvals.answer_for(&id, rx, policy.timeout.0))
                    .await;
                open.settle();
                drop(open);
                match waited {
                    Some(a) => {
                        record(
                            reply_event(&a.reply, question.asking),
                            &id,
                            Some(&a.by),
                            a.reason.as_deref(),
                        )
                        .await?;
                        a
                    }
                    _ => {
                        self.pause.forfeit(policy.timeout.0);
                        record("timed_out", &id, None, None).await?;
                        return Err(timed_out(&question, policy.timeout));
                    }
                }
            }
        };
        // A yes given now authorises this execution only; a form's content and a no may stand.
        if question.asking.is_data() || !answered.reply.is_yes() {
            lock(&self.answers).insert(question.key.clone(), answered.clone());
        }
        Ok(answered)
    }
}

/// A question put to someone and not answered yet. Should the call end while it waits (its
/// future dropped: stopped, cancelled, timed out), the queue entry goes and the record says
/// the question was abandoned.
struct Open<'a> {
    queue: Option<(&'a Approvals, String)>,
    record: Option<(AuditLog, serde_json::Value)>,
}

impl Open<'_> {
    /// The wait ended; its own record follows.
    fn settle(&mut self) {
        self.record = None;
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if let Some((approvals, id)) = &self.queue {
            approvals.withdraw(id);
        }
        if let Some((audit, record)) = self.record.take()
            && audit.is_on()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = audit.append("approval", &record).await {
                    tracing::error!("cannot record an abandoned approval: {}", e.0);
                }
            });
        }
    }
}

fn timed_out(q: &Question, after: Span) -> CallFailure {
    CallFailure::ApprovalTimedOut {
        tool: q.tool.clone(),
        asking: q.asking,
        after,
    }
}

/// The call a question comes from.
pub struct AskingCall<'a> {
    pub call_id: &'a str,
    pub digest: &'a str,
    pub events: Option<&'a tokio::sync::mpsc::Sender<crate::sandbox::store::GuestEvent>>,
}

#[derive(Serialize)]
struct ApprovalRecord<'a> {
    /// `requested`, `granted`, `denied`, `answered`, `cancelled`, `timed_out`, `unavailable`.
    event: &'static str,
    asking: Asking,
    /// The ticket or queue entry; empty when none was issued.
    ticket: String,
    principal: &'a str,
    tool: &'a str,
    call_id: &'a str,
    arguments_sha256: &'a str,
    via: Via,
    by: Option<String>,
    reason: Option<String>,
}

impl ApprovalRecord<'_> {
    async fn write(self, audit: &AuditLog) -> Result<(), CallFailure> {
        if !audit.is_on() {
            return Ok(());
        }
        audit
            .append("approval", &self)
            .await
            .map(|_| ())
            .map_err(|e| CallFailure::AuditUnavailable(e.0))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The approval state a serving process keeps across reloads: the ticket key and the tickets
/// already used, and the operator queue.
pub struct Approvals {
    tickets: Tickets,
    pub queue: Queue,
    /// The fleet store (`[fleet]`) once joined: then tickets are sealed with the fleet's key
    /// and redeemed once across it, and the operator queue is the fleet's. Shared with the
    /// operator state.
    pub fleet: Arc<std::sync::OnceLock<Arc<Fleet>>>,
}

impl Approvals {
    /// Tickets sealed with the key in `state_dir` (created on first start). Each names the
    /// process that issued it, and only that one redeems it.
    pub fn open(state_dir: &std::path::Path) -> Result<Approvals, String> {
        let (key, _) = crate::core::files::load_or_create(&state_dir.join(STATE_KEY_FILE))?;
        Approvals::with_key(&key)
    }

    /// A key of this process only (library use, benches).
    pub fn ephemeral() -> Approvals {
        let mut key = [0u8; 32];
        if getrandom::getrandom(&mut key).is_err() {
            // No entropy source: a key from what this process alone knows. Such a host serves
            // no one (ephemeral keys are for commands that do not serve), but it is not zero.
            let seed = format!(
                "{:?} {} {:p}",
                std::time::SystemTime::now(),
                std::process::id(),
                &key
            );
            key = sha2::Sha256::digest(seed.as_bytes()).into();
        }
        Approvals::with_key(&key).expect("32 bytes is RequestStateCodec::MIN_KEY_LENGTH")
    }

    fn with_key(key: &[u8; 32]) -> Result<Approvals, String> {
        let codec = RequestStateCodec::try_new(key.to_vec())
            .map_err(|e| format!("the request-state key is unusable: {e}"))?;
        Ok(Approvals {
            tickets: Tickets {
                codec,
                used: Mutex::new(HashMap::new()),
                server: crate::core::ids::random_id(),
            },
            queue: Queue::default(),
            fleet: Arc::default(),
        })
    }

    fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.get()
    }

    /// Seal `ticket`: with this process's key, or in a fleet the fleet's.
    fn issue(&self, ticket: Ticket) -> Result<String, String> {
        self.tickets.issue(self.fleet().map(|f| &**f), ticket)
    }

    /// Open the ticket `retry` presents and use it up: in a fleet, once across the fleet (an
    /// atomic operation in the store).
    async fn redeem(
        &self,
        retry: &Retry,
        principal: &str,
        tool: &str,
        digest: &str,
    ) -> Result<(String, HashMap<String, Answered>), CallFailure> {
        let fleet = self.fleet();
        let refused = |problem| CallFailure::TicketRefused { problem };
        if let Some(fleet) = fleet
            && fleet.ticket_key().is_none()
        {
            return Err(CallFailure::FleetUnavailable(
                "this replica has not read the fleet's ticket key yet".into(),
            ));
        }
        let opened = self
            .tickets
            .redeem(fleet.map(|f| &**f), retry, principal, tool, digest)
            .map_err(refused)?;
        if let Some(fleet) = fleet {
            match fleet
                .redeem_ticket(&opened.id, &opened.epoch, opened.lifetime)
                .await
                .map_err(|e| CallFailure::FleetUnavailable(e.0))?
            {
                Some(true) => {}
                Some(false) => return Err(refused(TicketProblem::Replayed)),
                // Issued before the store's record of redeemed tickets began (it lost its
                // data): it may have been redeemed already.
                None => return Err(refused(TicketProblem::Expired)),
            }
        }
        Ok((opened.id, opened.answers))
    }

    /// Give back a redeemed ticket whose call was refused before it ran (the server was busy),
    /// so that the client's next retry can use it.
    pub async fn release(&self, id: &str) {
        match self.fleet() {
            Some(fleet) => fleet.release_ticket(id).await,
            None => self.tickets.release(id),
        }
    }

    /// The answer to question `id` (waiting here): from this replica's operator, or in a
    /// fleet from any replica's, woken by the fleet's announcement and looked for every
    /// [`ANSWER_POLL`] should an announcement be lost. `None`: the queue dropped it.
    /// `None` once `timeout` has passed with no answer (in a fleet, the question leaves the
    /// store's queue then, or its answer, given at the last moment, is taken).
    async fn answer_for(
        &self,
        id: &str,
        mut rx: oneshot::Receiver<Answered>,
        timeout: Duration,
    ) -> Option<Answered> {
        let Some(fleet) = self.fleet() else {
            return tokio::time::timeout(timeout, rx).await.ok()?.ok();
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut every = tokio::time::interval(ANSWER_POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                a = &mut rx => return a.ok(),
                _ = every.tick() => {
                    if let Some(a) = fleet.taken_answer(id).await {
                        self.deliver(a);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.queue.remove(id);
                    return fleet.close_question(id).await.map(Answered::from);
                }
            }
        }
    }

    /// The fleet announced an answer to question `id`: delivered if it waits here.
    pub async fn announced(&self, id: &str) {
        if self.queue.view(id).is_none() {
            return;
        }
        if let Some(fleet) = self.fleet()
            && let Some(a) = fleet.taken_answer(id).await
        {
            self.deliver(a);
        }
    }

    /// In a fleet, post question `id` (waiting in this replica's queue) to the fleet's queue;
    /// a store that cannot take it refuses the call (no operator elsewhere could answer).
    async fn post(&self, id: &str, timeout: Duration) -> Result<(), CallFailure> {
        let Some(fleet) = self.fleet() else {
            return Ok(());
        };
        let Some(view) = self.queue.view(id) else {
            return Ok(());
        };
        let posted = Posted {
            view: PendingView {
                replica: Some(fleet.replica.clone()),
                ..view
            },
            asked_ms: now_ms(),
            expires_ms: now_ms() + timeout.as_millis() as u64,
        };
        let text = serde_json::to_string(&posted)
            .map_err(|e| CallFailure::HostError(format!("cannot post a question: {e}")))?;
        fleet
            .post_question(id, &text, timeout)
            .await
            .map_err(|e| CallFailure::FleetUnavailable(e.0))
    }

    /// Question `id` no longer waits here.
    fn withdraw(&self, id: &str) {
        self.queue.remove(id);
        if let Some(fleet) = self.fleet() {
            fleet.withdraw_question(id);
        }
    }

    /// Every question waiting for an operator, oldest first: this server's, and in a fleet
    /// every replica's.
    pub async fn list(&self) -> Result<Vec<PendingView>, String> {
        let mut all = self.queue.list();
        let Some(fleet) = self.fleet() else {
            return Ok(all);
        };
        for v in &mut all {
            v.replica = Some(fleet.replica.clone());
        }
        let now = now_ms();
        for text in fleet.questions().await? {
            let Ok(p) = serde_json::from_str::<Posted>(&text) else {
                continue;
            };
            if all.iter().any(|v| v.id == p.view.id) {
                continue;
            }
            all.push(PendingView {
                age_ms: now.saturating_sub(p.asked_ms),
                expires_in_ms: p.expires_ms.saturating_sub(now),
                ..p.view
            });
        }
        all.sort_by_key(|v| std::cmp::Reverse(v.age_ms));
        Ok(all)
    }

    /// Answer question `id`, approving (`yes`) or denying it, as `operator` (`by` is what
    /// the record names). In a fleet the answer is taken once, wherever the question waits.
    pub async fn answer(
        &self,
        id: &str,
        yes: bool,
        operator: &str,
        by: String,
        reason: Option<String>,
    ) -> Result<PendingView, AnswerRefused> {
        let Some(fleet) = self.fleet() else {
            return self.queue.answer(id, yes, operator, by, reason);
        };
        let answer = FleetAnswer {
            id: id.to_owned(),
            approve: yes,
            by,
            reason,
        };
        match fleet
            .answer_question(&answer, operator)
            .await
            .map_err(AnswerRefused::Unavailable)?
        {
            Answering::Taken(view) => {
                // Delivered at once when it waits here (kept in the store until then).
                if self.queue.view(id).is_some()
                    && let Some(a) = fleet.taken_answer(id).await
                {
                    self.deliver(a);
                }
                serde_json::from_str::<Posted>(&view)
                    .map(|p| p.view)
                    .map_err(|e| {
                        AnswerRefused::Unavailable(format!(
                            "a question in the store is not valid: {e}"
                        ))
                    })
            }
            Answering::NotWaiting => Err(AnswerRefused::NotWaiting(id.to_owned())),
            Answering::FourEyes => Err(AnswerRefused::FourEyes {
                operator: operator.to_owned(),
            }),
        }
    }

    /// An answer another replica's operator gave (or this one's): to the call waiting here
    /// for it, if one does.
    fn deliver(&self, answer: FleetAnswer) {
        self.queue
            .deliver(&answer.id, answer.approve, answer.by, answer.reason);
    }
}

impl From<FleetAnswer> for Answered {
    fn from(a: FleetAnswer) -> Answered {
        answered(a.approve, a.by, a.reason)
    }
}

/// An operator's approval or denial.
fn answered(yes: bool, by: String, reason: Option<String>) -> Answered {
    let reply = if yes {
        let mut content = JsonObject::new();
        content.insert("approve".into(), true.into());
        Reply::Accept { content }
    } else {
        Reply::Decline
    };
    Answered { reply, by, reason }
}

/// How often a call waiting for an operator in a fleet looks in the store for its answer,
/// besides being woken when one is given.
const ANSWER_POLL: Duration = Duration::from_millis(500);

/// A question as posted to the fleet's queue.
#[derive(Debug, Serialize, Deserialize)]
struct Posted {
    #[serde(flatten)]
    view: PendingView,
    asked_ms: u64,
    expires_ms: u64,
}

/// What a sealed request state says. Signed (HMAC-SHA256), not encrypted: it holds no secret.
#[derive(Debug, Serialize, Deserialize)]
struct Ticket {
    v: u8,
    id: String,
    /// The issuing process ([`Tickets::issue`] fills it in).
    server: String,
    principal: String,
    tool: String,
    arguments_sha256: String,
    issued_ms: u64,
    expires_ms: u64,
    /// In a fleet: the epoch of the store's record of redeemed tickets it was issued under.
    #[serde(default)]
    epoch: String,
    answers: BTreeMap<String, Answered>,
    /// The questions the client was asked; its `inputResponses` answer them.
    pending: Vec<Pending>,
}

/// A question a ticket's round put to the client.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    /// The host's key of the question.
    key: String,
    /// The key of the client's `inputRequests` (the tool's own, when it chose one).
    wire: String,
    asking: Asking,
}

/// The ticket format: 2 names each question's client key and kind, 3 the issuing process, 4
/// the fleet's epoch.
const TICKET_VERSION: u8 = 4;

/// Sealing and single use of tickets.
struct Tickets {
    codec: RequestStateCodec,
    /// Ticket id → its expiry (ms); pruned as they expire.
    used: Mutex<HashMap<String, u64>>,
    /// This process's id in its tickets: the record of used tickets is this process's memory,
    /// so a ticket is redeemed only by the process that issued it (not by another server on
    /// the state directory, nor after a restart), where that record holds.
    server: String,
}

/// The issuer tickets of a fleet name: any replica redeems them (once, across the fleet).
const FLEET_ISSUER: &str = "fleet";

impl Tickets {
    /// Run `f` with the codec, the issuer name and the epoch: this process's, or in a fleet
    /// the fleet's (none before the replica has read the fleet's key; a store that lost its
    /// data gives the fleet a new epoch, so it is not kept).
    fn sealed<R>(
        &self,
        fleet: Option<&Fleet>,
        f: impl FnOnce(&RequestStateCodec, &str, &str) -> R,
    ) -> Option<R> {
        let Some(fleet) = fleet else {
            return Some(f(&self.codec, &self.server, ""));
        };
        let (key, epoch) = fleet.ticket_key()?;
        let codec = RequestStateCodec::try_new(key.to_vec()).ok()?;
        Some(f(&codec, FLEET_ISSUER, &epoch))
    }

    fn issue(&self, fleet: Option<&Fleet>, mut ticket: Ticket) -> Result<String, String> {
        self.sealed(fleet, |codec, server, epoch| {
            ticket.server = server.to_owned();
            epoch.clone_into(&mut ticket.epoch);
            codec
                .seal_json(&ticket)
                .map_err(|e| format!("cannot seal the request state: {e}"))
        })
        .ok_or("this replica has not read the fleet's ticket key yet")?
    }

    fn release(&self, id: &str) {
        lock(&self.used).remove(id);
    }

    /// Open the ticket: genuine, this caller's, tool's and arguments', unexpired, this
    /// issuer's; and, outside a fleet, unused (marked used now). In a fleet the caller marks
    /// it used in the store (by its id, until its expiry: returned too).
    fn redeem(
        &self,
        fleet: Option<&Fleet>,
        retry: &Retry,
        principal: &str,
        tool: &str,
        digest: &str,
    ) -> Result<Opened, TicketProblem> {
        self.sealed(fleet, |codec, server, epoch| {
            self.open(
                fleet.is_some(),
                codec,
                server,
                epoch,
                retry,
                principal,
                tool,
                digest,
            )
        })
        .unwrap_or(Err(TicketProblem::Forged))
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &self,
        in_fleet: bool,
        codec: &RequestStateCodec,
        server: &str,
        epoch: &str,
        retry: &Retry,
        principal: &str,
        tool: &str,
        digest: &str,
    ) -> Result<Opened, TicketProblem> {
        let state = retry
            .request_state
            .as_deref()
            .ok_or(TicketProblem::Forged)?;
        let t: Ticket = codec.open_json(state).map_err(|_| TicketProblem::Forged)?;
        if t.v != TICKET_VERSION {
            return Err(TicketProblem::Forged);
        }
        if t.principal != principal {
            return Err(TicketProblem::OtherCaller);
        }
        if t.tool != tool {
            return Err(TicketProblem::OtherTool);
        }
        if t.arguments_sha256 != digest {
            return Err(TicketProblem::OtherArguments);
        }
        let now = now_ms();
        if now > t.expires_ms {
            return Err(TicketProblem::Expired);
        }
        if t.server != server {
            return Err(TicketProblem::OtherServer);
        }
        // Issued under another epoch of the fleet store's record of redeemed tickets (the
        // store lost its data since): it might have been redeemed already.
        if t.epoch != epoch {
            return Err(TicketProblem::Expired);
        }
        if !in_fleet {
            let mut used = lock(&self.used);
            used.retain(|_, expires| *expires >= now);
            if used.insert(t.id.clone(), t.expires_ms).is_some() {
                return Err(TicketProblem::Replayed);
            }
        }
        let by = format!("client user of {principal}");
        let mut answers: HashMap<String, Answered> = t.answers.into_iter().collect();
        for p in t.pending {
            let reply = retry
                .input_responses
                .get(&p.wire)
                .map_or(Reply::Cancel, |v| Reply::from_response(p.asking, v));
            answers.insert(
                p.key,
                Answered {
                    reply,
                    by: by.clone(),
                    reason: None,
                },
            );
        }
        Ok(Opened {
            id: t.id,
            answers,
            epoch: t.epoch,
            lifetime: Duration::from_millis(t.expires_ms.saturating_sub(t.issued_ms)),
        })
    }
}

/// A ticket opened: its id and answers, and (for a fleet's record of redeemed tickets) its
/// epoch and lifetime.
#[derive(Debug)]
struct Opened {
    id: String,
    answers: HashMap<String, Answered>,
    epoch: String,
    lifetime: Duration,
}

/// A question waiting for an operator, as `ctl approvals list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingView {
    pub id: String,
    pub asking: Asking,
    pub principal: String,
    pub tool: String,
    pub call_id: String,
    pub arguments_sha256: String,
    pub message: String,
    pub age_ms: u64,
    pub expires_in_ms: u64,
    /// The operator who answers may not be the caller.
    pub four_eyes: bool,
    /// In a fleet: the replica where the call waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

struct Waiting {
    view: PendingView,
    since: Instant,
    timeout: Duration,
    answer: oneshot::Sender<Answered>,
}

/// The operator queue.
#[derive(Default)]
pub struct Queue {
    waiting: Mutex<BTreeMap<String, Waiting>>,
}

/// Why an operator's answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerRefused {
    #[error("no approval {0} is waiting (answered, timed out, or never asked)")]
    NotWaiting(String),
    #[error(
        "four-eyes rule: {operator} made this call and cannot approve it; another operator must"
    )]
    FourEyes { operator: String },
    /// In a fleet: the store could not take the answer.
    #[error("{0}")]
    Unavailable(String),
}

impl Queue {
    fn enqueue(
        &self,
        q: &Question,
        principal: &str,
        call: &AskingCall<'_>,
        policy: &ApprovalPolicy,
    ) -> Result<(String, oneshot::Receiver<Answered>), CallFailure> {
        // Short enough to type, random enough not to guess.
        let id = crate::core::ids::random_id()[..12].to_owned();
        let (tx, rx) = oneshot::channel();
        let mut waiting = lock(&self.waiting);
        let mine = waiting
            .values()
            .filter(|w| w.view.principal == principal)
            .count();
        if waiting.len() >= MAX_QUEUED || mine >= MAX_QUEUED_PER_PRINCIPAL {
            let per_principal = mine >= MAX_QUEUED_PER_PRINCIPAL;
            return Err(CallFailure::ApprovalQueueFull {
                principal: principal.to_owned(),
                limit: if per_principal {
                    MAX_QUEUED_PER_PRINCIPAL
                } else {
                    MAX_QUEUED
                },
                per_principal,
            });
        }
        waiting.insert(
            id.clone(),
            Waiting {
                view: PendingView {
                    id: id.clone(),
                    asking: q.asking,
                    principal: principal.to_owned(),
                    tool: q.tool.clone(),
                    call_id: call.call_id.to_owned(),
                    arguments_sha256: call.digest.to_owned(),
                    message: q.message.clone(),
                    age_ms: 0,
                    expires_in_ms: 0,
                    four_eyes: policy.four_eyes,
                    replica: None,
                },
                since: Instant::now(),
                timeout: policy.timeout.0,
                answer: tx,
            },
        );
        drop(waiting);
        tracing::warn!(
            target: "airlock::approval",
            "{id} waiting: {asking} of {tool} by {principal} (call {call}); answer with \
             `airlock ctl approvals approve {id}` or `airlock ctl approvals deny {id}` within {timeout}",
            asking = q.asking,
            tool = q.tool,
            call = call.call_id,
            timeout = policy.timeout,
        );
        crate::gate::notify::send(serde_json::json!({
            "event": "approval_waiting",
            "id": id,
            "asking": q.asking,
            "tool": q.tool,
            "principal": principal,
            "call_id": call.call_id,
            "arguments_sha256": call.digest,
            // Not the question's text: it can quote the arguments and whatever the tool wrote,
            // and the webhook is another party. `ctl approvals list` shows it.
            "expires_in_ms": policy.timeout.0.as_millis() as u64,
            "four_eyes": policy.four_eyes,
        }));
        Ok((id, rx))
    }

    /// How many wait now.
    pub fn len(&self) -> usize {
        lock(&self.waiting).len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, id: &str) {
        lock(&self.waiting).remove(id);
    }

    fn view(&self, id: &str) -> Option<PendingView> {
        lock(&self.waiting).get(id).map(|w| w.view.clone())
    }

    /// Give the call waiting on `id` its answer; its view, or `None` when none waits here
    /// (or the call ended a moment ago).
    fn deliver(
        &self,
        id: &str,
        yes: bool,
        by: String,
        reason: Option<String>,
    ) -> Option<PendingView> {
        let w = lock(&self.waiting).remove(id)?;
        w.answer.send(answered(yes, by, reason)).ok()?;
        Some(w.view)
    }

    /// Everything waiting, oldest first.
    pub fn list(&self) -> Vec<PendingView> {
        let mut all: Vec<PendingView> = lock(&self.waiting)
            .values()
            .map(|w| {
                let age = w.since.elapsed();
                PendingView {
                    age_ms: age.as_millis() as u64,
                    expires_in_ms: w.timeout.saturating_sub(age).as_millis() as u64,
                    ..w.view.clone()
                }
            })
            .collect();
        all.sort_by_key(|v| std::cmp::Reverse(v.age_ms));
        all
    }

    /// Answer `id`: approve (`yes`) or deny, as `operator` (`by` is what the record names).
    pub fn answer(
        &self,
        id: &str,
        yes: bool,
        operator: &str,
        by: String,
        reason: Option<String>,
    ) -> Result<PendingView, AnswerRefused> {
        {
            let waiting = lock(&self.waiting);
            let w = waiting
                .get(id)
                .ok_or_else(|| AnswerRefused::NotWaiting(id.to_owned()))?;
            if yes && w.view.four_eyes && w.view.principal == operator {
                return Err(AnswerRefused::FourEyes {
                    operator: operator.to_owned(),
                });
            }
        }
        // The call may have ended a moment ago; then this answer reached no one.
        self.deliver(id, yes, by, reason)
            .ok_or_else(|| AnswerRefused::NotWaiting(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(state: String, responses: serde_json::Value) -> Retry {
        Retry {
            request_state: Some(state),
            input_responses: serde_json::from_value(responses).unwrap(),
        }
    }

    fn ticket(a: &Approvals, id: &str, expires_ms: u64) -> String {
        a.tickets
            .issue(
                None,
                Ticket {
                    v: TICKET_VERSION,
                    id: id.into(),
                    server: String::new(),
                    principal: "alice".into(),
                    tool: "write".into(),
                    arguments_sha256: "d1".into(),
                    issued_ms: now_ms(),
                    expires_ms,
                    epoch: String::new(),
                    answers: BTreeMap::new(),
                    pending: vec![Pending {
                        key: "k".into(),
                        wire: "k".into(),
                        asking: Asking::Confirm,
                    }],
                },
            )
            .unwrap()
    }

    #[test]
    fn tickets_are_bound_single_use_and_expire() {
        let a = Approvals::ephemeral();
        let yes = serde_json::json!({"k": {"action": "accept", "content": {"approve": true}}});
        let t = ticket(&a, "t1", now_ms() + 60_000);
        let r = |p: &str, tool: &str, d: &str| {
            a.tickets
                .redeem(None, &retry(t.clone(), yes.clone()), p, tool, d)
                .map(|o| (o.id, o.answers))
        };
        assert_eq!(
            r("bob", "write", "d1").unwrap_err(),
            TicketProblem::OtherCaller
        );
        assert_eq!(
            r("alice", "read", "d1").unwrap_err(),
            TicketProblem::OtherTool
        );
        assert_eq!(
            r("alice", "write", "d2").unwrap_err(),
            TicketProblem::OtherArguments
        );
        let (id, answers) = r("alice", "write", "d1").unwrap();
        assert_eq!(id, "t1");
        assert!(answers["k"].reply.is_yes());
        assert_eq!(
            r("alice", "write", "d1").unwrap_err(),
            TicketProblem::Replayed
        );
        // A call refused before it ran gives its ticket back, once.
        a.tickets.release(&id);
        assert!(r("alice", "write", "d1").is_ok());
        assert_eq!(
            r("alice", "write", "d1").unwrap_err(),
            TicketProblem::Replayed
        );

        let expired = ticket(&a, "t2", now_ms() - 1);
        let e = a
            .tickets
            .redeem(None, &retry(expired, yes.clone()), "alice", "write", "d1");
        assert_eq!(e.unwrap_err(), TicketProblem::Expired);

        let mut forged = ticket(&a, "t3", now_ms() + 60_000);
        forged.push('x');
        let e = a
            .tickets
            .redeem(None, &retry(forged, yes.clone()), "alice", "write", "d1");
        assert_eq!(e.unwrap_err(), TicketProblem::Forged);
        let other = Approvals::ephemeral();
        let e = other.tickets.redeem(
            None,
            &retry(ticket(&a, "t4", now_ms() + 60_000), yes.clone()),
            "alice",
            "write",
            "d1",
        );
        assert_eq!(e.unwrap_err(), TicketProblem::Forged);
        // Another process with the same key (another server on the state directory): its
        // record of used tickets is not this one's, so it refuses the ticket.
        let key = [7u8; 32];
        let (first, second) = (
            Approvals::with_key(&key).unwrap(),
            Approvals::with_key(&key).unwrap(),
        );
        let e = second.tickets.redeem(
            None,
            &retry(ticket(&first, "t5", now_ms() + 60_000), yes),
            "alice",
            "write",
            "d1",
        );
        assert_eq!(e.unwrap_err(), TicketProblem::OtherServer);
    }

    #[test]
    fn a_question_asked_again_is_another_question() {
        let q = Question::confirm("t", "Proceed?", "");
        let first = q.clone().bound_to("d1", 1);
        assert_eq!(
            first,
            Question::confirm("t", "Proceed?", "").bound_to("d1", 1)
        );
        assert_ne!(first.key, q.clone().bound_to("d1", 2).key);
        assert_ne!(first.key, q.bound_to("d2", 1).key);
    }

    #[test]
    fn four_eyes_refuses_the_caller() {
        let q = Queue::default();
        let policy = ApprovalPolicy {
            four_eyes: true,
            ..ApprovalPolicy::default()
        };
        let call = AskingCall {
            call_id: "c",
            digest: "d",
            events: None,
        };
        let question = Question::approval("write", "alice", "{}", "d");
        let (id, _rx) = q.enqueue(&question, "alice", &call, &policy).unwrap();
        assert_eq!(
            q.answer(&id, true, "alice", "alice".into(), None)
                .unwrap_err(),
            AnswerRefused::FourEyes {
                operator: "alice".into()
            }
        );
        assert_eq!(q.list().len(), 1);
        q.answer(&id, true, "bob", "bob".into(), None).unwrap();
        assert!(q.list().is_empty());
        assert!(matches!(
            q.answer(&id, true, "bob", "bob".into(), None),
            Err(AnswerRefused::NotWaiting(_))
        ));
    }
}
