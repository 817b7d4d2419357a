//! What the operator plane acts on and how: the overrides in force, the calls running, and the
//! commands (`kill`, `revive`, `revoke`, `restore`), each persisted before it is acknowledged
//! and recorded in the audit log with who gave it. The transport is in [`crate::control::admin`].

use crate::core::kill_scope::KillScope;
use crate::gate::fleet::Interrupt;
use crate::gate::overrides::{Family, GrantRef, Overrides};
use crate::pipeline::call::Airlock;
use crate::pipeline::operator_state::OperatorState;
use serde::{Deserialize, Serialize};

/// An operator command that changes what may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Change {
    Kill {
        scope: KillScope,
        interrupt: bool,
    },
    Revive {
        scope: KillScope,
    },
    Revoke {
        tool: String,
        grant: GrantRef,
        interrupt: bool,
    },
    Restore {
        tool: String,
        grant: GrantRef,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = |s: &KillScope| match s {
            KillScope::All => "all tools".to_owned(),
            KillScope::Tool(t) => format!("tool {t}"),
            KillScope::Principal(p) => format!("principal {p}"),
            KillScope::Resources(c) => format!("the resources of {c}"),
            KillScope::Prompts(c) => format!("the prompts of {c}"),
        };
        let interrupting = |i: bool| if i { ", interrupting" } else { "" };
        match self {
            Change::Kill {
                scope: s,
                interrupt,
            } => {
                write!(f, "kill {}{}", scope(s), interrupting(*interrupt))
            }
            Change::Revive { scope: s } => write!(f, "revive {}", scope(s)),
            Change::Revoke {
                tool,
                grant,
                interrupt,
            } => write!(
                f,
                "revoke grant {grant} of tool {tool}{}",
                interrupting(*interrupt)
            ),
            Change::Restore { tool, grant } => write!(f, "restore grant {grant} of tool {tool}"),
        }
    }
}

/// What a change did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeOutcome {
    /// False when the override was already in that state.
    pub changed: bool,
    /// The calls stopped (`--interrupt`).
    pub interrupted: Vec<String>,
    /// The component a `--tool` name resolved to (revoke/restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// After a revive: another kill that still disables the revived tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub still_disabled: Option<KillScope>,
    /// In a fleet: the live replicas that had not applied the change within `ack_timeout`
    /// (each refuses calls by then: it has not confirmed the fleet's state for
    /// `max_staleness`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub laggards: Vec<String>,
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no tool or [[tool]] entry is named {0}")]
    UnknownTool(String),
    #[error(
        "no API key, client certificate, local principal or running call is named {name} \
         (known: {known}); if it is a token's subject, kill it with --force"
    )]
    UnknownPrincipal { name: String, known: String },
    #[error("[[tool]] {component} has no grant {grant}; its grants are: {available}")]
    UnknownGrant {
        component: String,
        grant: String,
        available: String,
    },
    #[error("cannot persist the operator state, nothing changed: {0}")]
    Persist(std::io::Error),
    #[error("{0}")]
    Fleet(String),
    #[error(
        "the change is in force, but its audit record could not be written (calls fail until \
         the audit log is back): {0}"
    )]
    Audit(String),
}

/// The audit record of an operator action.
#[derive(Serialize)]
struct OperatorRecord<'a> {
    by: &'a str,
    #[serde(flatten)]
    change: &'a Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<&'a str>,
    changed: bool,
    interrupted: &'a [String],
}

/// Apply `change` against the running `airlock`: validate the names it uses, persist the new
/// overrides, interrupt what it says, and record it. The change is in force when this returns.
pub async fn apply(
    airlock: &Airlock,
    operator: &OperatorState,
    change: &Change,
    by: &str,
    force: bool,
) -> Result<ChangeOutcome, CommandError> {
    let mut component = None;
    let mut laggards = Vec::new();
    let (changed, interrupted) = match change {
        Change::Kill { scope, interrupt } => {
            check_scope(airlock, operator, scope, force)?;
            let stop = interrupt.then(|| Interrupt::Kill(scope.clone()));
            let changed =
                persist(operator, |o| o.set_kill(scope, true), &stop, &mut laggards).await?;
            let interrupted = stop
                .map(|s| interrupt_calls(operator, &s))
                .unwrap_or_default();
            (changed, interrupted)
        }
        Change::Revive { scope } => (
            persist(operator, |o| o.set_kill(scope, false), &None, &mut laggards).await?,
            Vec::new(),
        ),
        Change::Revoke {
            tool,
            grant,
            interrupt,
        } => {
            let c = resolve_grant(airlock, tool, grant)?;
            let stop = interrupt.then(|| Interrupt::Component(c.clone()));
            let changed = persist(
                operator,
                |o| o.set_revoked(&c, grant, true),
                &stop,
                &mut laggards,
            )
            .await?;
            let interrupted = stop
                .map(|s| interrupt_calls(operator, &s))
                .unwrap_or_default();
            component = Some(c);
            (changed, interrupted)
        }
        Change::Restore { tool, grant } => {
            let c = component_of(airlock, tool)
                .ok_or_else(|| CommandError::UnknownTool(tool.clone()))?;
            let changed = persist(
                operator,
                |o| o.set_revoked(&c, grant, false),
                &None,
                &mut laggards,
            )
            .await?;
            component = Some(c);
            (changed, Vec::new())
        }
    };
    // Once per kill: the other servers on the state directory find it made already (and
    // notify only of the calls they interrupted).
    if let Change::Kill { scope, .. } = change
        && (changed || !interrupted.is_empty())
    {
        crate::gate::notify::send(serde_json::json!({
            "event": "kill",
            "scope": scope,
            "what": change.to_string(),
            "by": by,
            "changed": changed,
            "interrupted": interrupted,
        }));
    }
    tracing::warn!(
        target: "airlock::operator",
        "operator {by}: {change}{}{}",
        if changed { "" } else { " (already in force)" },
        match interrupted.len() {
            0 => String::new(),
            n => format!(", {n} running calls interrupted"),
        }
    );
    let record = OperatorRecord {
        by,
        change,
        component: component.as_deref(),
        changed,
        interrupted: &interrupted,
    };
    airlock
        .audit()
        .append("operator", &record)
        .await
        .map_err(|e| CommandError::Audit(e.0))?;
    let still_disabled = match change {
        Change::Revive {
            scope: KillScope::Tool(t),
        } => {
            let overrides = operator.overrides.current();
            let owner = component_of(airlock, t).unwrap_or_default();
            // Any principal would do: a principal kill is not about the tool.
            overrides.kill_for("", t, &owner)
        }
        _ => None,
    };
    Ok(ChangeOutcome {
        changed,
        interrupted,
        component,
        still_disabled,
        laggards,
    })
}

/// Persist a change: in the state directory's file, or in a fleet through its store (where
/// `interrupt` reaches the other replicas' calls, and `laggards` gets the replicas that did
/// not apply it in time).
async fn persist(
    operator: &OperatorState,
    f: impl Fn(&mut Overrides) -> bool + Sync,
    interrupt: &Option<Interrupt>,
    laggards: &mut Vec<String>,
) -> Result<bool, CommandError> {
    match operator.fleet.get() {
        None => operator.overrides.update(f).map_err(CommandError::Persist),
        Some(fleet) => {
            let done = fleet
                .update(&operator.overrides, &f, interrupt.clone())
                .await
                .map_err(CommandError::Fleet)?;
            *laggards = done.laggards;
            Ok(done.changed)
        }
    }
}

/// Stop the calls running here that `which` covers; their ids.
pub fn interrupt_calls(operator: &OperatorState, which: &Interrupt) -> Vec<String> {
    match which {
        Interrupt::Kill(scope) => operator.running.interrupt(|c| match scope {
            KillScope::All => true,
            KillScope::Tool(t) => (c.family.is_none() && **t == *c.tool) || **t == *c.component,
            KillScope::Principal(p) => **p == *c.principal,
            KillScope::Resources(e) => **e == *c.component && c.family == Some(Family::Resources),
            KillScope::Prompts(e) => **e == *c.component && c.family == Some(Family::Prompts),
        }),
        Interrupt::Component(component) => {
            operator.running.interrupt(|r| *r.component == **component)
        }
    }
}

/// A kill must name something that exists now: a typo would otherwise protect nothing. A
/// principal is known from the configuration (API keys, the local principal, `anonymous`
/// without auth), from a running call, or from a kill in force; a token's subject the server
/// has not seen needs `force`.
fn check_scope(
    airlock: &Airlock,
    operator: &OperatorState,
    scope: &KillScope,
    force: bool,
) -> Result<(), CommandError> {
    match scope {
        KillScope::Principal(p) if !force => {
            let auth = &airlock.catalog().policy.auth;
            let mut known: Vec<String> = auth
                .api_keys
                .iter()
                .map(|k| k.principal.to_string())
                .chain(auth.client_certs.iter().map(|c| c.principal.to_string()))
                .chain([auth.local_principal.name.to_string()])
                .chain(
                    (auth.mode == crate::config::auth::AuthMode::None)
                        .then(|| crate::core::principal::ANONYMOUS_PRINCIPAL.to_owned()),
                )
                .chain(operator.running.list().into_iter().map(|c| c.principal))
                .chain(operator.overrides.current().principals.iter().cloned())
                .collect();
            known.sort();
            known.dedup();
            if known.iter().any(|k| k == p) {
                return Ok(());
            }
            Err(CommandError::UnknownPrincipal {
                name: p.clone(),
                known: known.join(", "),
            })
        }
        KillScope::Tool(t) if component_of(airlock, t).is_none() => {
            Err(CommandError::UnknownTool(t.clone()))
        }
        KillScope::Resources(c) | KillScope::Prompts(c)
            if !airlock
                .catalog()
                .components
                .iter()
                .any(|e| e.entry.name == *c) =>
        {
            Err(CommandError::UnknownTool(c.clone()))
        }
        _ => Ok(()),
    }
}

/// The `[[tool]]` entry named `name`, or holding the tool `name`.
fn component_of(airlock: &Airlock, name: &str) -> Option<String> {
    let catalog = airlock.catalog();
    if catalog.components.iter().any(|c| c.entry.name == name) {
        return Some(name.to_owned());
    }
    catalog
        .tool(name)
        .ok()
        .map(|t| t.component.entry.name.clone())
        // A tool held for review can be killed too (its approval would serve it again).
        .or_else(|| {
            catalog
                .held()
                .get(name)
                .map(|h| h.current.component.clone())
        })
}

/// The component whose grant `grant` names; the grant must exist in its configuration.
fn resolve_grant(airlock: &Airlock, tool: &str, grant: &GrantRef) -> Result<String, CommandError> {
    let component =
        component_of(airlock, tool).ok_or_else(|| CommandError::UnknownTool(tool.to_owned()))?;
    let entry = airlock
        .catalog()
        .components
        .iter()
        .find(|c| c.entry.name == component)
        .expect("component_of names a loaded component");
    let grants = &entry.prepared.grants;
    let known = match grant {
        GrantRef::Grant(id) => grants.ids().any(|i| i == id),
        GrantRef::Secret(name) => grants.secrets.iter().any(|s| s.name == *name),
    };
    if known {
        return Ok(component);
    }
    let available: Vec<String> = grants
        .ids()
        .map(str::to_owned)
        .chain(grants.secrets.iter().map(|s| format!("secret {}", s.name)))
        .collect();
    Err(CommandError::UnknownGrant {
        component,
        grant: grant.to_string(),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    })
}
