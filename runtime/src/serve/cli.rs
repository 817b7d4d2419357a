//! The `airlock` command line: `serve`, `tools`, `check`, `audit`.

use crate::config::confine::Plan;
use crate::config::grants::SecretUse;
use crate::config::policy::{Dirs, Policy};
use crate::control::admin;
use crate::control::live::{Live, Source};
use crate::gate::audit::{self, AuditLog};
use crate::gate::overrides::OverrideStore;
use crate::pipeline::call::Airlock;
use crate::pipeline::operator_state::OperatorState;
use crate::serve::confine;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "A sandboxed tool-execution runtime for MCP"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct ConfigArgs {
    /// Configuration file (default: $AIRLOCK_CONFIG, else the embedded default serving the
    /// bundled example tools).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// State directory (compile cache, audit key); overrides `[server] state_dir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Audit log directory; overrides `[audit] dir`.
    #[arg(long)]
    audit_dir: Option<PathBuf>,
    /// Compiled-component cache; overrides `[server] cache_dir`.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP on stdio or Streamable HTTP.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Speak MCP on stdin/stdout.
        #[arg(long, conflicts_with = "http", required_unless_present = "http")]
        stdio: bool,
        /// Serve Streamable HTTP at http://ADDR/mcp, e.g. 127.0.0.1:8787 or localhost:8787
        /// (other addresses need authentication).
        #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
        http: Option<SocketAddr>,
        /// Discard the operator overrides in the state directory (kills, revocations) and start
        /// clean. Needed when the state file is unreadable: airlock will not guess.
        #[arg(long)]
        reset_state: bool,
    },
    /// Operate running servers through their admin sockets.
    Ctl {
        /// One server's admin socket (default: found in the state directory's `servers`).
        #[arg(long, global = true, conflicts_with_all = ["server", "all_servers"])]
        socket: Option<PathBuf>,
        /// The server to act on, by the id `ctl ls` shows (needed when several serve with
        /// the state directory, except for kill, revive, revoke, restore and answers).
        #[arg(long, global = true, value_name = "ID", conflicts_with = "all_servers")]
        server: Option<String>,
        /// Act on every server on the state directory.
        #[arg(long, global = true)]
        all_servers: bool,
        /// Configuration file, to find the state directory (default: as for `serve`).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// State directory of the server.
        #[arg(long, global = true)]
        state_dir: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: crate::control::ctl::CtlCommand,
    },
    /// List the loaded components, their tools and limits.
    Tools {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Call one tool through the whole pipeline (kill switches, rate limits, validation,
    /// approval, sandbox, output checks, audit record) as the local principal, and print its
    /// result and outcome. Fails when the call does not complete.
    Call {
        #[command(flatten)]
        config: ConfigArgs,
        /// The tool to call.
        tool: String,
        /// Its arguments: a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Print the MCP result as JSON instead of its text.
        #[arg(long)]
        json: bool,
    },
    /// Write a new tool project: one tool, a configuration that serves it, a build script.
    New {
        /// The project's name (also its component's and its [[tool]] entry's).
        name: String,
        /// The language of the tool.
        #[arg(long, value_enum, default_value_t = crate::serve::new::Lang::Rust)]
        lang: crate::serve::new::Lang,
        /// Where to create the project's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Validate a configuration, compile its components and check what they declare, without serving.
    Check {
        /// Configuration file (default: as for `serve`).
        config: Option<PathBuf>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Write `airlock.lock` beside the configuration: each tool's component digest and its
    /// metadata (name, title, description, schemas, hints) as its component describes it now,
    /// the approved baseline a later change is held against. Shows what changed first.
    Lock {
        /// Configuration file (default: as for `serve`; the embedded default has no lock).
        config: Option<PathBuf>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Show what would change and exit 1 if anything would, without writing.
        #[arg(long)]
        check: bool,
        /// Write even though tools already in the lock changed (their changes are shown
        /// first): without it such a lock is not written.
        #[arg(long)]
        accept_changes: bool,
        /// Ask the registries again which digest each oci:// tag names (a tag is otherwise
        /// resolved once, and its digest kept in the lock).
        #[arg(long)]
        update_tags: bool,
    },
    /// Make a key pair for signing components: PREFIX.key (private, PKCS#8 PEM, mode 0600)
    /// and PREFIX.pub (what `[trust.keys]` names; cosign verifies with it too).
    Keygen {
        /// Path prefix of the two files.
        prefix: PathBuf,
    },
    /// Sign a component with a private key: a file (writes FILE.sig, what `cosign sign-blob`
    /// writes) or an artifact in a registry (pushes a cosign signature beside it).
    Sign {
        /// The private key (`airlock keygen`).
        #[arg(long)]
        key: PathBuf,
        /// A component file, or oci://REGISTRY/REPOSITORY:TAG (or @sha256:…).
        target: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push a component file to a registry in the CNCF Wasm OCI layout; prints its digest.
    Publish {
        /// The component file.
        file: PathBuf,
        /// oci://REGISTRY/REPOSITORY:TAG
        target: String,
        /// Sign it too, with this private key.
        #[arg(long)]
        sign: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Fetch a component as serve would (a file, oci://… or https://…), and report its digest
    /// and which key signed it; exits 1 when no given key verifies its signature.
    VerifyComponent {
        source: String,
        /// A public key allowed to sign it (PEM); repeat for more.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// The sha256 it must have (required for https:// sources).
        #[arg(long)]
        sha256: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// What confinement this machine can enforce for a configuration, and what each tool
    /// reaches; exits 1 when required confinement could not hold.
    Doctor {
        #[command(flatten)]
        config: ConfigArgs,
        /// Check as for `serve --http ADDR` (the listen port, and confinement required).
        #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
        http: Option<SocketAddr>,
        /// Confine this process as serve would, then try to read a file, connect to a port and
        /// start a process outside what is allowed, and report what the kernel did.
        #[arg(long)]
        probe: bool,
    },
    /// The audit log: verify it, print the checkpoint key, follow it.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain and checkpoint signatures of FILEs (default: the configured log),
    /// of every chain of audit DIRectories (a fleet's replicas' logs, say), or of an evidence
    /// bundle (`audit export`) with its signature; prints counts and OK, or the first broken,
    /// missing or reordered record, and fails.
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
        /// A checkpoint public key, hex (default for files: the state directory's key).
        /// Audit directories need theirs given: each must be signed by one of them.
        #[arg(long)]
        key: Vec<String>,
        /// Log files (oldest first, one chain), or audit directories.
        files: Vec<PathBuf>,
    },
    /// Print the records of several audit directories (the replicas of a fleet, each its own
    /// chains) as one stream ordered by time; each record names its replica. Filters as for
    /// `audit search`.
    Merge {
        #[command(flatten)]
        filter: RecordFilterArgs,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<usize>,
        /// The audit directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Print the public key that verifies checkpoints (created on first use).
    Key {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the last records of the log and follow new ones (those the filters select).
    Tail {
        #[command(flatten)]
        config: ConfigArgs,
        /// Records to print before following.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Print and exit instead of following.
        #[arg(long)]
        no_follow: bool,
        #[command(flatten)]
        filter: RecordFilterArgs,
    },
    /// Write a signed evidence bundle: the records written between --since and --until (and
    /// on to the checkpoint that signs them), the configuration's digest and the overrides in
    /// force. `audit verify BUNDLE` checks it.
    Export {
        #[command(flatten)]
        config: ConfigArgs,
        /// From this time (RFC 3339) or this long ago (`2h`).
        #[arg(long)]
        since: String,
        /// Up to this time, or this long ago (default: now).
        #[arg(long)]
        until: Option<String>,
        /// The bundle to write (a new file).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Print the records of the whole log (sealed files and the current one, oldest first), or
    /// of FILEs, that the filters select.
    Search {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        filter: RecordFilterArgs,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<usize>,
        /// Log files, oldest first (default: the configured log).
        files: Vec<PathBuf>,
    },
}

/// Which records `audit tail` and `audit search` print, and how.
#[derive(Args)]
struct RecordFilterArgs {
    /// Only the records of this tool.
    #[arg(long)]
    tool: Option<String>,
    /// Only the records of this principal.
    #[arg(long)]
    principal: Option<String>,
    /// Only the records with this outcome (`completed`, `blocked_by_policy`, …).
    #[arg(long)]
    outcome: Option<String>,
    /// Only the records of this call: its own and its nested calls'.
    #[arg(long)]
    call: Option<String>,
    /// Only the records of this request: the correlation id (the client's W3C trace id, or
    /// the top-level call's id).
    #[arg(long)]
    correlation: Option<String>,
    /// From this time (RFC 3339, `2026-12-01T09:30:00Z`) or this long ago (`15m`, `2h`, `1d`).
    #[arg(long)]
    since: Option<String>,
    /// Up to this time, or this long ago.
    #[arg(long)]
    until: Option<String>,
    /// The records as they are, one JSON object per line (the default unless stdout is a
    /// terminal).
    #[arg(long, conflicts_with = "human")]
    json: bool,
    /// One readable line per record (the default on a terminal).
    #[arg(long)]
    human: bool,
}

impl RecordFilterArgs {
    /// The filter, and whether to print for people.
    fn resolve(self) -> Result<(crate::gate::audit_view::RecordFilter, bool)> {
        use crate::gate::audit_view::parse_time;
        let time = |t: Option<String>, flag: &str| {
            t.map(|t| parse_time(&t).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
                .transpose()
        };
        let human =
            self.human || (!self.json && std::io::IsTerminal::is_terminal(&std::io::stdout()));
        Ok((
            crate::gate::audit_view::RecordFilter {
                tool: self.tool,
                principal: self.principal,
                outcome: self.outcome,
                call: self.call,
                correlation: self.correlation,
                since: time(self.since, "since")?,
                until: time(self.until, "until")?,
            },
            human,
        ))
    }
}

/// Entry point of the `airlock` binary.
/// Started with stdin, stdout or stderr closed, the process would hand that number to the
/// next file it opens (the audit log, a client's socket) and then write log lines or MCP
/// messages into it. Each closed one is opened on `/dev/null` first, as daemons do.
fn hold_standard_descriptors() {
    for fd in 0..=2 {
        // SAFETY: fcntl(F_GETFD) only asks whether `fd` is open; before any thread exists.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
        if closed {
            // open() returns the lowest free number, which is `fd`; it stays open for good.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                std::mem::forget(null);
            }
        }
    }
}

pub fn main() -> ExitCode {
    hold_standard_descriptors();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // A command whose output is piped into `head` ends quietly when the reader goes, as other
    // command-line tools do, instead of panicking on the failed write. `serve` keeps SIGPIPE
    // ignored: a client that goes away is an error it handles, not its end.
    if !matches!(cli.command, Command::Serve { .. }) {
        // SAFETY: before any thread is started; SIG_DFL is a valid disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Command::Doctor {
        config,
        http,
        probe,
    } = &cli.command
    {
        // Before any thread, as for serve: the probe confines this process.
        let source = config.source();
        return match source
            .load()
            .and_then(|p| crate::serve::doctor::run(&p, source.config.as_deref(), *http, *probe))
        {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => fail(&e),
        };
    }
    // `serve` confines itself here, before any thread exists: landlock does not reach threads
    // started earlier, and the runtime and wasmtime start threads.
    let confined = match &cli.command {
        Command::Serve { config, http, .. } => match confine_for_serving(config, *http) {
            Ok(c) => Some(c),
            Err(e) => return fail(&e),
        },
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(c) = &confined {
        builder.worker_threads(c.workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    // Guest code runs on threads of its own, twice as many as cores: see `start_guest_pool`.
    if let Some(c) = &confined
        && let Err(e) = crate::sandbox::store::start_guest_pool(2 * c.workers)
    {
        return fail(&anyhow::anyhow!("cannot start the guest threads: {e}"));
    }
    // `ctl --json` answers in JSON whatever happens: a script reads one shape.
    let json_errors = matches!(&cli.command, Command::Ctl { json: true, .. });
    match runtime.block_on(run(cli.command, confined)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json_errors => {
            println!(
                "{}",
                serde_json::json!({"ok": false, "error": format!("{e:#}")})
            );
            ExitCode::FAILURE
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "airlock: error: {e:#}");
    }
    ExitCode::FAILURE
}

fn init_tracing(format: LogFormat) {
    crate::serve::log::init(format == LogFormat::Json);
}

impl ConfigArgs {
    fn source(&self) -> Source {
        source(self.config.as_deref(), self.state_dir.clone())
            .with_dirs(self.audit_dir.clone(), self.cache_dir.clone())
    }
}

/// The configuration named by `config`, else $AIRLOCK_CONFIG, else the embedded default.
fn source(config: Option<&Path>, state_dir: Option<PathBuf>) -> Source {
    Source {
        config: config_path(config),
        dirs: Dirs {
            state_dir,
            ..Dirs::default()
        },
    }
}

/// Load the catalog for a command that does not serve: no audit log, no operator state.
async fn load(policy: Policy) -> Result<Airlock> {
    warn_unreachable(&policy);
    Ok(Airlock::load(policy, AuditLog::off(), OperatorState::in_memory()).await?)
}

fn warn_unreachable(policy: &Policy) {
    tracing::info!(config = %policy.origin, components = policy.components.len(), "loading");
    for name in policy.unreachable_components() {
        tracing::warn!(
            component = name,
            "[[tool]] \"{name}\" names no roles: no HTTP caller can list or call its tools, only the local (stdio) principal"
        );
    }
    for warning in policy.grants_beside_audit_log() {
        tracing::warn!("{warning}");
    }
}

/// Load everything a serving process needs: the operator state (refusing to start on a bad
/// state file), the audit log, the catalog; then the admin socket, the reload triggers (file
/// change, SIGHUP) and their tasks.
/// A serving process's configuration, loaded, and the confinement it put itself under.
struct Confined {
    policy: Policy,
    /// The plan in force, when landlock holds in part or in full (a reload may not need more).
    plan: Option<Plan>,
    /// The admin socket, bound before confinement (no unix socket can be made after it).
    admin: admin::Bound,
    /// CPUs this process may use, read before landlock hides /proc/self/cgroup from the runtime.
    workers: usize,
}

/// Load the configuration, create the directories it names, and confine the process by it.
fn confine_for_serving(config: &ConfigArgs, http: Option<SocketAddr>) -> Result<Confined> {
    let source = config.source();
    let mut policy = source.load()?;
    crate::control::live::record_tags(&mut policy);
    confine::prepare_dirs(&policy)?;
    let admin = admin::bind(&policy.server.state_dir)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let plan = Plan::for_policy(&policy, source.config.as_deref(), http);
    if let Some(dir) = plan.broad_config_dir() {
        tracing::warn!(
            "the configuration is in {}, so all of it is readable by this process; keep \
             airlock.toml in a directory of its own",
            dir.display()
        );
    }
    confine::warm_name_resolution();
    let report = confine::apply_for(
        &policy,
        &plan,
        crate::config::confine::mode_for(&policy, http),
        &admin.id,
    )?;
    let plan = matches!(
        report.landlock,
        confine::Layer::Enforced(_) | confine::Layer::Partial(_)
    )
    .then_some(plan);
    Ok(Confined {
        policy,
        plan,
        admin,
        workers,
    })
}

async fn start_serving(
    config: &ConfigArgs,
    reset_state: bool,
    listen: Option<SocketAddr>,
    confined: Confined,
) -> Result<(Arc<Live>, PathBuf)> {
    let source = config.source();
    let Confined {
        policy,
        plan,
        admin: bound,
        ..
    } = confined;
    warn_unreachable(&policy);
    if reset_state {
        refuse_reset_beside(&policy.server.state_dir, &bound.id)?;
    }
    // Named before the audit log opens: every record carries it.
    let replica = replica_id(&bound.path);
    if policy.fleet.is_some() {
        crate::core::ids::set_replica(&replica);
    }
    let airlock = load_with_state(policy, reset_state).await?;
    let identity = admin::Identity {
        id: bound.id.clone(),
        serving: listen.map_or_else(|| "stdio".to_owned(), |a| format!("http {a}")),
        audit_chain: airlock.audit().chain_dir().map(Path::to_path_buf),
    };
    let socket = bound.path.clone();
    let live = Live::new(airlock, source, listen, plan);
    // In a fleet the store is where the overrides change (joined before the admin socket
    // answers, so that no change goes to the file alone); otherwise the shared file.
    if !live.join_fleet(replica)? {
        tokio::spawn(live.clone().watch_overrides(OVERRIDES_WATCH));
    }
    tokio::spawn(admin::serve(bound, live.clone(), identity));
    tokio::spawn(live.clone().watch_file(Duration::from_secs(1)));
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        let live = live.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                if let Err(e) = live.reload("sighup").await {
                    tracing::error!("reload refused, the running configuration stays: {e:#}");
                }
            }
        });
    }
    Ok((live, socket))
}

/// This server's id in a fleet: the machine's name, the server's id on its state directory
/// (its admin socket's name) and a random part, since machines (containers) may share a name
/// and state directories their ids.
fn replica_id(socket: &Path) -> String {
    let host = rustix::system::uname();
    let id = socket.file_stem().and_then(|s| s.to_str()).unwrap_or("0");
    format!(
        "{}-{id}-{}",
        host.nodename().to_string_lossy(),
        &crate::core::ids::random_id()[..8]
    )
}

/// How often a server looks for overrides another server on its state directory wrote: the
/// most a kill given to one takes to hold in the others (one `stat` each time).
const OVERRIDES_WATCH: Duration = Duration::from_millis(250);

/// `--reset-state` discards the overrides every server on the state directory shares: not
/// while another one runs (its kills would be lifted under it).
fn refuse_reset_beside(state_dir: &Path, me: &str) -> Result<()> {
    // By the ids held, so that a server still starting counts too.
    let others: Vec<String> = admin::claimed(state_dir)
        .with_context(|| format!("cannot list the servers on {}", state_dir.display()))?
        .into_iter()
        .filter(|id| id != me)
        .collect();
    if !others.is_empty() {
        anyhow::bail!(
            "--reset-state would discard the overrides that the other servers on {} share \
             (running: {}); stop them first",
            state_dir.display(),
            others.join(", ")
        );
    }
    Ok(())
}

/// `airlock call`: one call, as the local principal would make it over stdio, with the
/// configured audit log and operator state. It is a server on its state directory meanwhile
/// (an admin socket, an audit chain, the shared overrides watched), so an operator can approve
/// the call (or stop it) with `airlock ctl`. Like `tools` and `check`, it does
/// not confine its own process (landlock, seccomp): the component's sandbox and grants hold
/// as under `serve`, the host's second wall does not.
async fn call_one(config: &ConfigArgs, tool: &str, args: &str, json: bool) -> Result<()> {
    use crate::core::failure::CallFailure;
    use crate::core::text::escape_controls;
    use crate::pipeline::call::{CallContext, Caller};
    let arguments: rmcp::model::JsonObject = serde_json::from_str(args)
        .context("--args must be a JSON object, such as '{\"text\": \"hi\"}'")?;
    let source = config.source();
    let policy = source.load()?;
    warn_unreachable(&policy);
    confine::prepare_dirs(&policy)?;
    let bound = admin::bind(&policy.server.state_dir)?;
    let principal = policy.auth.local_principal.clone();
    let replica = replica_id(&bound.path);
    if policy.fleet.is_some() {
        crate::core::ids::set_replica(&replica);
    }
    let airlock = load_with_state(policy, false).await?;
    let identity = admin::Identity {
        id: bound.id.clone(),
        serving: format!("call {tool}"),
        audit_chain: airlock.audit().chain_dir().map(Path::to_path_buf),
    };
    let socket = bound.path.clone();
    let live = Live::new(airlock, source, None, None);
    // A kill given to another server on the state directory (or replica) holds for this call.
    if live.join_fleet(replica)? {
        live.fleet_current(Duration::from_secs(10)).await;
    } else {
        tokio::spawn(live.clone().watch_overrides(OVERRIDES_WATCH));
    }
    tokio::spawn(admin::serve(bound, live.clone(), identity));
    let airlock = live.current();
    let caller = Caller::new(principal.clone(), None);
    let (events, mut received) = tokio::sync::mpsc::channel(64);
    let printer = tokio::spawn(async move {
        use crate::core::text::escape_controls;
        use crate::sandbox::store::GuestEvent;
        use airlock_host_api::LogLevel;
        while let Some(event) = received.recv().await {
            match event {
                GuestEvent::Log { level, message } => {
                    let level = match level {
                        LogLevel::Debug => "debug",
                        LogLevel::Info => "info",
                        LogLevel::Warn => "warn",
                        LogLevel::Error => "error",
                    };
                    eprintln!("[{level}] {}", escape_controls(&message));
                }
                GuestEvent::Progress {
                    progress,
                    total,
                    message,
                } => eprintln!(
                    "[progress] {progress}{} {}",
                    total.map(|t| format!("/{t}")).unwrap_or_default(),
                    escape_controls(&message.unwrap_or_default())
                ),
            }
        }
    });
    let ctx = CallContext {
        events: Some(events),
        ..CallContext::unattended(&principal)
    };
    let result = airlock.call(tool, Some(&arguments), &caller, ctx).await;
    let _ = printer.await;
    let _ = std::fs::remove_file(&socket);
    if let Err(e) = airlock.audit().seal().await {
        tracing::error!("cannot seal the audit log: {e}");
    }
    match result {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                // What a tool wrote reaches a terminal: no escape sequence of its passes raw.
                for c in &r.content {
                    match c.as_text() {
                        Some(t) => {
                            let lines: Vec<_> = t.text.split('\n').map(escape_controls).collect();
                            println!("{}", lines.join("\n"));
                        }
                        None => println!("{}", serde_json::to_string(c)?),
                    }
                }
                if let Some(s) = &r.structured_content {
                    println!("structured: {s}");
                }
            }
            let failed = r.is_error == Some(true);
            eprintln!(
                "outcome: completed{} (call {})",
                if failed { ", reported as an error" } else { "" },
                caller.call_id
            );
            if failed {
                anyhow::bail!("the tool reported an error");
            }
            Ok(())
        }
        Err(f) => {
            let f: CallFailure = f;
            anyhow::bail!(
                "outcome: {} (call {}): {}",
                f.kind(),
                caller.call_id,
                escape_controls(&f.to_string())
            )
        }
    }
}

/// The host for `policy` with its state directory's operator overrides, approvals and audit
/// log: what `serve` and `call` run under.
async fn load_with_state(policy: Policy, reset_state: bool) -> Result<Airlock> {
    let state_dir = policy.server.state_dir.clone();
    let overrides = OverrideStore::open(&state_dir, reset_state)?;
    let audit = AuditLog::open(&policy.audit, &state_dir)?;
    let approvals =
        crate::gate::approval::Approvals::open(&state_dir).map_err(anyhow::Error::msg)?;
    Ok(Airlock::load(policy, audit, OperatorState::new(overrides, approvals)).await?)
}

/// The configuration file: `--config`, else $AIRLOCK_CONFIG, else none (the embedded default).
fn config_path(config: Option<&Path>) -> Option<PathBuf> {
    config.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("AIRLOCK_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

async fn run(command: Command, confined: Option<Confined>) -> Result<()> {
    match command {
        Command::Serve {
            config,
            stdio,
            http,
            reset_state,
        } => {
            let confined = confined.expect("serve confines itself before the runtime starts");
            // What can fail to start comes before the audit log opens (a start that stops
            // after it would leave the log unsealed): the metrics address, the exporter.
            let metrics = match confined.policy.metrics.listen {
                Some(addr) => Some(crate::serve::metrics::bind(addr).await?),
                None => None,
            };
            if let Some(t) = &confined.policy.telemetry {
                crate::gate::telemetry::start(t, tokio::runtime::Handle::current())?;
            }
            let (live, socket) = start_serving(&config, reset_state, http, confined).await?;
            tracing::info!(tools = live.current().tools().len(), "loaded");
            let audit = live.current().audit().clone();
            let shutdown = CancellationToken::new();
            if let Some(listener) = metrics {
                let (live, shutdown) = (live.clone(), shutdown.clone());
                tokio::spawn(async move {
                    if let Err(e) = crate::serve::metrics::serve(listener, live, shutdown).await {
                        tracing::error!("{e:#}");
                    }
                });
            }
            let served = if stdio {
                let served = tokio::select! {
                    r = crate::serve::mcp::serve_stdio(live.clone()) => r,
                    _ = shutdown_signal() => {
                        tracing::info!("shutting down");
                        Ok(())
                    }
                };
                shutdown.cancel();
                served
            } else {
                let addr = http.expect("clap requires --stdio or --http");
                let trigger = shutdown.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    tracing::info!("shutting down");
                    trigger.cancel();
                });
                crate::serve::mcp::serve_http(live.clone(), addr, shutdown).await
            };
            let _ = std::fs::remove_file(&socket);
            // A clean stop leaves the audit log sealed by a signed checkpoint.
            if let Err(e) = audit.seal().await {
                tracing::error!("cannot seal the audit log: {e}");
            }
            // The last spans go out (waiting on a thread of its own: the export runs on this
            // runtime).
            let _ = tokio::task::spawn_blocking(|| {
                crate::gate::telemetry::shutdown(Duration::from_secs(5))
            })
            .await;
            served
        }
        Command::Tools { config, json } => {
            let airlock = load(config.source().load()?).await?;
            print_tools(&airlock, json)
        }
        Command::Call {
            config,
            tool,
            args,
            json,
        } => call_one(&config, &tool, &args, json).await,
        Command::New { name, lang, dir } => {
            let root = crate::serve::new::create(&dir, &name, lang)?;
            println!(
                "created {}: build it with `./build`, then try `airlock call greet --config airlock.toml --args '{{\"name\": \"ada\"}}'` there",
                root.display()
            );
            Ok(())
        }
        Command::Check { config, state_dir } => {
            let airlock = load(source(config.as_deref(), state_dir).load()?).await?;
            let c = airlock.catalog();
            println!(
                "OK: {} is valid: {} components, {} tools, {} resources, {} resource templates, {} prompts",
                c.policy.origin,
                c.components.len(),
                airlock.tools().len(),
                c.resources().len(),
                c.templates().len(),
                c.prompts().len()
            );
            Ok(())
        }
        Command::Lock {
            config,
            state_dir,
            check,
            accept_changes,
            update_tags,
        } => {
            use crate::config::lock;
            let mut source = source(config.as_deref(), state_dir);
            // Nothing is written before the end: a load that fails leaves the lock as it was.
            source.dirs.resolve_tags = update_tags;
            let airlock = load(source.load()?).await?;
            let catalog = airlock.catalog();
            let Some(path) = catalog.policy.trust.lock_file.clone() else {
                anyhow::bail!(
                    "the embedded default configuration has no lock: give a configuration file"
                );
            };
            let old = catalog.policy.trust.lock.clone().unwrap_or(lock::Lock {
                version: lock::LOCK_VERSION,
                ..Default::default()
            });
            let new = catalog.lockable().clone();
            let d = lock::diff(&old, &new);
            for t in &d.added {
                println!("+ {t}: new");
            }
            for (t, fields) in &d.changed {
                println!("~ {t}: {} changed", fields.join(", "));
                crate::control::ctl::print_metadata_changes(
                    old.pinned.get(t).map(|l| &l.metadata),
                    &new.pinned[t].metadata,
                );
            }
            for t in &d.rebuilt {
                println!("~ {t}: component rebuilt, metadata unchanged");
            }
            for t in &d.removed {
                println!("- {t}: no longer served");
            }
            for (tag, digest) in &new.sources {
                match old.sources.get(tag) {
                    Some(was) if was == digest => {}
                    Some(was) => println!("~ {tag}: {was} → {digest}"),
                    None => println!("+ {tag}: {digest}"),
                }
            }
            for tag in old.sources.keys().filter(|t| !new.sources.contains_key(*t)) {
                println!("- {tag}: no longer used");
            }
            if d.is_empty() && old.sources == new.sources {
                println!(
                    "{} is up to date ({} entries)",
                    path.display(),
                    new.pinned.len()
                );
                return Ok(());
            }
            if check {
                anyhow::bail!("{} is not up to date (see above)", path.display());
            }
            if !d.changed.is_empty() && !accept_changes {
                if update_tags {
                    anyhow::bail!(
                        "with the tags as they are now, tools the lock approved describe \
                         themselves differently (above): review the changes, then run `airlock \
                         lock --update-tags --accept-changes`"
                    );
                }
                anyhow::bail!(
                    "tools the lock approved describe themselves differently now (above): \
                     review the changes, then write the lock with --accept-changes (or approve \
                     them one at a time with `airlock ctl catalog approve`)"
                );
            }
            // Only over the lock this was computed from: an approval or a recorded tag
            // since then is not overwritten unseen.
            let read = catalog.policy.trust.lock.clone();
            lock::edit(&path, |l| {
                let untouched = match &read {
                    Some(r) => r == l,
                    None => l.pinned.is_empty() && l.sources.is_empty(),
                };
                if !untouched {
                    return Err(format!(
                        "{} changed while this ran; run it again",
                        path.display()
                    ));
                }
                *l = new.clone();
                Ok(())
            })
            .map_err(anyhow::Error::msg)?
            .map_err(anyhow::Error::msg)?;
            println!("wrote {} ({} entries)", path.display(), new.pinned.len());
            Ok(())
        }
        Command::Audit { command } => run_audit(command).await,
        Command::Doctor { .. } => unreachable!("doctor runs before the runtime starts"),
        Command::Keygen { prefix } => keygen(&prefix),
        Command::Sign {
            key,
            target,
            registry,
        } => sign(&key, &target, &registry),
        Command::Publish {
            file,
            target,
            sign: key,
            registry,
        } => publish(&file, &target, key.as_deref(), &registry),
        Command::VerifyComponent {
            source,
            keys,
            sha256,
            registry,
        } => verify_component(&source, &keys, sha256.as_deref(), &registry),
        Command::Ctl {
            socket,
            server,
            all_servers,
            config,
            state_dir,
            json,
            command,
        } => {
            use crate::control::ctl::{Chosen, Target};
            let target = match socket {
                Some(s) => Target::Socket(s),
                None => Target::StateDir {
                    dir: match state_dir {
                        Some(d) => d,
                        None => source(config.as_deref(), None).load()?.server.state_dir,
                    },
                    chosen: match (server, all_servers) {
                        (Some(id), _) => Chosen::One(id),
                        (None, true) => Chosen::All,
                        (None, false) => Chosen::Default,
                    },
                },
            };
            crate::control::ctl::run(target, command, json).await
        }
    }
}

/// `--http ADDR`: `IP:PORT`, `[IPv6]:PORT`, or `localhost:PORT` (the IPv4 loopback address,
/// which the default `allowed_hosts` names along with `localhost`).
fn listen_addr(text: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("\"{port}\" is not a port (0 to 65535)"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Err(format!(
        "\"{text}\" is not IP:PORT, [IPv6]:PORT or localhost:PORT (for example 127.0.0.1:8787)"
    ))
}

/// How the commands for authors reach a registry.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Speak plain HTTP to the registry (a registry on this machine).
    #[arg(long)]
    plain_http: bool,
    /// The registry user; the password or token is read from AIRLOCK_REGISTRY_PASSWORD
    /// (never from the command line, where other users could read it).
    #[arg(long)]
    username: Option<String>,
}

impl RegistryArgs {
    fn registries(&self, target: &str) -> Result<crate::supply::oci::Registries> {
        let mut r = crate::supply::oci::Registries {
            timeout: crate::config::lock::DEFAULT_FETCH_TIMEOUT,
            ..Default::default()
        };
        let Some(spec) = target.strip_prefix("oci://") else {
            return Ok(r);
        };
        let host = crate::supply::oci::parse(spec)
            .map_err(anyhow::Error::msg)?
            .resolve_registry()
            .to_owned();
        if self.plain_http {
            r.plain_http.push(host.clone());
        }
        if let Some(user) = &self.username {
            if self.plain_http && !crate::supply::oci::is_loopback(&host) {
                anyhow::bail!("--username with --plain-http would send the password in the clear");
            }
            let password = std::env::var("AIRLOCK_REGISTRY_PASSWORD").map_err(|_| {
                anyhow::anyhow!("--username needs the password in AIRLOCK_REGISTRY_PASSWORD")
            })?;
            r.credentials.insert(
                host,
                (
                    user.clone(),
                    crate::core::redact::SecretValue::new(password),
                ),
            );
        }
        Ok(r)
    }
}

fn keygen(prefix: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = crate::supply::signature::SignerKey::generate().map_err(anyhow::Error::msg)?;
    let private = append_extension(prefix, "key");
    let public = append_extension(prefix, "pub");
    for path in [&private, &public] {
        if std::fs::symlink_metadata(path).is_ok() {
            anyhow::bail!(
                "{} exists: a key pair is never written over another (losing a key loses every \
                 signature made with it)",
                path.display()
            );
        }
    }
    // Never over an existing key: losing one is losing every signature made with it.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .and_then(|mut f| f.write_all(key.private_pem().map_err(std::io::Error::other)?.as_bytes()))
        .with_context(|| format!("cannot write {}", private.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&public)
        .and_then(|mut f| f.write_all(key.public_pem().map_err(std::io::Error::other)?.as_bytes()))
        .with_context(|| format!("cannot write {}", public.display()))?;
    println!(
        "wrote {} (private: keep it secret) and {} (name it in [trust.keys])",
        private.display(),
        public.display()
    );
    Ok(())
}

fn append_extension(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

fn sign(key: &Path, target: &str, registry: &RegistryArgs) -> Result<()> {
    use crate::supply::{oci, signature};
    let key = signature::SignerKey::read(key).map_err(anyhow::Error::msg)?;
    let Some(spec) = target.strip_prefix("oci://") else {
        let path = Path::new(target);
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {target}"))?;
        oci::check_component(&bytes).map_err(|e| anyhow::anyhow!("{target}: {e}"))?;
        let sig_path = crate::config::policy::detached_signature_path(path);
        std::fs::write(&sig_path, key.sign(&bytes) + "\n")
            .with_context(|| format!("cannot write {}", sig_path.display()))?;
        println!(
            "signed {target} (sha256 {}): {}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
            sig_path.display()
        );
        return Ok(());
    };
    let registries = registry.registries(target)?;
    let reference = oci::parse(spec).map_err(anyhow::Error::msg)?;
    // A digest, never a tag: whoever can move a tag would choose what gets signed.
    let Some(digest) = reference.digest().map(str::to_owned) else {
        anyhow::bail!(
            "{target} names a tag: sign a digest (oci://…@sha256:…, as `airlock publish` \
             prints it), so that what is signed is the artifact you checked"
        );
    };
    // It is pulled first and checked (the manifest hashes to the digest, the layer to the
    // manifest's, a component), and its component sha256 shown.
    let cache = std::env::temp_dir().join(format!(
        "airlock-sign-{}-{}",
        std::process::id(),
        crate::core::ids::random_id()
    ));
    let pulled = oci::pull(
        &reference,
        &digest,
        &cache,
        &registries,
        None,
        crate::config::lock::DEFAULT_MAX_FETCH_SIZE,
    );
    let _ = std::fs::remove_dir_all(&cache);
    let pulled = pulled.map_err(anyhow::Error::msg)?;
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    let payload = signature::simple_signing_payload(&repository, &digest);
    oci::push_signature(
        &reference,
        &digest,
        &payload,
        &key.sign(&payload),
        &registries,
    )
    .map_err(anyhow::Error::msg)?;
    println!(
        "signed oci://{repository}@{digest} (component sha256 {}; tag {})",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&pulled.bytes)),
        signature::signature_tag(&digest)
    );
    Ok(())
}

fn publish(
    file: &Path,
    target: &str,
    sign_with: Option<&Path>,
    registry: &RegistryArgs,
) -> Result<()> {
    use crate::supply::oci;
    let Some(spec) = target.strip_prefix("oci://") else {
        anyhow::bail!("{target}: publish to oci://REGISTRY/REPOSITORY:TAG");
    };
    let reference = oci::parse(spec).map_err(anyhow::Error::msg)?;
    if reference.digest().is_some() {
        anyhow::bail!("{target}: publish to a tag (the registry gives the digest)");
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let registries = registry.registries(target)?;
    let digest = oci::push(&reference, &bytes, &registries).map_err(anyhow::Error::msg)?;
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    println!("published oci://{}  digest {digest}", reference.whole());
    println!("pin it as: component = \"oci://{repository}@{digest}\"");
    if let Some(key) = sign_with {
        sign(key, &format!("oci://{repository}@{digest}"), registry)?;
    }
    Ok(())
}

fn verify_component(
    source: &str,
    keys: &[PathBuf],
    sha256: Option<&str>,
    registry: &RegistryArgs,
) -> Result<()> {
    let mut trust = crate::config::lock::TrustSettings {
        registries: registry.registries(source)?,
        max_fetch_size: crate::config::lock::DEFAULT_MAX_FETCH_SIZE,
        ..Default::default()
    };
    for path in keys {
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        trust.keys.push(
            crate::supply::signature::TrustedKey::read(&name, path).map_err(anyhow::Error::msg)?,
        );
    }
    // A cache of its own, dropped after: what is verified is what the source serves now.
    let cache = std::env::temp_dir().join(format!(
        "airlock-verify-{}-{}",
        std::process::id(),
        crate::core::ids::random_id()
    ));
    let found = crate::config::policy::verify_component(source, sha256, &cache, &trust);
    let _ = std::fs::remove_dir_all(&cache);
    let found = found.map_err(anyhow::Error::msg)?;
    println!("{}", found.source);
    println!("  sha256  {}", hex::encode(found.sha256));
    match found.signer {
        Ok(name) => {
            println!("  signer  {name}");
            Ok(())
        }
        Err(why) => anyhow::bail!(
            "{source} (sha256 {}) is not signed by a given key: {why}",
            hex::encode(found.sha256)
        ),
    }
}

/// The chains of an audit directory (each server on it writes its own), each with its files.
fn audit_chains(dir: &Path) -> Result<Vec<(u32, Vec<PathBuf>)>> {
    let read = |e: std::io::Error| {
        anyhow::anyhow!("cannot read the audit directory {}: {e}", dir.display())
    };
    audit::chains(dir)
        .map_err(read)?
        .into_iter()
        .map(|(n, chain)| Ok((n, audit::log_files(&chain).map_err(read)?)))
        .collect()
}

/// Verify one chain (`files`, oldest first) with `key`, and say so (after `label`).
fn verify_chain(files: &[PathBuf], key: &str, label: &str) -> Result<()> {
    let v =
        audit::verify(files, key).map_err(|e| anyhow::anyhow!("audit log broken: {label}{e}"))?;
    println!(
        "{label}OK: {} records, {} checkpoints, {} files, last record {}{}",
        v.records,
        v.checkpoints,
        v.files,
        v.last_seq,
        if v.stopped {
            " (sealed by a clean stop)"
        } else if v.sealed {
            " (sealed by a checkpoint)"
        } else {
            " (not sealed: the log is in use, or its writer stopped without closing it)"
        }
    );
    if v.unclean_stops > 0 {
        println!(
            "{} unclean stop(s) recorded (kind \"audit\", event \"unclean_stop\"): \
             each follows the last record its server kept",
            v.unclean_stops
        );
    }
    Ok(())
}

/// `audit verify --key K… DIR…`: every chain of each audit directory (a fleet's replicas'),
/// each with the key it names (`signer.pub`), which must be one of `keys`: a directory's own
/// file is no proof (whoever rewrote its records could have rewritten it too).
fn verify_dirs(dirs: &[PathBuf], keys: &[String]) -> Result<()> {
    let keys: Vec<String> = keys.iter().map(|k| k.trim().to_ascii_lowercase()).collect();
    if keys.is_empty() {
        let named: Vec<String> = dirs
            .iter()
            .map(|d| match audit::signer_of(d) {
                Ok(k) => format!("{}: {k}", d.display()),
                Err(e) => format!("{}: no signer.pub ({e})", d.display()),
            })
            .collect();
        anyhow::bail!(
            "give the key of each directory's server with --key (`airlock audit key` on its \
             machine prints it); the directories name these, which prove nothing by \
             themselves:\n  {}",
            named.join("\n  ")
        );
    }
    for dir in dirs {
        let signer = audit::signer_of(dir).with_context(|| {
            format!(
                "{} names no signing key (signer.pub): is it an audit directory?",
                dir.display()
            )
        })?;
        if !keys.contains(&signer.to_ascii_lowercase()) {
            anyhow::bail!(
                "audit log broken: {} is signed by {signer}, not by any --key given",
                dir.display()
            );
        }
        let chains = audit_chains(dir)?;
        anyhow::ensure!(
            chains.iter().any(|(_, files)| !files.is_empty()),
            "{} holds no audit log files",
            dir.display()
        );
        for (n, files) in &chains {
            verify_chain(files, &signer, &format!("{} chain {n}: ", dir.display()))?;
        }
    }
    Ok(())
}

async fn run_audit(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Key { config } => {
            let policy = config.source().load()?;
            println!("{}", audit::public_key(&policy.server.state_dir)?);
            Ok(())
        }
        AuditCommand::Verify { config, key, files } => {
            let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) =
                files.into_iter().partition(|p| p.is_dir());
            if !dirs.is_empty() {
                anyhow::ensure!(
                    files.is_empty(),
                    "give audit directories or log files, not both"
                );
                return verify_dirs(&dirs, &key);
            }
            anyhow::ensure!(
                key.len() <= 1,
                "log files are one chain: give one --key (several are for audit directories)"
            );
            // Without files: every chain of the configured audit directory.
            let key = key.into_iter().next();
            let (chains, key) = if files.is_empty() || key.is_none() {
                let policy = config.source().load()?;
                let chains = if files.is_empty() {
                    audit_chains(&policy.audit.dir)?
                } else {
                    vec![(1, files)]
                };
                let key = match key {
                    Some(k) => k,
                    None => audit::public_key(&policy.server.state_dir)?,
                };
                (chains, key)
            } else {
                (vec![(1, files)], key.unwrap_or_default())
            };
            anyhow::ensure!(
                chains.iter().any(|(_, files)| !files.is_empty()),
                "no audit log files to verify"
            );
            if let [(_, files)] = chains.as_slice()
                && let [bundle] = files.as_slice()
                && crate::gate::evidence::is_bundle(bundle)
            {
                let v = crate::gate::evidence::verify(bundle, &key)
                    .map_err(|e| anyhow::anyhow!("evidence bundle broken: {e}"))?;
                println!(
                    "OK: evidence bundle exported {} for {} to {}, configuration sha256 {}",
                    v.header["created"].as_str().unwrap_or("?"),
                    v.header["since"].as_str().unwrap_or("?"),
                    v.header["until"].as_str().unwrap_or("?"),
                    v.header["config"]["sha256"].as_str().unwrap_or("?"),
                );
                for (n, s) in &v.chains {
                    println!(
                        "chain {n}: records {} to {} ({} records, {} checkpoints){}",
                        s.first_seq,
                        s.last_seq,
                        s.records,
                        s.checkpoints,
                        if s.signed_head {
                            ""
                        } else {
                            "; its last records are under no checkpoint (the log was still \
                             being written): the bundle's signature alone vouches for them"
                        }
                    );
                }
                return Ok(());
            }
            let several = chains.len() > 1;
            for (n, files) in &chains {
                let label = if several {
                    format!("chain {n}: ")
                } else {
                    String::new()
                };
                verify_chain(files, &key, &label)?;
            }
            Ok(())
        }
        AuditCommand::Merge {
            filter,
            limit,
            dirs,
        } => {
            let (filter, human) = filter.resolve()?;
            let mut chains = Vec::new();
            for dir in &dirs {
                anyhow::ensure!(dir.is_dir(), "{} is not an audit directory", dir.display());
                for (_, files) in audit_chains(dir)? {
                    chains.push((chains.len() as u32 + 1, files));
                }
            }
            let found = audit::search(&chains, &filter, human, limit)?;
            eprintln!(
                "{found} records of {} chains in {} directories",
                chains.len(),
                dirs.len()
            );
            Ok(())
        }
        AuditCommand::Tail {
            config,
            lines,
            no_follow,
            filter,
        } => {
            let (filter, human) = filter.resolve()?;
            let policy = config.source().load()?;
            audit::tail(&policy.audit.dir, lines, !no_follow, &filter, human).await?;
            Ok(())
        }
        AuditCommand::Export {
            config,
            since,
            until,
            out,
        } => {
            use crate::gate::audit_view::parse_time;
            let since = parse_time(&since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
            let until = match until {
                Some(u) => parse_time(&u).map_err(|e| anyhow::anyhow!("--until: {e}"))?,
                None => std::time::SystemTime::now(),
            };
            anyhow::ensure!(since <= until, "--since is after --until");
            let policy = config.source().load()?;
            let chains = audit_chains(&policy.audit.dir)?;
            let overrides =
                match std::fs::read(policy.server.state_dir.join(crate::gate::overrides::FILE)) {
                    Ok(bytes) => serde_json::from_slice(&bytes)
                        .context("the overrides file of the state directory is not valid JSON")?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Value::Null,
                    Err(e) => return Err(anyhow::anyhow!("cannot read the overrides: {e}")),
                };
            let key = audit::existing_signing_key(&policy.server.state_dir)?;
            let chains = crate::gate::evidence::export(
                &chains,
                since,
                until,
                crate::gate::evidence::Context {
                    config_origin: &policy.origin,
                    config_sha256: &policy.sha256,
                    overrides,
                },
                &key,
                &out,
            )
            .map_err(anyhow::Error::msg)?;
            println!("wrote {}", out.display());
            for (n, s) in &chains {
                println!(
                    "chain {n}: records {} to {} ({} records, {} checkpoints{})",
                    s.first_seq,
                    s.last_seq,
                    s.records,
                    s.checkpoints,
                    if s.signed_head {
                        ", ending on a checkpoint"
                    } else {
                        ", the last ones under no checkpoint yet"
                    }
                );
            }
            Ok(())
        }
        AuditCommand::Search {
            config,
            filter,
            limit,
            files,
        } => {
            let (filter, human) = filter.resolve()?;
            // Without files: every chain of the configured audit directory, merged by time.
            let chains = if files.is_empty() {
                audit_chains(&config.source().load()?.audit.dir)?
            } else {
                vec![(1, files)]
            };
            let found = audit::search(&chains, &filter, human, limit)?;
            eprintln!(
                "{found} records selected in {} files{}",
                chains.iter().map(|(_, files)| files.len()).sum::<usize>(),
                if limit.is_some_and(|l| found >= l) {
                    " (stopped at --limit)"
                } else {
                    ""
                }
            );
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// What contract a component was loaded under, and the exports of a generic one that are not
/// served (and why).
fn contract(c: &crate::pipeline::catalog::LoadedComponent) -> (&'static str, &[String]) {
    use crate::sandbox::store::ComponentPre;
    match &c.prepared.pre {
        ComponentPre::Current(_) => ("airlock:tool@0.2.0", &[]),
        ComponentPre::V1(_) => ("airlock:tool@0.1.0", &[]),
        ComponentPre::Generic(g) => ("generic (its exported functions)", &g.exports.skipped),
    }
}

fn print_tools(airlock: &Airlock, json: bool) -> Result<()> {
    use crate::control::ctl::shown;
    let catalog = airlock.catalog();
    if json {
        let components: Vec<serde_json::Value> = catalog
            .components
            .iter()
            .map(|c| {
                let l = &c.entry.limits;
                serde_json::json!({
                    "name": c.entry.name,
                    "component": c.entry.source.to_string(),
                    "sha256": hex::encode(c.entry.digest),
                    "pinned": c.entry.pinned,
                    "tools": c.tools,
                    "tool_specs": c.tools.iter().filter_map(|t| catalog.tool(t).ok()).map(|t| serde_json::json!({
                        "name": t.tool.name,
                        "title": t.tool.title,
                        "description": t.tool.description,
                        "input_schema": t.tool.input_schema,
                        "output_schema": t.tool.output_schema,
                        "annotations": t.tool.annotations,
                    })).collect::<Vec<_>>(),
                    "resources": c.resources,
                    "resource_templates": c.templates.iter().map(|t| &t.text).collect::<Vec<_>>(),
                    "prompts": c.prompts,
                    "limits": {
                        "fuel": l.fuel,
                        "memory_bytes": l.memory.bytes(),
                        "timeout_ms": l.timeout.0.as_millis() as u64,
                        "wasm_stack_bytes": l.wasm_stack.bytes(),
                        "max_argument_bytes": l.max_argument_bytes.bytes(),
                        "max_output_bytes": l.max_output_bytes.bytes(),
                        "max_in_flight": l.max_in_flight,
                        "capture_bytes": l.capture_bytes.bytes(),
                        "egress_timeout_ms": l.egress_timeout.0.as_millis() as u64,
                        "max_request_bytes": l.max_request_bytes.bytes(),
                        "max_response_bytes": l.max_response_bytes.bytes(),
                    },
                    "grants": {
                        "fs": c.entry.grants.fs.iter().map(|g| serde_json::json!({
                            "id": g.id,
                            "host": g.host.display().to_string(),
                            "guest": g.guest,
                            "mode": g.mode.to_string(),
                        })).collect::<Vec<_>>(),
                        "net": c.entry.grants.net.iter().map(|g| serde_json::json!({
                            "id": g.id,
                            "methods": g.methods,
                            "addresses": g.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                        "tcp": c.entry.grants.tcp.iter().map(|g| serde_json::json!({
                            "id": g.id,
                            "address": g.address.to_string(),
                        })).collect::<Vec<_>>(),
                        "secrets": c.entry.grants.secrets.iter().map(|g| match &g.usage {
                            SecretUse::Header { host, header, .. } => serde_json::json!({
                                "id": g.id,
                                "name": g.name,
                                "host": host.to_string(),
                                "header": header.as_str(),
                            }),
                            SecretUse::Env => serde_json::json!({
                                "id": g.id,
                                "name": g.name,
                                "expose": "env",
                            }),
                        }).collect::<Vec<_>>(),
                    },
                    "sample": c.entry.grants.sample,
                    "holds_readable_secret": c.entry.grants.holds_readable_secret(),
                    "contract": contract(c).0,
                    "not_served": contract(c).1,
                    "settings": &*c.entry.settings,
                })
            })
            .collect();
        let out = serde_json::json!({ "config": catalog.policy.origin, "components": components });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("cannot render JSON")?
        );
        return Ok(());
    }
    println!("config: {}", catalog.policy.origin);
    for c in &catalog.components {
        let l = &c.entry.limits;
        println!();
        println!("{}  ({})", c.entry.name, c.entry.source);
        println!(
            "  sha256   {}{}",
            hex::encode(c.entry.digest),
            if c.entry.pinned {
                " (pinned)"
            } else {
                " (not pinned)"
            }
        );
        let listed = |names: &mut dyn Iterator<Item = &str>| {
            let all: Vec<&str> = names.collect();
            if all.is_empty() {
                "none".to_owned()
            } else {
                all.join(", ")
            }
        };
        let (kind, skipped) = contract(c);
        println!("  contract {kind}");
        println!(
            "  tools    {}",
            listed(&mut c.tools.iter().map(String::as_str))
        );
        for why in skipped {
            println!("    not served: {}", shown(why));
        }
        for t in c.tools.iter().filter_map(|t| catalog.tool(t).ok()) {
            // One line each: its arguments (`?` when optional) and its description's first line.
            let schema = &t.tool.input_schema;
            let required = schema.get("required").and_then(|r| r.as_array());
            let arguments: Vec<String> = schema
                .get("properties")
                .and_then(|p| p.as_object())
                .into_iter()
                .flat_map(|p| p.keys())
                .map(|k| {
                    let needed = required.is_some_and(|r| r.iter().any(|x| x == k));
                    let k = shown(k);
                    if needed { k } else { format!("{k}?") }
                })
                .collect();
            let description = t.tool.description.as_deref().unwrap_or("");
            let first = description.lines().next().unwrap_or("");
            println!(
                "    {}({})  {}",
                t.tool.name,
                arguments.join(", "),
                shown(first)
            );
        }
        if !c.resources.is_empty() || !c.templates.is_empty() || !c.prompts.is_empty() {
            println!(
                "  resources {}",
                listed(
                    &mut c
                        .resources
                        .iter()
                        .map(String::as_str)
                        .chain(c.templates.iter().map(|t| t.text.as_str()))
                )
            );
            println!(
                "  prompts  {}",
                listed(&mut c.prompts.iter().map(String::as_str))
            );
        }
        println!(
            "  limits   fuel {}, memory {}, timeout {}, wasm stack {}, arguments {}, output {}, {} in flight, capture {}",
            l.fuel,
            l.memory,
            l.timeout,
            l.wasm_stack,
            l.max_argument_bytes,
            l.max_output_bytes,
            l.max_in_flight,
            l.capture_bytes
        );
        for (name, value) in c.entry.settings.iter() {
            println!("  setting  {name} = {}", shown(value));
        }
        if c.entry.grants.is_empty() {
            println!(
                "  grants   none: no filesystem, no network, no environment, no secrets, no sampling"
            );
        }
        if c.entry.grants.sample {
            println!("  grant    sample  may ask the client's model for messages");
        }
        for g in &c.entry.grants.fs {
            println!("  grant    {}  {} ({})", g.id, g.host.display(), g.mode);
        }
        for g in &c.entry.grants.net {
            let methods = if g.methods.is_empty() {
                "any method".to_owned()
            } else {
                g.methods.join(", ")
            };
            let addresses: Vec<String> = g.addresses.iter().map(ToString::to_string).collect();
            let extra = if addresses.is_empty() {
                String::new()
            } else {
                format!(", may resolve to {}", addresses.join(", "))
            };
            println!("  grant    {}  ({methods}{extra})", g.id);
        }
        for g in &c.entry.grants.tcp {
            println!("  grant    {}  (raw TCP connections)", g.id);
        }
        for g in &c.entry.grants.secrets {
            match &g.usage {
                SecretUse::Header { host, header, .. } => println!(
                    "  grant    {}  (sent as {header} to {host}; the tool cannot read it)",
                    g.id
                ),
                SecretUse::Env => println!(
                    "  grant    {}  (environment variable {}: THE TOOL CAN READ THIS SECRET)",
                    g.id, g.name
                ),
            }
        }
        if c.entry.grants.holds_readable_secret() {
            println!("  warning  holds a readable secret");
        }
    }
    Ok(())
}
