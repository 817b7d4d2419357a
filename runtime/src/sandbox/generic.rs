//! Components that do not target `airlock:tool`: every exported function (at world level and in
//! exported interfaces) is served as a tool, with a JSON Schema derived from its WIT types, and
//! a `wasi:cli/run` command as a tool taking `args` and `stdin`. Everything is worked out at load
//! from the component's type; a call converts its JSON arguments to component values, and the
//! function's result back to JSON.
//!
//! The JSON form of each WIT type (and the schema saying so):
//! - `bool`, integers (range-checked), floats (`number`; a non-finite result is the string
//!   `"NaN"`, `"Infinity"` or `"-Infinity"`), `char` (a one-character string), `string`;
//! - `list<T>` an array (`list<T, N>` one of exactly N items), `tuple<…>` an array of exactly
//!   its items, a map with string keys an object (other maps an array of `[key, value]` pairs);
//! - a record an object of its fields (an `option` field may be left out);
//! - an enum its case name; flags an array of the names set;
//! - a variant its case name when the case has no payload, else `{"case": payload}`;
//! - `option<T>` the value or `null`; `result<T, E>` `{"ok": …}` or `{"err": …}`.
//!
//! A function's arguments are one object keyed by parameter name. Its result is
//! `{"result": value}` as structured content, and the value as text; a top-level
//! `result<T, E>` that is `err` is the tool's failure instead. Functions whose types hold
//! resources, futures or streams, async functions, and types nested deeper than
//! [`MAX_TYPE_DEPTH`] are skipped and reported at load.
//!
//! What a result may cost the host is bounded before it exists: wasmtime charges lifting a
//! result's values to the store's hostcall fuel (bytes of host memory), so a function that
//! returns a huge list traps instead of making the host allocate for it.

use crate::core::failure::CallFailure;
use airlock_host_api::{Content, Hints, Offer, ToolOutput, ToolSpec};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex, Val};

/// Deepest nesting of WIT types a served function may have.
pub const MAX_TYPE_DEPTH: usize = 32;
/// Most type nodes a served function's parameters and result may expand to (a record of
/// records of records grows fast): its schema is built from them.
pub const MAX_TYPE_NODES: usize = 4096;

/// The interface a `wasi:cli` command exports.
const CLI_RUN: &str = "wasi:cli/run@0.2.";

/// Whether an export is one a toolchain adds for itself, never served: componentize-py's
/// initialisation hook (`exports#init(app-name, symbols, stub-wasi)`, which would start the
/// interpreter over).
fn toolchain_hook(id: &str, func: &ComponentFunc) -> bool {
    id == "exports/init"
        && func.params().map(|(n, _)| n).collect::<Vec<_>>() == ["app-name", "symbols", "stub-wasi"]
}

/// How a generic component is served, worked out once at load.
pub struct GenericExports {
    pub functions: Vec<GenericFunction>,
    /// What `describe()` would have said: one tool per function.
    pub offer: Offer,
    /// Exports not served, each with why.
    pub skipped: Vec<String>,
}

/// One exported function served as a tool.
pub struct GenericFunction {
    /// The tool's name.
    pub tool: String,
    /// The function as the configuration names it: `name` at world level, `interface/name`
    /// in an exported interface (`run/run` for a command).
    pub id: String,
    index: ComponentExportIndex,
    params: Vec<(String, Type)>,
    result: Option<Type>,
    /// `wasi:cli/run`: arguments and stdin in, stdout, stderr and exit code out.
    pub command: bool,
}

/// What the configuration says about a generic component's tools.
pub struct Naming<'a> {
    /// The `[[tool]]` entry name, the prefix of every default tool name.
    pub entry: &'a str,
    /// Function id → tool name.
    pub rename: &'a BTreeMap<String, String>,
    /// Function id → its WIT doc comment.
    pub docs: &'a BTreeMap<String, String>,
    /// The component file's name, for generated descriptions.
    pub source: &'a str,
    /// Most tools the component may offer (`max_tools`): checked before any schema is built.
    pub max_tools: u32,
}

/// Whether the component exports anything of the `airlock:tool` world (it then must fit it,
/// and is not served as a generic component): a broken build that exports `call` without
/// `describe` is a load error that says so, not a generic tool named after `call`.
pub fn targets_airlock_tool(component: &Component, engine: &Engine) -> bool {
    let ty = component.component_type();
    ["describe", "call"]
        .iter()
        .any(|wanted| ty.get_export(engine, wanted).is_some())
}

/// Every function `component` exports, as tools named per `naming`. A rename of a function
/// that is not served, and two functions under one tool name, are errors.
pub fn exports(
    component: &Component,
    engine: &Engine,
    naming: &Naming<'_>,
) -> Result<GenericExports, String> {
    // (id, the id with the interface's full name, index, type, command)
    let mut found: Vec<(String, String, ComponentExportIndex, ComponentFunc, bool)> = Vec::new();
    let mut skipped = Vec::new();
    let ty = component.component_type();
    for (name, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(f) => {
                let index = component
                    .get_export_index(None, name)
                    .ok_or_else(|| format!("export {name} has no index"))?;
                found.push((name.to_owned(), name.to_owned(), index, f, false));
            }
            ComponentItem::ComponentInstance(instance) => {
                let outer = component
                    .get_export_index(None, name)
                    .ok_or_else(|| format!("export {name} has no index"))?;
                let short = interface_name(name);
                let command = name.starts_with(CLI_RUN);
                for (fname, fitem) in instance.exports(engine) {
                    let ComponentItem::ComponentFunc(f) = fitem.ty else {
                        continue;
                    };
                    let index = component
                        .get_export_index(Some(&outer), fname)
                        .ok_or_else(|| format!("export {name}#{fname} has no index"))?;
                    let full = name.split('@').next().unwrap_or(name);
                    found.push((
                        format!("{short}/{fname}"),
                        format!("{full}/{fname}"),
                        index,
                        f,
                        command && fname == "run",
                    ));
                }
            }
            _ => {}
        }
    }

    // Two interfaces with one short name (`a:x/foo` and `b:y/foo`) keep their full names.
    let ids: Vec<String> = found
        .iter()
        .map(|(short, full, ..)| {
            if found.iter().filter(|(s, ..)| s == short).count() > 1 {
                full.clone()
            } else {
                short.clone()
            }
        })
        .collect();
    if found.len() > naming.max_tools as usize {
        return Err(format!(
            "exports {} functions, more than max_tools = {}",
            found.len(),
            naming.max_tools
        ));
    }
    let mut functions: Vec<GenericFunction> = Vec::new();
    for (id, (_, _, index, func, command)) in ids.into_iter().zip(found) {
        // Not reported: every component of that toolchain has it.
        if toolchain_hook(&id, &func) {
            continue;
        }
        let (params, result) = match signature(&id, &func) {
            Ok(s) => s,
            Err(why) => {
                skipped.push(format!("{id}: {why}"));
                continue;
            }
        };
        let tool = match naming.rename.get(&id) {
            Some(name) => name.clone(),
            None if command => naming.entry.to_owned(),
            None => format!("{}_{}", naming.entry, id.rsplit('/').next().unwrap_or(&id)),
        };
        if let Some(other) = functions.iter().find(|f| f.tool == tool) {
            return Err(format!(
                "functions {} and {id} would both be the tool \"{tool}\"; give one another name \
                 with rename = {{ \"{id}\" = \"…\" }}",
                other.id
            ));
        }
        functions.push(GenericFunction {
            tool,
            id,
            index,
            params,
            result,
            command,
        });
    }
    if let Some(unknown) = naming
        .rename
        .keys()
        .find(|k| !functions.iter().any(|f| &&f.id == k))
    {
        return Err(format!(
            "rename names \"{unknown}\", which is not a function the component serves (it \
             serves: {})",
            functions
                .iter()
                .map(|f| f.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let tools = functions.iter().map(|f| spec(f, naming)).collect();
    Ok(GenericExports {
        functions,
        offer: Offer {
            tools,
            resources: Vec::new(),
            resource_templates: Vec::new(),
            prompts: Vec::new(),
        },
        skipped,
    })
}

/// `wasi:cli/run@0.2.3` → `run`; `my:pkg/shapes@1.0.0` → `shapes`; a bare name stays.
fn interface_name(export: &str) -> &str {
    let path = export.split('@').next().unwrap_or(export);
    path.rsplit('/').next().unwrap_or(path)
}

type Signature = (Vec<(String, Type)>, Option<Type>);

/// The function's parameters and result, if every type in them can be served.
fn signature(id: &str, func: &ComponentFunc) -> Result<Signature, String> {
    if id.contains('[') {
        return Err("a resource's constructor or method (resources are not served)".into());
    }
    if func.async_() {
        return Err("an async function (not served)".into());
    }
    let params: Vec<(String, Type)> = func.params().map(|(n, t)| (n.to_owned(), t)).collect();
    let mut nodes = MAX_TYPE_NODES;
    for (name, ty) in &params {
        servable(ty, 0, &mut nodes).map_err(|why| format!("parameter {name}: {why}"))?;
    }
    let mut results = func.results();
    let result = results.next();
    if results.next().is_some() {
        return Err("more than one result".into());
    }
    if let Some(ty) = &result {
        servable(ty, 0, &mut nodes).map_err(|why| format!("result: {why}"))?;
    }
    Ok((params, result))
}

/// Whether a value of `ty` can be carried as JSON, within `nodes` more type nodes.
fn servable(ty: &Type, depth: usize, nodes: &mut usize) -> Result<(), String> {
    if depth > MAX_TYPE_DEPTH {
        return Err(format!("types nested more than {MAX_TYPE_DEPTH} deep"));
    }
    *nodes = nodes.checked_sub(1).ok_or_else(|| {
        format!("types that expand to more than {MAX_TYPE_NODES} parts (too large to describe)")
    })?;
    let mut inner = |t: &Type| servable(t, depth + 1, nodes);
    match ty {
        Type::Own(_) | Type::Borrow(_) => Err("takes or returns a resource".into()),
        Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            Err("takes or returns a future, stream or error-context".into())
        }
        Type::List(l) => inner(&l.ty()),
        Type::FixedLengthList(l) => inner(&l.ty()),
        Type::Map(m) => inner(&m.key()).and(inner(&m.value())),
        Type::Record(r) => r.fields().try_for_each(|f| inner(&f.ty)),
        Type::Tuple(t) => t.types().try_for_each(|t| inner(&t)),
        Type::Variant(v) => v.cases().filter_map(|c| c.ty).try_for_each(|t| inner(&t)),
        Type::Option(o) => inner(&o.ty()),
        Type::Result(r) => r
            .ok()
            .into_iter()
            .chain(r.err())
            .try_for_each(|t| inner(&t)),
        _ => Ok(()),
    }
}

/// The tool a function is served as.
fn spec(f: &GenericFunction, naming: &Naming<'_>) -> ToolSpec {
    let (input, output) = if f.command {
        (
            json!({
                "type": "object",
                "properties": {
                    "args": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Command-line arguments (after the program name)."
                    },
                    "stdin": {"type": "string", "description": "Standard input."}
                },
                "additionalProperties": false
            }),
            Some(json!({
                "type": "object",
                "properties": {
                    "stdout": {"type": "string"},
                    "stderr": {"type": "string"},
                    "exit_code": {"type": "integer"},
                    "truncated": {"type": "boolean"}
                },
                "required": ["stdout", "stderr", "exit_code", "truncated"]
            })),
        )
    } else {
        let properties: Map<String, Value> = f
            .params
            .iter()
            .map(|(n, t)| (n.clone(), schema(t, Direction::In)))
            .collect();
        let required: Vec<&str> = f
            .params
            .iter()
            .filter(|(_, t)| !matches!(t, Type::Option(_)))
            .map(|(n, _)| n.as_str())
            .collect();
        let output = answered(f.result.as_ref()).map(|t| {
            json!({
                "type": "object",
                "properties": {"result": schema(&t, Direction::Out)},
                "required": ["result"]
            })
        });
        (
            json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false
            }),
            output,
        )
    };
    let description = naming.docs.get(&f.id).cloned().unwrap_or_else(|| {
        if f.command {
            format!(
                "Runs the command-line program {} with the arguments and standard input given; \
                 answers with its standard output, standard error and exit code.",
                naming.source
            )
        } else {
            format!(
                "Calls the function {} of the WebAssembly component {}.",
                f.id, naming.source
            )
        }
    });
    ToolSpec {
        name: f.tool.clone(),
        title: None,
        description,
        input_schema: input.to_string(),
        output_schema: output.map(|o| o.to_string()),
        hints: Hints {
            read_only: false,
            destructive: false,
            idempotent: false,
            open_world: false,
        },
    }
}

/// The type of a function's successful value: a top-level `result`'s `ok` side (its `err`
/// side is the tool's failure), else the result itself.
fn answered(result: Option<&Type>) -> Option<Type> {
    match result? {
        Type::Result(r) => r.ok(),
        other => Some(other.clone()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    /// What a caller sends.
    In,
    /// What the component answers (floats may be non-finite there).
    Out,
}

/// The JSON Schema of a value of `ty` (see the module docs for the JSON forms).
fn schema(ty: &Type, dir: Direction) -> Value {
    let integer = |min: i128, max: i128| json!({"type": "integer", "minimum": min, "maximum": max});
    match ty {
        Type::Bool => json!({"type": "boolean"}),
        Type::S8 => integer(i8::MIN.into(), i8::MAX.into()),
        Type::U8 => integer(0, u8::MAX.into()),
        Type::S16 => integer(i16::MIN.into(), i16::MAX.into()),
        Type::U16 => integer(0, u16::MAX.into()),
        Type::S32 => integer(i32::MIN.into(), i32::MAX.into()),
        Type::U32 => integer(0, u32::MAX.into()),
        Type::S64 => integer(i64::MIN.into(), i64::MAX.into()),
        Type::U64 => integer(0, u64::MAX.into()),
        Type::Float32 | Type::Float64 => match dir {
            Direction::In => json!({"type": "number"}),
            Direction::Out => json!({"anyOf": [
                {"type": "number"},
                {"enum": ["NaN", "Infinity", "-Infinity"]}
            ]}),
        },
        Type::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
        Type::String => json!({"type": "string"}),
        Type::List(l) => json!({"type": "array", "items": schema(&l.ty(), dir)}),
        Type::FixedLengthList(l) => json!({
            "type": "array",
            "items": schema(&l.ty(), dir),
            "minItems": l.len(),
            "maxItems": l.len()
        }),
        Type::Map(m) if m.key() == Type::String => json!({
            "type": "object",
            "additionalProperties": schema(&m.value(), dir)
        }),
        Type::Map(m) => json!({
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [schema(&m.key(), dir), schema(&m.value(), dir)],
                "items": false,
                "minItems": 2
            }
        }),
        Type::Record(r) => {
            let properties: Map<String, Value> = r
                .fields()
                .map(|f| (f.name.to_owned(), schema(&f.ty, dir)))
                .collect();
            let required: Vec<&str> = r
                .fields()
                .filter(|f| !matches!(f.ty, Type::Option(_)))
                .map(|f| f.name)
                .collect();
            json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false
            })
        }
        Type::Tuple(t) => {
            let items: Vec<Value> = t.types().map(|t| schema(&t, dir)).collect();
            let n = items.len();
            json!({"type": "array", "prefixItems": items, "items": false, "minItems": n})
        }
        Type::Variant(v) => {
            let cases: Vec<Value> = v
                .cases()
                .map(|c| match &c.ty {
                    None => json!({"const": c.name}),
                    Some(t) => tagged(c.name, schema(t, dir)),
                })
                .collect();
            json!({"oneOf": cases})
        }
        Type::Enum(e) => json!({"type": "string", "enum": e.names().collect::<Vec<_>>()}),
        Type::Flags(f) => json!({
            "type": "array",
            "items": {"type": "string", "enum": f.names().collect::<Vec<_>>()},
            "uniqueItems": true
        }),
        Type::Option(o) => json!({"anyOf": [schema(&o.ty(), dir), {"type": "null"}]}),
        Type::Result(r) => {
            let side = |t: Option<Type>| t.map_or(json!({"type": "null"}), |t| schema(&t, dir));
            json!({"oneOf": [tagged("ok", side(r.ok())), tagged("err", side(r.err()))]})
        }
        // Refused at load by `servable`.
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            json!(false)
        }
    }
}

/// `{"name": value}` and nothing else.
fn tagged(name: &str, value: Value) -> Value {
    json!({
        "type": "object",
        "properties": {name: value},
        "required": [name],
        "additionalProperties": false
    })
}

/// What a command call brings: its arguments and standard input.
pub struct CommandInput {
    pub args: Vec<String>,
    pub stdin: Vec<u8>,
}

impl GenericExports {
    /// The function served as `tool`.
    pub fn function(&self, tool: &str) -> Option<&GenericFunction> {
        self.functions.iter().find(|f| f.tool == tool)
    }

    /// A command call's arguments and stdin (`arguments` were checked against the schema).
    pub fn command_input(&self, tool: &str, arguments: &str) -> Option<CommandInput> {
        self.function(tool).filter(|f| f.command)?;
        let value: Value = serde_json::from_str(arguments).unwrap_or_default();
        let args = value
            .get("args")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let stdin = value
            .get("stdin")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .as_bytes()
            .to_vec();
        Some(CommandInput { args, stdin })
    }
}

impl GenericFunction {
    pub fn index(&self) -> &ComponentExportIndex {
        &self.index
    }

    /// The call's arguments (a JSON object) as the function's parameters.
    pub fn params(&self, arguments: &str) -> Result<Vec<Val>, CallFailure> {
        let value: Value = serde_json::from_str(arguments)
            .map_err(|e| CallFailure::InvalidArguments(format!("not JSON: {e}")))?;
        let Value::Object(mut object) = value else {
            return Err(CallFailure::InvalidArguments(
                "the arguments are not a JSON object".into(),
            ));
        };
        self.params
            .iter()
            .map(|(name, ty)| {
                let v = object.remove(name).unwrap_or(Value::Null);
                to_val(&v, ty, &format!("/{name}")).map_err(CallFailure::InvalidArguments)
            })
            .collect()
    }

    /// Room for the function's result.
    pub fn result_slots(&self) -> Vec<Val> {
        self.result.iter().map(|_| Val::Bool(false)).collect()
    }

    /// The function's result as the tool's output.
    pub fn output(&self, results: Vec<Val>) -> ToolOutput {
        let Some(value) = results.into_iter().next() else {
            return ToolOutput {
                content: Vec::new(),
                structured: None,
                is_error: false,
            };
        };
        let (value, failed) = match (value, &self.result) {
            (Val::Result(Ok(v)), Some(Type::Result(_))) => {
                (v.map_or(Value::Null, |v| to_json(&v)), false)
            }
            (Val::Result(Err(e)), Some(Type::Result(_))) => {
                (e.map_or(Value::Null, |e| to_json(&e)), true)
            }
            (v, _) => (to_json(&v), false),
        };
        let text = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let structured = (!failed && answered(self.result.as_ref()).is_some())
            .then(|| json!({"result": value}).to_string());
        ToolOutput {
            content: vec![Content::Text(text)],
            structured,
            is_error: failed,
        }
    }
}

/// A command's output: its exit code, and what it wrote (each stream as kept, and how much
/// was discarded past the capture cap). The streams are cut further, at a character boundary,
/// until the result (stdout is in it twice, as text and structured, and JSON escapes grow
/// control characters) fits in `budget` bytes; `truncated` says when anything was cut.
pub fn command_output(
    exit_code: i32,
    stdout: (Vec<u8>, u64),
    stderr: (Vec<u8>, u64),
    budget: usize,
) -> ToolOutput {
    let mut truncated = stdout.1 > 0 || stderr.1 > 0;
    let mut out = String::from_utf8_lossy(&stdout.0).into_owned();
    let mut err = String::from_utf8_lossy(&stderr.0).into_owned();
    loop {
        let text = if exit_code == 0 {
            out.clone()
        } else {
            let gap = if out.is_empty() || out.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            format!("{out}{gap}exit code {exit_code}\n{err}")
        };
        let structured = json!({
            "stdout": out, "stderr": err, "exit_code": exit_code, "truncated": truncated
        })
        .to_string();
        // Room for the content item's own JSON and the result's envelope.
        let size = serde_json::to_string(&text).map_or(usize::MAX, |t| t.len()) + structured.len();
        if size + 256 <= budget || (out.is_empty() && err.is_empty()) {
            return ToolOutput {
                content: vec![Content::Text(text)],
                structured: Some(structured),
                is_error: exit_code != 0,
            };
        }
        truncated = true;
        let longer = if out.len() >= err.len() {
            &mut out
        } else {
            &mut err
        };
        let mut keep = longer.len() / 2;
        while !longer.is_char_boundary(keep) {
            keep -= 1;
        }
        longer.truncate(keep);
    }
}

/// `value` (at JSON pointer `at`) as a component value of type `ty`.
fn to_val(value: &Value, ty: &Type, at: &str) -> Result<Val, String> {
    let wrong = |want: &str| format!("{at}: expected {want}, got {}", kind(value));
    let int = |min: i128, max: i128| -> Result<i128, String> {
        // JSON Schema counts 5.0 as an integer too.
        let whole = value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 2f64.powi(64))
            .map(|f| f as i128);
        let n = value
            .as_i64()
            .map(i128::from)
            .or_else(|| value.as_u64().map(i128::from))
            .or(whole)
            .ok_or_else(|| wrong("an integer"))?;
        if n < min || n > max {
            return Err(format!("{at}: {n} is out of range {min}..={max}"));
        }
        Ok(n)
    };
    let float = || -> Result<f64, String> {
        match value {
            Value::Number(n) => n.as_f64().ok_or_else(|| wrong("a number")),
            Value::String(s) if s == "NaN" => Ok(f64::NAN),
            Value::String(s) if s == "Infinity" => Ok(f64::INFINITY),
            Value::String(s) if s == "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(wrong("a number")),
        }
    };
    let items = |want: &str| value.as_array().ok_or_else(|| wrong(want));
    Ok(match ty {
        Type::Bool => Val::Bool(value.as_bool().ok_or_else(|| wrong("true or false"))?),
        Type::S8 => Val::S8(int(i8::MIN.into(), i8::MAX.into())? as i8),
        Type::U8 => Val::U8(int(0, u8::MAX.into())? as u8),
        Type::S16 => Val::S16(int(i16::MIN.into(), i16::MAX.into())? as i16),
        Type::U16 => Val::U16(int(0, u16::MAX.into())? as u16),
        Type::S32 => Val::S32(int(i32::MIN.into(), i32::MAX.into())? as i32),
        Type::U32 => Val::U32(int(0, u32::MAX.into())? as u32),
        Type::S64 => Val::S64(int(i64::MIN.into(), i64::MAX.into())? as i64),
        Type::U64 => Val::U64(int(0, u64::MAX.into())? as u64),
        Type::Float32 => Val::Float32(float()? as f32),
        Type::Float64 => Val::Float64(float()?),
        Type::Char => {
            let s = value.as_str().ok_or_else(|| wrong("one character"))?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(wrong("one character")),
            }
        }
        Type::String => Val::String(value.as_str().ok_or_else(|| wrong("a string"))?.to_owned()),
        Type::List(l) => {
            let t = l.ty();
            Val::List(
                items("an array")?
                    .iter()
                    .enumerate()
                    .map(|(i, v)| to_val(v, &t, &format!("{at}/{i}")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::FixedLengthList(l) => {
            let (t, n) = (l.ty(), l.len() as usize);
            let a = items("an array")?;
            if a.len() != n {
                return Err(format!("{at}: expected exactly {n} items, got {}", a.len()));
            }
            Val::FixedLengthList(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| to_val(v, &t, &format!("{at}/{i}")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Map(m) if m.key() == Type::String => {
            let object = value.as_object().ok_or_else(|| wrong("an object"))?;
            let vt = m.value();
            Val::Map(
                object
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            Val::String(k.clone()),
                            to_val(v, &vt, &format!("{at}/{}", pointer_escape(k)))?,
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
        Type::Map(m) => {
            let (kt, vt) = (m.key(), m.value());
            Val::Map(
                items("an array of [key, value] pairs")?
                    .iter()
                    .enumerate()
                    .map(|(i, pair)| match pair.as_array().map(Vec::as_slice) {
                        Some([k, v]) => Ok((
                            to_val(k, &kt, &format!("{at}/{i}/0"))?,
                            to_val(v, &vt, &format!("{at}/{i}/1"))?,
                        )),
                        _ => Err(format!("{at}/{i}: expected a [key, value] pair")),
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
        Type::Record(r) => {
            let object = value.as_object().ok_or_else(|| wrong("an object"))?;
            if let Some(extra) = object.keys().find(|k| !r.fields().any(|f| f.name == *k)) {
                return Err(format!("{at}: unexpected field {extra}"));
            }
            Val::Record(
                r.fields()
                    .map(|f| {
                        let v = object.get(f.name).unwrap_or(&Value::Null);
                        let at = format!("{at}/{}", pointer_escape(f.name));
                        Ok((f.name.to_owned(), to_val(v, &f.ty, &at)?))
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
        Type::Tuple(t) => {
            let a = items("an array")?;
            if a.len() != t.types().len() {
                return Err(format!(
                    "{at}: expected exactly {} items, got {}",
                    t.types().len(),
                    a.len()
                ));
            }
            Val::Tuple(
                t.types()
                    .zip(a)
                    .enumerate()
                    .map(|(i, (t, v))| to_val(v, &t, &format!("{at}/{i}")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Variant(v) => {
            let (name, payload) = case_of(value).ok_or_else(|| wrong("a case"))?;
            let case = v
                .cases()
                .find(|c| c.name == name)
                .ok_or_else(|| format!("{at}: no case {name}"))?;
            match (&case.ty, payload) {
                (None, None) => Val::Variant(name.to_owned(), None),
                (Some(t), Some(p)) => Val::Variant(
                    name.to_owned(),
                    Some(Box::new(to_val(p, t, &format!("{at}/{name}"))?)),
                ),
                (None, Some(_)) => return Err(format!("{at}: case {name} takes no value")),
                (Some(_), None) => return Err(format!("{at}: case {name} needs a value")),
            }
        }
        Type::Enum(e) => {
            let name = value.as_str().ok_or_else(|| wrong("a case name"))?;
            if !e.names().any(|n| n == name) {
                return Err(format!("{at}: no case {name}"));
            }
            Val::Enum(name.to_owned())
        }
        Type::Flags(f) => {
            let names = items("an array of flag names")?;
            let mut set = Vec::with_capacity(names.len());
            for (i, n) in names.iter().enumerate() {
                let n = n
                    .as_str()
                    .filter(|n| f.names().any(|known| known == *n))
                    .ok_or_else(|| format!("{at}/{i}: not a flag"))?;
                if !set.iter().any(|s: &String| s == n) {
                    set.push(n.to_owned());
                }
            }
            Val::Flags(set)
        }
        Type::Option(o) => match value {
            Value::Null => Val::Option(None),
            v => Val::Option(Some(Box::new(to_val(v, &o.ty(), at)?))),
        },
        Type::Result(r) => {
            let (name, payload) =
                case_of(value).ok_or_else(|| wrong("{\"ok\": …} or {\"err\": …}"))?;
            let side = match name {
                "ok" => r.ok(),
                "err" => r.err(),
                _ => return Err(wrong("{\"ok\": …} or {\"err\": …}")),
            };
            let inner = match (side, payload) {
                (Some(t), Some(p)) => Some(Box::new(to_val(p, &t, &format!("{at}/{name}"))?)),
                (None, None | Some(Value::Null)) => None,
                (Some(_), None) => return Err(format!("{at}: {name} needs a value")),
                (None, Some(_)) => return Err(format!("{at}: {name} takes no value")),
            };
            Val::Result(if name == "ok" { Ok(inner) } else { Err(inner) })
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(format!("{at}: this type is not served"));
        }
    })
}

/// A case as JSON: `"name"` or `{"name": payload}`.
fn case_of(value: &Value) -> Option<(&str, Option<&Value>)> {
    match value {
        Value::String(s) => Some((s, None)),
        Value::Object(o) if o.len() == 1 => o.iter().next().map(|(k, v)| (k.as_str(), Some(v))),
        _ => None,
    }
}

fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A component value as JSON.
fn to_json(value: &Val) -> Value {
    let float = |f: f64| {
        if f.is_nan() {
            json!("NaN")
        } else if f.is_infinite() {
            json!(if f > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            json!(f)
        }
    };
    match value {
        Val::Bool(b) => json!(b),
        Val::S8(n) => json!(n),
        Val::U8(n) => json!(n),
        Val::S16(n) => json!(n),
        Val::U16(n) => json!(n),
        Val::S32(n) => json!(n),
        Val::U32(n) => json!(n),
        Val::S64(n) => json!(n),
        Val::U64(n) => json!(n),
        Val::Float32(f) => float(f64::from(*f)),
        Val::Float64(f) => float(*f),
        Val::Char(c) => json!(c.to_string()),
        Val::String(s) => json!(s),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
        Val::Map(pairs) if pairs.iter().all(|(k, _)| matches!(k, Val::String(_))) => Value::Object(
            pairs
                .iter()
                .filter_map(|(k, v)| match k {
                    Val::String(k) => Some((k.clone(), to_json(v))),
                    _ => None,
                })
                .collect(),
        ),
        Val::Map(pairs) => Value::Array(
            pairs
                .iter()
                .map(|(k, v)| json!([to_json(k), to_json(v)]))
                .collect(),
        ),
        Val::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Val::Variant(name, None) | Val::Enum(name) => json!(name),
        Val::Variant(name, Some(v)) => json!({ name.as_str(): to_json(v) }),
        Val::Flags(names) => json!(names),
        Val::Option(None) => Value::Null,
        Val::Option(Some(v)) => to_json(v),
        Val::Result(Ok(v)) => json!({"ok": v.as_deref().map_or(Value::Null, to_json)}),
        Val::Result(Err(e)) => json!({"err": e.as_deref().map_or(Value::Null, to_json)}),
        // Functions that carry these are not served.
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_drop_package_and_version() {
        assert_eq!(interface_name("wasi:cli/run@0.2.3"), "run");
        assert_eq!(interface_name("my:pkg/shapes@1.0.0"), "shapes");
        assert_eq!(interface_name("greet"), "greet");
    }

    #[test]
    fn command_output_reports_exit_and_truncation() {
        let out = command_output(3, (b"out".to_vec(), 0), (b"bad".to_vec(), 10), 1 << 20);
        assert!(out.is_error);
        let s: Value = serde_json::from_str(out.structured.as_deref().unwrap()).unwrap();
        assert_eq!(s["exit_code"], 3);
        assert_eq!(s["truncated"], true);
        assert_eq!(s["stderr"], "bad");
    }

    #[test]
    fn command_output_fits_its_budget_however_it_escapes() {
        // Control characters take six bytes each as JSON, and stdout is there twice.
        let noisy = vec![1u8; 100_000];
        let out = command_output(1, (noisy.clone(), 0), (noisy, 0), 64 * 1024);
        let structured = out.structured.as_deref().unwrap();
        let Content::Text(text) = &out.content[0] else {
            panic!("text")
        };
        assert!(serde_json::to_string(text).unwrap().len() + structured.len() <= 64 * 1024);
        let s: Value = serde_json::from_str(structured).unwrap();
        assert_eq!(s["truncated"], true);
        assert!(!s["stdout"].as_str().unwrap().is_empty());
    }
}
