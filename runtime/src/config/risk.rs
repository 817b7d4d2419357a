//! Risk tiers and approval rules: the `tier` and `[tool.approval]` settings of a `[[tool]]`
//! entry, checked when the configuration loads and compiled against the tools the component
//! declares, so that the per-call question "does this call need a human?" is a few compares.

use crate::core::units::Span;
use rmcp::model::{JsonObject, Tool};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// How much a tool is trusted to act on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Runs with every write capability withheld (filesystem grants read-only, HTTP limited to
    /// GET and HEAD, no raw TCP); every call is marked as shadow.
    Shadow,
    /// Every call needs a human's approval.
    Supervised,
    /// Approval only where an approval rule asks for it.
    #[default]
    Autonomous,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Shadow => "shadow",
            Tier::Supervised => "supervised",
            Tier::Autonomous => "autonomous",
        })
    }
}

/// Who answers an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The caller's user, through MCP elicitation.
    Client,
    /// An operator, through `airlock ctl approvals`.
    Operator,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Client => "client",
            Via::Operator => "operator",
        })
    }
}

/// `[tool.approval]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSection {
    /// `"always"`, `"never"` or `{ tools = […], arguments = { name = value | [values] } }`.
    when: Option<toml::Value>,
    via: Option<Via>,
    /// `"operator"`: ask the operator when the client cannot ask its user.
    fallback: Option<Via>,
    timeout: Option<Span>,
    /// The operator who answers may not be the caller.
    four_eyes: Option<bool>,
}

/// When a call needs approval, before the tools are known.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Never,
    Always,
    /// Calls of these tools (all of the component's when `None`) whose arguments match every
    /// listed name.
    Matching {
        tools: Option<Vec<String>>,
        arguments: Vec<(String, Vec<Matcher>)>,
    },
}

/// One accepted value of an argument: equal to a JSON value, or a string pattern where `*`
/// stands for any run of characters.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    Equals(serde_json::Value),
    Glob(String),
}

/// A component's approval policy, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalPolicy {
    pub tier: Tier,
    pub when: When,
    pub via: Via,
    pub fallback_operator: bool,
    pub timeout: Span,
    pub four_eyes: bool,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        ApprovalPolicy {
            tier: Tier::default(),
            when: When::Never,
            via: Via::Client,
            fallback_operator: false,
            timeout: Span(Duration::from_secs(300)),
            four_eyes: false,
        }
    }
}

/// Resolve `tier` and `[tool.approval]`; errors are `(key, problem)`.
pub fn resolve(
    tier: Option<Tier>,
    section: Option<&ApprovalSection>,
) -> Result<ApprovalPolicy, (String, String)> {
    let tier = tier.unwrap_or_default();
    let default = ApprovalSection::default();
    let s = section.unwrap_or(&default);
    let err = |k: &str, p: String| (format!("approval › {k}"), p);
    let when = match &s.when {
        None if tier == Tier::Supervised => When::Always,
        None => When::Never,
        Some(v) => parse_when(v).map_err(|p| err("when", p))?,
    };
    if tier == Tier::Supervised && when != When::Always {
        return Err(err(
            "when",
            "tier \"supervised\" asks for approval of every call; remove `when` or set it to \"always\"".into(),
        ));
    }
    let via = s.via.unwrap_or(Via::Client);
    let fallback_operator = match s.fallback {
        None => false,
        Some(Via::Operator) if via == Via::Client => true,
        Some(Via::Operator) => {
            return Err(err(
                "fallback",
                "via is already \"operator\"; a fallback to it changes nothing".into(),
            ));
        }
        Some(Via::Client) => {
            return Err(err(
                "fallback",
                "only \"operator\" can be a fallback (it answers when the client cannot ask its user)".into(),
            ));
        }
    };
    let timeout = s.timeout.unwrap_or(ApprovalPolicy::default().timeout);
    if timeout.0 < Duration::from_secs(1) || timeout.0 > Duration::from_secs(24 * 3600) {
        return Err(err("timeout", "must be between 1s and 24h".into()));
    }
    let four_eyes = s.four_eyes.unwrap_or(false);
    if four_eyes && via == Via::Client && !fallback_operator {
        return Err(err(
            "four_eyes",
            "only operator approvals can require a second person; set via = \"operator\" or fallback = \"operator\"".into(),
        ));
    }
    if when == When::Never && section.is_some_and(|s| s.via.is_some() || s.fallback.is_some()) {
        return Err(err(
            "when",
            "\"never\" asks for no approval, so `via` and `fallback` can never apply".into(),
        ));
    }
    Ok(ApprovalPolicy {
        tier,
        when,
        via,
        fallback_operator,
        timeout,
        four_eyes,
    })
}

fn parse_when(v: &toml::Value) -> Result<When, String> {
    match v {
        toml::Value::String(s) if s == "always" => Ok(When::Always),
        toml::Value::String(s) if s == "never" => Ok(When::Never),
        toml::Value::Table(t) => {
            let mut tools = None;
            let mut arguments = Vec::new();
            for (k, v) in t {
                match (k.as_str(), v) {
                    ("tools", toml::Value::Array(names)) => {
                        let names: Vec<String> = names
                            .iter()
                            .map(|n| n.as_str().map(str::to_owned))
                            .collect::<Option<_>>()
                            .ok_or("`tools` must be a list of tool names")?;
                        if names.is_empty() {
                            return Err("`tools` is empty, so the rule can never match".into());
                        }
                        tools = Some(names);
                    }
                    ("tools", _) => return Err("`tools` must be a list of tool names".into()),
                    ("arguments", toml::Value::Table(args)) => {
                        for (name, accepted) in args {
                            let values = match accepted {
                                toml::Value::Array(a) => a.clone(),
                                one => vec![one.clone()],
                            };
                            if values.is_empty() {
                                return Err(format!(
                                    "argument `{name}` lists no values, so the rule can never match"
                                ));
                            }
                            let matchers = values
                                .into_iter()
                                .map(|v| matcher(name, v))
                                .collect::<Result<_, _>>()?;
                            arguments.push((name.clone(), matchers));
                        }
                    }
                    ("arguments", _) => {
                        return Err(
                            "`arguments` must be a table: { name = value or [values] }".into()
                        );
                    }
                    (other, _) => {
                        return Err(format!(
                            "unknown key `{other}` (a rule has `tools` and `arguments`)"
                        ));
                    }
                }
            }
            if tools.is_none() && arguments.is_empty() {
                return Err("an empty rule matches every call; write when = \"always\"".into());
            }
            Ok(When::Matching { tools, arguments })
        }
        _ => {
            Err("must be \"always\", \"never\" or a rule { tools = […], arguments = { … } }".into())
        }
    }
}

fn matcher(name: &str, v: toml::Value) -> Result<Matcher, String> {
    let json = serde_json::to_value(&v).map_err(|e| format!("argument `{name}`: {e}"))?;
    match json {
        serde_json::Value::String(s) if s.contains('*') => Ok(Matcher::Glob(s)),
        serde_json::Value::Object(_) | serde_json::Value::Array(_) => Err(format!(
            "argument `{name}`: match strings, numbers or booleans (a list means any of them)"
        )),
        scalar => Ok(Matcher::Equals(scalar)),
    }
}

/// An approval rule checked against the tools a component declared: every tool it names exists
/// and every argument it matches is declared by one of them, with a value the schema allows.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    pub policy: ApprovalPolicy,
}

impl CompiledRule {
    /// Check `policy` against `tools` (the component's); the error says why it can never match.
    pub fn compile(policy: ApprovalPolicy, tools: &[Tool]) -> Result<CompiledRule, String> {
        if let When::Matching {
            tools: names,
            arguments,
        } = &policy.when
        {
            let covered: Vec<&Tool> = match names {
                None => tools.iter().collect(),
                Some(names) => {
                    for n in names {
                        if !tools.iter().any(|t| t.name == *n) {
                            return Err(format!(
                                "approval › when › tools: the component declares no tool \"{n}\" (it declares {})",
                                tools
                                    .iter()
                                    .map(|t| t.name.as_ref())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                    }
                    tools
                        .iter()
                        .filter(|t| names.contains(&t.name.to_string()))
                        .collect()
                }
            };
            for (name, matchers) in arguments {
                let declared: Vec<&JsonObject> = covered
                    .iter()
                    .filter_map(|t| property(&t.input_schema, name))
                    .collect();
                if declared.is_empty() {
                    return Err(format!(
                        "approval › when › arguments › {name}: no tool the rule covers has an argument `{name}`"
                    ));
                }
                for m in matchers {
                    if !declared.iter().any(|p| may_match(p, m)) {
                        return Err(format!(
                            "approval › when › arguments › {name}: {} can never be a value of `{name}` (its schema: {})",
                            show(m),
                            serde_json::Value::Object((*declared[0]).clone())
                        ));
                    }
                }
            }
        }
        Ok(CompiledRule { policy })
    }

    /// Whether the rule approves every request whatever it names (a read, a prompt, a
    /// completion are not tools its `tools` and `arguments` could match).
    pub fn approves_every_request(&self) -> bool {
        matches!(self.policy.when, When::Always)
    }

    /// Whether a call of `tool` with `arguments` needs approval. The hot path when no rule
    /// applies: one compare.
    pub fn needs_approval(&self, tool: &str, arguments: Option<&JsonObject>) -> bool {
        match &self.policy.when {
            When::Never => false,
            When::Always => true,
            When::Matching {
                tools,
                arguments: rules,
            } => {
                if tools.as_ref().is_some_and(|t| !t.iter().any(|n| n == tool)) {
                    return false;
                }
                rules.iter().all(|(name, matchers)| {
                    arguments
                        .and_then(|a| a.get(name))
                        .is_some_and(|v| value_matches(v, matchers))
                })
            }
        }
    }
}

fn property<'s>(schema: &'s JsonObject, name: &str) -> Option<&'s JsonObject> {
    schema
        .get("properties")?
        .as_object()?
        .get(name)?
        .as_object()
}

fn show(m: &Matcher) -> String {
    match m {
        Matcher::Equals(v) => v.to_string(),
        Matcher::Glob(g) => format!("{g:?}"),
    }
}

/// Whether a value the rule lists is one the argument's schema admits (type and enum); a
/// schema that says nothing admits anything.
fn may_match(schema: &JsonObject, m: &Matcher) -> bool {
    let types: Vec<&str> = match schema.get("type") {
        Some(serde_json::Value::String(t)) => vec![t.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|t| t.as_str()).collect(),
        _ => Vec::new(),
    };
    // An array argument matches through its items.
    if types == ["array"] {
        return schema
            .get("items")
            .and_then(|i| i.as_object())
            .is_none_or(|items| may_match(items, m));
    }
    let type_ok = |v: &serde_json::Value| {
        types.is_empty()
            || types.iter().any(|t| match *t {
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                "null" => v.is_null(),
                _ => true,
            })
    };
    let enumerated = schema.get("enum").and_then(|e| e.as_array());
    match m {
        Matcher::Equals(v) => type_ok(v) && enumerated.is_none_or(|e| e.contains(v)),
        Matcher::Glob(g) => {
            type_ok(&serde_json::Value::String(String::new()))
                && enumerated
                    .is_none_or(|e| e.iter().any(|v| v.as_str().is_some_and(|s| glob(g, s))))
        }
    }
}

fn value_matches(v: &serde_json::Value, matchers: &[Matcher]) -> bool {
    if let serde_json::Value::Array(items) = v {
        return items.iter().any(|i| value_matches(i, matchers));
    }
    matchers.iter().any(|m| match m {
        Matcher::Equals(want) => want == v || numbers_equal(want, v),
        Matcher::Glob(g) => v.as_str().is_some_and(|s| glob(g, s)),
    })
}

/// `1` in the configuration equals `1.0` from a client.
fn numbers_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

/// `*` matches any run of characters (including none); everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    let Some(mut rest) = text
        .strip_prefix(first)
        .and_then(|rest| rest.strip_suffix(last))
    else {
        return false;
    };
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn section(text: &str) -> ApprovalSection {
        toml::from_str(text).unwrap()
    }

    fn tool(name: &str, schema: serde_json::Value) -> Tool {
        Tool::new(
            name.to_owned(),
            "d",
            Arc::new(schema.as_object().unwrap().clone()),
        )
    }

    #[test]
    fn globs() {
        assert!(glob("/etc/*", "/etc/passwd"));
        assert!(!glob("/etc/*", "/tmp/x"));
        assert!(glob("*.sh", "run.sh"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "ac"));
        assert!(glob("*", ""));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("ab*ba", "abba"));
        // Multi-byte text never splits a character.
        assert!(!glob("/etc/*.conf", "/etc/ééé"));
        assert!(glob("/é*é", "/ééé"));
    }

    #[test]
    fn supervised_means_always() {
        let p = resolve(Some(Tier::Supervised), None).unwrap();
        assert_eq!(p.when, When::Always);
        let e = resolve(Some(Tier::Supervised), Some(&section("when = \"never\""))).unwrap_err();
        assert_eq!(e.0, "approval › when");
    }

    #[test]
    fn rules_that_can_never_match_are_errors() {
        for (text, key) in [
            ("when = { tools = [] }", "approval › when"),
            ("when = {}", "approval › when"),
            ("when = { arguments = { mode = [] } }", "approval › when"),
            ("when = \"sometimes\"", "approval › when"),
            ("when = \"never\"\nvia = \"operator\"", "approval › when"),
            (
                "when = \"always\"\nfour_eyes = true",
                "approval › four_eyes",
            ),
            ("when = \"always\"\ntimeout = \"0s\"", "approval › timeout"),
        ] {
            let e = resolve(None, Some(&section(text))).unwrap_err();
            assert_eq!(e.0, key, "{text}: {e:?}");
        }
        let tools = [tool(
            "write",
            serde_json::json!({"type":"object","properties":{
                "path":{"type":"string"},
                "mode":{"type":"string","enum":["append","replace"]},
                "count":{"type":"integer"}}}),
        )];
        for (text, fragment) in [
            ("when = { tools = [\"wirte\"] }", "no tool \"wirte\""),
            (
                "when = { arguments = { pth = \"/etc/*\" } }",
                "no tool the rule covers",
            ),
            (
                "when = { arguments = { mode = \"delete\" } }",
                "can never be a value",
            ),
            (
                "when = { arguments = { count = \"many\" } }",
                "can never be a value",
            ),
        ] {
            let p = resolve(None, Some(&section(text))).unwrap();
            let e = CompiledRule::compile(p, &tools).unwrap_err();
            assert!(e.contains(fragment), "{text}: {e}");
        }
    }

    #[test]
    fn argument_rules_match_values() {
        let tools = [tool(
            "write",
            serde_json::json!({"type":"object","properties":{
                "path":{"type":"string"},"tags":{"type":"array","items":{"type":"string"}},
                "count":{"type":"integer"}}}),
        )];
        let p = resolve(
            None,
            Some(&section(
                "when = { tools = [\"write\"], arguments = { path = [\"/etc/*\", \"/root\"], count = 3 } }",
            )),
        )
        .unwrap();
        let r = CompiledRule::compile(p, &tools).unwrap();
        let args = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert!(r.needs_approval(
            "write",
            Some(&args(serde_json::json!({"path":"/etc/x","count":3})))
        ));
        assert!(r.needs_approval(
            "write",
            Some(&args(serde_json::json!({"path":"/root","count":3.0})))
        ));
        assert!(!r.needs_approval(
            "write",
            Some(&args(serde_json::json!({"path":"/tmp","count":3})))
        ));
        assert!(!r.needs_approval("write", Some(&args(serde_json::json!({"path":"/etc/x"})))));
        assert!(!r.needs_approval(
            "other",
            Some(&args(serde_json::json!({"path":"/etc/x","count":3})))
        ));
        let p = resolve(
            None,
            Some(&section("when = { arguments = { tags = \"secret\" } }")),
        )
        .unwrap();
        let r = CompiledRule::compile(p, &tools).unwrap();
        assert!(r.needs_approval(
            "write",
            Some(&args(serde_json::json!({"tags":["a","secret"]})))
        ));
    }
}
