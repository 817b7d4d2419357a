//! Every way a call can end other than with the tool's output: one variant per named outcome.
//! The display text is what the client reads; [`CallFailure::kind`] is the stable name logs and
//! tests use.

use crate::core::denial::Denial;
use crate::core::interaction::Asking;
use crate::core::kill_scope::KillScope;
use crate::core::redact::Redactor;
use crate::core::units::{ByteSize, Rate, Span};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// No loaded component declares this tool (a protocol error, not a tool result).
    #[error("unknown tool `{0}`")]
    UnknownTool(String),
    /// No resource, prompt or completion of that name (a protocol error, not a tool result):
    /// none is declared, or the component serving its template has none of that name.
    #[error("not found: {0}")]
    NotFound(String),
    /// The call needs something of the client it did not declare (`sampling`, `elicitation`,
    /// `roots`): MCP's missing-capability error.
    #[error("the client does not support {capability}, which this call needs")]
    MissingCapability { capability: &'static str },
    /// The caller's roles do not reach this tool.
    #[error("not authorized: principal {principal} may not call {tool}")]
    NotAuthorized { principal: String, tool: String },
    /// An operator's kill switch covers the call.
    #[error("disabled by operator: {scope}")]
    Disabled { scope: KillScope },
    /// The tool's description, schemas or hints differ from what the operator approved
    /// (`airlock.lock`), or the lock is required and does not name it: it is not listed and
    /// not called until an operator approves it.
    #[error(
        "held for review: tool {tool} {why}; an operator reviews it with `airlock ctl catalog diff` before approving it"
    )]
    HeldForReview { tool: String, why: String },
    /// An operator stopped the call while it ran (`airlock ctl … --interrupt`).
    #[error("stopped by operator")]
    StoppedByOperator,
    /// A token bucket is empty.
    #[error("rate limited: {scope} is over {rate}; retry after {:.2} s", retry_after.as_secs_f64())]
    RateLimited {
        scope: String,
        rate: Rate,
        retry_after: std::time::Duration,
    },
    #[error("server busy: {limit} calls already in flight, try again shortly")]
    ServerBusy { limit: u32 },
    #[error(
        "principal busy: {principal} already has {limit} calls in flight (max_in_flight_per_principal), try again shortly"
    )]
    PrincipalBusy { principal: String, limit: u32 },
    #[error(
        "tool {tool} busy: {limit} calls of component {component} already in flight, try again shortly"
    )]
    ToolBusy {
        tool: String,
        component: String,
        limit: u32,
    },
    /// The call needs answers from the client's user: a 2026-07-28 `input_required` round.
    #[error("waiting for the client's user to answer")]
    InputRequired,
    /// A person said no to the call (or to running it at all).
    #[error("approval denied by {by}{}: tool {tool} was not run", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    ApprovalDenied {
        tool: String,
        by: String,
        reason: Option<String>,
    },
    /// The person dismissed the approval request without deciding.
    #[error("approval cancelled by {by}: tool {tool} was not run")]
    ApprovalCancelled { tool: String, by: String },
    /// No one answered in time; no answer is a no.
    #[error("{asking} for tool {tool} not answered within {after}: denied")]
    ApprovalTimedOut {
        tool: String,
        asking: Asking,
        after: Span,
    },
    /// The rule asks the client's user, and this client cannot ask.
    #[error("{asking} required for tool {tool}; this client cannot ask its user")]
    CannotAsk { tool: String, asking: Asking },
    /// The configuration was reloaded while the call waited for approval: it is not run under
    /// the one it started with.
    #[error("the configuration was reloaded while tool {tool} waited for approval; call again")]
    ReloadedWhileWaiting { tool: String },
    /// The request state a retry presented is not a ticket for this call.
    #[error("approval ticket refused: {problem}")]
    TicketRefused { problem: TicketProblem },
    /// A call (with its nested calls) asked people more questions than allowed.
    #[error("tool {tool} asked more than {limit} questions in one call: denied")]
    TooManyQuestions { tool: String, limit: u32 },
    /// Too many calls wait for an operator already.
    #[error("approval queue full: {limit} calls{} already wait for an operator; try again later", if *per_principal { format!(" of principal {principal}") } else { String::new() })]
    ApprovalQueueFull {
        principal: String,
        limit: usize,
        /// The principal's own share of the queue is full (not the whole queue).
        per_principal: bool,
    },
    /// A nested `call-tool` beyond the depth cap.
    #[error("nested call to {tool} refused: depth {depth} is beyond the cap of {limit}")]
    NestingTooDeep {
        tool: String,
        depth: u32,
        limit: u32,
    },
    /// A nested `call-tool` beyond the top-level call's budget.
    #[error(
        "nested call to {tool} refused: the top-level call has used its budget of {budget} nested calls"
    )]
    NestedBudgetExhausted { tool: String, budget: u32 },
    /// A nested `call-tool` of a tool already on the call stack with the same arguments.
    #[error(
        "nested call to {tool} refused: it is already on the call stack with the same arguments (a cycle)"
    )]
    CallCycle { tool: String },
    #[error("arguments larger than {limit}")]
    ArgumentsTooLarge { limit: ByteSize },
    /// The principal's roles do not clear it for the data class of the tool's component.
    #[error("not cleared: principal {principal} may not use {tool}, whose data is {class}")]
    NotCleared {
        principal: String,
        tool: String,
        class: &'static str,
    },
    /// A nested call would carry data of a higher class into a tool of a lower one: the
    /// calls above hand it data they have seen, or it hands its result to the calling tool.
    #[error(
        "nested call to {tool} refused: {from} data may not flow into a tool whose data class is {into}"
    )]
    ClassFlowRefused {
        tool: String,
        from: &'static str,
        into: &'static str,
    },
    /// An argument failed a content-safety check: the rule, and the JSON pointer.
    #[error("rejected input: rule {rule} at {at}")]
    RejectedInput { rule: &'static str, at: String },
    /// What the tool returned matched a rule whose policy blocks: the result is withheld.
    #[error("output blocked by rule {rule}: the result is withheld")]
    OutputBlocked { rule: String },
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    #[error("cpu budget exhausted")]
    CpuBudgetExhausted,
    #[error("memory limit of {limit} exceeded")]
    MemoryLimitExceeded { limit: ByteSize },
    #[error("timed out after {after}")]
    TimedOut { after: Span },
    #[error("stack overflow")]
    StackOverflow,
    #[error("output larger than {limit}")]
    OutputTooLarge { limit: ByteSize },
    /// More content items than `max_output_items` (counted as `output_too_large`).
    #[error("output has more than {limit} content items")]
    OutputTooManyItems { limit: u32 },
    /// One result, or one import's arguments, would make the host hold more than the call's
    /// budget for what crosses from the guest (16 × `max_output_bytes`, at least 16 MiB):
    /// stopped while it was copied, before the host held it (counted as `output_too_large`).
    #[error(
        "the tool handed the host more at once than its limits allow (16 × max_output_bytes, at least 16 MiB)"
    )]
    TransferTooLarge,
    /// The tool sent more log and progress messages than `max_message_volume` allows.
    #[error("the tool sent more than {limit} of log and progress messages")]
    MessageLimitExceeded { limit: ByteSize },
    /// More `list-changed` and `resource-updated` signals than `max_signals` in one request.
    #[error("the component gave more than {limit} signals in one request")]
    SignalLimitExceeded { limit: u32 },
    /// A `confirm` or `elicit` text larger than `max_question_bytes`.
    #[error("the tool's question is larger than {limit}")]
    QuestionTooLarge { limit: ByteSize },
    /// A write would have grown a writable grant's tree past its `quota`.
    #[error("grant {grant} is over its quota of {quota}: the write was refused")]
    QuotaExceeded { grant: String, quota: ByteSize },
    #[error("tool returned malformed output: {0}")]
    InvalidOutput(String),
    #[error("tool trapped: {0}")]
    Trapped(String),
    /// A grant check refused something the tool tried; the call ends here, whatever the tool
    /// did with the refusal.
    #[error("blocked by policy: {denial} to tool {tool} — do not retry by another route")]
    Blocked { tool: String, denial: Denial },
    #[error("cancelled by the client")]
    Cancelled,
    /// The tool ran and reported that it could not do the job.
    #[error("{0}")]
    ToolFailed(String),
    /// The host could not start the call (for example, no instance slot was free).
    #[error("the host could not run the tool: {0}")]
    HostError(String),
    /// The call's audit record could not be made durable, so its result is withheld.
    #[error("the audit log is unavailable, so the result is withheld: {0}")]
    AuditUnavailable(String),
    /// This replica could not confirm it has the fleet's current operator state (`[fleet]`):
    /// a kill given elsewhere might not be in force here, so nothing starts.
    #[error("fleet unavailable: {0}; no call starts here until it is current again")]
    FleetUnavailable(String),
}

impl CallFailure {
    /// The same failure with secret values replaced in the text the tool supplied.
    pub fn redacted(self, redactor: &Redactor) -> CallFailure {
        let clean = |m: String| redactor.redact(&m).into_owned();
        match self {
            CallFailure::InvalidArguments(m) => CallFailure::InvalidArguments(clean(m)),
            CallFailure::NotFound(m) => CallFailure::NotFound(clean(m)),
            CallFailure::InvalidOutput(m) => CallFailure::InvalidOutput(clean(m)),
            CallFailure::Trapped(m) => CallFailure::Trapped(clean(m)),
            CallFailure::ToolFailed(m) => CallFailure::ToolFailed(clean(m)),
            CallFailure::HostError(m) => CallFailure::HostError(clean(m)),
            other => other,
        }
    }

    /// The same failure with the text the tool supplied cut to `max` bytes (a note says how
    /// much was cut): a tool cannot make Airlock send, log and record megabytes of error.
    pub fn cut(self, max: usize) -> CallFailure {
        let cut = |mut m: String| {
            if m.len() > max {
                let over = m.len();
                m.truncate(m.floor_char_boundary(max));
                m.push_str(&format!("… ({} bytes not shown)", over - m.len()));
            }
            m
        };
        match self {
            CallFailure::InvalidArguments(m) => CallFailure::InvalidArguments(cut(m)),
            CallFailure::NotFound(m) => CallFailure::NotFound(cut(m)),
            CallFailure::InvalidOutput(m) => CallFailure::InvalidOutput(cut(m)),
            CallFailure::Trapped(m) => CallFailure::Trapped(cut(m)),
            CallFailure::ToolFailed(m) => CallFailure::ToolFailed(cut(m)),
            other => other,
        }
    }

    /// A stable, machine-readable name for logs and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            CallFailure::UnknownTool(_) => "unknown_tool",
            CallFailure::NotFound(_) => "not_found",
            CallFailure::MissingCapability { .. } => "missing_client_capability",
            CallFailure::NotAuthorized { .. } => "not_authorized",
            CallFailure::Disabled { .. } => "disabled_by_operator",
            CallFailure::HeldForReview { .. } => "held_for_review",
            CallFailure::StoppedByOperator => "stopped_by_operator",
            CallFailure::RateLimited { .. } => "rate_limited",
            CallFailure::ServerBusy { .. } => "server_busy",
            CallFailure::PrincipalBusy { .. } => "principal_busy",
            CallFailure::ToolBusy { .. } => "tool_busy",
            CallFailure::InputRequired => "input_required",
            CallFailure::ApprovalDenied { .. } => "approval_denied",
            CallFailure::ApprovalCancelled { .. } => "approval_cancelled",
            CallFailure::ApprovalTimedOut { .. } => "approval_timed_out",
            CallFailure::CannotAsk { .. } => "approval_unavailable",
            CallFailure::TicketRefused { .. } => "ticket_refused",
            CallFailure::ReloadedWhileWaiting { .. } => "reloaded_while_waiting",
            CallFailure::TooManyQuestions { .. } => "too_many_questions",
            CallFailure::ApprovalQueueFull { .. } => "approval_queue_full",
            CallFailure::NestingTooDeep { .. } => "nesting_too_deep",
            CallFailure::NestedBudgetExhausted { .. } => "nested_budget_exhausted",
            CallFailure::CallCycle { .. } => "call_cycle",
            CallFailure::ArgumentsTooLarge { .. } => "arguments_too_large",
            CallFailure::NotCleared { .. } => "not_cleared",
            CallFailure::ClassFlowRefused { .. } => "class_flow_refused",
            CallFailure::RejectedInput { .. } => "rejected_input",
            CallFailure::OutputBlocked { .. } => "output_blocked",
            CallFailure::InvalidArguments(_) => "invalid_arguments",
            CallFailure::CpuBudgetExhausted => "cpu_budget_exhausted",
            CallFailure::MemoryLimitExceeded { .. } => "memory_limit_exceeded",
            CallFailure::TimedOut { .. } => "timed_out",
            CallFailure::StackOverflow => "stack_overflow",
            CallFailure::OutputTooLarge { .. }
            | CallFailure::OutputTooManyItems { .. }
            | CallFailure::TransferTooLarge => "output_too_large",
            CallFailure::MessageLimitExceeded { .. } => "message_limit_exceeded",
            CallFailure::SignalLimitExceeded { .. } => "signal_limit_exceeded",
            CallFailure::QuestionTooLarge { .. } => "question_too_large",
            CallFailure::QuotaExceeded { .. } => "quota_exceeded",
            CallFailure::InvalidOutput(_) => "invalid_output",
            CallFailure::Trapped(_) => "trapped",
            CallFailure::Blocked { .. } => "blocked_by_policy",
            CallFailure::Cancelled => "cancelled",
            CallFailure::ToolFailed(_) => "tool_failed",
            CallFailure::HostError(_) => "host_error",
            CallFailure::AuditUnavailable(_) => "audit_unavailable",
            CallFailure::FleetUnavailable(_) => "fleet_unavailable",
        }
    }

    /// `denied` when a policy or limit refused the call before or while it ran, `failed` when
    /// it ran and did not finish well.
    pub fn decision(&self) -> &'static str {
        match self {
            CallFailure::UnknownTool(_)
            | CallFailure::NotFound(_)
            | CallFailure::MissingCapability { .. }
            | CallFailure::NotAuthorized { .. }
            | CallFailure::Disabled { .. }
            | CallFailure::HeldForReview { .. }
            | CallFailure::FleetUnavailable(_)
            | CallFailure::StoppedByOperator
            | CallFailure::RateLimited { .. }
            | CallFailure::ServerBusy { .. }
            | CallFailure::PrincipalBusy { .. }
            | CallFailure::ToolBusy { .. }
            | CallFailure::ArgumentsTooLarge { .. }
            | CallFailure::NotCleared { .. }
            | CallFailure::ClassFlowRefused { .. }
            | CallFailure::RejectedInput { .. }
            | CallFailure::OutputBlocked { .. }
            | CallFailure::ApprovalDenied { .. }
            | CallFailure::ApprovalCancelled { .. }
            | CallFailure::ApprovalTimedOut { .. }
            | CallFailure::CannotAsk { .. }
            | CallFailure::TicketRefused { .. }
            | CallFailure::ReloadedWhileWaiting { .. }
            | CallFailure::TooManyQuestions { .. }
            | CallFailure::ApprovalQueueFull { .. }
            | CallFailure::NestingTooDeep { .. }
            | CallFailure::NestedBudgetExhausted { .. }
            | CallFailure::CallCycle { .. }
            | CallFailure::Blocked { .. } => "denied",
            CallFailure::InputRequired => "pending",
            _ => "failed",
        }
    }
}

/// Why a ticket (sealed request state) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketProblem {
    #[error("it is not one this server issued, or it was altered")]
    Forged,
    #[error("it was issued to another caller")]
    OtherCaller,
    #[error("it was issued for another tool")]
    OtherTool,
    #[error("it was issued for other arguments")]
    OtherArguments,
    #[error("it has expired; call again to be asked again")]
    Expired,
    #[error(
        "it was issued by another server process (another server on this state directory, or \
         this one before a restart); call again to be asked again"
    )]
    OtherServer,
    #[error("it was already used")]
    Replayed,
}
