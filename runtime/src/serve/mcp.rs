//! The MCP face of the host: an rmcp `ServerHandler` over the [`Airlock`] pipeline, served on
//! stdio or Streamable HTTP.

#![allow(deprecated)] // MCP logging is deprecated (SEP-2577) but still what clients use.

use crate::config::auth::AuthMode;
use crate::control::live::Live;
use crate::core::failure::CallFailure;
use crate::core::principal::{Access, Principal};
use crate::gate::approval::{ClientCaps, ClientChannel, Elicitor, Interaction, Retry};
use crate::gate::auth::{Admitted, AuthError, Credentials};
use crate::gate::client_cert::ClientCertificate;
use crate::gate::dpop::{DPOP_ALGORITHMS, RequestTarget};
use crate::pipeline::call::{CallContext, Caller, Completing, Request};
use crate::sandbox::output::Response;
use crate::sandbox::store::{GuestEvent, Signal};
use crate::serve::listener::ListenerLimits;
use crate::serve::sessions::{SessionOwners, bind_session};
use airlock_host_api::{Listing, LogLevel};
use anyhow::{Context, Result, bail};
use rmcp::model::SubscriptionFilter;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    ContentBlock, GetPromptRequestParams, GetPromptResponse, Implementation, InputRequiredResult,
    InputResponses, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, LoggingLevel, LoggingMessageNotificationParam, MetaObject,
    PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion, ReadResourceRequestParams,
    ReadResourceResponse, Reference, ResourceUpdatedNotificationParam, ServerCapabilities,
    ServerConfig, SetLevelRequestParams, SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{
    NotificationContext, RequestContext, SubscriptionContext, SubscriptionSendError,
};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The `_meta` key carrying the named outcome of a failed call (`cpu_budget_exhausted`, …).
pub const OUTCOME_META_KEY: &str = "airlock/outcome";
/// The `_meta` key carrying, on a `rate_limited` result, the milliseconds to wait.
pub const RETRY_AFTER_META_KEY: &str = "airlock/retry_after_ms";
/// The `_meta` key carrying the call's id, as in its audit record.
pub const CALL_ID_META_KEY: &str = "airlock/call_id";
/// The `_meta` key carrying the correlation id (the request's W3C trace id, else generated).
pub const CORRELATION_META_KEY: &str = "airlock/correlation_id";

/// One MCP session (stdio has one; HTTP one per session or stateless request).
#[derive(Clone)]
pub struct McpServer {
    /// The policy in force; each request takes the current one (hot reload).
    live: Arc<Live>,
    /// Who calls when the request does not say (stdio: the local principal; HTTP requests
    /// always carry the principal their credentials proved).
    principal: Principal,
    /// The level set with `logging/setLevel` (pre-2026-07-28 clients).
    session_log_level: Arc<Mutex<Option<LoggingLevel>>>,
    /// The resources this session subscribed to (`resources/subscribe`), and who did.
    subscribed: Arc<Mutex<std::collections::HashMap<String, Principal>>>,
}

impl McpServer {
    pub fn new(live: Arc<Live>, principal: Principal) -> Self {
        McpServer {
            live,
            principal,
            session_log_level: Arc::new(Mutex::new(None)),
            subscribed: Arc::default(),
        }
    }

    /// The caller of this request.
    fn principal(&self, ctx: &RequestContext<RoleServer>) -> Principal {
        ctx.extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<Principal>())
            .unwrap_or(&self.principal)
            .clone()
    }

    /// Messages at or above this level are forwarded to the client, if any.
    fn log_level(&self, ctx: &RequestContext<RoleServer>) -> Option<LoggingLevel> {
        ctx.meta.log_level().or(*self
            .session_log_level
            .lock()
            .unwrap_or_else(|p| p.into_inner()))
    }
}

fn rank(l: LoggingLevel) -> u8 {
    match l {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

fn mcp_level(l: LogLevel) -> LoggingLevel {
    match l {
        LogLevel::Debug => LoggingLevel::Debug,
        LogLevel::Info => LoggingLevel::Info,
        LogLevel::Warn => LoggingLevel::Warning,
        LogLevel::Error => LoggingLevel::Error,
    }
}

/// A tool-error result naming the failure, with its kind in `_meta`.
fn failure_result(f: &CallFailure) -> CallToolResult {
    let mut r = CallToolResult::error(vec![ContentBlock::text(f.to_string())]);
    let mut meta = serde_json::Map::new();
    meta.insert(OUTCOME_META_KEY.into(), f.kind().into());
    if let CallFailure::RateLimited { retry_after, .. } = f {
        meta.insert(
            RETRY_AFTER_META_KEY.into(),
            (retry_after.as_millis() as u64).into(),
        );
    }
    r.meta = Some(MetaObject(meta));
    r
}

/// Put the call's ids in the result's `_meta`.
fn with_ids(mut r: CallToolResult, caller: &Caller) -> CallToolResult {
    let meta = &mut r
        .meta
        .get_or_insert_with(|| MetaObject(serde_json::Map::new()))
        .0;
    meta.insert(CALL_ID_META_KEY.into(), caller.call_id.clone().into());
    meta.insert(
        CORRELATION_META_KEY.into(),
        caller.correlation_id.clone().into(),
    );
    r
}

/// How a request through the pipeline ended, for the MCP method that made it.
enum Served {
    Done(Response),
    InputRequired(InputRequiredResult),
}

/// The most resources (URIs) one session may be subscribed to at once.
const MAX_SUBSCRIPTIONS: usize = 256;
/// The longest URI a subscription may name (as long as a declared one may be).
const MAX_SUBSCRIBED_URI: usize = 2048;

impl McpServer {
    /// Run `request` through the pipeline for this MCP request: the caller its credentials
    /// proved, the client's log level, progress token and capabilities, a retry's answers.
    async fn serve(
        &self,
        request: Request<'_>,
        retry: Option<Retry>,
        context: &RequestContext<RoleServer>,
    ) -> (Caller, Result<Served, CallFailure>) {
        let progress_token = context.meta.get_progress_token();
        let log_level = self.log_level(context);
        let (events, forwarder) = if progress_token.is_some() || log_level.is_some() {
            let (tx, mut rx) = mpsc::channel::<GuestEvent>(64);
            let peer = context.peer.clone();
            let logger = request.name().to_owned();
            let task = tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    match event {
                        GuestEvent::Progress {
                            progress,
                            total,
                            message,
                        } => {
                            if let Some(token) = &progress_token {
                                let mut p = ProgressNotificationParam::new(token.clone(), progress);
                                if let Some(t) = total {
                                    p = p.with_total(t);
                                }
                                if let Some(m) = message {
                                    p = p.with_message(m);
                                }
                                let _ = peer.notify_progress(p).await;
                            }
                        }
                        GuestEvent::Log { level, message } => {
                            let level = mcp_level(level);
                            if log_level.is_some_and(|min| rank(level) >= rank(min)) {
                                let p = LoggingMessageNotificationParam::new(level, message.into())
                                    .with_logger(&logger);
                                let _ = peer.notify_logging_message(p).await;
                            }
                        }
                    }
                }
            });
            (Some(tx), Some(task))
        } else {
            (None, None)
        };

        let parts = context.extensions.get::<http::request::Parts>();
        let traceparent = parts
            .and_then(|p| p.headers.get("traceparent"))
            .and_then(|v| v.to_str().ok());
        let mut caller = Caller::new(self.principal(context), traceparent);
        caller.authenticated = parts.and_then(|p| {
            p.extensions
                .get::<crate::pipeline::call::Authenticated>()
                .copied()
        });
        let (channel, caps) = client_channel(context);
        let interaction = Arc::new(Interaction::new(
            caller.principal.name.clone(),
            channel,
            caps,
            retry,
        ));
        let ctx = CallContext {
            cancel: context.ct.clone(),
            events,
            interaction: interaction.clone(),
            parent_clock: None,
        };
        let airlock = self.live.current();
        let result = airlock.serve(request, &caller, ctx).await;
        // The sender went with the call's store; wait for the last notifications to go out so
        // that none follows the response.
        if let Some(task) = forwarder {
            let _ = task.await;
        }
        let served = match result {
            Ok(r) => Ok(Served::Done(r)),
            Err(CallFailure::InputRequired) => interaction
                .input_required(&airlock.operator().approvals)
                .map_err(CallFailure::HostError)
                .map(|(requests, state)| {
                    let mut meta = serde_json::Map::new();
                    meta.insert(CALL_ID_META_KEY.into(), caller.call_id.clone().into());
                    meta.insert(
                        CORRELATION_META_KEY.into(),
                        caller.correlation_id.clone().into(),
                    );
                    Served::InputRequired(
                        InputRequiredResult::new(Some(requests), Some(state))
                            .with_meta(MetaObject(meta)),
                    )
                }),
            Err(f) => Err(f),
        };
        (caller, served)
    }
}

/// Whether `principal` may hear of updates to `uri` now (the policy in force, its kills).
fn may_read(live: &Live, principal: &Principal, uri: &str) -> bool {
    live.current().may_read(principal, uri)
}

/// A failure of a request other than a tool call, as the JSON-RPC error MCP asks for: a
/// missing resource or prompt, bad arguments, a missing client capability; anything else names
/// its outcome in `data`.
fn request_error(f: CallFailure, uri: Option<&str>) -> ErrorData {
    let mut data = serde_json::json!({ OUTCOME_META_KEY: f.kind() });
    if let CallFailure::RateLimited { retry_after, .. } = &f {
        data[RETRY_AFTER_META_KEY] = (retry_after.as_millis() as u64).into();
    }
    match f {
        CallFailure::NotFound(_) | CallFailure::UnknownTool(_) if uri.is_some() => {
            data["uri"] = uri.unwrap_or_default().into();
            ErrorData::resource_not_found("Resource not found", Some(data))
        }
        CallFailure::NotFound(m) => {
            ErrorData::invalid_params(format!("not found: {m}"), Some(data))
        }
        f @ (CallFailure::InvalidArguments(_) | CallFailure::ArgumentsTooLarge { .. }) => {
            ErrorData::invalid_params(f.to_string(), Some(data))
        }
        f @ CallFailure::TicketRefused { .. } => {
            ErrorData::invalid_params(f.to_string(), Some(data))
        }
        CallFailure::MissingCapability { capability } => missing_capability(capability),
        f if f.decision() == "denied" => ErrorData::invalid_request(f.to_string(), Some(data)),
        f => ErrorData::internal_error(f.to_string(), Some(data)),
    }
}

/// MCP's error for a call that needs a capability the client did not declare.
fn missing_capability(capability: &str) -> ErrorData {
    let mut required = serde_json::Map::new();
    required.insert(capability.to_owned(), serde_json::json!({}));
    match serde_json::from_value::<rmcp::model::ClientCapabilities>(serde_json::Value::Object(
        required,
    )) {
        Ok(caps) => ErrorData::missing_required_client_capability(caps),
        Err(e) => {
            ErrorData::internal_error(format!("missing client capability {capability}: {e}"), None)
        }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_resources_list_changed()
                .enable_prompts()
                .enable_prompts_list_changed()
                .enable_completions()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Tools hosted by Airlock run sandboxed under CPU, memory and time limits. A result \
                 starting with \"blocked by policy\" or naming an exceeded limit is final.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.live.current().tools_for(&self.principal(&context)),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.live
            .current()
            .catalog()
            .tool(name)
            .ok()
            .map(|t| t.tool.clone())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(
            self.live.current().resources_for(&self.principal(&context)),
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            self.live.current().templates_for(&self.principal(&context)),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        let retry = retry_of(&request.request_state, &request.input_responses);
        match self
            .serve(Request::ReadResource { uri }, retry, &context)
            .await
            .1
        {
            Ok(Served::Done(Response::Resource(r))) => Ok(r.into()),
            Ok(Served::InputRequired(r)) => Ok(r.into()),
            Ok(Served::Done(_)) => Err(ErrorData::internal_error(
                "a read answered with something else",
                None,
            )),
            Err(f) => Err(request_error(f, Some(uri))),
        }
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(
            self.live.current().prompts_for(&self.principal(&context)),
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let asked = Request::GetPrompt {
            name: &request.name,
            arguments: request.arguments.as_ref(),
        };
        let retry = retry_of(&request.request_state, &request.input_responses);
        match self.serve(asked, retry, &context).await.1 {
            Ok(Served::Done(Response::Prompt(r))) => Ok(r.into()),
            Ok(Served::InputRequired(r)) => Ok(r.into()),
            Ok(Served::Done(_)) => Err(ErrorData::internal_error(
                "a prompt answered with something else",
                None,
            )),
            Err(f) => Err(request_error(f, None)),
        }
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let of = match &request.r#ref {
            Reference::Prompt(p) => Completing::Prompt(&p.name),
            Reference::Resource(r) => Completing::Template(&r.uri),
            _ => {
                return Err(ErrorData::invalid_params(
                    "unknown completion reference",
                    None,
                ));
            }
        };
        let context_arguments = request
            .context
            .iter()
            .flat_map(|c| c.arguments.iter().flatten())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let asked = Request::Complete {
            of,
            argument: &request.argument.name,
            value: &request.argument.value,
            context: context_arguments,
        };
        match self.serve(asked, None, &context).await.1 {
            Ok(Served::Done(Response::Completion(r))) => Ok(r),
            Ok(_) => Err(ErrorData::internal_error(
                "a completion cannot ask the client for input",
                None,
            )),
            Err(f) => Err(request_error(f, None)),
        }
    }

    /// Sessions of the revisions before 2026-07-28 subscribe to a resource's updates here.
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let principal = self.principal(&context);
        if !may_read(&self.live, &principal, &request.uri) {
            return Err(ErrorData::resource_not_found(
                "Resource not found",
                Some(serde_json::json!({ "uri": request.uri })),
            ));
        }
        let mut subscribed = self.subscribed.lock().unwrap_or_else(|p| p.into_inner());
        if subscribed.len() >= MAX_SUBSCRIPTIONS && !subscribed.contains_key(&request.uri) {
            return Err(ErrorData::invalid_request(
                format!("a session may subscribe to at most {MAX_SUBSCRIPTIONS} resources"),
                None,
            ));
        }
        subscribed.insert(request.uri, principal);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscribed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request.uri);
        Ok(())
    }

    /// Sessions of the revisions before 2026-07-28 hear of list changes (operator kills,
    /// reloads, components' signals) and of updates to the resources they subscribed to, for
    /// as long as they last.
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut reloads = self.live.watch_tools();
        let mut signals = self.live.current().operator().signals.subscribe();
        let subscribed = self.subscribed.clone();
        let live = self.live.clone();
        let peer = context.peer;
        tokio::spawn(async move {
            loop {
                let sent = tokio::select! {
                    changed = reloads.changed() => match changed {
                        Err(_) => break,
                        Ok(()) => peer.notify_tool_list_changed().await,
                    },
                    signal = signals.recv() => match signal {
                        Ok(Signal::ListChanged(Listing::Tools)) => peer.notify_tool_list_changed().await,
                        Ok(Signal::ListChanged(Listing::Prompts)) => peer.notify_prompt_list_changed().await,
                        Ok(Signal::ListChanged(Listing::Resources)) => peer.notify_resource_list_changed().await,
                        Ok(Signal::ResourceUpdated(uri)) => {
                            // Subscribed, and still allowed to read it (roles, kills, reloads).
                            let by = subscribed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get(&*uri)
                                .cloned();
                            if !by.is_some_and(|p| may_read(&live, &p, &uri)) {
                                continue;
                            }
                            peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri.to_string())).await
                        }
                        // A session that fell behind misses the oldest signals.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                };
                if sent.is_err() || peer.is_transport_closed() {
                    break;
                }
            }
        });
    }

    /// 2026-07-28 clients subscribe with `subscriptions/listen`. Every filter is accepted; the
    /// SDK keeps of it what the client asked for and the capabilities allow, and sends only
    /// that (an empty filter is acknowledged empty, not refused).
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::builder()
            .tools_list_changed()
            .prompts_list_changed()
            .resources_list_changed()
            .build();
        // Updates of at most MAX_SUBSCRIPTIONS resources per stream, of URIs a declaration
        // could hold; whether the caller may read each is checked at every update.
        accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|u| u.len() <= MAX_SUBSCRIBED_URI)
                .take(MAX_SUBSCRIPTIONS)
                .cloned()
                .collect()
        });
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let principal = self.principal(context.request_context());
        let mut reloads = self.live.watch_tools();
        let mut signals = self.live.current().operator().signals.subscribe();
        let sink = context.sink();
        loop {
            let sent = tokio::select! {
                _ = context.cancelled() => return Ok(()),
                changed = reloads.changed() => match changed {
                    Err(_) => return Ok(()),
                    Ok(()) => sink.notify_tool_list_changed().await,
                },
                signal = signals.recv() => match signal {
                    Ok(Signal::ListChanged(Listing::Tools)) => sink.notify_tool_list_changed().await,
                    Ok(Signal::ListChanged(Listing::Prompts)) => sink.notify_prompt_list_changed().await,
                    Ok(Signal::ListChanged(Listing::Resources)) => sink.notify_resource_list_changed().await,
                    // Still allowed to read it (roles, kills, reloads)?
                    Ok(Signal::ResourceUpdated(uri)) if !may_read(&self.live, &principal, &uri) => continue,
                    Ok(Signal::ResourceUpdated(uri)) => sink.notify_resource_updated(uri.to_string()).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
            };
            match sent {
                // What the client did not ask for is not sent.
                Ok(()) | Err(SubscriptionSendError::NotificationNotAccepted(_)) => {}
                Err(_) => return Ok(()),
            }
        }
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self
            .session_log_level
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(request.level);
        Ok(())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let asked = Request::Tool {
            name: &request.name,
            arguments: request.arguments.as_ref(),
        };
        let retry = retry_of(&request.request_state, &request.input_responses);
        let (caller, served) = self.serve(asked, retry, &context).await;
        match served {
            Ok(Served::Done(Response::Tool(r))) => Ok(with_ids(r, &caller).into()),
            Ok(Served::InputRequired(r)) => Ok(r.into()),
            Ok(Served::Done(_)) => Err(ErrorData::internal_error(
                "a tool call answered with something else",
                None,
            )),
            Err(CallFailure::UnknownTool(name)) => Err(ErrorData::invalid_params(
                format!("unknown tool `{name}`"),
                None,
            )),
            // A request state this server did not issue (or that was altered) is a malformed
            // request, not a tool outcome: a JSON-RPC error, as the protocol asks.
            Err(
                f @ CallFailure::TicketRefused {
                    problem: crate::core::failure::TicketProblem::Forged,
                },
            ) => Err(ErrorData::invalid_params(
                f.to_string(),
                Some(serde_json::json!({ OUTCOME_META_KEY: f.kind() })),
            )),
            // The client lacks what the tool needs: MCP's error, which names it.
            Err(CallFailure::MissingCapability { capability }) => {
                Err(missing_capability(capability))
            }
            Err(f) => Ok(with_ids(failure_result(&f), &caller).into()),
        }
    }
}

/// What a retried request (2026-07-28) brought back: its sealed state and the client's answers
/// (answers without a state, too: the tool's own data questions may take them).
fn retry_of(state: &Option<String>, responses: &Option<InputResponses>) -> Option<Retry> {
    if state.is_none() && responses.is_none() {
        return None;
    }
    Some(Retry {
        request_state: state.clone(),
        input_responses: responses.clone().unwrap_or_default(),
    })
}

/// How this request's client can be asked (inline on revisions that allow server requests, by
/// `input_required` rounds on 2026-07-28, not at all without any capability) and what it said
/// it supports.
fn client_channel(context: &RequestContext<RoleServer>) -> (ClientChannel, ClientCaps) {
    let caps = context
        .client_capabilities()
        .map(|c| ClientCaps {
            elicitation: c.elicitation.is_some(),
            sampling: c.sampling.is_some(),
            roots: c.roots.is_some(),
        })
        .unwrap_or_default();
    let channel = if caps == ClientCaps::default() {
        ClientChannel::Unable
    } else if context.protocol_version() >= Some(ProtocolVersion::V_2026_07_28) {
        ClientChannel::Rounds
    } else {
        ClientChannel::Inline(Arc::new(PeerElicitor(context.peer.clone())))
    };
    (channel, caps)
}

/// Server-initiated requests on a session that allows them.
struct PeerElicitor(rmcp::Peer<RoleServer>);

impl Elicitor for PeerElicitor {
    #[allow(deprecated)] // Sampling and roots are deprecated by SEP-2577 but still in the protocol.
    fn ask(
        &self,
        request: rmcp::model::InputRequest,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<serde_json::Value, String>> + Send>,
    > {
        let peer = self.0.clone();
        Box::pin(async move {
            let unanswered = |e: rmcp::ServiceError| format!("the client did not answer: {e}");
            let answer = match request {
                rmcp::model::InputRequest::Elicitation(r) => serde_json::to_value(
                    peer.create_elicitation(r.params)
                        .await
                        .map_err(unanswered)?,
                ),
                rmcp::model::InputRequest::CreateMessage(r) => {
                    serde_json::to_value(peer.create_message(r.params).await.map_err(unanswered)?)
                }
                rmcp::model::InputRequest::ListRoots(_) => {
                    serde_json::to_value(peer.list_roots().await.map_err(unanswered)?)
                }
                _ => return Err("a request this server does not make".to_owned()),
            };
            answer.map_err(|e| e.to_string())
        })
    }
}

/// The auth layer in front of `/mcp`: the request goes on with its [`Principal`] in its
/// extensions, or is answered 401 / 403 with the `WWW-Authenticate` challenge of RFC 6750 and
/// RFC 9728. The settings are those of the policy in force.
async fn authenticate(
    axum::extract::State(live): axum::extract::State<Arc<Live>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let airlock = live.current();
    let auth = airlock.authenticator();
    let server = &airlock.catalog().policy.server;
    let headers = request.headers();
    let mut dpop = headers.get_all("dpop").iter();
    let presented = Credentials {
        authorization: headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        dpop: match (dpop.next(), dpop.next()) {
            (None, _) => Ok(None),
            (Some(v), None) => v.to_str().map(Some).map_err(|_| ()),
            (Some(_), Some(_)) => Err(()),
        },
        client_cert: request
            .extensions()
            .get::<Arc<ClientCertificate>>()
            .map(|c| &**c),
        target: RequestTarget {
            method: request.method().as_str(),
            // How the client reached this server: over TLS, its own or a proxy's.
            scheme: if server.tls.is_some() || server.behind_proxy {
                "https"
            } else {
                "http"
            },
            authority: headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| request.uri().authority().map(|a| a.as_str()))
                .unwrap_or_default(),
            path: request
                .extensions()
                .get::<axum::extract::OriginalUri>()
                .map_or_else(|| request.uri().path(), |o| o.0.path()),
        },
    };
    let (started, at) = (std::time::Instant::now(), std::time::SystemTime::now());
    let mut outcome = auth.authenticate(&presented);
    if matches!(outcome, Err(AuthError::UnknownKey)) {
        // The issuer may have rotated its keys: fetch them again (at a bounded rate) and retry.
        match auth.refresh_keys(false).await {
            Ok(true) => outcome = auth.authenticate(&presented),
            Ok(false) => {}
            Err(e) => tracing::warn!(target: "airlock::auth", "cannot refresh the JWKS: {e}"),
        }
    }
    // In a fleet, a proof one replica accepted is refused by every other.
    if let (Ok(Admitted { proof: Some(p), .. }), Some(fleet)) =
        (&outcome, airlock.operator().fleet.get())
    {
        match fleet.first_use("dpop", &p.replay_key, p.live_until).await {
            Ok(true) => {}
            Ok(false) => {
                outcome = Err(AuthError::InvalidDpopProof(
                    "the proof was used before (jti)".into(),
                ));
            }
            Err(_) => outcome = Err(AuthError::ProofsFull("the fleet store cannot be reached")),
        }
    }
    let dpop_scheme = presented
        .authorization
        .is_some_and(|h| h.len() > 5 && h[..5].eq_ignore_ascii_case("dpop "));
    let took = started.elapsed();
    crate::core::metrics::metrics().step("authenticate", took);
    let error = match outcome {
        Ok(Admitted { principal, .. }) => {
            request.extensions_mut().insert(principal);
            request
                .extensions_mut()
                .insert(crate::pipeline::call::Authenticated { at, took });
            return next.run(request).await;
        }
        Err(e) => e,
    };
    // Anyone can send bad credentials as fast as the connection caps allow: one line a second
    // (with the count since the last), every refusal in the metrics.
    // One throttle per kind: a flood of one kind does not hide the first of another.
    static REFUSALS: [crate::core::throttle::LogThrottle; AuthError::KINDS.len()] =
        [const { crate::core::throttle::LogThrottle::new() }; AuthError::KINDS.len()];
    crate::core::metrics::metrics()
        .auth_refused
        .get_or_create(&crate::core::metrics::ReasonLabels {
            reason: error.kind(),
        })
        .inc();
    if let Some(refused) = REFUSALS[error.kind_index()].admit() {
        tracing::warn!(target: "airlock::auth", reason = %error, refused, "request refused");
    }
    let resource = auth
        .settings()
        .jwt
        .as_ref()
        .map(|j| format!("resource_metadata=\"{}\"", j.metadata_url()))
        .unwrap_or_else(|| "realm=\"airlock\"".to_owned());
    let quoted = |s: &str| s.replace(['"', '\\'], "'");
    let api_keys_only = auth.settings().jwt.is_none();
    // The scheme the client is answered in: DPoP when it used DPoP or DPoP is required
    // (RFC 9449 §7.1), with the algorithms a proof may use.
    let settings = auth.settings();
    let challenge_scheme = if (dpop_scheme || settings.dpop.required) && settings.jwt.is_some() {
        let algs: Vec<String> = DPOP_ALGORITHMS.iter().map(|a| format!("{a:?}")).collect();
        format!("DPoP algs=\"{}\",", algs.join(" "))
    } else {
        "Bearer".to_owned()
    };
    let (status, challenge) = match &error {
        // No error details in the challenge of a request without credentials (RFC 6750
        // §3); the body says there is no OAuth here.
        AuthError::Missing | AuthError::UnknownCertificate(_) => (
            http::StatusCode::UNAUTHORIZED,
            format!("{challenge_scheme} {resource}"),
        ),
        AuthError::UnknownKey => (
            http::StatusCode::UNAUTHORIZED,
            format!(
                "{challenge_scheme} {resource}, error=\"invalid_token\", error_description=\"{error}\""
            ),
        ),
        AuthError::InvalidToken(why) => (
            http::StatusCode::UNAUTHORIZED,
            format!(
                "{challenge_scheme} {resource}, error=\"invalid_token\", error_description=\"{}\"",
                quoted(why)
            ),
        ),
        AuthError::InvalidDpopProof(why) => (
            http::StatusCode::UNAUTHORIZED,
            format!(
                "{challenge_scheme} {resource}, error=\"invalid_dpop_proof\", error_description=\"{}\"",
                quoted(why)
            ),
        ),
        AuthError::InsufficientScope => (
            http::StatusCode::FORBIDDEN,
            format!("{challenge_scheme} {resource}, error=\"insufficient_scope\""),
        ),
        // Not the client's fault: it may try again shortly.
        AuthError::ProofsFull(_) => (http::StatusCode::SERVICE_UNAVAILABLE, String::new()),
    };
    let body = match api_keys_only {
        true => serde_json::json!({
            "error": error.to_string(),
            "hint": no_oauth(auth.settings().mode)
        }),
        false => serde_json::json!({ "error": error.to_string() }),
    }
    .to_string();
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if status == http::StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    } else if let Ok(v) = http::HeaderValue::from_str(&challenge) {
        headers.insert(http::header::WWW_AUTHENTICATE, v);
    }
    response
}

/// Airlock is never an OAuth authorization server (RFC 8414): a 404 that says where to look.
async fn no_authorization_server() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        http::StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({
            "error": "Airlock is not an OAuth authorization server: with JWT authentication, \
                      /.well-known/oauth-protected-resource names the one to use; otherwise \
                      it takes API keys (Authorization: Bearer KEY) or client certificates"
        })),
    )
        .into_response()
}

/// Why clients of `local` would be refused by the `Host` check (`[server] allowed_hosts`),
/// if they would: said at start, rather than found out from a client's 403.
fn allowed_hosts_warning(local: SocketAddr, allowed: &[String]) -> Option<String> {
    // Entries as the Host check reads them: any case, with or without a port, IPv6 in
    // brackets or not.
    let host_of = |entry: &String| -> String {
        let e = entry.trim().to_ascii_lowercase();
        if let Some(rest) = e.strip_prefix('[') {
            return rest.split(']').next().unwrap_or_default().to_owned();
        }
        match e.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
                h.to_owned()
            }
            _ => e,
        }
    };
    let hosts: Vec<String> = allowed.iter().map(host_of).collect();
    let is_loopback_name = |h: &String| {
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    let ip = local.ip();
    if ip.is_unspecified() {
        return hosts.iter().all(is_loopback_name).then(|| {
            format!(
                "listening on {local} (every address), but [server] allowed_hosts names only \
                 loopback hosts ({}): clients on other machines will get 403 (Host not \
                 allowed); add the names and addresses they use",
                allowed.join(", ")
            )
        });
    }
    let covered = hosts
        .iter()
        .any(|h| h.parse::<std::net::IpAddr>().is_ok_and(|a| a == ip))
        || (ip.is_loopback() && hosts.iter().any(|h| h == "localhost"));
    (!covered).then(|| {
        format!(
            "listening on {local}, but [server] allowed_hosts ({}) names neither {ip} nor a \
             name for it: clients will get 403 (Host not allowed) unless they use a name it \
             lists",
            allowed.join(", ")
        )
    })
}

/// What a client is told when it looks for OAuth where there is none.
/// What a server without JWT authentication takes instead of OAuth, said to clients that look
/// for an OAuth flow.
fn no_oauth(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::ClientCert => {
            "this server has no OAuth authorization server: it takes client certificates \
             (mutual TLS) that its operator maps to principals"
        }
        AuthMode::None => {
            "this server has no OAuth authorization server and asks loopback clients for no \
             credentials"
        }
        AuthMode::ApiKey | AuthMode::Jwt => {
            "this server has no OAuth authorization server: it takes an API key, sent as \
             `Authorization: Bearer KEY` (the operator issues keys)"
        }
    }
}

/// RFC 9728 metadata of the policy in force (404 without JWT authentication).
fn protected_resource_metadata(live: &Live) -> axum::response::Response {
    use axum::response::IntoResponse;
    let airlock = live.current();
    let auth = &airlock.catalog().policy.auth;
    let Some(jwt) = &auth.jwt else {
        // A client that finds no metadata may try an OAuth login anyway: say there is none.
        return (
            http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": no_oauth(auth.mode)})),
        )
            .into_response();
    };
    axum::Json(serde_json::json!({
        "resource": jwt.resource,
        "authorization_servers": jwt.authorization_servers,
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": DPOP_ALGORITHMS
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>(),
        "dpop_bound_access_tokens_required": auth.dpop.required,
        "tls_client_certificate_bound_access_tokens": airlock
            .catalog()
            .policy
            .server
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some()),
        "resource_name": "Airlock",
        "scopes_supported": if matches!(jwt.roles_claim.as_str(), "scope" | "scp") {
            auth.claim_values()
        } else {
            Vec::new()
        },
    }))
    .into_response()
}

/// Serve MCP on stdin/stdout until the client closes the stream. Calls are made by the local
/// principal: whoever started the process.
pub async fn serve_stdio(live: Arc<Live>) -> Result<()> {
    let local = live.current().catalog().policy.auth.local_principal.clone();
    crate::serve::listener::ensure_fd_budget(&live.current().catalog().policy.fd_need(false))?;
    let service = McpServer::new(live, local)
        .serve(crate::serve::stdio::ends())
        .await
        .context("MCP initialisation on stdio failed")?;
    let m = crate::core::metrics::metrics();
    m.sessions_opened.inc();
    m.sessions_open.set(1);
    service
        .waiting()
        .await
        .context("the stdio session failed")?;
    Ok(())
}

/// The listener's own loopback origins (a page Airlock's own port would serve), accepted
/// besides `allowed_origins`: they cannot be another site's. None for a listener that is not
/// reachable on loopback.
fn own_origins(local: SocketAddr, scheme: &str) -> Vec<String> {
    let ip = local.ip();
    if !(ip.is_loopback() || ip.is_unspecified()) {
        return Vec::new();
    }
    let port = local.port();
    let mut origins = vec![format!("{scheme}://localhost:{port}")];
    if ip.is_ipv4() || ip.is_unspecified() {
        origins.push(format!("{scheme}://127.0.0.1:{port}"));
    }
    if ip.is_ipv6() {
        origins.push(format!("{scheme}://[::1]:{port}"));
    }
    origins
}

/// `/readyz`'s answer for `why` (not ready, and why), logging each change of readiness once.
fn readiness_answer(
    why: Option<String>,
    last: &std::sync::Mutex<Option<String>>,
) -> (http::StatusCode, &'static str) {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    if *last != why {
        match &why {
            Some(reason) => tracing::warn!("not ready: {reason}"),
            None => tracing::info!("ready again"),
        }
        *last = why.clone();
    }
    match why {
        None => (http::StatusCode::OK, "ready\n"),
        Some(_) => (http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
    }
}

/// Serve MCP over Streamable HTTP at `http://<addr>/mcp` until `shutdown` fires.
pub async fn serve_http(
    live: Arc<Live>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<()> {
    let airlock = live.current();
    let policy = &airlock.catalog().policy;
    if !addr.ip().is_loopback() && policy.auth.mode == AuthMode::None {
        bail!(
            "refusing to listen on {addr}: with [auth] mode = \"none\" Airlock serves HTTP on \
             loopback addresses only (127.0.0.1, ::1); configure mode = \"jwt\" or \"api-key\""
        );
    }
    // Without keys no token can be checked: a JWKS that cannot be fetched stops the start.
    airlock
        .authenticator()
        .refresh_keys(true)
        .await
        .map_err(|e| anyhow::anyhow!("cannot fetch the JWKS: {e}"))?;
    if policy.auth.mode == AuthMode::None {
        tracing::warn!(
            "[auth] mode = \"none\": HTTP callers are not authenticated (loopback only)"
        );
    }
    let server = &policy.server;
    crate::serve::listener::ensure_fd_budget(&policy.fd_need(true))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    if let Some(warning) = allowed_hosts_warning(local, &server.allowed_hosts) {
        tracing::warn!("{warning}");
    }
    let mut origins = server.allowed_origins.clone();
    let scheme = if server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    origins.extend(own_origins(local, scheme));
    if server.tls.is_none() && !local.ip().is_loopback() && !server.behind_proxy {
        tracing::warn!(
            "serving plain HTTP on {local}, which is not a loopback address: tokens and tool \
             data cross the network unencrypted; configure [server.tls], or set [server] \
             behind_proxy = true if a TLS proxy is in front"
        );
    }
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(server.allowed_hosts.clone())
        .with_allowed_origins(origins)
        .with_cancellation_token(shutdown.child_token());
    // With no allowed origins configured, any request that carries an Origin (a browser) is refused.
    config = config.enforce_origin_validation();
    let factory_live = live.clone();
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = Some(server.session_idle_timeout.0);
    let sessions = Arc::new(manager);
    let counted = sessions.clone();
    crate::serve::metrics::on_scrape(move || {
        if let Ok(open) = counted.sessions.try_read() {
            crate::core::metrics::metrics()
                .sessions_open
                .set(open.len() as i64);
        }
    });
    let owners = SessionOwners::new(
        live.clone(),
        sessions.clone(),
        server.max_sessions as usize,
        server.max_sessions_per_principal as usize,
    );
    let service = StreamableHttpService::new(
        move || {
            // Every request carries the principal the auth layer proved; should one not, it
            // can do nothing.
            let nobody = Principal {
                name: Arc::from(crate::core::principal::UNAUTHENTICATED_PRINCIPAL),
                access: Access::Roles(Arc::from([])),
            };
            Ok(McpServer::new(factory_live.clone(), nobody))
        },
        sessions,
        config,
    );
    // The last layer runs first: authentication, then the session's owner.
    let mcp = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(owners, bind_session))
        .layer(axum::middleware::from_fn_with_state(
            live.clone(),
            authenticate,
        ));
    let metadata_live = live.clone();
    let serve = move || {
        let live = metadata_live.clone();
        async move { protected_resource_metadata(&live) }
    };
    let ready_live = live.clone();
    let ready_shutdown = shutdown.clone();
    let last_ready = Arc::new(std::sync::Mutex::new(None::<String>));
    let ready = move || {
        let why = ready_live.not_ready().or_else(|| {
            ready_shutdown
                .is_cancelled()
                .then(|| "the server is stopping".to_owned())
        });
        readiness_answer(why, &last_ready)
    };
    // Outside the auth layer: a load balancer probes without credentials. The answers say
    // nothing beyond ready or not; the reason is logged and shown by `airlock ctl status`.
    let app = mcp
        .route(
            "/healthz",
            axum::routing::get(|| async { (http::StatusCode::OK, "ok\n") }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || std::future::ready(ready())),
        )
        .route(
            "/.well-known/oauth-protected-resource",
            axum::routing::get(serve.clone()),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            axum::routing::get(serve),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            axum::routing::get(no_authorization_server),
        )
        .route(
            "/.well-known/oauth-authorization-server/{*path}",
            axum::routing::get(no_authorization_server),
        );
    let limits = ListenerLimits {
        name: "mcp",
        header_timeout: server.http_header_timeout.0,
        body_timeout: server.http_body_timeout.0,
        max_connections: server.max_connections as usize,
        max_connections_per_peer: server.max_connections_per_peer as usize,
    };
    // Printed (not only logged) so scripts and tests can find an ephemeral port.
    // A closed stderr must not stop the server (eprintln! would panic on it).
    {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "airlock: serving MCP on {scheme}://{local}/mcp"
        );
    }
    tracing::info!(address = %local, tls = server.tls.is_some(), "serving MCP over Streamable HTTP");
    let tls = server.tls.as_ref().map(|started| {
        let live = live.clone();
        let started = started.config.clone();
        // The configuration in force, so that a reloaded certificate serves new connections
        // (a reload cannot turn TLS off; were it gone, the one started with goes on).
        let source: crate::serve::listener::TlsSource = Arc::new(move || {
            live.current()
                .catalog()
                .policy
                .server
                .tls
                .as_ref()
                .map_or_else(|| started.clone(), |t| t.config.clone())
        });
        source
    });
    crate::serve::listener::serve(listener, app, limits, tls, shutdown)
        .await
        .context("the HTTP server failed")
}

#[cfg(test)]
mod tests {
    use super::allowed_hosts_warning;

    #[test]
    fn a_bind_address_the_host_check_refuses_is_warned_of() {
        let default: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        let at = |a: &str| a.parse().unwrap();
        assert!(allowed_hosts_warning(at("127.0.0.1:8787"), &default).is_none());
        assert!(allowed_hosts_warning(at("[::1]:8787"), &default).is_none());
        let w = allowed_hosts_warning(at("0.0.0.0:8787"), &default).unwrap();
        assert!(w.contains("every address"), "{w}");
        assert!(allowed_hosts_warning(at("10.0.0.5:8787"), &default).is_some());
        let listed = vec!["mcp.internal".to_owned(), "10.0.0.5".to_owned()];
        assert!(allowed_hosts_warning(at("10.0.0.5:8787"), &listed).is_none());
        let spelled = vec!["10.0.0.5:8787".to_owned(), "[FD00::1]".to_owned()];
        assert!(allowed_hosts_warning(at("10.0.0.5:8787"), &spelled).is_none());
        assert!(allowed_hosts_warning(at("[fd00::1]:8787"), &spelled).is_none());
        assert!(allowed_hosts_warning(at("0.0.0.0:8787"), &listed).is_none());
    }
}
