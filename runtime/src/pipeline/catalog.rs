//! The loaded components and the tools they declare. Everything a call needs is prepared here
//! once: the compiled component, its `InstancePre`, the MCP tool list (from `describe()`, called
//! once at load), and the name index.

use crate::config::grants::FsMode;
use crate::config::policy::{ComponentEntry, ConfigError, Policy};
use crate::core::failure::CallFailure;
use crate::core::redact::{Redactor, Shapes};
use crate::sandbox::engine::{Engines, load_component, private_dir};
use crate::sandbox::store::{self, Answer, HostState, Invocation, Prepared};
use airlock_host_api::{Tool as ToolWorld, ToolPre, ToolSpec};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

/// A component ready to be called.
pub struct LoadedComponent {
    pub entry: ComponentEntry,
    /// What the sandbox needs for each call.
    pub prepared: Prepared,
    /// Per-component in-flight limit.
    pub in_flight: Arc<Semaphore>,
    /// Names of the tools it declared.
    pub tools: Vec<String>,
    /// Its tier and approval rule, checked against the tools it declared.
    pub approval: crate::config::risk::CompiledRule,
    /// Its grants let it act outside its sandbox (write files, reach the network): its calls
    /// write an intent record before they run.
    pub acts_outside: bool,
}

/// One MCP tool and the component that serves it.
pub struct CatalogTool {
    pub component: Arc<LoadedComponent>,
    pub tool: Tool,
}

/// Everything loaded from one policy.
pub struct Catalog {
    pub policy: Policy,
    pub components: Vec<Arc<LoadedComponent>>,
    tools: HashMap<String, CatalogTool>,
    /// `tools/list` as served: built once, in configuration order.
    listed: Arc<Vec<Tool>>,
    /// Every secret of the policy: what no record, log line or result may carry.
    pub redactor: Arc<Redactor>,
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
        let redactor = Arc::new(policy.secrets.redactor());
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
            let pre = linker
                .instantiate_pre(&compiled)
                .and_then(ToolPre::new)
                .map_err(|e| {
                    fail(
                        key(),
                        format!(
                            "{} does not fit the airlock:tool world: {e:#}",
                            entry.source
                        ),
                    )
                })?;
            let prepared = Prepared {
                engine,
                pre,
                name: Arc::from(entry.name.as_str()),
                limits: entry.limits,
                grants: Arc::new(entry.grants.clone()),
                redactor: redactor.clone(),
                shapes: shapes.clone(),
                ledgers: crate::sandbox::quota::Ledgers::for_grants(&entry.grants),
            };
            let specs = describe(&prepared)
                .await
                .map_err(|e| fail(key(), format!("{}: describe() failed: {e}", entry.source)))?;
            if specs.is_empty() {
                return Err(fail(key(), format!("{} declares no tools", entry.source)));
            }
            if specs.len() > entry.limits.max_tools as usize {
                return Err(fail(
                    key(),
                    format!(
                        "{} declares {} tools, more than max_tools = {}",
                        entry.source,
                        specs.len(),
                        entry.limits.max_tools
                    ),
                ));
            }
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
                approval,
                acts_outside: entry.grants.fs.iter().any(|g| g.mode == FsMode::Rw)
                    || !entry.grants.net.is_empty()
                    || !entry.grants.tcp.is_empty(),
            });
            for tool in declared {
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
                listed.push(tool.clone());
                tools.insert(
                    tool.name.to_string(),
                    CatalogTool {
                        component: component.clone(),
                        tool,
                    },
                );
            }
            components.push(component);
        }
        Ok(Catalog {
            policy,
            components,
            tools,
            listed: Arc::new(listed),
            redactor,
            _engines: engines,
        })
    }

    /// The tool called `name`.
    pub fn tool(&self, name: &str) -> Result<&CatalogTool, CallFailure> {
        self.tools
            .get(name)
            .ok_or_else(|| CallFailure::UnknownTool(name.to_owned()))
    }

    /// The `tools/list` answer.
    pub fn listed(&self) -> Arc<Vec<Tool>> {
        self.listed.clone()
    }
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
    Ok(linker)
}

async fn describe(prepared: &Prepared) -> Result<Vec<ToolSpec>, CallFailure> {
    let signals = store::RunSignals::default();
    let report = store::run(prepared, Invocation::Describe, None, &signals).await;
    match report.result? {
        Answer::Described(specs) => Ok(specs),
        Answer::Called(_) => unreachable!("describe answers with specs"),
    }
}

/// The longest tool name MCP allows.
const MAX_TOOL_NAME: usize = 64;

/// MCP tool names: 1 to [`MAX_TOOL_NAME`] characters from `A-Z a-z 0-9 _ - .`.
fn valid_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
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
