//! The loaded components and the tools they declare. Everything a call needs is prepared here
//! once: the compiled component, its `InstancePre`, the MCP tool list (from `describe()`, called
//! once at load), and the name index.

use crate::config::grants::FsMode;
use crate::config::lock::{Lock, LockMode, Pinned, TrustSettings};
use crate::config::policy::{ComponentEntry, ComponentSource, ConfigError, Policy};
use crate::core::failure::CallFailure;
use crate::core::redact::{Redactor, Shapes};
use crate::sandbox::engine::{Engines, load_component, private_dir};
use crate::sandbox::generic;
use crate::sandbox::store::{
    self, Answer, ComponentPre, GenericPre, HostState, Invocation, Prepared,
};
use airlock_host_api::{Offer, Tool as ToolWorld, ToolPre, ToolSpec};
use rmcp::model::{JsonObject, Prompt, Resource, ResourceTemplate, Tool, ToolAnnotations};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

/// Pin a prompt, resource or template (`key`, described now as `metadata`) of `entry`: into
/// what `airlock lock` would write, and, if the lock holds it, into `held` (logged). True when
/// held: then it is not served.
fn pin_offer(
    trust: &TrustSettings,
    held: &mut BTreeMap<String, HeldTool>,
    lockable: &mut Lock,
    entry: &ComponentEntry,
    sha256: &str,
    key: String,
    metadata: serde_json::Value,
) -> bool {
    let current = Pinned::whole(&entry.name, sha256, metadata);
    lockable.pinned.insert(key.clone(), current.clone());
    let Some(why) = held_because(trust, &entry.name, &key, &current) else {
        return false;
    };
    tracing::warn!(
        item = %key,
        component = %entry.name,
        "held for review (not listed, not served): {why}; `airlock ctl catalog diff` shows the change"
    );
    let locked = trust
        .lock
        .as_ref()
        .and_then(|l| l.pinned.get(&key))
        .cloned();
    held.insert(
        key,
        HeldTool {
            why,
            current,
            locked,
            roles: entry.roles.clone(),
        },
    );
    true
}

/// Why the lock holds `tool` (described now as `current`), if it does.
fn held_because(
    trust: &TrustSettings,
    entry: &str,
    tool: &str,
    current: &Pinned,
) -> Option<String> {
    let locked = trust.lock.as_ref().and_then(|l| l.pinned.get(tool));
    match (locked, trust.lock_mode) {
        // Served by another entry now (with its grants and roles): not what was approved.
        (Some(l), _) if l.component != entry => Some(format!(
            "moved from [[tool]] \"{}\" to \"{entry}\" since airlock.lock approved it",
            l.component
        )),
        (Some(l), _) if l.metadata_sha256 == current.metadata_sha256 => None,
        (Some(l), _) => {
            let fields = crate::config::lock::changed_fields(&l.metadata, &current.metadata);
            Some(format!(
                "changed since airlock.lock approved it ({}: {})",
                if fields.len() == 1 { "this differs" } else { "these differ" },
                fields.join(", ")
            ))
        }
        // A tool that appears in a component the lock approved with other tools is a change
        // of that component too (a new tool, or one renamed to slip past its old entry).
        (None, LockMode::Check)
            if trust
                .lock
                .as_ref()
                .is_some_and(|l| l.pinned.values().any(|t| t.component == entry)) =>
        {
            Some(format!(
                "is new in [[tool]] \"{entry}\", which airlock.lock approved without it"
            ))
        }
        (None, LockMode::Check) => None,
        (None, LockMode::Required) if trust.lock.is_none() => Some(
            "is not in airlock.lock, which does not exist (lock = \"required\"; `airlock lock` writes it)"
                .into(),
        ),
        (None, LockMode::Required) => {
            Some("is not in airlock.lock (lock = \"required\")".into())
        }
    }
}

/// A component ready to be called.
pub struct LoadedComponent {
    pub entry: ComponentEntry,
    /// What the sandbox needs for each call.
    pub prepared: Prepared,
    /// Per-component in-flight limit.
    pub in_flight: Arc<Semaphore>,
    /// Names of the tools it declared.
    pub tools: Vec<String>,
    /// Its resources' URIs, templates and prompts' names, as declared.
    pub resources: Vec<String>,
    pub templates: Vec<UriTemplate>,
    pub prompts: Vec<String>,
    /// Its tier and approval rule, checked against the tools it declared.
    pub approval: crate::config::risk::CompiledRule,
    /// Its grants let it act outside its sandbox (write files, reach the network): its calls
    /// write an intent record before they run.
    pub acts_outside: bool,
    /// Its sha256, hex (every call's audit record names it).
    pub sha256: Arc<str>,
    /// The trusted key that signed it, if one did (named in every call's record).
    pub signer: Option<Arc<str>>,
}

/// A tool, prompt, resource or resource template held for review: its metadata is not what
/// `airlock.lock` approved (or the lock is required and does not name it). Not listed, not
/// called (a held prompt or resource is not found).
#[derive(Debug, Clone)]
pub struct HeldTool {
    /// Why, as the caller and the operator read it.
    pub why: String,
    /// The tool as its component describes it now.
    pub current: Pinned,
    /// As the lock approved it, if it does.
    pub locked: Option<Pinned>,
    /// The roles of its `[[tool]]` entry: only a caller they reach learns it is held.
    pub roles: Vec<String>,
}

/// One MCP tool and the component that serves it.
pub struct CatalogTool {
    pub component: Arc<LoadedComponent>,
    pub tool: Tool,
    /// Its input schema, compiled at load: every call's arguments are checked against it
    /// before approval and execution.
    pub input: jsonschema::Validator,
    /// Its output schema, compiled at load: structured output is checked against it.
    pub output: Option<jsonschema::Validator>,
}

/// A resource, a resource template or a prompt, and the component that serves it.
pub struct Served<T> {
    pub component: Arc<LoadedComponent>,
    pub item: T,
}

/// Everything loaded from one policy.
pub struct Catalog {
    pub policy: Policy,
    pub components: Vec<Arc<LoadedComponent>>,
    tools: HashMap<String, CatalogTool>,
    /// `tools/list` as served: built once, in configuration order.
    listed: Arc<Vec<Tool>>,
    /// Resources by URI, templates and prompts by name, in configuration order.
    resources: Vec<Served<Resource>>,
    templates: Vec<Served<(UriTemplate, ResourceTemplate)>>,
    prompts: Vec<Served<Prompt>>,
    /// Every secret of the policy: what no record, log line or result may carry.
    pub redactor: Arc<Redactor>,
    /// Tools held for review, by name.
    held: BTreeMap<String, HeldTool>,
    /// Every tool as `airlock lock` would record it, held ones included.
    lockable: Lock,
    _engines: Engines,
}

impl Catalog {
    /// Compile (or load from cache), instantiate-prepare and describe every component. A
    /// component named as one of `previous` (a reload) keeps its in-flight slots, so calls
    /// still running under the old policy count against the new one.
    pub async fn load(
        policy: Policy,
        shapes: Arc<Shapes>,
        previous: Option<&Catalog>,
    ) -> Result<Catalog, ConfigError> {
        let fail = |key: String, problem: String| ConfigError {
            file: policy.origin.clone(),
            key,
            problem,
        };
        let cache_dir = policy.server.cache_dir.clone();
        private_dir(&cache_dir).map_err(|e| fail("server › cache_dir".into(), format!("{e:#}")))?;
        let engines = Engines::new(&policy).map_err(|e| fail(String::new(), format!("{e:#}")))?;

        let mut linkers: Vec<(Engine, Linker<HostState>)> = Vec::new();
        let mut components = Vec::with_capacity(policy.components.len());
        let mut tools: HashMap<String, CatalogTool> = HashMap::new();
        let mut listed = Vec::new();
        let mut resources: Vec<Served<Resource>> = Vec::new();
        let mut templates: Vec<Served<(UriTemplate, ResourceTemplate)>> = Vec::new();
        let mut prompts: Vec<Served<Prompt>> = Vec::new();
        let redactor = Arc::new(policy.secrets.redactor());
        let mut held: BTreeMap<String, HeldTool> = BTreeMap::new();
        let mut lockable = Lock {
            version: crate::config::lock::LOCK_VERSION,
            pinned: BTreeMap::new(),
            sources: policy.trust.resolved_tags.clone(),
        };
        for entry in &policy.components {
            let key = || format!("tool \"{}\" › component", entry.name);
            let engine = engines.for_stack(entry.limits.wasm_stack).clone();
            if !linkers.iter().any(|(e, _)| Engine::same(e, &engine)) {
                linkers.push((
                    engine.clone(),
                    make_linker(&engine).map_err(|e| fail(String::new(), format!("{e:#}")))?,
                ));
            }
            let linker = &linkers
                .iter()
                .find(|(e, _)| Engine::same(e, &engine))
                .expect("pushed above")
                .1;

            let compiled = load_component(&engine, &entry.bytes, &entry.digest, &cache_dir)
                .map_err(|e| fail(key(), format!("{}: {e:#}", entry.source)))?;
            let pre = instantiable(linker, &compiled, &engine, entry)
                .map_err(|p| fail(key(), format!("{}: {p}", entry.source)))?;
            if let ComponentPre::Generic(g) = &pre {
                for why in &g.exports.skipped {
                    tracing::warn!(tool = %entry.name, "not served: {why}");
                }
            }
            let prepared = Prepared {
                engine,
                pre,
                name: Arc::from(entry.name.as_str()),
                limits: entry.limits,
                grants: Arc::new(entry.grants.clone()),
                redactor: redactor.clone(),
                shapes: shapes.clone(),
                ledgers: crate::sandbox::quota::Ledgers::for_grants(&entry.grants),
                settings: entry.settings.clone(),
            };
            let mut offer = describe(&prepared)
                .await
                .map_err(|e| fail(key(), format!("{}: describe() failed: {e}", entry.source)))?;
            // `tools = [...]`: only those are served, and each must be one the component has.
            if let Some(only) = &entry.only_tools {
                if let Some(missing) = only
                    .iter()
                    .find(|n| !offer.tools.iter().any(|t| &t.name == *n))
                {
                    let shown: String = missing
                        .chars()
                        .take(64)
                        .filter(|c| !c.is_control())
                        .collect();
                    return Err(fail(
                        format!("tool \"{}\" › tools", entry.name),
                        format!(
                            "{} declares no tool \"{shown}\" (it declares: {})",
                            entry.source,
                            offer
                                .tools
                                .iter()
                                .map(|t| t.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                offer.tools.retain(|t| only.contains(&t.name));
            }
            let specs = &offer.tools;
            if specs.is_empty()
                && offer.resources.is_empty()
                && offer.resource_templates.is_empty()
                && offer.prompts.is_empty()
            {
                return Err(fail(
                    key(),
                    format!(
                        "{} offers nothing (no tools, resources or prompts)",
                        entry.source
                    ),
                ));
            }
            for (what, n) in [
                ("tools", specs.len()),
                ("resources", offer.resources.len()),
                ("resource templates", offer.resource_templates.len()),
                ("prompts", offer.prompts.len()),
            ] {
                if n > entry.limits.max_tools as usize {
                    return Err(fail(
                        key(),
                        format!(
                            "{} declares {n} {what}, more than max_tools = {}",
                            entry.source, entry.limits.max_tools
                        ),
                    ));
                }
            }
            let offered = check_offer(&offer, &entry.limits)
                .map_err(|p| fail(key(), format!("{}: {p}", entry.source)))?;
            let declared = specs
                .iter()
                .cloned()
                .map(|s| to_mcp_tool(s, &entry.limits))
                .collect::<Result<Vec<Tool>, String>>()
                .map_err(|p| fail(key(), format!("{}: {p}", entry.source)))?;
            let approval =
                crate::config::risk::CompiledRule::compile(entry.approval.clone(), &declared)
                    .map_err(|p| fail(format!("tool \"{}\"", entry.name), p))?;
            let component = Arc::new(LoadedComponent {
                entry: entry.clone(),
                prepared,
                in_flight: previous
                    .and_then(|p| p.components.iter().find(|c| c.entry.name == entry.name))
                    .map_or_else(
                        || Arc::new(Semaphore::new(entry.limits.max_in_flight as usize)),
                        |c| c.in_flight.clone(),
                    ),
                tools: specs.iter().map(|s| s.name.clone()).collect(),
                resources: offered.resources.iter().map(|r| r.uri.clone()).collect(),
                templates: offered.templates.iter().map(|t| t.0.clone()).collect(),
                prompts: offered.prompts.iter().map(|p| p.name.clone()).collect(),
                approval,
                acts_outside: entry.grants.fs.iter().any(|g| g.mode == FsMode::Rw)
                    || !entry.grants.net.is_empty()
                    || !entry.grants.tcp.is_empty(),
                sha256: Arc::from(hex::encode(entry.digest).as_str()),
                signer: entry.signer.as_deref().map(Arc::from),
            });
            for tool in declared {
                if let Some(first) = held.get(tool.name.as_ref()) {
                    return Err(fail(
                        key(),
                        format!(
                            "tool name \"{}\" is declared by both \"{}\" and \"{}\"; tool names must be unique",
                            tool.name, first.current.component, entry.name
                        ),
                    ));
                }
                if let Some(other) = tools.get(tool.name.as_ref()) {
                    return Err(fail(
                        key(),
                        format!(
                            "tool name \"{}\" is declared by both \"{}\" ({}) and \"{}\" ({}); tool names must be unique",
                            tool.name,
                            other.component.entry.name,
                            other.component.entry.source,
                            entry.name,
                            entry.source
                        ),
                    ));
                }
                let (input, output) = compile_schemas(&tool)
                    .map_err(|p| fail(key(), format!("{}: {p}", entry.source)))?;
                let current = Pinned::of(
                    &entry.name,
                    &component.sha256,
                    &serde_json::to_value(&tool).unwrap_or_default(),
                );
                lockable
                    .pinned
                    .insert(tool.name.to_string(), current.clone());
                if let Some(why) = held_because(&policy.trust, &entry.name, &tool.name, &current) {
                    tracing::warn!(
                        tool = %tool.name,
                        component = %entry.name,
                        "held for review (not listed, not called): {why}; `airlock ctl catalog diff` shows the change"
                    );
                    let locked = policy
                        .trust
                        .lock
                        .as_ref()
                        .and_then(|l| l.pinned.get(tool.name.as_ref()))
                        .cloned();
                    held.insert(
                        tool.name.to_string(),
                        HeldTool {
                            why,
                            current,
                            locked,
                            roles: entry.roles.clone(),
                        },
                    );
                    continue;
                }
                listed.push(tool.clone());
                tools.insert(
                    tool.name.to_string(),
                    CatalogTool {
                        component: component.clone(),
                        tool,
                        input,
                        output,
                    },
                );
            }
            // Prompts, resources and templates as the lock pins them; true: held, not served.
            let mut pin = |kind: &str, name: &str, item: serde_json::Result<serde_json::Value>| {
                pin_offer(
                    &policy.trust,
                    &mut held,
                    &mut lockable,
                    entry,
                    &component.sha256,
                    crate::config::lock::key_of(kind, name),
                    item.unwrap_or_default(),
                )
            };
            for r in offered.resources {
                if let Some(other) = resources
                    .iter()
                    .find(|o: &&Served<Resource>| o.item.uri == r.uri)
                {
                    return Err(fail(
                        key(),
                        format!(
                            "resource \"{}\" is declared by both \"{}\" and \"{}\"; resource URIs must be unique",
                            r.uri, other.component.entry.name, entry.name
                        ),
                    ));
                }
                if pin("resource", &r.uri, serde_json::to_value(&r)) {
                    continue;
                }
                resources.push(Served {
                    component: component.clone(),
                    item: r,
                });
            }
            for t in offered.templates {
                if pin("template", &t.1.uri_template, serde_json::to_value(&t.1)) {
                    continue;
                }
                templates.push(Served {
                    component: component.clone(),
                    item: t,
                });
            }
            for p in offered.prompts {
                if let Some(other) = prompts
                    .iter()
                    .find(|o: &&Served<Prompt>| o.item.name == p.name)
                {
                    return Err(fail(
                        key(),
                        format!(
                            "prompt name \"{}\" is declared by both \"{}\" and \"{}\"; prompt names must be unique",
                            p.name, other.component.entry.name, entry.name
                        ),
                    ));
                }
                if pin("prompt", &p.name, serde_json::to_value(&p)) {
                    continue;
                }
                prompts.push(Served {
                    component: component.clone(),
                    item: p,
                });
            }
            components.push(component);
        }
        if policy.trust.lock_file.is_some()
            && policy.trust.lock.is_none()
            && policy.trust.lock_mode == LockMode::Check
        {
            tracing::info!(
                "no airlock.lock beside the configuration: tool descriptions are not pinned (`airlock lock` writes it)"
            );
        }
        Ok(Catalog {
            policy,
            components,
            tools,
            listed: Arc::new(listed),
            resources,
            templates,
            prompts,
            redactor,
            held,
            lockable,
            _engines: engines,
        })
    }

    /// The tool called `name`: unknown, or held for review, is a refusal.
    pub fn tool(&self, name: &str) -> Result<&CatalogTool, CallFailure> {
        self.tools
            .get(name)
            .ok_or_else(|| match self.held.get(name) {
                Some(h) => CallFailure::HeldForReview {
                    tool: name.to_owned(),
                    why: h.why.clone(),
                },
                None => CallFailure::UnknownTool(shown_uri(name).to_owned()),
            })
    }

    /// The tool called `name`, for `principal`: a held tool is `held_for_review` only to a
    /// caller its entry's roles reach (to others it is `not_authorized`, as it would be if
    /// it served: what they are told does not change when it is held).
    pub fn tool_for(
        &self,
        name: &str,
        principal: &crate::core::principal::Principal,
    ) -> Result<&CatalogTool, CallFailure> {
        self.tool(name)
            .map_err(|e| match (&e, self.held.get(name)) {
                (CallFailure::HeldForReview { .. }, Some(h)) if !principal.may_use(&h.roles) => {
                    CallFailure::NotAuthorized {
                        principal: principal.name.to_string(),
                        tool: name.to_owned(),
                    }
                }
                _ => e,
            })
    }

    /// The tools held for review, by name.
    pub fn held(&self) -> &BTreeMap<String, HeldTool> {
        &self.held
    }

    /// Every tool as `airlock lock` records it (held ones as they are now).
    pub fn lockable(&self) -> &Lock {
        &self.lockable
    }

    /// The `tools/list` answer.
    pub fn listed(&self) -> Arc<Vec<Tool>> {
        self.listed.clone()
    }

    /// Every declared resource, in configuration order.
    pub fn resources(&self) -> &[Served<Resource>] {
        &self.resources
    }

    /// Every declared resource template, in configuration order.
    pub fn templates(&self) -> &[Served<(UriTemplate, ResourceTemplate)>] {
        &self.templates
    }

    /// Every declared prompt, in configuration order.
    pub fn prompts(&self) -> &[Served<Prompt>] {
        &self.prompts
    }

    /// The component that serves `uri`: the one that declared it, else the first whose
    /// template matches it, preferring components `reaches` (the caller's roles reach) so that
    /// a template the caller cannot use does not hide one it can. A URI no declaration could
    /// hold (too long, with spaces or control characters) is looked up nowhere.
    pub fn resource(
        &self,
        uri: &str,
        reaches: impl Fn(&LoadedComponent) -> bool,
    ) -> Result<&Arc<LoadedComponent>, CallFailure> {
        let not_found = || CallFailure::NotFound(format!("resource {}", shown_uri(uri)));
        if check_uri("resource URI", uri).is_err() {
            return Err(not_found());
        }
        if let Some(r) = self.resources.iter().find(|r| r.item.uri == uri) {
            return Ok(&r.component);
        }
        let mut matching = self.templates.iter().filter(|t| t.item.0.matches(uri));
        let first = matching.next().ok_or_else(not_found)?;
        if reaches(&first.component) {
            return Ok(&first.component);
        }
        Ok(matching
            .find(|t| reaches(&t.component))
            .map_or(&first.component, |t| &t.component))
    }

    /// Whether `uri` is one of `component`'s: declared by it, or routed to it.
    pub fn serves(&self, component: &str, uri: &str) -> bool {
        self.resource(uri, |c| c.entry.name == component)
            .is_ok_and(|c| c.entry.name == component)
    }

    /// The component that serves the template written `template`.
    pub fn template(&self, template: &str) -> Result<&Arc<LoadedComponent>, CallFailure> {
        self.templates
            .iter()
            .find(|t| t.item.1.uri_template == template)
            .map(|t| &t.component)
            .ok_or_else(|| {
                CallFailure::NotFound(format!("resource template {}", shown_uri(template)))
            })
    }

    /// The prompt called `name`.
    pub fn prompt(&self, name: &str) -> Result<&Served<Prompt>, CallFailure> {
        self.prompts
            .iter()
            .find(|p| p.item.name == name)
            .ok_or_else(|| CallFailure::NotFound(format!("prompt {}", shown_uri(name))))
    }
}

/// The component's exports as the version of the contract it was built for: 0.2.0, else
/// 0.1.0 (tools only). A component that exports nothing of the `airlock:tool` world is served
/// generically: its exported functions become tools.
fn instantiable(
    linker: &Linker<HostState>,
    compiled: &wasmtime::component::Component,
    engine: &Engine,
    entry: &ComponentEntry,
) -> Result<ComponentPre, String> {
    let pre = linker.instantiate_pre(compiled).map_err(|e| {
        format!("needs imports Airlock does not provide (only WASI 0.2 and airlock:tool): {e:#}")
    })?;
    if !generic::targets_airlock_tool(compiled, engine) {
        // The file's name only: descriptions reach clients, the host's paths should not.
        let source = match &entry.source {
            ComponentSource::File(path) => path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            // Not the digest: a new build must not redescribe the tools by itself.
            ComponentSource::Oci { reference, .. } => format!("oci://{reference}"),
            other => other.to_string(),
        };
        let naming = generic::Naming {
            entry: &entry.name,
            rename: &entry.rename,
            docs: &entry.docs,
            source: &source,
            max_tools: entry.limits.max_tools,
        };
        let exports = generic::exports(compiled, engine, &naming)?;
        return Ok(ComponentPre::Generic(Box::new(GenericPre { pre, exports })));
    }
    if !entry.rename.is_empty() {
        return Err("rename applies only to components outside the airlock:tool world".into());
    }
    match ToolPre::new(pre.clone()) {
        Ok(current) => Ok(ComponentPre::Current(current)),
        Err(current) => airlock_host_api::v1::ToolPre::new(pre)
            .map(ComponentPre::V1)
            .map_err(|_| {
                format!("does not fit the airlock:tool world (0.2.0 or 0.1.0): {current:#}")
            }),
    }
}

/// An RFC 6570 URI template of simple (`{var}`, one path segment) and reserved (`{+var}`,
/// anything) expressions: enough to route a URI to the component that serves it. It is
/// compiled at load into an anchored regular expression, so matching a client's URI takes time
/// linear in its length whatever the template.
#[derive(Debug, Clone)]
pub struct UriTemplate {
    /// As the component wrote it.
    pub text: String,
    pattern: regex::Regex,
}

/// The most expressions a template may hold.
const MAX_TEMPLATE_VARIABLES: usize = 16;

impl UriTemplate {
    pub fn parse(template: &str) -> Result<UriTemplate, String> {
        let mut pattern = String::from("^");
        let mut rest = template;
        let mut variables = 0;
        let mut after_variable = false;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(0) if rest.starts_with('{') => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("\"{template}\": an expression is not closed"))?;
                    let expr = &rest[1..end];
                    let (reserved, name) = match expr.strip_prefix('+') {
                        Some(n) => (true, n),
                        None => (false, expr),
                    };
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
                    {
                        return Err(format!(
                            "\"{template}\": only {{name}} and {{+name}} expressions are supported"
                        ));
                    }
                    if after_variable {
                        return Err(format!(
                            "\"{template}\": two expressions must be separated by text"
                        ));
                    }
                    variables += 1;
                    if variables > MAX_TEMPLATE_VARIABLES {
                        return Err(format!(
                            "\"{template}\": more than {MAX_TEMPLATE_VARIABLES} expressions"
                        ));
                    }
                    pattern.push_str(if reserved { "(?:.+?)" } else { "(?:[^/?#]+?)" });
                    after_variable = true;
                    rest = &rest[end + 1..];
                }
                Some(0) => return Err(format!("\"{template}\": a '}}' outside an expression")),
                Some(i) => {
                    pattern.push_str(&regex::escape(&rest[..i]));
                    after_variable = false;
                    rest = &rest[i..];
                }
                None => {
                    pattern.push_str(&regex::escape(rest));
                    after_variable = false;
                    rest = "";
                }
            }
        }
        pattern.push('$');
        let pattern = regex::RegexBuilder::new(&pattern)
            .dot_matches_new_line(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("\"{template}\": {e}"))?;
        Ok(UriTemplate {
            text: template.to_owned(),
            pattern,
        })
    }

    /// Whether `uri` is one of the URIs the template describes.
    pub fn matches(&self, uri: &str) -> bool {
        self.pattern.is_match(uri)
    }
}

/// What a component offers besides tools, checked and in MCP's terms.
struct Offered {
    resources: Vec<Resource>,
    templates: Vec<(UriTemplate, ResourceTemplate)>,
    prompts: Vec<Prompt>,
}

/// The most arguments one prompt may declare.
const MAX_PROMPT_ARGUMENTS: usize = 64;

/// The longest resource URI or template accepted.
const MAX_URI: usize = 2048;

/// A name or URI the client sent, as an error message shows it: at most 256 bytes.
fn shown_uri(uri: &str) -> &str {
    &uri[..uri.floor_char_boundary(256)]
}

/// A resource URI: a scheme, then printable characters without spaces.
fn check_uri(what: &str, uri: &str) -> Result<(), String> {
    let scheme_ok = uri.split_once(':').is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    if uri.len() > MAX_URI || !scheme_ok || uri.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        let shown: String = uri.chars().take(64).filter(|c| !c.is_control()).collect();
        return Err(format!(
            "{what} \"{shown}\" must be a URI with a scheme (scheme:rest), at most {MAX_URI} bytes, without spaces or control characters"
        ));
    }
    Ok(())
}

/// A name, title or description a client shows: bounded, and nothing that reads differently
/// from what it is.
fn check_text(what: &str, text: &str, limit: u64) -> Result<(), String> {
    if text.len() as u64 > limit {
        return Err(format!(
            "{what} is {} bytes, more than max_description_bytes = {limit}",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|c| forbidden_in_text(*c)) {
        return Err(format!(
            "{what} holds the control character U+{:04X}",
            c as u32
        ));
    }
    Ok(())
}

/// The checked name, title, description and MIME type of a resource or template, as the
/// fields of its MCP form.
fn described(
    what: &str,
    name: &str,
    title: &Option<String>,
    description: &Option<String>,
    mime_type: &Option<String>,
    limit: u64,
) -> Result<JsonObject, String> {
    if name.trim().is_empty() {
        return Err(format!("{what} has an empty name"));
    }
    check_text(&format!("{what}: its name"), name, limit)?;
    let mut v = JsonObject::new();
    v.insert("name".into(), name.into());
    for (key, field, shown) in [
        ("title", title, "title"),
        ("description", description, "description"),
        ("mimeType", mime_type, "MIME type"),
    ] {
        if let Some(text) = field {
            check_text(&format!("{what}: its {shown}"), text, limit)?;
            v.insert(key.into(), text.clone().into());
        }
    }
    Ok(v)
}

fn check_offer(offer: &Offer, limits: &crate::config::policy::Limits) -> Result<Offered, String> {
    let limit = limits.max_description_bytes.bytes();
    let optional = |what: &str, t: &Option<String>| {
        t.as_deref().map_or(Ok(()), |t| check_text(what, t, limit))
    };
    let mut resources = Vec::with_capacity(offer.resources.len());
    let mut seen = std::collections::HashSet::new();
    for r in &offer.resources {
        check_uri("resource URI", &r.uri)?;
        if !seen.insert(r.uri.as_str()) {
            return Err(format!("resource \"{}\" is declared twice", r.uri));
        }
        let what = format!("resource \"{}\"", r.uri);
        let mut v = described(
            &what,
            &r.name,
            &r.title,
            &r.description,
            &r.mime_type,
            limit,
        )?;
        v.insert("uri".into(), r.uri.clone().into());
        if let Some(n) = r.size {
            v.insert("size".into(), n.into());
        }
        resources.push(
            serde_json::from_value(serde_json::Value::Object(v))
                .map_err(|e| format!("{what}: {e}"))?,
        );
    }
    let mut templates = Vec::with_capacity(offer.resource_templates.len());
    let mut seen = std::collections::HashSet::new();
    for t in &offer.resource_templates {
        check_uri("resource template", &t.uri_template)?;
        if !seen.insert(t.uri_template.as_str()) {
            return Err(format!(
                "resource template \"{}\" is declared twice",
                t.uri_template
            ));
        }
        let parsed = UriTemplate::parse(&t.uri_template)?;
        let what = format!("resource template \"{}\"", t.uri_template);
        let mut v = described(
            &what,
            &t.name,
            &t.title,
            &t.description,
            &t.mime_type,
            limit,
        )?;
        v.insert("uriTemplate".into(), t.uri_template.clone().into());
        templates.push((
            parsed,
            serde_json::from_value(serde_json::Value::Object(v))
                .map_err(|e| format!("{what}: {e}"))?,
        ));
    }
    let mut prompts = Vec::with_capacity(offer.prompts.len());
    let mut seen = std::collections::HashSet::new();
    for p in &offer.prompts {
        if !valid_tool_name(&p.name) {
            let shown: String = p
                .name
                .chars()
                .take(64)
                .filter(|c| !c.is_control())
                .collect();
            return Err(format!(
                "prompt name \"{shown}\" must be 1 to {MAX_TOOL_NAME} characters from A-Z a-z 0-9 _ - ."
            ));
        }
        if !seen.insert(p.name.as_str()) {
            return Err(format!("prompt \"{}\" is declared twice", p.name));
        }
        let what = format!("prompt \"{}\"", p.name);
        optional(&format!("{what}: its title"), &p.title)?;
        optional(&format!("{what}: its description"), &p.description)?;
        if p.arguments.len() > MAX_PROMPT_ARGUMENTS {
            return Err(format!(
                "{what} declares {} arguments, more than {MAX_PROMPT_ARGUMENTS}",
                p.arguments.len()
            ));
        }
        let mut arguments = Vec::with_capacity(p.arguments.len());
        let mut names = std::collections::HashSet::new();
        for a in &p.arguments {
            if !valid_tool_name(&a.name) || !names.insert(a.name.as_str()) {
                return Err(format!(
                    "{what}: argument names must be unique, 1 to {MAX_TOOL_NAME} characters from A-Z a-z 0-9 _ - ."
                ));
            }
            optional(&format!("{what}: argument {}", a.name), &a.description)?;
            optional(&format!("{what}: argument {}", a.name), &a.title)?;
            let mut v = serde_json::json!({ "name": a.name, "required": a.required });
            if let Some(x) = &a.title {
                v["title"] = x.clone().into();
            }
            if let Some(d) = &a.description {
                v["description"] = d.clone().into();
            }
            arguments.push(v);
        }
        let mut v = serde_json::json!({ "name": p.name, "arguments": arguments });
        if let Some(x) = &p.title {
            v["title"] = x.clone().into();
        }
        if let Some(d) = &p.description {
            v["description"] = d.clone().into();
        }
        prompts.push(serde_json::from_value(v).map_err(|e| format!("{what}: {e}"))?);
    }
    Ok(Offered {
        resources,
        templates,
        prompts,
    })
}

fn make_linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // Socket creation goes through the host's own check first (no `tcp` grant: no socket).
    linker.allow_shadowing(true);
    wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::add_to_linker::<
        HostState,
        store::GuardedTcpCreate,
    >(&mut linker, |s| s)?;
    linker.allow_shadowing(false);
    // Opens and writes go through the open-file cap and the grants' quotas first.
    crate::sandbox::files::add_to_linker(&mut linker)?;
    // Linked for every component; the per-call egress gate decides each request.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    ToolWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    airlock_host_api::v1::Tool::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

async fn describe(prepared: &Prepared) -> Result<Offer, CallFailure> {
    let signals = store::RunSignals::default();
    let report = store::run(prepared, Invocation::Describe, None, &signals).await;
    match report.result? {
        Answer::Described(offer) => Ok(offer),
        _ => unreachable!("describe answers with an offer"),
    }
}

/// The longest tool name MCP allows.
const MAX_TOOL_NAME: usize = 64;

/// Names a component chooses (tools, prompts, their arguments, `ask` keys): 1 to
/// [`MAX_TOOL_NAME`] characters from `A-Z a-z 0-9 _ - .`.
pub fn valid_name(name: &str) -> bool {
    valid_tool_name(name)
}

/// MCP tool names: 1 to [`MAX_TOOL_NAME`] characters from `A-Z a-z 0-9 _ - .`.
fn valid_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Refuses every reference outside the schema itself: no schema makes the host fetch a URL
/// or read a file.
struct NoExternalReferences;

impl jsonschema::Retrieve for NoExternalReferences {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("{uri}: a reference outside the schema is not followed").into())
    }
}

/// The most bytes one `pattern` of a schema may compile to.
const MAX_PATTERN_BYTES: usize = 1 << 20;

/// A schema compiled for validation: draft 2020-12 unless `$schema` names another (draft-07,
/// 2019-09, 6 or 4); patterns in a linear-time engine; no external references.
pub fn compile_schema(schema: &JsonObject) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_retriever(NoExternalReferences)
        .with_pattern_options(
            jsonschema::PatternOptions::regex()
                .size_limit(MAX_PATTERN_BYTES)
                .dfa_size_limit(MAX_PATTERN_BYTES),
        )
        .build(&serde_json::Value::Object(schema.clone()))
        .map_err(|e| e.to_string())
}

/// A tool's input and output schemas, compiled: one that does not compile is a load error.
fn compile_schemas(
    tool: &Tool,
) -> Result<(jsonschema::Validator, Option<jsonschema::Validator>), String> {
    let fail = |what: &str, e: String| {
        format!(
            "tool \"{}\": its {what} is not a usable JSON Schema: {e}",
            tool.name
        )
    };
    let input = compile_schema(&tool.input_schema).map_err(|e| fail("input schema", e))?;
    let output = tool
        .output_schema
        .as_deref()
        .map(compile_schema)
        .transpose()
        .map_err(|e| fail("output schema", e))?;
    Ok((input, output))
}

fn schema_object(what: &str, tool: &str, text: &str) -> Result<JsonObject, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => Ok(o),
        Ok(_) => Err(format!("tool \"{tool}\": {what} is not a JSON object")),
        Err(e) => Err(format!("tool \"{tool}\": {what} is not valid JSON: {e}")),
    }
}

/// A character a description may not hold: controls other than newline and tab, and the bidi
/// overrides and isolates (which make text read differently from what it is).
fn forbidden_in_text(c: char) -> bool {
    (c.is_control() && !matches!(c, '\n' | '\t'))
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn to_mcp_tool(spec: ToolSpec, limits: &crate::config::policy::Limits) -> Result<Tool, String> {
    if !valid_tool_name(&spec.name) {
        // Not echoed whole: a name can be anything the component chose.
        let shown: String = spec
            .name
            .chars()
            .take(64)
            .filter(|c| !c.is_control())
            .collect();
        return Err(format!(
            "tool name \"{shown}\" must be 1 to {MAX_TOOL_NAME} characters from A-Z a-z 0-9 _ - ."
        ));
    }
    if spec.description.trim().is_empty() {
        return Err(format!("tool \"{}\" has an empty description", spec.name));
    }
    if spec.description.len() as u64 > limits.max_description_bytes.bytes() {
        return Err(format!(
            "tool \"{}\": its description is {} bytes, more than max_description_bytes = {}",
            spec.name,
            spec.description.len(),
            limits.max_description_bytes
        ));
    }
    if let Some(c) = spec.description.chars().find(|c| forbidden_in_text(*c)) {
        return Err(format!(
            "tool \"{}\": its description holds the control character U+{:04X}",
            spec.name, c as u32
        ));
    }
    if let Some(title) = &spec.title
        && (title.len() > 256
            || title
                .chars()
                .any(|c| c.is_control() || forbidden_in_text(c)))
    {
        return Err(format!(
            "tool \"{}\": its title must be at most 256 bytes without control characters",
            spec.name
        ));
    }
    for (what, schema) in [
        ("input schema", Some(&spec.input_schema)),
        ("output schema", spec.output_schema.as_ref()),
    ] {
        if let Some(s) = schema
            && s.len() as u64 > limits.max_schema_bytes.bytes()
        {
            return Err(format!(
                "tool \"{}\": its {what} is {} bytes, more than max_schema_bytes = {}",
                spec.name,
                s.len(),
                limits.max_schema_bytes
            ));
        }
    }
    let input = schema_object("the input schema", &spec.name, &spec.input_schema)?;
    if input.get("type").and_then(|t| t.as_str()) != Some("object") {
        return Err(format!(
            "tool \"{}\": the input schema must have \"type\": \"object\"",
            spec.name
        ));
    }
    let output = spec
        .output_schema
        .as_deref()
        .map(|s| schema_object("the output schema", &spec.name, s))
        .transpose()?;
    let h = spec.hints;
    let mut annotations = ToolAnnotations::new()
        .read_only(h.read_only)
        .idempotent(h.idempotent)
        .open_world(h.open_world);
    if !h.read_only {
        annotations = annotations.destructive(h.destructive);
    }
    annotations.title = spec.title.clone();
    let mut tool = Tool::new(spec.name, spec.description, Arc::new(input));
    tool.title = spec.title;
    tool.output_schema = output.map(Arc::new);
    tool.annotations = Some(annotations);
    Ok(tool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_host_api::Hints;

    #[test]
    fn schemas_that_reach_outside_or_do_not_compile_are_load_errors() {
        let object = |v: serde_json::Value| match v {
            serde_json::Value::Object(o) => o,
            _ => unreachable!(),
        };
        // A local reference and draft-07 are fine.
        assert!(
            compile_schema(&object(serde_json::json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "definitions": {"a": {"type": "string"}},
                "properties": {"x": {"$ref": "#/definitions/a"}}
            })))
            .is_ok()
        );
        for (schema, why) in [
            (
                serde_json::json!({"type": "object", "properties": {"x": {"$ref": "https://example.com/s.json"}}}),
                "not followed",
            ),
            (
                serde_json::json!({"type": "object", "properties": {"x": {"$ref": "file:///etc/passwd"}}}),
                "not followed",
            ),
            (
                serde_json::json!({"type": "object", "properties": {"x": {"type": "no-such-type"}}}),
                "no-such-type",
            ),
            // A pattern a linear-time engine cannot run (a backreference) is refused, not run
            // with backtracking.
            (
                serde_json::json!({"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a+)\\1$"}}}),
                "",
            ),
        ] {
            let e = compile_schema(&object(schema.clone())).unwrap_err();
            assert!(e.contains(why), "{schema}: {e}");
        }
    }

    #[test]
    fn uri_templates_match_in_linear_time_and_refuse_what_they_cannot_route() {
        let t = UriTemplate::parse("test://template/{id}/data").unwrap();
        assert!(t.matches("test://template/123/data"));
        assert!(!t.matches("test://template/1/2/data"));
        assert!(!t.matches("test://template//data"));
        assert!(!t.matches("test://template/123/data/more"));
        let docs = UriTemplate::parse("docs:///{+path}").unwrap();
        assert!(docs.matches("docs:///runbooks/deploy.md"));
        assert!(!docs.matches("docs:///"));
        // Regex metacharacters in the literal text are literal.
        let dotted = UriTemplate::parse("a.b://{x}").unwrap();
        assert!(!dotted.matches("aXb://y"));
        // A template built to make a backtracking matcher explode, and a long URI against it.
        let nasty = UriTemplate::parse(&format!("x:{}", "{+a}a".repeat(16))).unwrap();
        assert!(!nasty.matches(&format!("x:{}b", "a".repeat(4000))));
        for bad in ["x:{a}{b}", "x:{a", "x:}", "x:{a b}", "x:{?q}"] {
            assert!(UriTemplate::parse(bad).is_err(), "{bad}");
        }
        assert!(UriTemplate::parse(&format!("x:{}", "{a}/".repeat(17))).is_err());
    }

    #[test]
    fn tool_names_are_at_most_64_characters_of_the_allowed_set() {
        assert!(valid_tool_name(&"a".repeat(64)));
        assert!(!valid_tool_name(&"a".repeat(65)));
        assert!(!valid_tool_name(""));
        assert!(valid_tool_name("files.read-v2_x"));
        assert!(!valid_tool_name("files/read"));
        assert!(!valid_tool_name("fïles"));
    }

    fn spec(description: &str, title: Option<&str>) -> ToolSpec {
        ToolSpec {
            name: "t".into(),
            title: title.map(str::to_owned),
            description: description.into(),
            input_schema: r#"{"type":"object"}"#.into(),
            output_schema: None,
            hints: Hints {
                read_only: true,
                destructive: false,
                idempotent: true,
                open_world: false,
            },
        }
    }

    #[test]
    fn control_characters_in_what_a_component_declares_are_load_errors() {
        let limits = crate::config::policy::Limits::default();
        assert!(
            to_mcp_tool(
                spec("Lists files.\nOne per line.\tTabs too.", None),
                &limits
            )
            .is_ok()
        );
        for bad in [
            "ok\u{1b}[2Jhidden",
            "a\u{0}b",
            "a\u{202e}b",
            "a\rb",
            "a\u{85}b",
        ] {
            let e = to_mcp_tool(spec(bad, None), &limits).unwrap_err();
            assert!(
                e.contains("its description holds the control character"),
                "{bad:?}: {e}"
            );
        }
        let e = to_mcp_tool(spec("fine", Some("Title\nforged")), &limits).unwrap_err();
        assert!(e.contains("its title must be"), "{e}");
    }
}
