//! `airlock.toml`: the configuration model, its validation, and the resolved [`Policy`] the rest
//! of the host works from. Everything that can be checked is checked here, at load time, so a
//! bad configuration stops the start with a message naming the file, the key and the problem.

use crate::config::audit::{self, AuditSection, AuditSettings};
use crate::config::auth::{self, AuthSection, AuthSettings};
use crate::config::bundled;
use crate::config::confine::{self, ConfineSection, ConfineSettings};
use crate::config::grants::{self, Grants, GrantsSection};
use crate::config::metrics::{self, MetricsSection, MetricsSettings};
use crate::config::notify::{self, NotifySection, NotifySettings};
use crate::config::risk::{self, ApprovalPolicy, ApprovalSection, Tier};
use crate::config::safety;
use crate::config::secrets::{self, SecretStore, SecretsSection};
use crate::config::telemetry::{self, TelemetrySection, TelemetrySettings};
use crate::config::tool_settings;
use crate::core::units::{ByteSize, Rate, Span};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `[rate_limits]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Each principal, across all tools.
    pub per_principal: Option<Rate>,
    /// Each tool, across all principals, unless its `[[tool]]` entry sets `rate_limit`.
    pub per_tool: Option<Rate>,
}

/// Per-component egress limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressLimits {
    /// Name resolution, connection and TLS handshake, and the wait for response headers, each.
    pub timeout: Span,
    pub max_request_bytes: ByteSize,
    pub max_response_bytes: ByteSize,
    /// Requests of one call at once.
    pub max_requests_in_flight: u32,
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file, or `<embedded default>`.
    pub file: String,
    /// The key at fault, such as `tool "json" › sha256`; empty when the whole file is at fault.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.problem)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    secrets: SecretsSection,
    #[serde(default)]
    audit: AuditSection,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default)]
    rate_limits: RateLimitSettings,
    /// Role → the claim values that carry it (and its clearance).
    #[serde(default)]
    roles: BTreeMap<String, safety::RoleSection>,
    #[serde(default)]
    safety: safety::GlobalSafetySection,
    #[serde(default, rename = "tool")]
    tools: Vec<ToolSection>,
    #[serde(default)]
    confine: ConfineSection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    notify: NotifySection,
    #[serde(default)]
    telemetry: TelemetrySection,
    #[serde(default)]
    fleet: crate::config::fleet::FleetSection,
    #[serde(default)]
    trust: crate::config::lock::TrustSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    state_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    max_in_flight: Option<u32>,
    max_in_flight_per_principal: Option<u32>,
    epoch_tick: Option<Span>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    max_sessions: Option<u32>,
    max_sessions_per_principal: Option<u32>,
    session_idle_timeout: Option<Span>,
    max_connections: Option<u32>,
    max_connections_per_peer: Option<u32>,
    http_header_timeout: Option<Span>,
    http_body_timeout: Option<Span>,
    /// TLS on the MCP listener.
    tls: Option<crate::config::tls::TlsSection>,
    /// A TLS-terminating proxy is in front: no warning for a plain non-loopback listener.
    #[serde(default)]
    behind_proxy: bool,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    fuel: Option<u64>,
    memory: Option<ByteSize>,
    timeout: Option<Span>,
    wasm_stack: Option<ByteSize>,
    max_argument_bytes: Option<ByteSize>,
    max_output_bytes: Option<ByteSize>,
    max_in_flight: Option<u32>,
    capture_bytes: Option<ByteSize>,
    egress_timeout: Option<Span>,
    max_request_bytes: Option<ByteSize>,
    max_response_bytes: Option<ByteSize>,
    max_depth: Option<u32>,
    max_nested_calls: Option<u32>,
    max_output_items: Option<u32>,
    max_message_bytes: Option<ByteSize>,
    max_message_volume: Option<ByteSize>,
    max_question_bytes: Option<ByteSize>,
    max_error_bytes: Option<ByteSize>,
    max_tools: Option<u32>,
    max_description_bytes: Option<ByteSize>,
    max_schema_bytes: Option<ByteSize>,
    max_open_files: Option<u32>,
    max_open_sockets: Option<u32>,
    max_requests_in_flight: Option<u32>,
    max_handles: Option<u32>,
    max_signals: Option<u32>,
    max_random_bytes: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolSection {
    name: String,
    component: String,
    sha256: Option<String>,
    /// Overrides `[trust] require_signatures` for this component.
    require_signatures: Option<bool>,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    grants: GrantsSection,
    /// What the audit log keeps of each call's arguments (their digest is always kept).
    audit_arguments: Option<AuditArguments>,
    /// Roles whose principals may list and call this component's tools.
    #[serde(default)]
    roles: Vec<String>,
    /// Calls of each of its tools, across principals (overrides `[rate_limits] per_tool`).
    rate_limit: Option<Rate>,
    tier: Option<Tier>,
    approval: Option<ApprovalSection>,
    /// Only these of the component's tools are served (all of them when absent).
    tools: Option<Vec<String>>,
    /// A generic component's functions under other tool names: function id → tool name.
    #[serde(default)]
    rename: BTreeMap<String, String>,
    /// The WIT (a `.wit` file or a package directory) whose doc comments describe a generic
    /// component's functions.
    wit: Option<String>,
    /// Plain settings the component's tools read at run time (never secret).
    #[serde(default)]
    settings: BTreeMap<String, String>,
    /// How sensitive its tools' data is.
    data_class: Option<safety::DataClass>,
    /// Its content-safety policy, over `[safety]`.
    safety: Option<safety::SafetySection>,
}

/// What the audit record of a call keeps of its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditArguments {
    /// Only their sha256.
    #[default]
    None,
    /// The arguments with secret values and secret-shaped strings replaced.
    Redacted,
    /// The arguments as sent.
    Full,
}

/// Resource limits of one component's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wasm fuel per call (roughly one unit per instruction).
    pub fuel: u64,
    /// Linear memory of the whole instance.
    pub memory: ByteSize,
    /// Wall-clock time per call.
    pub timeout: Span,
    /// Maximum wasm stack.
    pub wasm_stack: ByteSize,
    /// Size of the serialised JSON arguments.
    pub max_argument_bytes: ByteSize,
    /// Size of the result's content.
    pub max_output_bytes: ByteSize,
    /// Calls of this component running at once.
    pub max_in_flight: u32,
    /// Guest stdout and stderr kept (each) for the log; the rest is discarded.
    pub capture_bytes: ByteSize,
    /// Outgoing HTTP: name resolution, connect and response headers, each.
    pub egress_timeout: Span,
    /// Outgoing HTTP request body.
    pub max_request_bytes: ByteSize,
    /// Outgoing HTTP response body.
    pub max_response_bytes: ByteSize,
    /// Nested `call-tool` levels beneath a call of this component.
    pub max_depth: u32,
    /// Nested calls, at every level together, beneath one top-level call of this component.
    pub max_nested_calls: u32,
    /// Content items in one result.
    pub max_output_items: u32,
    /// One `host.log` or progress message; longer ones are cut.
    pub max_message_bytes: ByteSize,
    /// `host.log` and progress messages of one call together, as the tool sent them; past it
    /// the call ends (`message_limit_exceeded`).
    pub max_message_volume: ByteSize,
    /// The text of one `confirm` (prompt and details) or `elicit` (message and schema); past
    /// it the call ends (`question_too_large`).
    pub max_question_bytes: ByteSize,
    /// A tool's error message (and any other text of a failure it supplies); longer ones are
    /// cut.
    pub max_error_bytes: ByteSize,
    /// Tools one component may declare (a load error beyond).
    pub max_tools: u32,
    /// One tool's description (a load error beyond).
    pub max_description_bytes: ByteSize,
    /// One tool's input or output schema, as JSON (a load error beyond).
    pub max_schema_bytes: ByteSize,
    /// Files and directories one call holds open at once through its filesystem grants; past
    /// it the call ends (`blocked_by_policy`).
    pub max_open_files: u32,
    /// TCP sockets one call holds open at once; past it the call ends (`blocked_by_policy`).
    pub max_open_sockets: u32,
    /// Outgoing HTTP requests of one call at once (each holds a connection until its response
    /// is dropped); past it the call ends (`blocked_by_policy`).
    pub max_requests_in_flight: u32,
    /// Handles of every kind one call holds at once in the host's table (descriptors, streams,
    /// pollables, sockets, HTTP requests and their parts): each is host memory; past it the
    /// call traps.
    pub max_handles: u32,
    /// Signals (`list-changed`, `resource-updated`) one request may give: each reaches every
    /// listening session; past it the request ends (`signal_limit_exceeded`).
    pub max_signals: u32,
    /// Random bytes one `wasi:random` request may ask for (each is made in one host step);
    /// past it the call traps. Guest libraries ask for a few hundred bytes at a time.
    pub max_random_bytes: ByteSize,
}

impl Limits {
    pub fn egress(&self) -> EgressLimits {
        EgressLimits {
            timeout: self.egress_timeout,
            max_request_bytes: self.max_request_bytes,
            max_response_bytes: self.max_response_bytes,
            max_requests_in_flight: self.max_requests_in_flight,
        }
    }

    /// The most file descriptors of the host's one call can hold through its handles.
    pub fn max_descriptors(&self) -> u64 {
        u64::from(self.max_open_files)
            + u64::from(self.max_open_sockets)
            + u64::from(self.max_requests_in_flight)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 2_000_000_000,
            memory: ByteSize::mib(64),
            timeout: Span(Duration::from_secs(5)),
            wasm_stack: ByteSize::kib(512),
            max_argument_bytes: ByteSize::kib(256),
            max_output_bytes: ByteSize::mib(1),
            max_in_flight: 16,
            capture_bytes: ByteSize::kib(16),
            egress_timeout: Span(Duration::from_secs(30)),
            max_request_bytes: ByteSize::mib(1),
            max_response_bytes: ByteSize::mib(8),
            max_depth: 4,
            max_nested_calls: 32,
            max_output_items: 256,
            max_message_bytes: ByteSize::kib(4),
            max_message_volume: ByteSize::mib(1),
            max_question_bytes: ByteSize::kib(16),
            max_error_bytes: ByteSize::kib(4),
            max_tools: 128,
            max_description_bytes: ByteSize::kib(8),
            max_schema_bytes: ByteSize::kib(64),
            max_open_files: 64,
            max_open_sockets: 16,
            max_requests_in_flight: 16,
            max_handles: 4096,
            max_signals: 16,
            max_random_bytes: ByteSize::kib(256),
        }
    }
}

/// Server-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Operator state (shared by the servers on it), the keys, each server's admin socket.
    pub state_dir: PathBuf,
    /// Compiled components (default `<state_dir>/cache`); servers may share it.
    pub cache_dir: PathBuf,
    /// Calls running at once across all tools.
    pub max_in_flight: u32,
    /// Top-level calls one principal may have running at once, so that no one principal
    /// can take every slot of `max_in_flight`.
    pub max_in_flight_per_principal: u32,
    /// Interval of the epoch ticker: the granularity of timeouts and cancellation.
    pub epoch_tick: Duration,
    /// `Host` header values accepted on HTTP (DNS-rebinding defense).
    pub allowed_hosts: Vec<String>,
    /// `Origin` header values accepted on HTTP; requests from any other origin get 403.
    pub allowed_origins: Vec<String>,
    /// Streamable HTTP sessions open at once, all principals together.
    pub max_sessions: u32,
    /// Streamable HTTP sessions one principal may have open at once.
    pub max_sessions_per_principal: u32,
    /// A session with no activity for this long is closed.
    pub session_idle_timeout: Span,
    /// HTTP connections open at once, and from one peer address.
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    /// Time to receive a request's headers (on a keep-alive connection, from the end of the
    /// previous response: the idle timeout too).
    pub http_header_timeout: Span,
    /// Time to receive a request's body.
    pub http_body_timeout: Span,
    /// `[server.tls]`: the listener speaks TLS with these.
    pub tls: Option<crate::config::tls::TlsSettings>,
    /// `[server] behind_proxy`: a proxy terminates TLS in front of a plain listener.
    pub behind_proxy: bool,
}

/// Where a component's bytes came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    File(PathBuf),
    /// One of the example components compiled into the binary (`bundled:<name>`).
    Bundled(&'static str),
    /// An artifact in an OCI registry: the reference as configured (after `oci://`) and the
    /// manifest digest it was pulled by.
    Oci {
        reference: String,
        digest: String,
    },
    /// A file fetched from an `https://` URL (always pinned by sha256), as shown: its query,
    /// which may carry a token, elided.
    Https(String),
}

impl fmt::Display for ComponentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentSource::File(p) => write!(f, "{}", p.display()),
            ComponentSource::Bundled(n) => write!(f, "bundled:{n}"),
            // The digest it was pulled by, when the reference names only a tag.
            ComponentSource::Oci { reference, digest } => match reference.contains('@') {
                true => write!(f, "oci://{reference}"),
                false => write!(f, "oci://{reference}@{digest}"),
            },
            ComponentSource::Https(url) => write!(f, "{url}"),
        }
    }
}

/// One `[[tool]]` entry: a component and the limits its tools run under.
#[derive(Debug, Clone)]
pub struct ComponentEntry {
    pub name: String,
    pub source: ComponentSource,
    pub bytes: Arc<[u8]>,
    /// sha256 of `bytes` (checked against the pin when there is one).
    pub digest: [u8; 32],
    pub pinned: bool,
    /// The name of the trusted key whose signature verified (`[trust.keys]`).
    pub signer: Option<String>,
    pub limits: Limits,
    pub grants: Grants,
    pub audit_arguments: AuditArguments,
    /// Roles whose principals may list and call its tools (the local principal always may).
    pub roles: Vec<String>,
    pub rate_limit: Option<Rate>,
    /// Tier and approval rule, before they are checked against the declared tools.
    pub approval: ApprovalPolicy,
    /// `tools = [...]`: only these of the component's tools are served; a name it does not
    /// declare is a load error.
    pub only_tools: Option<Vec<String>>,
    /// A generic component's functions under other tool names: function id → tool name.
    pub rename: BTreeMap<String, String>,
    /// The WIT file or directory named by `wit`, and the doc comment of each function in it.
    pub wit: Option<PathBuf>,
    pub docs: BTreeMap<String, String>,
    /// `[tool.settings]`, readable by the component's tools.
    pub settings: Arc<BTreeMap<String, String>>,
    /// How sensitive its tools' data is: who may list and call them, and the DLP actions.
    pub data_class: safety::DataClass,
    /// Its content-safety checks, `[tool.safety]` over `[safety]`.
    pub safety: safety::ToolSafety,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it came from, or `<embedded default>`.
    pub origin: String,
    /// sha256 of the configuration text, hex (recorded with every reload).
    pub sha256: String,
    pub server: ServerSettings,
    /// Every secret `[secrets]` declares, loaded.
    pub secrets: SecretStore,
    pub audit: AuditSettings,
    pub auth: AuthSettings,
    pub rate_limits: RateLimitSettings,
    pub components: Vec<ComponentEntry>,
    pub confine: ConfineSettings,
    /// `[safety]`: the defaults of `[tool.safety]`, metadata checks, extra rules, DLP actions.
    pub safety: safety::SafetySettings,
    /// `[metrics]`: the Prometheus listener, if any.
    pub metrics: MetricsSettings,
    /// `[notify]`: the webhook told of waiting approvals and kills, if any.
    pub notify: Option<NotifySettings>,
    /// `[telemetry]`: where traces are exported, if anywhere.
    pub telemetry: Option<TelemetrySettings>,
    /// `[fleet]`: the store replicas share their operator state through, if any.
    pub fleet: Option<crate::config::fleet::FleetSettings>,
    /// `[trust]` and the lock of approved tool metadata (`airlock.lock`).
    pub trust: crate::config::lock::TrustSettings,
}

const EMBEDDED: &str = "<embedded default>";

/// Directories given on the command line; each replaces its setting in the file.
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    pub state_dir: Option<PathBuf>,
    pub audit_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    /// Ask the registries what each `oci://` tag names now, instead of using the digest the
    /// lock recorded (`airlock lock --update-tags`).
    pub resolve_tags: bool,
}

impl Dirs {
    pub fn state(dir: &Path) -> Dirs {
        Dirs {
            state_dir: Some(dir.to_path_buf()),
            ..Dirs::default()
        }
    }
}

impl Policy {
    /// Load and validate a configuration file.
    pub fn load(path: &Path, dirs: &Dirs) -> Result<Policy, ConfigError> {
        let origin = path.display().to_string();
        let fail = |problem: String| ConfigError {
            file: origin.clone(),
            key: String::new(),
            problem,
        };
        // Absolute, so that every path resolved against it is too (a bare `airlock.toml` has
        // an empty parent, which confinement cannot make a rule for).
        let file = std::path::absolute(path)
            .map_err(|e| fail(format!("cannot resolve the configuration's path: {e}")))?;
        let text = std::fs::read_to_string(&file)
            .map_err(|e| fail(format!("cannot read the configuration: {e}")))?;
        crate::core::files::trusted_file(&file)
            .map_err(|p| fail(format!("the configuration {p}")))?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Policy::parse_file(&text, &origin, &base, dirs, Some(&file))
    }

    /// The embedded default: the bundled example tools with default limits.
    pub fn embedded_default(dirs: &Dirs) -> Result<Policy, ConfigError> {
        Policy::parse(bundled::DEFAULT_CONFIG, EMBEDDED, Path::new("."), dirs)
    }

    /// Parse and validate configuration text. Relative component paths resolve against `base`;
    /// `dirs` replace the directories the file names.
    pub fn parse(
        text: &str,
        origin: &str,
        base: &Path,
        dirs: &Dirs,
    ) -> Result<Policy, ConfigError> {
        Policy::parse_file(text, origin, base, dirs, None)
    }

    /// [`Policy::parse`] of the text of `config`, a file no grant may expose.
    fn parse_file(
        text: &str,
        origin: &str,
        base: &Path,
        dirs: &Dirs,
        config: Option<&Path>,
    ) -> Result<Policy, ConfigError> {
        let err = |key: String, problem: String| ConfigError {
            file: origin.to_owned(),
            key,
            problem,
        };
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let (key, problem) = explain_toml_error(text, &e);
            err(key, problem)
        })?;

        let server = resolve_server(&file.server, base, dirs).map_err(|(k, p)| err(k, p))?;
        let defaults = apply_limits(Limits::default(), &file.limits)
            .map_err(|(k, p)| err(format!("limits › {k}"), p))?;
        let secrets = secrets::load(&file.secrets, base).map_err(|(k, p)| err(k, p))?;
        let mut audit =
            audit::resolve(&file.audit, base, &server.state_dir).map_err(|(k, p)| err(k, p))?;
        if let Some(dir) = &dirs.audit_dir {
            audit.dir = dir.clone();
        }
        let claims: BTreeMap<String, Vec<String>> = file
            .roles
            .iter()
            .map(|(r, s)| (r.clone(), s.claims().to_vec()))
            .collect();
        let mut auth = auth::resolve(&file.auth, &claims, base).map_err(|(k, p)| err(k, p))?;
        let mutual_tls = server.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if !auth.client_certs.is_empty() && !mutual_tls {
            return Err(err(
                "auth › client_certs".into(),
                "client certificates need mutual TLS: set [server.tls] client_ca".into(),
            ));
        }
        auth.clearances = file
            .roles
            .iter()
            .map(|(r, s)| (r.clone(), s.clearance()))
            .collect();
        let safety = safety::resolve_global(&file.safety).map_err(|(k, p)| err(k, p))?;

        let mut trust = crate::config::lock::resolve(&file.trust, config, base, &secrets)
            .map_err(|(k, p)| err(k, p))?;
        trust.resolve_tags = dirs.resolve_tags;
        let fetch_cache = server.cache_dir.join("components");
        let mut components: Vec<ComponentEntry> = Vec::with_capacity(file.tools.len());
        for (i, t) in file.tools.iter().enumerate() {
            let key = |k: &str| format!("tool \"{}\" (entry {}) › {k}", t.name, i + 1);
            check_entry_name(&t.name).map_err(|p| err(key("name"), p))?;
            if components.iter().any(|c| c.name == t.name) {
                return Err(err(
                    key("name"),
                    format!("another [[tool]] entry is already named \"{}\"", t.name),
                ));
            }
            let limits = apply_limits(defaults, &t.limits)
                .map_err(|(k, p)| err(key(&format!("limits › {k}")), p))?;
            let pin = match &t.sha256 {
                None => None,
                Some(pin) => Some(parse_digest(pin).map_err(|p| err(key("sha256"), p))?),
            };
            let require_signatures = t.require_signatures.unwrap_or(trust.require_signatures);
            if require_signatures && trust.keys.is_empty() {
                return Err(err(
                    key("require_signatures"),
                    "no key in [trust.keys] could verify a signature".into(),
                ));
            }
            let read = read_component(
                &t.component,
                pin.as_ref(),
                base,
                &fetch_cache,
                &trust,
                require_signatures || !trust.keys.is_empty(),
            )
            .map_err(|p| err(key("component"), p))?;
            let (source, bytes) = (read.source, read.bytes);
            if let Some((tag, digest)) = read.resolved_tag {
                trust.resolved_tags.insert(tag, digest);
            }
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            let signer = match verify_signature(&read.signature, &bytes, &trust.keys) {
                Ok(k) => Some(k.name.clone()),
                Err(why) if require_signatures => {
                    return Err(err(
                        key("component"),
                        format!(
                            "{source} (component sha256 {}) is not signed by a trusted key: {why}",
                            hex::encode(digest)
                        ),
                    ));
                }
                Err(why) => {
                    if !trust.keys.is_empty()
                        && !matches!(why, crate::supply::signature::Unsigned::Missing(_))
                    {
                        tracing::warn!(tool = %t.name, component = %source, reason = %why, "component signature not verified (not required)");
                    }
                    None
                }
            };
            let pinned = match pin {
                None => false,
                Some(want) => {
                    if want != digest {
                        return Err(err(
                            key("sha256"),
                            format!(
                                "pinned digest {} does not match {source}, whose sha256 is {}",
                                hex::encode(want),
                                hex::encode(digest)
                            ),
                        ));
                    }
                    true
                }
            };
            let grants =
                grants::resolve(&t.grants, base, &secrets).map_err(|(k, p)| err(key(&k), p))?;
            tool_settings::check_settings(&t.settings, &secrets)
                .map_err(|p| err(key("settings"), p))?;
            tool_settings::check_rename(&t.rename).map_err(|p| err(key("rename"), p))?;
            let wit = t.wit.as_ref().map(|w| base.join(w));
            let docs = match &wit {
                Some(path) => tool_settings::wit_docs(path).map_err(|p| err(key("wit"), p))?,
                None => BTreeMap::new(),
            };
            components.push(ComponentEntry {
                name: t.name.clone(),
                source,
                bytes,
                digest,
                pinned,
                signer,
                limits,
                grants,
                audit_arguments: t.audit_arguments.unwrap_or_default(),
                roles: t.roles.clone(),
                rate_limit: t.rate_limit,
                approval: risk::resolve(t.tier, t.approval.as_ref())
                    .map_err(|(k, p)| err(key(&k), p))?,
                only_tools: t.tools.clone(),
                rename: t.rename.clone(),
                wit,
                docs,
                settings: Arc::new(t.settings.clone()),
                data_class: t.data_class.unwrap_or(safety::DEFAULT_CLASS),
                safety: safety
                    .for_tool(t.safety.as_ref())
                    .map_err(|(k, p)| err(key(&k), p))?,
            });
            for r in &t.roles {
                if !auth.has_role(r) {
                    return Err(err(
                        key("roles"),
                        format!("role \"{r}\" is not declared in [roles]"),
                    ));
                }
            }
        }
        check_nested_writable(&components).map_err(|(k, p)| err(k, p))?;
        check_shared_quotas(&components).map_err(|(k, p)| err(k, p))?;
        let mut own = own_files(config, &components, &server, &audit, &secrets, &auth);
        own.extend(trust.key_files.iter().map(|(name, path)| {
            (
                format!("the signing key \"{name}\" of [trust.keys]"),
                path.clone(),
            )
        }));
        let own = resolved_with_links(own);
        check_own_files(&components, &own).map_err(|(k, p)| err(k, p))?;
        if components.is_empty() {
            return Err(err(
                "tool".into(),
                "no [[tool]] entries: there is nothing to serve".into(),
            ));
        }
        let fleet =
            crate::config::fleet::resolve(&file.fleet, &secrets).map_err(|(k, p)| err(k, p))?;
        Ok(Policy {
            origin: origin.to_owned(),
            sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
            server,
            secrets,
            audit,
            auth,
            rate_limits: file.rate_limits.clone(),
            components,
            confine: confine::resolve(&file.confine).map_err(|(k, p)| err(k, p))?,
            safety,
            metrics: metrics::resolve(&file.metrics).map_err(|(k, p)| err(k, p))?,
            notify: notify::resolve(&file.notify).map_err(|(k, p)| err(k, p))?,
            telemetry: telemetry::resolve(&file.telemetry).map_err(|(k, p)| err(k, p))?,
            fleet,
            trust,
        })
    }
}

impl Policy {
    /// `[[tool]]` entries no authenticated principal can reach (no `roles`), when HTTP callers
    /// are authenticated; only the local principal (stdio) can use them.
    pub fn unreachable_components(&self) -> Vec<&str> {
        if self.auth.mode == auth::AuthMode::None {
            return Vec::new();
        }
        self.components
            .iter()
            .filter(|c| c.roles.is_empty())
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// Every file and directory Airlock reads or trusts, named for error messages: the
/// configuration, the component files, the JWKS file, the state directory (keys, overrides,
/// the admin socket), the compile cache, the audit log and the secrets directory, as named.
fn own_files(
    config: Option<&Path>,
    components: &[ComponentEntry],
    server: &ServerSettings,
    audit: &AuditSettings,
    secrets: &SecretStore,
    auth: &AuthSettings,
) -> Vec<(String, PathBuf)> {
    let mut own: Vec<(String, PathBuf)> = Vec::new();
    if let Some(tls) = &server.tls {
        own.push(("the TLS certificate".into(), tls.cert.clone()));
        own.push(("the TLS key".into(), tls.key.clone()));
        if let Some((ca, _, _)) = &tls.client_ca {
            own.push(("the TLS client CA".into(), ca.clone()));
        }
        if let Some((crl, _)) = &tls.client_crl {
            own.push(("the TLS client CRL".into(), crl.clone()));
        }
    }
    if let Some(c) = config {
        own.push(("the configuration file".into(), c.to_path_buf()));
        own.push((
            "the lock of approved tool metadata".into(),
            crate::config::lock::path_for(c),
        ));
    }
    for c in components {
        if let ComponentSource::File(path) = &c.source {
            own.push((
                format!("the component file of tool \"{}\"", c.name),
                path.clone(),
            ));
        }
    }
    for c in components {
        if let Some(wit) = &c.wit {
            own.push((format!("the WIT of tool \"{}\"", c.name), wit.clone()));
        }
    }
    if let Some(file) = auth.jwt.as_ref().and_then(|j| j.jwks_file.as_ref()) {
        own.push(("the JWKS file".into(), file.clone()));
    }
    own.push(("the state directory".into(), server.state_dir.clone()));
    own.push(("the compile cache".into(), server.cache_dir.clone()));
    own.push(("the audit log directory".into(), audit.dir.clone()));
    if let Some(dir) = &secrets.dir {
        own.push(("the secrets directory".into(), dir.clone()));
    }
    own
}

/// Each of Airlock's own files as resolved, and each symlink on the way to it: a grant over
/// the directory of a link would let a tool replace the link and choose what Airlock reads.
fn resolved_with_links(own: Vec<(String, PathBuf)>) -> Vec<(String, PathBuf)> {
    own.into_iter()
        .flat_map(|(what, p)| {
            let links = crate::core::files::links_on_the_way(&p);
            let resolved = (what.clone(), grants::comparable(&p));
            std::iter::once(resolved).chain(links.into_iter().map(move |l| (what.clone(), l)))
        })
        .collect()
}

/// No filesystem grant may contain, or sit inside, anything in `own`: a tool that can read
/// the configuration or a key learns what it should not, and one that can write them can
/// turn Airlock's controls off (a reload would put its rewrite in force).
fn check_own_files(
    components: &[ComponentEntry],
    own: &[(String, PathBuf)],
) -> Result<(), (String, String)> {
    for (n, c) in components.iter().enumerate() {
        for (i, g) in c.grants.fs.iter().enumerate() {
            if let Some((what, path)) = own
                .iter()
                .find(|(_, p)| p.starts_with(&g.host) || g.host.starts_with(p))
            {
                return Err((
                    format!(
                        "tool \"{}\" (entry {}) › grants › fs[{i}] › host",
                        c.name,
                        n + 1
                    ),
                    format!(
                        "{} would expose airlock's own files: {what}, {}; grant a directory that \
                         holds none of them",
                        g.host.display(),
                        path.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A directory granted inside another that some tool may write could be swapped for a symlink
/// by that tool, and the next preopen of the inner grant would follow it anywhere. Refused.
fn check_nested_writable(components: &[ComponentEntry]) -> Result<(), (String, String)> {
    let all = || {
        components
            .iter()
            .flat_map(|c| c.grants.fs.iter().map(move |g| (c, g)))
    };
    for (outer_c, outer) in all().filter(|(_, g)| g.mode == grants::FsMode::Rw) {
        if let Some((inner_c, inner)) =
            all().find(|(_, g)| g.host != outer.host && g.host.starts_with(&outer.host))
        {
            return Err((
                format!("tool \"{}\" › grants › {}", inner_c.name, inner.id),
                format!(
                    "{} lies inside {}, which tool \"{}\" may write ({}); a writer could replace it with a symlink. Grant directories that do not nest",
                    inner.host.display(),
                    outer.host.display(),
                    outer_c.name,
                    outer.id
                ),
            ));
        }
    }
    Ok(())
}

/// One directory's quota is one tally, whichever tools write it: grants of the same directory
/// must agree on it.
fn check_shared_quotas(components: &[ComponentEntry]) -> Result<(), (String, String)> {
    let all = || {
        components
            .iter()
            .flat_map(|c| c.grants.fs.iter().map(move |g| (c, g)))
            .filter(|(_, g)| g.quota.is_some())
    };
    for (c, g) in all() {
        if let Some((other_c, other)) = all().find(|(_, o)| o.host == g.host && o.quota != g.quota)
        {
            return Err((
                format!("tool \"{}\" › grants › {} › quota", c.name, g.id),
                format!(
                    "{} is granted with quota {} here and {} by tool \"{}\" ({}); one directory \
                     has one quota",
                    g.host.display(),
                    g.quota.unwrap_or(ByteSize(0)),
                    other.quota.unwrap_or(ByteSize(0)),
                    other_c.name,
                    other.id
                ),
            ));
        }
    }
    Ok(())
}

/// Descriptors kept free beyond calls and connections: the audit log and journal, the admin
/// socket, reloads (which read every component), the compile cache, quota measurements.
pub const FD_RESERVE: u64 = 512;

/// The file descriptors a configuration lets calls and connections hold at once: what
/// RLIMIT_NOFILE must allow for every cap to be reached before the process runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdNeed {
    /// `[server] max_in_flight` calls, each holding all the handles its limits allow and its
    /// grants' directories.
    pub calls: u64,
    pub max_in_flight: u32,
    /// `[server] max_connections` (0 when not serving HTTP).
    pub connections: u64,
}

impl FdNeed {
    pub fn total(&self) -> u64 {
        self.calls + self.connections + FD_RESERVE
    }
}

impl fmt::Display for FdNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} file descriptors: {} for [server] max_in_flight = {} calls holding every handle \
             their limits allow (max_open_files + max_open_sockets + max_requests_in_flight), {} \
             for [server] max_connections, {FD_RESERVE} in reserve",
            self.total(),
            self.calls,
            self.max_in_flight,
            self.connections
        )
    }
}

impl Policy {
    /// What this configuration needs of RLIMIT_NOFILE, serving HTTP or not.
    pub fn fd_need(&self, http: bool) -> FdNeed {
        let per_call = self
            .components
            .iter()
            // Each call also opens its grants' directories (its preopens).
            .map(|c| c.limits.max_descriptors() + c.grants.fs.len() as u64)
            .max()
            .unwrap_or(0);
        FdNeed {
            calls: u64::from(self.server.max_in_flight) * per_call,
            max_in_flight: self.server.max_in_flight,
            connections: if http {
                u64::from(self.server.max_connections)
            } else {
                0
            } + if self.metrics.listen.is_some() {
                u64::from(metrics::METRICS_MAX_CONNECTIONS)
            } else {
                0
            },
        }
    }

    /// A warning for every writable grant on the filesystem that holds the audit log: a tool
    /// filling its quota there takes the audit log's room, and a full audit log refuses every
    /// call.
    pub fn grants_beside_audit_log(&self) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        if self.audit.mode == audit::AuditMode::Off {
            return Vec::new();
        }
        // The audit directory may not exist yet: the nearest existing ancestor decides.
        let Some(audit_dev) = self
            .audit
            .dir
            .ancestors()
            .find_map(|d| std::fs::metadata(d).ok())
            .map(|m| m.dev())
        else {
            return Vec::new();
        };
        self.components
            .iter()
            .flat_map(|c| c.grants.fs.iter().map(move |g| (c, g)))
            .filter(|(_, g)| g.mode == grants::FsMode::Rw)
            .filter(|(_, g)| std::fs::metadata(&g.host).is_ok_and(|m| m.dev() == audit_dev))
            .map(|(c, g)| {
                format!(
                    "tool \"{}\" may write {} ({}, quota {}) on the same filesystem as the audit \
                     log ({}): what it writes there takes the audit log's room; put one of them on \
                     another filesystem",
                    c.name,
                    g.host.display(),
                    g.id,
                    g.quota.unwrap_or(ByteSize(0)),
                    self.audit.dir.display()
                )
            })
            .collect()
    }
}

fn resolve_server(
    s: &ServerSection,
    base: &Path,
    dirs: &Dirs,
) -> Result<ServerSettings, (String, String)> {
    let state_dir = match (&dirs.state_dir, &s.state_dir) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(d)) => d.clone(),
        (None, None) => default_state_dir().ok_or_else(|| {
            (
                "server › state_dir".to_owned(),
                "not set, and neither XDG_STATE_HOME nor HOME is set".to_owned(),
            )
        })?,
    };
    // Each slot reserves address space for its linear memories in the pooling allocator.
    let max_in_flight = s.max_in_flight.unwrap_or(64);
    if max_in_flight == 0 || max_in_flight > 1_000 {
        return Err((
            "server › max_in_flight".into(),
            format!("{max_in_flight} is outside 1..=1000"),
        ));
    }
    // Half the server by default: one principal can never leave the others nothing.
    let max_in_flight_per_principal = s
        .max_in_flight_per_principal
        .unwrap_or(max_in_flight.div_ceil(2));
    if !(1..=max_in_flight).contains(&max_in_flight_per_principal) {
        return Err((
            "server › max_in_flight_per_principal".into(),
            format!("{max_in_flight_per_principal} is outside 1..=max_in_flight ({max_in_flight})"),
        ));
    }
    let epoch_tick = s.epoch_tick.map_or(Duration::from_millis(10), |t| t.0);
    if epoch_tick < Duration::from_millis(1) || epoch_tick > Duration::from_millis(100) {
        return Err((
            "server › epoch_tick".into(),
            "must be between 1ms and 100ms".into(),
        ));
    }
    let allowed_hosts = s
        .allowed_hosts
        .clone()
        .unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]);
    if allowed_hosts.is_empty() {
        return Err((
            "server › allowed_hosts".into(),
            "must not be empty: an empty list would accept any Host header".into(),
        ));
    }
    let allowed_origins = s.allowed_origins.clone().unwrap_or_default();
    let cache_dir = match (&dirs.cache_dir, &s.cache_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => base.join(d),
        (None, None) => state_dir.join("cache"),
    };
    let max_sessions = s.max_sessions.unwrap_or(1024);
    if !(1..=1_000_000).contains(&max_sessions) {
        return Err((
            "server › max_sessions".into(),
            format!("{max_sessions} is outside 1..=1000000"),
        ));
    }
    let max_sessions_per_principal = s.max_sessions_per_principal.unwrap_or(32);
    if !(1..=max_sessions).contains(&max_sessions_per_principal) {
        return Err((
            "server › max_sessions_per_principal".into(),
            format!("{max_sessions_per_principal} is outside 1..=max_sessions ({max_sessions})"),
        ));
    }
    let session_idle_timeout = s
        .session_idle_timeout
        .unwrap_or(Span(Duration::from_secs(300)));
    if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&session_idle_timeout.0) {
        return Err((
            "server › session_idle_timeout".into(),
            format!("{session_idle_timeout} is outside 1s..=24h"),
        ));
    }
    let max_connections = s.max_connections.unwrap_or(1024);
    if !(1..=1_000_000).contains(&max_connections) {
        return Err((
            "server › max_connections".into(),
            format!("{max_connections} is outside 1..=1000000"),
        ));
    }
    let max_connections_per_peer = s.max_connections_per_peer.unwrap_or(128);
    if !(1..=max_connections).contains(&max_connections_per_peer) {
        return Err((
            "server › max_connections_per_peer".into(),
            format!(
                "{max_connections_per_peer} is outside 1..=max_connections ({max_connections})"
            ),
        ));
    }
    let timeout = |key: &str, v: Option<Span>, default: u64, max: u64| {
        let v = v.unwrap_or(Span(Duration::from_secs(default)));
        if (Duration::from_millis(100)..=Duration::from_secs(max)).contains(&v.0) {
            Ok(v)
        } else {
            Err((
                format!("server › {key}"),
                format!("{v} is outside 100ms..={max}s"),
            ))
        }
    };
    let http_header_timeout = timeout("http_header_timeout", s.http_header_timeout, 10, 300)?;
    let http_body_timeout = timeout("http_body_timeout", s.http_body_timeout, 30, 3600)?;
    Ok(ServerSettings {
        state_dir,
        cache_dir,
        max_in_flight,
        max_in_flight_per_principal,
        epoch_tick,
        allowed_hosts,
        allowed_origins,
        max_sessions,
        max_sessions_per_principal,
        session_idle_timeout,
        max_connections,
        max_connections_per_peer,
        http_header_timeout,
        http_body_timeout,
        tls: s
            .tls
            .as_ref()
            .map(|t| crate::config::tls::resolve(t, base))
            .transpose()?,
        behind_proxy: s.behind_proxy,
    })
}

fn default_state_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let home = || {
        std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|h| PathBuf::from(h).join(".local/state"))
    };
    xdg.or_else(home).map(|d| d.join("airlock"))
}

fn apply_limits(base: Limits, s: &LimitsSection) -> Result<Limits, (String, String)> {
    fn range<T: PartialOrd + fmt::Display>(
        key: &str,
        v: T,
        lo: T,
        hi: T,
    ) -> Result<T, (String, String)> {
        if v < lo || v > hi {
            return Err((key.to_owned(), format!("{v} is outside {lo}..={hi}")));
        }
        Ok(v)
    }
    Ok(Limits {
        fuel: range("fuel", s.fuel.unwrap_or(base.fuel), 1_000, u64::MAX / 2)?,
        memory: range(
            "memory",
            s.memory.unwrap_or(base.memory),
            ByteSize::mib(1),
            ByteSize::mib(4096),
        )?,
        timeout: range(
            "timeout",
            s.timeout.unwrap_or(base.timeout),
            Span(Duration::from_millis(10)),
            Span(Duration::from_secs(3600)),
        )?,
        wasm_stack: range(
            "wasm_stack",
            s.wasm_stack.unwrap_or(base.wasm_stack),
            ByteSize::kib(64),
            ByteSize::mib(16),
        )?,
        max_argument_bytes: range(
            "max_argument_bytes",
            s.max_argument_bytes.unwrap_or(base.max_argument_bytes),
            ByteSize(2),
            ByteSize::mib(64),
        )?,
        max_output_bytes: range(
            "max_output_bytes",
            s.max_output_bytes.unwrap_or(base.max_output_bytes),
            ByteSize(1),
            ByteSize::mib(256),
        )?,
        max_in_flight: range(
            "max_in_flight",
            s.max_in_flight.unwrap_or(base.max_in_flight),
            1,
            1_000,
        )?,
        capture_bytes: range(
            "capture_bytes",
            s.capture_bytes.unwrap_or(base.capture_bytes),
            ByteSize(0),
            ByteSize::mib(16),
        )?,
        egress_timeout: range(
            "egress_timeout",
            s.egress_timeout.unwrap_or(base.egress_timeout),
            Span(Duration::from_millis(100)),
            Span(Duration::from_secs(600)),
        )?,
        max_request_bytes: range(
            "max_request_bytes",
            s.max_request_bytes.unwrap_or(base.max_request_bytes),
            ByteSize(0),
            ByteSize::mib(1024),
        )?,
        max_response_bytes: range(
            "max_response_bytes",
            s.max_response_bytes.unwrap_or(base.max_response_bytes),
            ByteSize(0),
            ByteSize::mib(1024),
        )?,
        max_depth: range("max_depth", s.max_depth.unwrap_or(base.max_depth), 0, 16)?,
        max_nested_calls: range(
            "max_nested_calls",
            s.max_nested_calls.unwrap_or(base.max_nested_calls),
            0,
            10_000,
        )?,
        max_output_items: range(
            "max_output_items",
            s.max_output_items.unwrap_or(base.max_output_items),
            1,
            100_000,
        )?,
        max_message_bytes: range(
            "max_message_bytes",
            s.max_message_bytes.unwrap_or(base.max_message_bytes),
            ByteSize(64),
            ByteSize::mib(1),
        )?,
        max_message_volume: range(
            "max_message_volume",
            s.max_message_volume.unwrap_or(base.max_message_volume),
            ByteSize::kib(1),
            ByteSize::mib(256),
        )?,
        max_question_bytes: range(
            "max_question_bytes",
            s.max_question_bytes.unwrap_or(base.max_question_bytes),
            ByteSize(256),
            ByteSize::mib(1),
        )?,
        max_error_bytes: range(
            "max_error_bytes",
            s.max_error_bytes.unwrap_or(base.max_error_bytes),
            ByteSize(64),
            ByteSize::mib(1),
        )?,
        max_tools: range(
            "max_tools",
            s.max_tools.unwrap_or(base.max_tools),
            1,
            10_000,
        )?,
        max_description_bytes: range(
            "max_description_bytes",
            s.max_description_bytes
                .unwrap_or(base.max_description_bytes),
            ByteSize(64),
            ByteSize::mib(1),
        )?,
        max_schema_bytes: range(
            "max_schema_bytes",
            s.max_schema_bytes.unwrap_or(base.max_schema_bytes),
            ByteSize(64),
            ByteSize::mib(16),
        )?,
        max_open_files: range(
            "max_open_files",
            s.max_open_files.unwrap_or(base.max_open_files),
            1,
            4_096,
        )?,
        max_open_sockets: range(
            "max_open_sockets",
            s.max_open_sockets.unwrap_or(base.max_open_sockets),
            1,
            4_096,
        )?,
        max_requests_in_flight: range(
            "max_requests_in_flight",
            s.max_requests_in_flight
                .unwrap_or(base.max_requests_in_flight),
            1,
            1_024,
        )?,
        max_handles: range(
            "max_handles",
            s.max_handles.unwrap_or(base.max_handles),
            64,
            1_000_000,
        )?,
        max_signals: range(
            "max_signals",
            s.max_signals.unwrap_or(base.max_signals),
            0,
            1_024,
        )?,
        max_random_bytes: range(
            "max_random_bytes",
            s.max_random_bytes.unwrap_or(base.max_random_bytes),
            ByteSize::kib(1),
            ByteSize::mib(64),
        )?,
    })
}

fn check_entry_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" must be 1 to 64 characters from A-Z a-z 0-9 _ - ."
        ))
    }
}

/// A TOML or shape error as the operator reads it: the key at fault (from the table header
/// and the `key =` before the error's position) and the problem in the file's terms, not
/// the parser's Rust types.
fn explain_toml_error(text: &str, e: &toml::de::Error) -> (String, String) {
    let Some(span) = e.span() else {
        return (String::new(), plain_types(e.message()));
    };
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default().trim();
    let message = plain_types(e.message());
    // A header's name: between the brackets, before any comment.
    let header = |l: &str| {
        let l = l.trim_start_matches('[');
        l[..l.find(']').unwrap_or(l.len())].trim().to_owned()
    };
    // `[tool]` where `[[tool]]` was meant: one table where a list of them is expected.
    const TABLE_LISTS: [&str; 3] = ["tool", "auth.api_keys", "safety.rules"];
    if line.starts_with('[') && !line.starts_with("[[") && message.contains("expected a list") {
        let name = header(line);
        if TABLE_LISTS.contains(&name.as_str()) {
            return (
                name.replace('.', " › "),
                format!(
                    "[{name}] declares one table, but there can be several: write [[{name}]] \
                     (two brackets), once per entry (line {line_no})"
                ),
            );
        }
    }
    // The table the error is in: its own header line, or the last header above it.
    let table = if line.starts_with('[') {
        Some(header(line))
    } else {
        text[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(header)
    };
    // The key: the first `name =` on its line, and the last one before the error when that
    // is another (a key of an inline table: `fs = [{ …, mode = "rx" }]`).
    let before = if line.starts_with('[') {
        ""
    } else {
        &text[line_start..start]
    };
    let name_before = |eq: usize| {
        let name = before[..eq]
            .trim_end()
            .rsplit(|c: char| c == '{' || c == ',' || c.is_whitespace())
            .next()?
            .trim_matches('"');
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        (!name.is_empty() && name.chars().all(plain)).then(|| name.to_owned())
    };
    let first = before.find('=').and_then(name_before);
    let last = before.rfind('=').and_then(name_before);
    let inner = last.filter(|l| first.as_ref() != Some(l));
    let path: Vec<String> = table
        .iter()
        .flat_map(|t| t.split('.').map(|p| p.trim().trim_matches('"').to_owned()))
        .chain(first)
        .chain(inner)
        .collect();
    (path.join(" › "), format!("{message} (line {line_no})"))
}

/// The parser's words for types, in the words of the file.
fn plain_types(message: &str) -> String {
    let mut m = message.to_owned();
    for (rust, plain) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list ([…])"),
        ("expected a map", "expected a table ({ … } or a [section])"),
        ("invalid type: map", "found a table"),
        ("invalid type: sequence", "found a list"),
        ("expected a string", "expected a string (in quotes)"),
    ] {
        m = m.replace(rust, plain);
    }
    // `expected struct FsGrantSection`: the name of a Rust type means a table here.
    if let Some(at) = m.find("expected struct ") {
        let end = m[at + 16..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(m.len(), |i| at + 16 + i);
        m.replace_range(at..end, "expected a table ({ … })");
    }
    m.replace("invalid type: ", "wrong type: ")
}

fn parse_digest(pin: &str) -> Result<[u8; 32], String> {
    let bytes =
        hex::decode(pin.trim()).map_err(|_| format!("\"{pin}\" is not a hex sha256 digest"))?;
    bytes
        .try_into()
        .map_err(|_| format!("\"{pin}\" is not 64 hex characters (a sha256 digest)"))
}

/// A component's bytes, read or fetched, with what can prove who signed it.
struct ReadComponent {
    source: ComponentSource,
    bytes: Arc<[u8]>,
    signature: Signature,
    /// An `oci://` tag and the digest it named (recorded in the lock).
    resolved_tag: Option<(String, String)>,
}

/// Where a component's signature is, if anywhere.
enum Signature {
    /// None exists; why.
    None(String),
    /// A `cosign sign-blob` signature (a file beside the component, or `URL.sig`).
    Detached(Vec<u8>),
    /// The cosign signatures in the registry beside the manifest `digest`.
    Registry {
        digest: String,
        found: Vec<crate::supply::signature::RegistrySignature>,
    },
    /// Where they are could not be asked.
    Unavailable(String),
}

/// The key whose signature of `bytes` verifies.
fn verify_signature<'k>(
    signature: &Signature,
    bytes: &[u8],
    keys: &'k [crate::supply::signature::TrustedKey],
) -> Result<&'k crate::supply::signature::TrustedKey, crate::supply::signature::Unsigned> {
    use crate::supply::signature::{self as sig, Unsigned};
    match signature {
        Signature::None(why) => Err(Unsigned::Missing(why.clone())),
        Signature::Detached(text) => sig::verify_detached(keys, bytes, text),
        Signature::Registry { digest, found } => sig::verify_registry(keys, digest, found),
        Signature::Unavailable(why) => Err(Unsigned::Unavailable(why.clone())),
    }
}

/// Read the component `spec` names: `bundled:NAME`, `oci://…`, `https://…` or a file (relative
/// to `base`). Fetched ones are cached under `fetch_cache`. With `signatures`, also what
/// signs it.
fn read_component(
    spec: &str,
    pin: Option<&[u8; 32]>,
    base: &Path,
    fetch_cache: &Path,
    trust: &crate::config::lock::TrustSettings,
    signatures: bool,
) -> Result<ReadComponent, String> {
    if let Some(name) = spec.strip_prefix("bundled:") {
        let (name, bytes) = bundled::component(name).ok_or_else(|| {
            format!(
                "no bundled component \"{name}\" (bundled: {})",
                bundled::NAMES.join(", ")
            )
        })?;
        return Ok(ReadComponent {
            source: ComponentSource::Bundled(name),
            bytes: Arc::from(bytes),
            signature: Signature::None("bundled examples are not signed".into()),
            resolved_tag: None,
        });
    }
    if let Some(reference) = spec.strip_prefix("oci://") {
        let parsed = crate::supply::oci::parse(reference)?;
        let (digest, resolved_tag) = match parsed.digest() {
            Some(d) => (d.to_owned(), None),
            None if trust.require_digests => {
                return Err(format!(
                    "{spec} names a tag, and [trust] require_digests is set: name the digest \
                     (oci://{}@sha256:…)",
                    parsed.whole()
                ));
            }
            None => {
                let recorded = match trust.resolve_tags {
                    true => None,
                    false => trust
                        .lock
                        .as_ref()
                        .and_then(|l| l.sources.get(spec))
                        .cloned(),
                };
                let digest = match recorded {
                    Some(d) => d,
                    None => crate::supply::oci::resolve_tag(&parsed, &trust.registries)?,
                };
                (digest.clone(), Some((spec.to_owned(), digest)))
            }
        };
        let pulled = crate::supply::oci::pull(
            &parsed,
            &digest,
            fetch_cache,
            &trust.registries,
            signatures.then_some(trust.keys.as_slice()),
            trust.max_fetch_size,
        )?;
        return Ok(ReadComponent {
            source: ComponentSource::Oci {
                reference: reference.to_owned(),
                digest: digest.clone(),
            },
            bytes: Arc::from(pulled.bytes),
            signature: match pulled.signatures {
                Ok(found) => Signature::Registry { digest, found },
                Err(e) => Signature::Unavailable(e),
            },
            resolved_tag,
        });
    }
    if spec.starts_with("https://") {
        let shown = crate::supply::https::shown(&crate::supply::https::check_url(spec)?);
        let Some(pin) = pin else {
            return Err(format!(
                "{shown}: an https:// source needs a sha256 pin (set sha256 = \"…\" beside it)"
            ));
        };
        let (bytes, sig) = crate::supply::https::fetch(
            spec,
            pin,
            fetch_cache,
            trust.registries.timeout,
            trust.max_fetch_size,
            signatures.then_some(trust.keys.as_slice()),
        )?;
        return Ok(ReadComponent {
            source: ComponentSource::Https(shown.clone()),
            bytes: Arc::from(bytes),
            signature: match sig {
                Ok(Some(s)) => Signature::Detached(s),
                Ok(None) => Signature::None(format!("no signature at {shown}.sig")),
                Err(e) => Signature::Unavailable(e),
            },
            resolved_tag: None,
        });
    }
    if spec.contains("://") {
        return Err(format!(
            "\"{spec}\": a component is a file, bundled:NAME, oci://REGISTRY/REPOSITORY:TAG or \
             an https:// URL"
        ));
    }
    let path = base.join(spec);
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read component {}: {e}", path.display()))?;
    crate::core::files::trusted_file(&path).map_err(|p| format!("the component {p}"))?;
    let sig_path = detached_signature_path(&path);
    let signature = match signatures {
        false => Signature::None("not looked for".into()),
        true => match std::fs::metadata(&sig_path) {
            Err(_) => Signature::None(format!("no {}", sig_path.display())),
            Ok(_) => Signature::Detached(crate::supply::signature::read_small(&sig_path)?),
        },
    };
    Ok(ReadComponent {
        source: ComponentSource::File(path),
        bytes: Arc::from(bytes),
        signature,
        resolved_tag: None,
    })
}

/// What `airlock verify-component` found of one component.
pub struct VerifiedComponent {
    pub source: ComponentSource,
    pub sha256: [u8; 32],
    /// The name of the key whose signature verified, or why none did.
    pub signer: Result<String, crate::supply::signature::Unsigned>,
}

/// Read (or fetch) the component `spec` names, as a `[[tool]]` entry would, check it against
/// `pin` and its signatures against `trust.keys`. Fetched files go to `cache`.
pub fn verify_component(
    spec: &str,
    pin: Option<&str>,
    cache: &Path,
    trust: &crate::config::lock::TrustSettings,
) -> Result<VerifiedComponent, String> {
    let pin = pin.map(parse_digest).transpose()?;
    let read = read_component(spec, pin.as_ref(), Path::new("."), cache, trust, true)?;
    let sha256: [u8; 32] = Sha256::digest(&read.bytes).into();
    if let Some(want) = pin
        && want != sha256
    {
        return Err(format!(
            "{} has sha256 {}, not the pinned {}",
            read.source,
            hex::encode(sha256),
            hex::encode(want)
        ));
    }
    let signer =
        verify_signature(&read.signature, &read.bytes, &trust.keys).map(|k| k.name.clone());
    Ok(VerifiedComponent {
        source: read.source,
        sha256,
        signer,
    })
}

/// Where the detached signature of the component file `path` is: `PATH.sig`, as
/// `cosign sign-blob --output-signature` and `airlock sign` write it.
pub fn detached_signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, ConfigError> {
        Policy::parse(
            text,
            "test.toml",
            Path::new("."),
            &Dirs::state(Path::new("/tmp/airlock-test-state")),
        )
    }

    #[test]
    fn embedded_default_is_valid() {
        let p = Policy::embedded_default(&Dirs::state(Path::new("/tmp/x"))).unwrap();
        assert_eq!(p.components.len(), 3);
        assert!(p.components.iter().all(|c| c.limits == Limits::default()));
    }

    #[test]
    fn unknown_key_names_the_key() {
        let e = parse("[server]\nmax_in_flihgt = 3\n").unwrap_err();
        assert!(e.problem.contains("unknown field `max_in_flihgt`"), "{e}");
        assert!(e.problem.contains("line 2"), "{e}");
    }

    #[test]
    fn limits_override_and_validate() {
        let p = parse(
            "[limits]\nmemory = \"32MiB\"\n[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n[tool.limits]\ntimeout = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(p.components[0].limits.memory, ByteSize::mib(32));
        assert_eq!(p.components[0].limits.timeout, Span(Duration::from_secs(2)));
        let e = parse("[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n[tool.limits]\nmemory = \"8GiB\"\n")
            .unwrap_err();
        assert_eq!(e.key, "tool \"t\" (entry 1) › limits › memory");
    }

    #[test]
    fn wrong_pin_and_duplicate_names_are_errors() {
        let e = parse(&format!(
            "[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\nsha256 = \"{}\"\n",
            "0".repeat(64)
        ))
        .unwrap_err();
        assert!(e.problem.starts_with("pinned digest 0000"), "{e}");
        let e = parse("[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n[[tool]]\nname = \"t\"\ncomponent = \"bundled:json\"\n")
            .unwrap_err();
        assert!(e.problem.contains("already named"), "{e}");
    }

    #[test]
    fn shape_errors_name_the_key_in_the_file_s_terms() {
        let e = parse("[tool]\nname = \"t\"\ncomponent = \"bundled:text\"\n").unwrap_err();
        assert_eq!(e.key, "tool");
        assert!(e.problem.contains("write [[tool]]"), "{}", e.problem);
        let e = parse(
            "[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n[tool.limits]\ntimeout = 5\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "tool › limits › timeout");
        assert!(
            e.problem.contains("expected a string (in quotes)"),
            "{}",
            e.problem
        );
        let e = parse(
            "[server]\nmax_sessions = -1\n[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "server › max_sessions");
        assert!(e.problem.contains("from 0 to 4294967295"), "{}", e.problem);
        let e = parse(
            "[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n[tool.grants]\nfs = [\"x\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "tool › grants › fs");
        assert!(!e.problem.contains("Section"), "{}", e.problem);
        let e = parse(
            "[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n[tool.grants]\nfs = [{host = \"x\", guest = \"/x\", mode = \"rx\"}]\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "tool › grants › fs › mode");
        // Keys that take one of two forms say both, never a Rust type's name.
        let tool = "[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n";
        for (config, key, expected) in [
            (
                format!("{tool}[tool.grants]\nnet = [5]\n"),
                "tool › grants › net",
                "expected a URL in quotes (\"https://api.example.com\") or a table ({ url = \"…\", methods = [\"GET\"] })",
            ),
            (
                format!("[roles]\nr = 5\n{tool}"),
                "roles › r",
                "expected a list of claim values ([\"analysts\"]) or a table",
            ),
            (
                format!("{tool}[tool.safety]\noutput = \"blok\"\n"),
                "tool › safety › output",
                "unknown variant `blok`, expected one of `flag`, `redact`, `block`, `spotlight`, or `off`",
            ),
        ] {
            let e = parse(&config).unwrap_err();
            assert_eq!(e.key, key, "{}", e.problem);
            assert!(e.problem.contains(expected), "{}", e.problem);
            assert!(!e.problem.contains("untagged"), "{}", e.problem);
        }
        assert!(parse(&format!("{tool}[tool.safety]\noutput = \"off\"\ninvisible = \"strip\"\n[tool.grants]\nnet = [\"https://a.example\", {{ url = \"https://b.example\", methods = [\"GET\"] }}]\n[roles]\nr = [\"x\"]\ns = {{ claims = [\"y\"] }}\n")).is_ok());
        // An error at a header names that table; a comment after it is not part of the name.
        let e = parse("[server.tls] # on\ncert = \"c.pem\"\n[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n")
            .unwrap_err();
        assert!(
            e.key.starts_with("server › tls"),
            "{} / {}",
            e.key,
            e.problem
        );
        assert!(e.problem.contains("missing field `key`"), "{}", e.problem);
        // A list field written as a table gets no [[…]] advice.
        let e =
            parse("[server.allowed_hosts]\n[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n")
                .unwrap_err();
        assert!(
            !e.problem.contains("[[server.allowed_hosts]]"),
            "{}",
            e.problem
        );
        // Multi-byte text before the error does not trip the key's extraction.
        let e = parse("# Grüße, 日本\n[server]\nmax_sessions = \"ü\"\n[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n")
            .unwrap_err();
        assert_eq!(e.key, "server › max_sessions");
    }

    #[test]
    fn empty_allowed_hosts_is_an_error() {
        let e = parse(
            "[server]\nallowed_hosts = []\n[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "server › allowed_hosts");
    }
}
