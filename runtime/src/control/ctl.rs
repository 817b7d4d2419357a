//! `airlock ctl`: the operator's client of the admin socket.

use crate::control::admin::{self, Answer, Request, Running};
use crate::control::operator::Change;
use crate::core::kill_scope::KillScope;
use crate::gate::approval::PendingView;
use crate::gate::overrides::GrantRef;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Where `ctl` sends its requests.
pub enum Target {
    /// One admin socket, named.
    Socket(PathBuf),
    /// The servers on a state directory.
    StateDir { dir: PathBuf, chosen: Chosen },
}

/// Which of a state directory's servers.
pub enum Chosen {
    /// The only one; with several, all of them for what they share (overrides) or find by id
    /// (approvals), and a refusal for the rest.
    Default,
    One(String),
    All,
}

/// What a command reaches when the operator chose no server and several run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// What one server shows of itself (status, calls, reloads): the operator must choose.
    One,
    /// Every server: the overrides are shared, and each interrupts and records on its own;
    /// approvals are per server, with ids no two share.
    Every,
}

/// The servers `target` names for a command of `reach`.
fn addressed(target: &Target, reach: Reach) -> Result<Vec<Running>> {
    let (dir, chosen) = match target {
        Target::Socket(path) => {
            return Ok(vec![Running {
                id: path.display().to_string(),
                socket: path.clone(),
            }]);
        }
        Target::StateDir { dir, chosen } => (dir, chosen),
    };
    let running = admin::running(dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot list the servers in {}: {e}",
            dir.join(admin::SERVERS_DIR).display()
        )
    })?;
    let ids = || {
        running
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if running.is_empty() {
        bail!(
            "no airlock serves with the state directory {} (no live admin socket in {})",
            dir.display(),
            dir.join(admin::SERVERS_DIR).display()
        );
    }
    match chosen {
        Chosen::One(id) => match running.iter().find(|r| r.id == *id) {
            Some(r) => Ok(vec![r.clone()]),
            None => bail!(
                "no server {id} serves with the state directory {} (running: {})",
                dir.display(),
                ids()
            ),
        },
        Chosen::All => Ok(running),
        Chosen::Default if running.len() == 1 || reach == Reach::Every => Ok(running),
        Chosen::Default => bail!(
            "{} servers run with the state directory {} ({}): choose one with --server ID, or \
             all with --all-servers (`airlock ctl ls` describes them)",
            running.len(),
            dir.display(),
            ids()
        ),
    }
}

#[derive(Subcommand)]
pub enum CtlCommand {
    /// The servers on the state directory: id, pid, what each serves, calls, approvals.
    Ls,
    /// The server: configuration, tools, calls running, overrides in force.
    Status {
        /// In a fleet: every live replica's status (asked through the fleet's store).
        #[arg(long)]
        fleet: bool,
    },
    /// The calls running now: id, tool, principal, age, fuel used.
    Calls {
        /// In a fleet: the calls running on every live replica.
        #[arg(long)]
        fleet: bool,
    },
    /// Disable a tool, a principal or everything, for every call that starts from now on.
    Kill {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Also stop the calls of that scope running now.
        #[arg(long)]
        interrupt: bool,
        /// Kill a principal that no API key, configuration or running call names (a token's
        /// subject the server has not seen yet).
        #[arg(long)]
        force: bool,
    },
    /// Undo a kill.
    Revive {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Take one grant away from one tool's component. Network grants and secrets sent as
    /// headers are also withdrawn from its running calls at their next request; filesystem
    /// grants and secrets exposed as environment variables only from the next call (use
    /// --interrupt to end the running ones).
    Revoke {
        #[command(flatten)]
        grant: GrantArgs,
        /// Also stop the component's calls running now.
        #[arg(long)]
        interrupt: bool,
    },
    /// Give a revoked grant back.
    Restore {
        #[command(flatten)]
        grant: GrantArgs,
    },
    /// Load the configuration file again and, if it is valid, put it in force.
    Reload,
    /// Content-safety detections since the start, per tool and rule: what was done and how
    /// often (rejected inputs, flagged, stripped, redacted, spotlighted, blocked output).
    Safety,
    /// Tools held for review: their description, schemas or hints are not what `airlock.lock`
    /// approved (a component update redescribed them).
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Calls waiting for an operator's approval (`via = "operator"`).
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
}

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// What is waiting: id, tool, caller, the question, time left.
    List,
    /// What is waiting now, then each new question as it arrives (and each that stops
    /// waiting), until interrupted; with --json one JSON object per line.
    Watch,
    /// Let the call go ahead.
    Approve {
        /// The id `list` shows.
        id: String,
        #[command(flatten)]
        operator: OperatorName,
    },
    /// Refuse it.
    Deny {
        id: String,
        /// Told to the caller and recorded.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        operator: OperatorName,
    },
}

#[derive(Args)]
pub struct OperatorName {
    /// Who answers, as recorded and as the four-eyes rule compares it with the caller
    /// (default: your login name).
    #[arg(long = "as", value_name = "NAME")]
    name: Option<String>,
}

impl OperatorName {
    fn resolve(self) -> String {
        self.name
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("uid:{}", rustix::process::geteuid().as_raw()))
    }
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct ScopeArgs {
    /// A tool name, or a [[tool]] entry name (all of its tools).
    #[arg(long)]
    tool: Option<String>,
    /// A principal (the token's `sub`, an API key's principal, or the local principal).
    #[arg(long)]
    principal: Option<String>,
    /// The resources (and resource templates) of a [[tool]] entry.
    #[arg(long, value_name = "ENTRY")]
    resources: Option<String>,
    /// The prompts of a [[tool]] entry.
    #[arg(long, value_name = "ENTRY")]
    prompts: Option<String>,
    /// Every tool, resource and prompt.
    #[arg(long)]
    all: bool,
}

impl ScopeArgs {
    fn scope(&self) -> KillScope {
        match (&self.tool, &self.principal, &self.resources, &self.prompts) {
            (Some(t), ..) => KillScope::Tool(t.clone()),
            (_, Some(p), ..) => KillScope::Principal(p.clone()),
            (_, _, Some(c), _) => KillScope::Resources(c.clone()),
            (_, _, _, Some(c)) => KillScope::Prompts(c.clone()),
            _ => KillScope::All,
        }
    }
}

#[derive(Args)]
pub struct GrantArgs {
    /// The tool (or [[tool]] entry) whose component holds the grant.
    #[arg(long)]
    tool: String,
    #[command(flatten)]
    which: WhichGrant,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct WhichGrant {
    /// A filesystem grant, by its guest path (`/data`) or id (`fs:/data`).
    #[arg(long, value_name = "GRANT")]
    fs: Option<String>,
    /// A network grant, by its URL as configured (`https://api.example.com`), or a TCP grant by
    /// its address (`10.0.0.5:5432`), or either by id (`net:…`, `tcp:…`).
    #[arg(long, value_name = "GRANT")]
    net: Option<String>,
    /// Every grant of the secret of this name.
    #[arg(long, value_name = "NAME")]
    secret: Option<String>,
    /// The grant to ask the client's model for messages (`sample = true`).
    #[arg(long)]
    sample: bool,
}

impl WhichGrant {
    fn grant(&self) -> GrantRef {
        let prefixed = |kind: &str, v: &str| {
            if v.starts_with(&format!("{kind}:")) {
                v.to_owned()
            } else {
                format!("{kind}:{v}")
            }
        };
        match (&self.fs, &self.net, &self.secret) {
            (Some(fs), _, _) => GrantRef::Grant(prefixed("fs", fs)),
            (_, Some(net), _) if net.starts_with("tcp:") || net.starts_with("net:") => {
                GrantRef::Grant(net.clone())
            }
            (_, Some(net), _) if net.parse::<std::net::SocketAddr>().is_ok() => {
                GrantRef::Grant(format!("tcp:{net}"))
            }
            (_, Some(net), _) => GrantRef::Grant(format!("net:{net}")),
            (_, _, Some(name)) => GrantRef::Secret(name.clone()),
            _ if self.sample => GrantRef::Grant(crate::config::grants::SAMPLE_GRANT_ID.into()),
            _ => unreachable!("clap requires one of --fs, --net, --secret, --sample"),
        }
    }
}

/// `ctl catalog …`.
#[derive(Subcommand)]
pub enum CatalogCommand {
    /// Each held tool: why, and each changed field as the lock approved it and as it is now.
    Diff,
    /// Approve TOOL as `catalog diff` showed it: this command writes it into `airlock.lock`,
    /// then the server reloads, serves it again and records the approval.
    Approve {
        tool: String,
        /// The metadata sha256 `catalog diff` showed for it (its first 8 hex digits or more):
        /// should the tool have changed again since, nothing is approved.
        #[arg(long)]
        sha256: String,
    },
}

pub async fn run(target: Target, command: CtlCommand, json: bool) -> Result<()> {
    match command {
        CtlCommand::Catalog {
            command: CatalogCommand::Approve { tool, sha256 },
        } => return approve_tool(&target, &tool, &sha256, json).await,
        CtlCommand::Ls => return list_servers(&addressed(&target, Reach::Every)?, json).await,
        CtlCommand::Approvals {
            command: ApprovalsCommand::Watch,
        } => return watch_approvals(&target, json).await,
        _ => {}
    }
    let request = match command {
        CtlCommand::Ls => unreachable!("answered above"),
        CtlCommand::Status { fleet } => Request::Status { fleet },
        CtlCommand::Calls { fleet } => Request::Calls { fleet },
        CtlCommand::Kill {
            scope,
            interrupt,
            force,
        } => Request::Change {
            change: Change::Kill {
                scope: scope.scope(),
                interrupt,
            },
            force,
        },
        CtlCommand::Revive { scope } => Request::Change {
            change: Change::Revive {
                scope: scope.scope(),
            },
            force: false,
        },
        CtlCommand::Revoke { grant, interrupt } => Request::Change {
            change: Change::Revoke {
                tool: grant.tool,
                grant: grant.which.grant(),
                interrupt,
            },
            force: false,
        },
        CtlCommand::Restore { grant } => Request::Change {
            change: Change::Restore {
                tool: grant.tool,
                grant: grant.which.grant(),
            },
            force: false,
        },
        CtlCommand::Reload => Request::Reload,
        CtlCommand::Catalog {
            command: CatalogCommand::Diff,
        } => Request::Catalog,
        CtlCommand::Catalog {
            command: CatalogCommand::Approve { .. },
        } => unreachable!("answered above"),
        CtlCommand::Safety => Request::Detections,
        CtlCommand::Approvals { command } => match command {
            ApprovalsCommand::List => Request::Approvals,
            ApprovalsCommand::Watch => unreachable!("answered above"),
            ApprovalsCommand::Approve { id, operator } => Request::Answer {
                id,
                approve: true,
                operator: operator.resolve(),
                reason: None,
            },
            ApprovalsCommand::Deny {
                id,
                reason,
                operator,
            } => Request::Answer {
                id,
                approve: false,
                operator: operator.resolve(),
                reason,
            },
        },
    };
    let reach = match request {
        Request::Change { .. } | Request::Approvals | Request::Answer { .. } => Reach::Every,
        _ => Reach::One,
    };
    let mut servers = addressed(&target, reach)?;
    if let Request::Answer { id, .. } = &request
        && servers.len() > 1
    {
        // Only the server where it waits is asked (the others would record a refusal).
        if let Some(holder) = holder_of(&servers, id).await {
            servers = vec![holder];
        }
    }
    let answers = ask_all(&servers, &request).await;
    if let [answer] = answers.as_slice() {
        let answer = answer.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        if json {
            let text = serde_json::to_string_pretty(answer)?;
            println!("{}", crate::core::text::escape_json_controls(&text));
        } else {
            print(&request, answer);
        }
        return Ok(());
    }
    // Several servers: each one's answer under its id, and a failure if any failed.
    let mut failed = Vec::new();
    let mut shown_json = Vec::new();
    for (server, answer) in servers.iter().zip(&answers) {
        match answer {
            Ok(answer) if json => {
                shown_json.push(serde_json::json!({"server": server.id, "result": answer}))
            }
            Ok(answer) => {
                println!("== server {}", server.id);
                print(&request, answer);
            }
            Err(e) => {
                if json {
                    shown_json
                        .push(serde_json::json!({"server": server.id, "error": format!("{e:#}")}));
                } else {
                    println!("== server {}\nFAILED: {e:#}", server.id);
                }
                failed.push(server.id.clone());
            }
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&shown_json)?;
        println!("{}", crate::core::text::escape_json_controls(&text));
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} servers failed: {}",
            failed.len(),
            servers.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Send `request` to every server at once (a slow one delays no other), each answer in the
/// servers' order.
async fn ask_all(servers: &[Running], request: &Request) -> Vec<Result<Answer>> {
    let asked: Vec<_> = servers
        .iter()
        .map(|server| {
            let (socket, request) = (server.socket.clone(), request.clone());
            tokio::spawn(async move { admin::request(&socket, &request).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(asked.len());
    for a in asked {
        answers.push(a.await.unwrap_or_else(|e| Err(anyhow::anyhow!("{e}"))));
    }
    answers
}

/// The server where approval `id` waits, if one does.
async fn holder_of(servers: &[Running], id: &str) -> Option<Running> {
    let answers = ask_all(servers, &Request::Approvals).await;
    servers
        .iter()
        .zip(answers)
        .find_map(|(server, answer)| match answer {
            Ok(Answer::Approvals { approvals }) if approvals.iter().any(|a| a.id == id) => {
                Some(server.clone())
            }
            _ => None,
        })
}

/// `ctl ls`: each server's id, pid, what it serves, its calls and approvals.
async fn list_servers(servers: &[Running], json: bool) -> Result<()> {
    let mut statuses = Vec::with_capacity(servers.len());
    for (server, answer) in servers
        .iter()
        .zip(ask_all(servers, &Request::Status { fleet: false }).await)
    {
        match answer {
            Ok(Answer::Status(s)) => statuses.push(*s),
            // Listed, but not answering: still loading, or stopped.
            Ok(_) | Err(_) if json => {}
            Ok(_) | Err(_) => eprintln!("server {} does not answer (still loading?)", server.id),
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&statuses)?;
        println!("{}", crate::core::text::escape_json_controls(&text));
        return Ok(());
    }
    print_table(
        "no servers",
        &[
            ("SERVER", 16),
            ("PID", -8),
            ("SERVING", 24),
            ("UP", -9),
            ("CALLS", -6),
            ("WAITING", -8),
            ("AUDIT CHAIN", 0),
        ],
        statuses.iter().map(|s| {
            vec![
                shown(&s.server),
                s.pid.to_string(),
                shown(&s.serving),
                age(s.uptime_s.saturating_mul(1000)),
                s.running_calls.to_string(),
                s.approvals_waiting.to_string(),
                s.audit_chain.as_deref().map_or("off".into(), shown),
            ]
        }),
    );
    Ok(())
}

fn print(request: &Request, answer: &Answer) {
    match answer {
        Answer::Status(s) => {
            println!("airlock {}, up {} s", s.version, s.uptime_s);
            println!(
                "server      {} (pid {}, {})",
                shown(&s.server),
                s.pid,
                shown(&s.serving)
            );
            println!("config      {}", s.config);
            println!("tools       {} in {} components", s.tools, s.components);
            match &s.not_ready {
                None => println!("ready       yes"),
                Some(why) => println!("ready       NO: {why}"),
            }
            if let Some(fleet) = &s.fleet {
                println!("fleet       {}", shown(fleet));
            }
            println!("running     {} calls", s.running_calls);
            println!(
                "waiting     {} for an operator's approval",
                s.approvals_waiting
            );
            match (&s.audit_unavailable, s.audit) {
                (Some(why), _) => {
                    println!("audit       UNAVAILABLE, calls are refused until it recovers: {why}")
                }
                (None, true) => {
                    match &s.audit_durability {
                        Some(level) => println!("audit       on, durability {level}"),
                        None => println!("audit       on"),
                    }
                    if let Some(chain) = &s.audit_chain {
                        println!("chain       {}", shown(chain));
                    }
                }
                (None, false) => println!("audit       OFF"),
            }
            let o = &s.overrides;
            if o.is_empty() {
                println!("overrides   none");
            }
            if o.all {
                println!("killed      ALL TOOLS");
            }
            for t in &o.tools {
                println!("killed      tool {}", shown(t));
            }
            for p in &o.principals {
                println!("killed      principal {}", shown(p));
            }
            for c in &o.resources {
                println!("killed      resources of {}", shown(c));
            }
            for c in &o.prompts {
                println!("killed      prompts of {}", shown(c));
            }
            for (component, r) in &o.revoked {
                for g in &r.grants {
                    println!("revoked     {component}: {}", shown(g));
                }
                for name in &r.secrets {
                    println!("revoked     {component}: secret {}", shown(name));
                }
            }
        }
        Answer::Calls { calls } => print_table(
            "no calls running",
            &[
                ("CALL", 32),
                ("TOOL", 24),
                ("ARGUMENTS", 12),
                ("PRINCIPAL", 16),
                ("AGE", -9),
                ("FUEL USED", -14),
            ],
            calls.iter().map(|c| {
                vec![
                    shown(&c.call_id),
                    shown(&c.tool),
                    shown(c.arguments_sha256.get(..12).unwrap_or("-")),
                    shown(&c.principal),
                    age(c.age_ms),
                    c.fuel_used.to_string(),
                ]
            }),
        ),
        Answer::Changed(outcome) => {
            let what = match request {
                Request::Change { change, .. } => describe(change),
                _ => String::new(),
            };
            if outcome.changed {
                println!("OK: {what}");
            } else {
                println!("OK: {what} (it already was)");
            }
            if let Some(scope) = &outcome.still_disabled {
                println!("but it stays disabled: {}", shown(&scope.to_string()));
            }
            if !outcome.laggards.is_empty() {
                println!(
                    "NOT APPLIED in time by {} replicas (they refuse calls until they are current, unless [fleet] on_stale = \"serve\"): {}",
                    outcome.laggards.len(),
                    outcome
                        .laggards
                        .iter()
                        .map(|r| shown(r))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if !outcome.interrupted.is_empty() {
                println!("interrupted {} running calls:", outcome.interrupted.len());
                for id in &outcome.interrupted {
                    println!("  {}", shown(id));
                }
            }
        }
        Answer::Reloaded(r) => {
            println!(
                "OK: reloaded {}: {} tools in {} components",
                r.origin, r.tools, r.components
            );
            if !r.held.is_empty() {
                println!(
                    "held for review (`airlock ctl catalog diff`): {}",
                    r.held
                        .iter()
                        .map(|t| shown(t))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        Answer::Catalog { held_tools, .. } => print_held(held_tools),
        Answer::CatalogApproved { approved, .. } => {
            println!("OK: approved {}; it serves again", shown(approved))
        }
        Answer::Detections { detections } => print_table(
            "no content-safety detections since the start",
            &[
                ("TOOL", 24),
                ("RULE", 28),
                ("ACTION", 12),
                ("COUNT", -8),
                ("LAST", -12),
            ],
            detections.iter().map(|d| {
                vec![
                    shown(&d.tool),
                    shown(&d.rule),
                    d.action.clone(),
                    d.count.to_string(),
                    format!("{}s ago", d.last_ms_ago / 1000),
                ]
            }),
        ),
        Answer::Approvals { approvals } => {
            if approvals.is_empty() {
                println!("nothing waiting for approval");
                return;
            }
            let mut out = std::io::stdout().lock();
            for a in approvals {
                if print_pending(&mut out, a).is_err() {
                    return;
                }
            }
        }
        Answer::Fleet {
            replicas,
            not_answering,
        } => {
            let one = match request {
                Request::Calls { .. } => Request::Calls { fleet: false },
                _ => Request::Status { fleet: false },
            };
            for r in replicas {
                println!("== replica {}", shown(&r.replica));
                print(&one, &r.answer);
            }
            for r in not_answering {
                println!(
                    "== replica {}\nNOT ANSWERING (live in the store, no answer in time)",
                    shown(r)
                );
            }
        }
        Answer::Answered { answered, approve } => println!(
            "OK: {} {} of {} by {}",
            if *approve { "approved" } else { "denied" },
            answered.asking,
            shown(&answered.tool),
            shown(&answered.principal)
        ),
    }
}

/// `ctl catalog diff`: each held tool, why, and each pinned field that changed, as the lock
/// approved it and as it is now (escaped: a description is the component's text).
fn print_held(held: &[admin::HeldView]) {
    if held.is_empty() {
        println!("no tools held for review");
        return;
    }
    for h in held {
        println!(
            "== tool {} (component {}, sha256 {})",
            shown(&h.tool),
            shown(&h.current.component),
            shown(h.current.component_sha256.get(..16).unwrap_or("-"))
        );
        println!("held: {}", shown(&h.why));
        println!(
            "metadata sha256 {}",
            shown(h.current.metadata_sha256.get(..16).unwrap_or("-"))
        );
        print_metadata_changes(h.locked.as_ref().map(|l| &l.metadata), &h.current.metadata);
    }
    println!("approve one with `airlock ctl catalog approve TOOL --sha256 FIRST-16-DIGITS`");
}

/// Each pinned field of a tool's metadata that differs between `approved` (none: all of
/// them) and `now`, as approved and as it is now (escaped: it is the component's text).
pub(crate) fn print_metadata_changes(
    approved: Option<&serde_json::Value>,
    now: &serde_json::Value,
) {
    let text = |v: Option<&serde_json::Value>| match v {
        None => "(none)".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
    };
    let fields = match approved {
        Some(a) => crate::config::lock::changed_fields(a, now),
        None => now
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
    };
    for f in fields {
        println!("-- {f}");
        for line in text(approved.and_then(|a| a.get(&f))).lines() {
            println!("  approved | {}", shown(line));
        }
        for line in text(now.get(&f)).lines() {
            println!("  now      | {}", shown(line));
        }
    }
}

/// `ctl catalog approve TOOL`: write the tool as it is now into the server's lock file, then
/// have the server reload, check and record it.
async fn approve_tool(target: &Target, tool: &str, sha256: &str, json: bool) -> Result<()> {
    use crate::config::lock;
    let servers = addressed(target, Reach::One)?;
    let [server] = servers.as_slice() else {
        bail!("choose one server with --server ID");
    };
    let (held, lock_file) = match admin::request(&server.socket, &Request::Catalog).await? {
        Answer::Catalog {
            held_tools,
            lock_file,
        } => (held_tools, lock_file),
        other => bail!("unexpected answer: {other:?}"),
    };
    let Some(h) = held.into_iter().find(|h| h.tool == tool) else {
        bail!("tool {} is not held for review", shown(tool));
    };
    let Some(lock_file) = lock_file else {
        bail!("the server runs the embedded default configuration: there is no lock to update");
    };
    let now = &h.current.metadata_sha256;
    if sha256.len() < 8 || !now.starts_with(&sha256.to_ascii_lowercase()) {
        bail!(
            "tool {} describes itself as metadata sha256 {} now, not as the {} you give: look at \
             `airlock ctl catalog diff` again (what you reviewed is what is approved)",
            shown(tool),
            &now[..16.min(now.len())],
            shown(sha256)
        );
    }
    let path = std::path::PathBuf::from(&lock_file);
    let metadata_sha256 = h.current.metadata_sha256.clone();
    let previous = h.locked.clone();
    let previous_metadata_sha256 = h.locked.map(|l| l.metadata_sha256);
    let entry = h.current;
    lock::edit(&path, |l| {
        l.pinned.insert(tool.to_owned(), entry);
    })
    .map_err(anyhow::Error::msg)?;
    let answer = match admin::request(
        &server.socket,
        &Request::CatalogApproved {
            tool: tool.to_owned(),
            metadata_sha256,
            previous_metadata_sha256,
        },
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            // Only this approval is undone: whatever else changed in the lock meanwhile stays.
            let restored = lock::edit(&path, |l| match previous {
                Some(p) => {
                    l.pinned.insert(tool.to_owned(), p);
                }
                None => {
                    l.pinned.remove(tool);
                }
            });
            match restored {
                Ok(()) => bail!(
                    "{e:#}; the approval was taken out of {} again",
                    shown(&lock_file)
                ),
                Err(r) => bail!(
                    "{e:#}; and the approval could not be taken out of {} again: {r}",
                    shown(&lock_file)
                ),
            }
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{} updated", shown(&lock_file));
        print(&Request::Catalog, &answer);
    }
    Ok(())
}

/// Print `rows` under `columns` (a header and a width each; a negative width aligns right),
/// or `empty` when there are none.
fn print_table(
    empty: &str,
    columns: &[(&str, isize)],
    rows: impl IntoIterator<Item = Vec<String>>,
) {
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_none() {
        println!("{empty}");
        return;
    }
    let line = |cells: Vec<String>| {
        columns
            .iter()
            .zip(cells)
            .map(|(&(_, w), c)| {
                let width = w.unsigned_abs();
                if w < 0 {
                    format!("{c:>width$}")
                } else {
                    format!("{c:<width$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!(
        "{}",
        line(columns.iter().map(|(h, _)| (*h).to_owned()).collect())
    );
    for r in rows {
        println!("{}", line(r));
    }
}

/// Text from callers (principal names come from tokens) with control and hidden characters (bidi, zero-width) escaped, so
/// that nothing printed can drive the operator's terminal.
pub(crate) fn shown(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() || crate::gate::safety::is_hidden(c) {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn print_pending(out: &mut impl std::io::Write, a: &PendingView) -> std::io::Result<()> {
    writeln!(
        out,
        "{}  {} of {} by {}  (call {}, waiting {} s, {} s left{})",
        shown(&a.id),
        a.asking,
        shown(&a.tool),
        shown(&a.principal),
        shown(&a.call_id),
        a.age_ms / 1000,
        a.expires_in_ms / 1000,
        if a.four_eyes { ", four-eyes" } else { "" }
    )?;
    if let Some(replica) = &a.replica {
        writeln!(out, "    waiting on replica {}", shown(replica))?;
    }
    for line in a.message.lines() {
        writeln!(out, "    {}", shown(line))?;
    }
    Ok(())
}

/// How often `approvals watch` asks the server what is waiting.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// `ctl approvals watch`: print what waits, then what starts and stops waiting, until the
/// server goes away (an error) or the operator interrupts.
async fn watch_approvals(target: &Target, json: bool) -> Result<()> {
    use std::io::Write as _;
    // A reader that goes away (`| head`) ends the watch with an error, not a panic.
    let mut out = std::io::stdout();
    let mut shown_ids = std::collections::HashSet::new();
    // Servers that did not answer, said once each on stderr.
    let mut silent = std::collections::HashSet::new();
    loop {
        // The servers are listed again each round: one started since is watched too. The
        // watch ends when none is left.
        let servers = addressed(target, Reach::Every)?;
        let mut approvals = Vec::new();
        let mut answered = false;
        for (server, answer) in servers
            .iter()
            .zip(ask_all(&servers, &Request::Approvals).await)
        {
            match answer {
                Ok(Answer::Approvals { approvals: a }) => {
                    answered = true;
                    silent.remove(&server.id);
                    approvals.extend(a);
                }
                Ok(_) => bail!("the server answered something other than its approvals"),
                Err(e) if servers.len() == 1 => return Err(e),
                Err(e) => {
                    if silent.insert(server.id.clone()) {
                        eprintln!("server {}: {e:#}", server.id);
                    }
                }
            }
        }
        if !answered {
            bail!("no server answers");
        }
        for a in &approvals {
            if !shown_ids.insert(a.id.clone()) {
                continue;
            }
            if json {
                let mut line = serde_json::to_value(a)?;
                line["event"] = "waiting".into();
                let text = line.to_string();
                writeln!(out, "{}", crate::core::text::escape_json_controls(&text))?;
            } else {
                print_pending(&mut out, a)?;
            }
        }
        let gone: Vec<String> = shown_ids
            .iter()
            .filter(|id| !approvals.iter().any(|a| &a.id == *id))
            .cloned()
            .collect();
        for id in gone {
            shown_ids.remove(&id);
            if json {
                writeln!(out, "{}", serde_json::json!({"event": "gone", "id": id}))?;
            } else {
                writeln!(
                    out,
                    "{}  no longer waiting (answered, expired or abandoned)",
                    shown(&id)
                )?;
            }
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// A call's age as a person reads it: `850ms`, `12.4s`, `3m05s`, `2h10m`.
fn age(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

fn describe(change: &Change) -> String {
    let scope = |s: &KillScope| match s {
        KillScope::All => "all tools".to_owned(),
        KillScope::Tool(t) => format!("tool {t}"),
        KillScope::Principal(p) => format!("principal {p}"),
        KillScope::Resources(c) => format!("resources of {c}"),
        KillScope::Prompts(c) => format!("prompts of {c}"),
    };
    match change {
        Change::Kill { scope: s, .. } => format!("{} disabled", scope(s)),
        Change::Revive { scope: s } => format!("{} enabled", scope(s)),
        Change::Revoke { tool, grant, .. } => format!("{grant} revoked from {tool}"),
        Change::Restore { tool, grant } => format!("{grant} restored to {tool}"),
    }
}
