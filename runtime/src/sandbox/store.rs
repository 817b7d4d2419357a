//! One call in a fresh store: the WASI context (nothing ambient), the resource limits, the host
//! imports, and the mapping of every way wasm can stop into a named [`CallFailure`].

use crate::config::grants::{FsMode, Grants, SecretUse};
use crate::config::policy::Limits;
use crate::core::denial::{Denial, HandleKind, SocketUse};
use crate::core::failure::CallFailure;
use crate::core::interaction::Reply;
use crate::core::principal::{Access, Principal};
use crate::core::redact::{Redactor, Shapes};
use crate::core::units::ByteSize;
use crate::sandbox::capture::{Capture, HostMeter};
use crate::sandbox::clock::Clock;
use crate::sandbox::egress::{self, DenialCell, EgressGate};
use crate::sandbox::files::CallFiles;
use crate::sandbox::generic::{self, CommandInput, GenericExports};
use crate::sandbox::live_grants::LiveGrants;
use airlock_host_api::{
    Answer as InputAnswer, CallerIdentity, ClientFeatures, CompletionRequest, ElicitAnswer,
    InputKind, InputReply, InputRequest, Listing, LogLevel, NestedFailure, Offer, SampleError,
    SampleReply, SampleRequest, ToolOutput, ToolPre,
};
use rmcp::model::CallToolResult;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{ResourceTable, Val};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Fuel charged per byte the host handles for a call through its imports (messages,
/// questions, nested-call arguments), and per import call: work the host does on a call's
/// behalf counts against the call's CPU budget as its own instructions do.
const FUEL_PER_HOST_BYTE: u64 = 4;
const FUEL_PER_HOST_CALL: u64 = 2_000;
/// Bytes of message budget a message costs beyond its text (so a flood of empty messages runs
/// out too).
const MESSAGE_OVERHEAD: u64 = 32;
/// Most elements a guest table may hold.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Something a running tool sent through the `host` interface, for the MCP layer to forward.
#[derive(Debug, Clone, PartialEq)]
pub enum GuestEvent {
    Log {
        level: LogLevel,
        message: String,
    },
    Progress {
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    },
}

/// A component's word that what it offers changed, for every session that listens.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// Its tools, prompts or resources (`list-changed`).
    ListChanged(Listing),
    /// One of its resources (`resource-updated`).
    ResourceUpdated(Arc<str>),
}

/// What the host imports that reach beyond the store need: people (`confirm`, `elicit`) and
/// other tools (`call-tool`). An `Err` ends the run with that failure.
pub trait CallServices: Send + Sync {
    fn confirm(self: Arc<Self>, prompt: String, details: String) -> Served<bool>;
    /// `schema` is the guest's text, not yet checked.
    /// `Ok(Err(why))` when the form is unusable (the tool's mistake, returned to it).
    fn elicit(self: Arc<Self>, message: String, schema: String) -> Served<Result<Reply, String>>;
    fn call_tool(
        self: Arc<Self>,
        name: String,
        arguments: String,
    ) -> Served<Result<CallToolResult, CallFailure>>;
    /// Put `requests` to the client (forms, sampling, roots), in one round where it can.
    /// `Ok(Err(why))` when a request is unusable (the component's mistake, returned to it).
    fn ask(
        self: Arc<Self>,
        requests: Vec<InputRequest>,
    ) -> Served<Result<Vec<InputAnswer>, String>>;
    /// What the client of this request can be asked.
    fn client_supports(&self) -> ClientFeatures;
    /// Pass a component's signal on to the sessions that listen. `Err` when the signal is not
    /// the component's to give (a resource it does not serve).
    fn signal(&self, signal: Signal) -> Result<(), String>;
}

pub type Served<T> = Pin<Box<dyn Future<Output = Result<T, CallFailure>> + Send + 'static>>;

/// Ends the run from inside a host import, carrying the reason out of the trap.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct EndRun(CallFailure);

/// The store data of one call.
pub struct HostState {
    wasi: WasiCtx,
    pub(super) table: ResourceTable,
    limiter: MemoryLimiter,
    events: Option<mpsc::Sender<GuestEvent>>,
    component: std::sync::Arc<str>,
    last_progress: f64,
    http: WasiHttpCtx,
    gate: EgressGate,
    denial: DenialCell,
    redactor: Arc<Redactor>,
    shapes: Arc<Shapes>,
    services: Option<Arc<dyn CallServices>>,
    cancel: CancellationToken,
    stop: CancellationToken,
    /// The tool has asked `cancelled()`: it gets [`STOP_GRACE`] to stop by itself.
    cooperative: Arc<std::sync::atomic::AtomicBool>,
    /// What the call may still send as log and progress messages, and its other limits on
    /// what it makes the host handle.
    budget: MessageBudget,
    /// Host work done for the call through its imports, in fuel, counted against its budget
    /// at every epoch tick and at its end.
    host_work: u64,
    /// Host work done for the call by wasmtime-wasi's own imports (its stdout, stderr,
    /// random bytes and file streams), in fuel, counted with `host_work`.
    pub(super) meter: HostMeter,
    /// The TCP sockets the call holds open.
    sockets: OpenHandles<wasmtime_wasi::p2::TcpSocket>,
    /// Whether the call may create TCP sockets at all.
    tcp_granted: bool,
    /// Whether the call may ask the client's model (`sample`).
    sample_granted: bool,
    /// Signals the request may still give.
    signals_left: u32,
    shadow: bool,
    /// Open files and quotas of the call's filesystem grants.
    pub(super) files: crate::sandbox::files::CallFiles,
    /// Who made the request (none while the component is described).
    caller: Option<Principal>,
    /// The component's `[tool.settings]`.
    settings: Arc<std::collections::BTreeMap<String, String>>,
}

/// The handles of one kind a call holds open, by table index, up to a limit. Handles the guest
/// dropped are noticed when it asks for another (the index no longer holds one of this kind),
/// so nothing needs to watch the drops.
pub struct OpenHandles<T: 'static> {
    held: Vec<u32>,
    limit: u32,
    kind: std::marker::PhantomData<fn() -> T>,
}

impl<T: Send + 'static> OpenHandles<T> {
    pub fn new(limit: u32) -> Self {
        OpenHandles {
            held: Vec::new(),
            limit,
            kind: std::marker::PhantomData,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Whether one more may be opened.
    pub fn room(&mut self, table: &ResourceTable) -> bool {
        self.held_now(table) < self.limit as usize
    }

    /// How many the guest still holds (forgetting those it dropped).
    pub fn held_now(&mut self, table: &ResourceTable) -> usize {
        self.held.retain(|&rep| {
            table
                .get(&wasmtime::component::Resource::<T>::new_own(rep))
                .is_ok()
        });
        self.held.len()
    }

    pub fn opened(&mut self, handle: &wasmtime::component::Resource<T>) {
        if !self.held.contains(&handle.rep()) {
            self.held.push(handle.rep());
        }
    }
}

/// The threads guest code runs on once it yields, apart from the runtime that serves
/// connections and runs the pipeline: a guest that keeps running (and yields only every
/// [`GUEST_YIELD_FUEL`] or at epoch ticks) then never holds a thread that accepts,
/// authenticates or answers, and with more guest threads than cores the kernel time-slices
/// runaway and benign guests alike. Unset (library use), calls run inline.
static GUEST_POOL: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();

/// Where a call moves once an epoch tick finds its guest code busy after [`LONG_RUNNING`]:
/// threads at a low fair-scheduling weight ([`RUNAWAY_NICE`]), kept on half the CPUs.
/// Beside Airlock's own short calls a runaway call then takes little CPU, and the calls that
/// finish in a few milliseconds (nearly all) are barely slowed by it. It still gets its fair,
/// small share when other processes keep the machine busy: a legitimately long call (a Python
/// tool doing real work) finishes, slowed, instead of starving into its timeout, which is what
/// `SCHED_IDLE` threads did beside any busy process (docs/performance.md).
static RUNAWAY_POOL: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();

/// How long a call may have been running when an epoch tick finds its guest code busy, before
/// it counts as long-running and moves to the runaway pool. Nearly every call ends well before;
/// a runaway one moves at the first tick past it.
pub const LONG_RUNNING: Duration = Duration::from_millis(2);

/// Start the guest pools with `threads` threads each (once; later calls change nothing).
pub fn start_guest_pool(threads: usize) -> std::io::Result<()> {
    if GUEST_POOL.get().is_some() {
        return Ok(());
    }
    let cpus = runaway_cpus();
    let runaway = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("airlock-runaway")
        .on_thread_start(move || low_priority(cpus.as_ref()))
        .enable_all()
        .build()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("airlock-guest")
        .enable_all()
        .build()?;
    let _ = RUNAWAY_POOL.set(runaway);
    let _ = GUEST_POOL.set(runtime);
    Ok(())
}

/// The CPUs runaway calls run on: the last half of those this process may use (at least
/// one). Kept on them, a low-priority thread is never migrated onto the CPU where other work
/// is about to wake, which measurably delays it (docs/performance.md); the other CPUs never
/// see runaway code at all.
fn runaway_cpus() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the sizes passed are its own.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return None;
        }
        let ids: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .collect();
        if ids.len() < 2 {
            return None;
        }
        let mut chosen: libc::cpu_set_t = std::mem::zeroed();
        for &c in &ids[ids.len() - ids.len() / 2..] {
            libc::CPU_SET(c, &mut chosen);
        }
        Some(chosen)
    }
}

/// The nice value of the runaway pool's threads: a weight of 110 against 1024 for a thread at
/// the default 0, so a long-running call gets about a tenth of a CPU that others want too.
pub const RUNAWAY_NICE: libc::c_int = 10;

/// Lower the calling thread's priority to [`RUNAWAY_NICE`] (allowed without privileges: it only
/// lowers it), on `cpus` when given.
fn low_priority(cpus: Option<&libc::cpu_set_t>) {
    if let Some(set) = cpus {
        // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
        // Failing leaves the thread where it was: slower for others, never wrong.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
        }
    }
    // SAFETY: gettid has no preconditions; on Linux a thread id given to setpriority names that
    // thread alone.
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, RUNAWAY_NICE)
    };
    if r != 0 {
        static WARNED: std::sync::Once = std::sync::Once::new();
        let e = std::io::Error::last_os_error();
        WARNED.call_once(|| {
            tracing::warn!(
                "cannot lower the runaway pool's threads to nice {RUNAWAY_NICE} ({e}): \
                 long-running calls compete with the others at normal priority"
            );
        });
    }
}

/// How much fuel a guest may burn between two yields ([`Store::fuel_async_yield_interval`]):
/// a call runs on the thread that serves it until its first yield, which comes after this
/// much fuel or at the next epoch tick, whichever is first (typically about a millisecond of
/// wasm; code that misses the cache often is bounded by the tick instead), plus any one
/// synchronous host step in between (bounded by the limits: the hostcall budget, a random
/// request of at most `max_random_bytes`). A trivial tool uses under a tenth of it. A long
/// computation pays one cheap yield per interval.
pub const GUEST_YIELD_FUEL: u64 = 1_000_000;

/// Run `work` for a call, dropping it stops the run at its next poll. It starts on the
/// calling thread (in the guest pool's runtime context), and at its first yield (a wait for
/// I/O or a person, an epoch tick, or [`GUEST_YIELD_FUEL`] spent) moves to the guest pool
/// (stays inline without one). A call that ends without yielding, most calls, so never
/// changes thread: handing it to a pool
/// thread and its answer back costs two cross-thread wake-ups, which on a VM cost more than
/// the call (docs/performance.md).
/// Once `demote` is set (by the epoch callback of a call that keeps running), the work moves
/// on to the runaway pool at its next yield.
pub async fn on_guest_pool<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
    demote: Arc<std::sync::atomic::AtomicBool>,
) -> Result<T, CallFailure> {
    let Some(pool) = GUEST_POOL.get() else {
        return Ok(work.await);
    };
    let mut work = Box::pin(work);
    // The first slice runs here, but in the pool's context: whatever it starts (an HTTP
    // request's connection, a timer) belongs to the guest pool, not to the serving runtime.
    // A panic in it ends the call as a host error, as it would on the pool.
    let first = std::future::poll_fn(|cx| {
        let _pool = pool.enter();
        std::task::Poll::Ready(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || work.as_mut().poll(cx),
        )))
    })
    .await;
    match first {
        Ok(std::task::Poll::Ready(out)) => return Ok(out),
        Ok(std::task::Poll::Pending) => {}
        Err(_) => {
            return Err(CallFailure::HostError(
                "the guest task ended abnormally".into(),
            ));
        }
    }
    let (answer, answered) = tokio::sync::oneshot::channel();
    pool.spawn(GuestJob {
        work: Some(work),
        demote,
        demoted: false,
        answer: Some(answer),
    });
    answered
        .await
        .map_err(|_| CallFailure::HostError("the guest task ended abnormally".into()))
}

/// One call's guest work as a task of a guest pool. It ends (dropping the work) when the
/// caller stops waiting, and moves itself to the runaway pool when told to.
struct GuestJob<F: Future> {
    work: Option<Pin<Box<F>>>,
    demote: Arc<std::sync::atomic::AtomicBool>,
    demoted: bool,
    answer: Option<tokio::sync::oneshot::Sender<F::Output>>,
}

impl<F> Future for GuestJob<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::task::Poll;
        let this = &mut *self;
        let (Some(work), Some(answer)) = (this.work.as_mut(), this.answer.as_mut()) else {
            return Poll::Ready(());
        };
        // Cancelled, timed out above, or the client went away: the run is dropped here.
        if answer.poll_closed(cx).is_ready() {
            return Poll::Ready(());
        }
        if !this.demoted
            && this.demote.load(std::sync::atomic::Ordering::Relaxed)
            && let Some(runaway) = RUNAWAY_POOL.get()
        {
            runaway.spawn(GuestJob {
                work: this.work.take(),
                demote: this.demote.clone(),
                demoted: true,
                answer: this.answer.take(),
            });
            return Poll::Ready(());
        }
        match work.as_mut().poll(cx) {
            Poll::Ready(out) => {
                if let Some(answer) = this.answer.take() {
                    let _ = answer.send(out);
                }
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `wasi:sockets/tcp-create-socket`, linked in front of wasmtime-wasi's own: a call whose
/// component holds no `tcp` grant (or runs in the shadow tier) cannot create a socket at all,
/// and none holds more than `max_open_sockets` at once. A refusal ends the call as blocked, as
/// a refused connect does.
pub struct GuardedTcpCreate;

impl wasmtime::component::HasData for GuardedTcpCreate {
    type Data<'a> = &'a mut HostState;
}

// The socket interfaces' shared error conversions, as wasmtime-wasi does them.
impl wasmtime_wasi::p2::bindings::sockets::network::Host for HostState {
    fn convert_error_code(
        &mut self,
        error: wasmtime_wasi::p2::SocketError,
    ) -> wasmtime::Result<wasmtime_wasi::p2::bindings::sockets::network::ErrorCode> {
        let mut view = wasmtime_wasi::sockets::WasiSocketsView::sockets(self);
        wasmtime_wasi::p2::bindings::sockets::network::Host::convert_error_code(&mut view, error)
    }

    fn network_error_code(
        &mut self,
        err: wasmtime::component::Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<wasmtime_wasi::p2::bindings::sockets::network::ErrorCode>> {
        let mut view = wasmtime_wasi::sockets::WasiSocketsView::sockets(self);
        wasmtime_wasi::p2::bindings::sockets::network::Host::network_error_code(&mut view, err)
    }
}

impl wasmtime_wasi::p2::bindings::sockets::network::HostNetwork for HostState {
    fn drop(
        &mut self,
        this: wasmtime::component::Resource<wasmtime_wasi::p2::bindings::sockets::network::Network>,
    ) -> wasmtime::Result<()> {
        let mut view = wasmtime_wasi::sockets::WasiSocketsView::sockets(self);
        wasmtime_wasi::p2::bindings::sockets::network::HostNetwork::drop(&mut view, this)
    }
}

impl wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host for &mut HostState {
    fn create_tcp_socket(
        &mut self,
        family: wasmtime_wasi::p2::bindings::sockets::network::IpAddressFamily,
    ) -> wasmtime_wasi::p2::SocketResult<wasmtime::component::Resource<wasmtime_wasi::p2::TcpSocket>>
    {
        let refused = if !self.tcp_granted {
            // What the refusal is about (no address is known yet).
            let target = if self.shadow {
                "the shadow tier withholds raw TCP".to_owned()
            } else {
                "the tool has no tcp grant".to_owned()
            };
            Some(Denial::Socket {
                usage: SocketUse::Create,
                target,
            })
        } else if !self.sockets.room(&self.table) {
            Some(Denial::Handles {
                kind: HandleKind::TcpSockets,
                limit: self.sockets.limit(),
            })
        } else {
            None
        };
        if let Some(d) = refused {
            self.refuse(d);
            return Err(
                wasmtime_wasi::p2::bindings::sockets::network::ErrorCode::AccessDenied.into(),
            );
        }
        let mut view = wasmtime_wasi::sockets::WasiSocketsView::sockets(&mut **self);
        let socket =
            wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host::create_tcp_socket(
                &mut view, family,
            )?;
        self.sockets.opened(&socket);
        Ok(socket)
    }
}

/// The limits on what a call makes the host carry for it through `host.log`, `host.progress`,
/// `confirm` and `elicit`.
struct MessageBudget {
    /// Bytes of one message passed on (longer ones are cut).
    per_message: usize,
    /// Bytes of messages (as sent, overhead included) still allowed.
    left: u64,
    volume: ByteSize,
    /// Bytes of one question's text.
    question: ByteSize,
    /// Signals one request may give.
    signals: u32,
}

/// How long a tool that watches `cancelled()` may run on after a stop or cancellation.
pub const STOP_GRACE: Duration = Duration::from_millis(250);

impl HostState {
    fn services(&self) -> wasmtime::Result<Arc<dyn CallServices>> {
        self.services.clone().ok_or_else(|| {
            wasmtime::Error::new(EndRun(CallFailure::HostError(
                "this request cannot ask the client, give signals or call tools (describe() and \
                 completions run without them)"
                    .into(),
            )))
        })
    }

    /// Refuse something the call tried: logged, and the first refusal ends the call as blocked.
    pub(super) fn refuse(&self, d: Denial) {
        egress::record_denial(&self.denial, &self.component, d.redacted(&self.redactor));
    }

    fn clean(&self, mut text: String) -> String {
        self.redactor.redact_in_place(&mut text);
        text
    }

    /// A request of `ask` with no secret value in what the client will read. A key is the
    /// client's `inputRequests` key as is: one holding a secret value is refused, not changed.
    fn clean_request(&self, mut r: InputRequest) -> Result<InputRequest, String> {
        if self.redactor.redact(&r.key) != r.key {
            return Err("a key may not hold a secret value".into());
        }
        let clean = |t: &mut String| self.redactor.redact_in_place(t);
        match &mut r.kind {
            InputKind::Form(f) => clean(&mut f.message),
            InputKind::Sample(s) => {
                for m in &mut s.messages {
                    match &mut m.content {
                        airlock_host_api::Content::Text(t) => clean(t),
                        airlock_host_api::Content::Image(m)
                        | airlock_host_api::Content::Audio(m) => clean(&mut m.mime_type),
                        _ => {}
                    }
                }
                s.system_prompt.iter_mut().for_each(clean);
                s.stop_sequences.iter_mut().for_each(clean);
                s.model_hints.iter_mut().for_each(clean);
            }
            InputKind::Roots => {}
        }
        Ok(r)
    }

    /// A signal that was not the component's to give, in the log: cut, secrets out.
    fn signal_ignored(&self, mut why: String) {
        cut_message(&mut why, self.budget.per_message);
        self.redactor.redact_in_place(&mut why);
        let why = self.shapes.redact(&why);
        tracing::warn!(target: "airlock::guest", component = &*self.component, "signal ignored: {why}");
    }

    /// One of the request's signals, or the end of it: each signal reaches every listening
    /// session.
    fn take_signal(&mut self) -> wasmtime::Result<()> {
        if self.signals_left == 0 {
            return Err(end_run(CallFailure::SignalLimitExceeded {
                limit: self.budget.signals,
            }));
        }
        self.signals_left -= 1;
        Ok(())
    }

    /// Sampling spends the client's model on the call's behalf: only with the tool's grant,
    /// as an operator's revocations leave it now.
    fn sampling_granted(&self) -> wasmtime::Result<()> {
        if self.sample_granted && self.gate.grants().current().sample {
            return Ok(());
        }
        self.refuse(Denial::Sampling);
        Err(end_run(CallFailure::Blocked {
            tool: self.component.to_string(),
            denial: Denial::Sampling,
        }))
    }

    /// Count the host work of handling `bytes` for the call (against its fuel budget, at the
    /// next tick and at its end).
    pub(super) fn charge(&mut self, bytes: usize) {
        self.host_work = self.host_work.saturating_add(
            FUEL_PER_HOST_CALL.saturating_add((bytes as u64).saturating_mul(FUEL_PER_HOST_BYTE)),
        );
    }

    /// Take a message of `bytes` (as sent) from the call's budget, or end the call.
    fn spend(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.charge(bytes);
        let cost = (bytes as u64).saturating_add(MESSAGE_OVERHEAD);
        if cost > self.budget.left {
            self.budget.left = 0;
            return Err(end_run(CallFailure::MessageLimitExceeded {
                limit: self.budget.volume,
            }));
        }
        self.budget.left -= cost;
        Ok(())
    }

    /// A question's text of `bytes`, or the end of the call.
    fn ask_size(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.charge(bytes);
        if bytes as u64 > self.budget.question.bytes() {
            return Err(end_run(CallFailure::QuestionTooLarge {
                limit: self.budget.question,
            }));
        }
        Ok(())
    }
}

/// Cut `text` to at most `max` bytes (on a character boundary), marking the cut.
fn cut_message(text: &mut String, max: usize) {
    if text.len() > max {
        text.truncate(text.floor_char_boundary(max));
        text.push('…');
    }
}

pub(super) fn end_run(f: CallFailure) -> wasmtime::Error {
    wasmtime::Error::new(EndRun(f))
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.gate,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

// The `types` interfaces hold only types; their host traits have nothing to implement.
impl airlock_host_api::v2::airlock::tool::types::Host for HostState {}
impl airlock_host_api::v1::airlock::tool::types::Host for HostState {}

/// A 0.1.0 component's imports: the 0.2.0 ones of the same names.
impl airlock_host_api::v1::airlock::tool::host::Host for HostState {
    fn log(
        &mut self,
        level: airlock_host_api::v1::airlock::tool::host::LogLevel,
        message: String,
    ) -> wasmtime::Result<()> {
        airlock_host_api::Host::log(self, level.into(), message)
    }

    fn progress(
        &mut self,
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    ) -> wasmtime::Result<()> {
        airlock_host_api::Host::progress(self, progress, total, message)
    }

    async fn confirm(&mut self, prompt: String, details: String) -> wasmtime::Result<bool> {
        airlock_host_api::Host::confirm(self, prompt, details).await
    }

    async fn elicit(
        &mut self,
        message: String,
        schema: String,
    ) -> wasmtime::Result<Result<airlock_host_api::v1::airlock::tool::host::ElicitAnswer, String>>
    {
        let answer = airlock_host_api::Host::elicit(self, message, schema).await?;
        Ok(answer.map(Into::into))
    }

    async fn call_tool(
        &mut self,
        name: String,
        arguments: String,
    ) -> wasmtime::Result<
        Result<
            airlock_host_api::v1::airlock::tool::types::ToolOutput,
            airlock_host_api::v1::airlock::tool::host::NestedFailure,
        >,
    > {
        let out = airlock_host_api::Host::call_tool(self, name, arguments).await?;
        Ok(out.map(Into::into).map_err(Into::into))
    }

    fn cancelled(&mut self) -> bool {
        airlock_host_api::Host::cancelled(self)
    }
}

impl airlock_host_api::Host for HostState {
    fn log(&mut self, level: LogLevel, mut message: String) -> wasmtime::Result<()> {
        self.spend(message.len())?;
        // Cut before anything else looks at it: the host's work per message is bounded.
        cut_message(&mut message, self.budget.per_message);
        self.redactor.redact_in_place(&mut message);
        let component = &*self.component;
        let logged = self.shapes.redact(&message);
        match level {
            LogLevel::Debug => tracing::debug!(target: "airlock::guest", component, "{logged}"),
            LogLevel::Info => tracing::info!(target: "airlock::guest", component, "{logged}"),
            LogLevel::Warn => tracing::warn!(target: "airlock::guest", component, "{logged}"),
            LogLevel::Error => tracing::error!(target: "airlock::guest", component, "{logged}"),
        }
        if let Some(tx) = &self.events {
            // A slow client loses messages rather than stalling the tool.
            let _ = tx.try_send(GuestEvent::Log { level, message });
        }
        Ok(())
    }

    fn progress(
        &mut self,
        progress: f64,
        total: Option<f64>,
        mut message: Option<String>,
    ) -> wasmtime::Result<()> {
        self.spend(message.as_ref().map_or(0, String::len))?;
        // MCP requires progress to increase; anything else is dropped rather than forwarded.
        if !progress.is_finite() || progress <= self.last_progress {
            return Ok(());
        }
        self.last_progress = progress;
        if let Some(m) = &mut message {
            cut_message(m, self.budget.per_message);
            self.redactor.redact_in_place(m);
        }
        if let Some(tx) = &self.events {
            let _ = tx.try_send(GuestEvent::Progress {
                progress,
                total: total.filter(|t| t.is_finite()),
                message,
            });
        }
        Ok(())
    }

    async fn confirm(&mut self, prompt: String, details: String) -> wasmtime::Result<bool> {
        let services = self.services()?;
        self.ask_size(prompt.len() + details.len())?;
        let (prompt, details) = (self.clean(prompt), self.clean(details));
        services.confirm(prompt, details).await.map_err(end_run)
    }

    async fn elicit(
        &mut self,
        message: String,
        schema: String,
    ) -> wasmtime::Result<Result<ElicitAnswer, String>> {
        let services = self.services()?;
        self.ask_size(message.len() + schema.len())?;
        let message = self.clean(message);
        let answer = services.elicit(message, schema).await.map_err(end_run)?;
        Ok(answer.map(|reply| match reply {
            Reply::Accept { content } => {
                ElicitAnswer::Accept(serde_json::Value::Object(content).to_string())
            }
            Reply::Decline => ElicitAnswer::Decline,
            Reply::Cancel | Reply::Returned { .. } => ElicitAnswer::Cancel,
        }))
    }

    async fn call_tool(
        &mut self,
        name: String,
        arguments: String,
    ) -> wasmtime::Result<Result<ToolOutput, NestedFailure>> {
        let services = self.services()?;
        self.charge(name.len() + arguments.len());
        match services.call_tool(name, arguments).await.map_err(end_run)? {
            Ok(result) => Ok(Ok(crate::sandbox::output::to_tool_output(&result))),
            Err(f) => Ok(Err(NestedFailure {
                outcome: f.kind().to_owned(),
                message: f.to_string(),
            })),
        }
    }

    fn cancelled(&mut self) -> bool {
        self.cooperative
            .store(true, std::sync::atomic::Ordering::Release);
        self.cancel.is_cancelled() || self.stop.is_cancelled()
    }

    async fn ask(
        &mut self,
        requests: Vec<InputRequest>,
    ) -> wasmtime::Result<Result<Vec<InputAnswer>, String>> {
        let services = self.services()?;
        self.ask_size(requests.iter().map(input_size).sum())?;
        if requests
            .iter()
            .any(|r| matches!(r.kind, InputKind::Sample(_)))
        {
            self.sampling_granted()?;
        }
        let requests = match requests
            .into_iter()
            .map(|r| self.clean_request(r))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(r) => r,
            Err(why) => return Ok(Err(why)),
        };
        let answers = services.ask(requests).await.map_err(end_run)?;
        // What the client sent back is host work for the call too.
        if let Ok(answers) = &answers {
            self.charge(answers.iter().map(answer_size).sum());
        }
        Ok(answers)
    }

    async fn sample(
        &mut self,
        request: SampleRequest,
    ) -> wasmtime::Result<Result<SampleReply, SampleError>> {
        let asked = vec![InputRequest {
            key: "sample".into(),
            kind: InputKind::Sample(request),
        }];
        match airlock_host_api::Host::ask(self, asked).await? {
            Ok(mut answers) => match answers.pop().map(|a| a.reply) {
                Some(InputReply::Sample(reply)) => Ok(reply),
                _ => Ok(Err(SampleError::Invalid(
                    "the client's answer was not a message".into(),
                ))),
            },
            Err(why) => Ok(Err(SampleError::Invalid(why))),
        }
    }

    fn caller(&mut self) -> CallerIdentity {
        self.charge(0);
        let Some(p) = &self.caller else {
            return CallerIdentity {
                principal: String::new(),
                roles: Vec::new(),
                unrestricted: false,
            };
        };
        let (roles, unrestricted) = match &p.access {
            Access::All => (Vec::new(), true),
            Access::Roles(r) => (r.to_vec(), false),
        };
        CallerIdentity {
            principal: p.name.to_string(),
            roles,
            unrestricted,
        }
    }

    fn setting(&mut self, name: String) -> Option<String> {
        self.charge(name.len());
        self.settings.get(&name).cloned()
    }

    fn settings(&mut self) -> Vec<(String, String)> {
        let all: Vec<(String, String)> = self
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.charge(all.iter().map(|(k, v)| k.len() + v.len()).sum());
        all
    }

    fn client_supports(&mut self) -> ClientFeatures {
        self.services.as_ref().map_or(
            ClientFeatures {
                elicitation: false,
                sampling: false,
                roots: false,
            },
            |s| s.client_supports(),
        )
    }

    fn list_changed(&mut self, what: Listing) -> wasmtime::Result<()> {
        self.spend(0)?;
        self.take_signal()?;
        let services = self.services()?;
        if let Err(why) = services.signal(Signal::ListChanged(what)) {
            self.signal_ignored(why);
        }
        Ok(())
    }

    fn resource_updated(&mut self, uri: String) -> wasmtime::Result<()> {
        self.spend(uri.len())?;
        self.take_signal()?;
        let services = self.services()?;
        if let Err(why) = services.signal(Signal::ResourceUpdated(Arc::from(uri))) {
            self.signal_ignored(why);
        }
        Ok(())
    }
}

/// Bytes of an answer to `ask` the host handled.
fn answer_size(a: &InputAnswer) -> usize {
    a.key.len()
        + match &a.reply {
            InputReply::Form(ElicitAnswer::Accept(json)) => json.len(),
            InputReply::Form(_) => 0,
            InputReply::Sample(Ok(r)) => {
                r.model.len() + crate::sandbox::output::content_size(&r.content)
            }
            InputReply::Sample(Err(SampleError::Declined(m) | SampleError::Invalid(m))) => m.len(),
            InputReply::Roots(roots) => roots
                .iter()
                .map(|r| r.uri.len() + r.name.as_ref().map_or(0, String::len))
                .sum(),
        }
}

/// Bytes of text a request of `ask` makes the host handle.
fn input_size(r: &InputRequest) -> usize {
    r.key.len()
        + match &r.kind {
            InputKind::Form(f) => f.message.len() + f.schema.len(),
            InputKind::Sample(s) => {
                s.system_prompt.as_ref().map_or(0, String::len)
                    + s.stop_sequences.iter().map(String::len).sum::<usize>()
                    + s.model_hints.iter().map(String::len).sum::<usize>()
                    + s.messages
                        .iter()
                        .map(|m| crate::sandbox::output::content_size(&m.content))
                        .sum::<usize>()
            }
            InputKind::Roots => 0,
        }
}

/// The memory of the whole instance (all its linear memories together) against the tool's limit.
struct MemoryLimiter {
    limit: usize,
    total: usize,
    peak: usize,
}

/// Raised from the limiter so that the trap can be told apart from a guest abort.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} exceeded")]
pub struct MemoryLimitExceeded {
    pub limit: ByteSize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total - current.min(self.total) + desired;
        if total > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: ByteSize(self.limit as u64),
            }));
        }
        self.total = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        crate::sandbox::engine::CORE_INSTANCES_PER_COMPONENT as usize
    }
    fn memories(&self) -> usize {
        crate::sandbox::engine::MEMORIES_PER_COMPONENT as usize
    }
    fn tables(&self) -> usize {
        crate::sandbox::engine::TABLES_PER_COMPONENT as usize
    }
}

/// What one run produced, besides its result.
#[derive(Debug)]
pub struct RunReport<T> {
    pub result: Result<T, CallFailure>,
    /// Fuel consumed; `None` when the call was dropped mid-run and the count is unknown.
    pub fuel_used: Option<u64>,
    pub peak_memory: usize,
    pub stdout: (Vec<u8>, u64),
    pub stderr: (Vec<u8>, u64),
}

/// A component ready to run: what every call of it needs, resolved at load.
pub struct Prepared {
    pub engine: Engine,
    pub pre: ComponentPre,
    /// The `[[tool]]` entry name, for log lines.
    pub name: std::sync::Arc<str>,
    pub limits: Limits,
    pub grants: Arc<Grants>,
    /// Replaces secret values in everything the component sends out.
    pub redactor: Arc<Redactor>,
    /// Secret-shaped strings, kept out of airlock's own log lines.
    pub shapes: Arc<Shapes>,
    /// The quota tallies of the component's writable grants.
    pub ledgers: crate::sandbox::quota::Ledgers,
    /// `[tool.settings]`, for the `setting` imports.
    pub settings: Arc<std::collections::BTreeMap<String, String>>,
}

/// A component ready to instantiate, by the version of the contract it was built for.
pub enum ComponentPre {
    /// `airlock:tool@0.2.0`.
    Current(ToolPre<HostState>),
    /// `airlock:tool@0.1.0`: tools only.
    V1(airlock_host_api::v1::ToolPre<HostState>),
    /// Any other component: its exported functions (and a `wasi:cli` command) as tools.
    Generic(Box<GenericPre>),
}

/// A generic component ready to instantiate, and how its exports are served.
pub struct GenericPre {
    pub pre: wasmtime::component::InstancePre<HostState>,
    pub exports: GenericExports,
}

/// What a request asks of the component.
pub enum Work<'a> {
    /// Run the tool `tool` with `arguments` (a JSON object, serialised).
    Call { tool: &'a str, arguments: &'a str },
    /// Read the resource `uri`.
    ReadResource { uri: &'a str },
    /// Fill in the prompt `name`.
    GetPrompt {
        name: &'a str,
        arguments: &'a [(String, String)],
    },
    /// Suggest values.
    Complete(&'a CompletionRequest),
}

impl Work<'_> {
    /// What the request names: the tool, resource or prompt (for denials and records).
    pub fn target(&self) -> &str {
        match self {
            Work::Call { tool, .. } => tool,
            Work::ReadResource { uri } => uri,
            Work::GetPrompt { name, .. } => name,
            Work::Complete(r) => match &r.target {
                airlock_host_api::CompletionTarget::Prompt(p) => p,
                airlock_host_api::CompletionTarget::ResourceTemplate(t) => t,
            },
        }
    }
}

/// What the guest is asked to do.
pub enum Invocation<'a> {
    Describe,
    Call {
        work: Work<'a>,
        /// The component's grants, as the operator's revocations leave them.
        grants: LiveGrants,
        /// People and other tools, for the host imports that reach them; without them those
        /// imports end the run.
        services: Option<Arc<dyn CallServices>>,
        /// Write capabilities withheld: the tool's tier is shadow, or a shadow call made it.
        shadow: bool,
        /// Who made the request, for the `caller` import.
        caller: Principal,
    },
}

/// How the rest of the host reaches into a running call.
#[derive(Default)]
pub struct RunSignals {
    /// Fires when the client cancels or goes away.
    pub cancel: CancellationToken,
    /// Fires when an operator stops the call.
    pub stop: CancellationToken,
    /// Where the fuel left is published at every epoch tick, for `ctl calls`.
    pub fuel_left: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The wall-clock deadline; without one, the component's timeout from now.
    pub clock: Option<Clock>,
    /// Set once an epoch tick finds the call's guest code busy after [`LONG_RUNNING`] (see
    /// [`on_guest_pool`]).
    pub demote: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The W3C `traceparent` the tool's granted HTTP requests carry (the call's span), while
    /// traces are exported.
    pub traceparent: Option<String>,
}

/// The guest's answer to an [`Invocation`].
pub enum Answer {
    Described(Offer),
    Called(ToolOutput),
    Read(Vec<airlock_host_api::EmbeddedResource>),
    Prompted(airlock_host_api::Prompt),
    Completed(airlock_host_api::Completion),
}

/// Run one invocation in a fresh store. The store is dropped at the end whatever happened, so a
/// trapped instance is never entered again.
pub async fn run(
    prepared: &Prepared,
    invocation: Invocation<'_>,
    events: Option<mpsc::Sender<GuestEvent>>,
    signals: &RunSignals,
) -> RunReport<Answer> {
    let limits = &prepared.limits;
    // A command's arguments and stdin go into its WASI context, and its stdout and stderr are
    // its result: they are kept up to a quarter of the output limit each (the result carries
    // stdout twice, as text and structured), or `capture_bytes` if that is more.
    let command = match (&prepared.pre, &invocation) {
        (
            ComponentPre::Generic(g),
            Invocation::Call {
                work: Work::Call { tool, arguments },
                ..
            },
        ) => g.exports.command_input(tool, arguments),
        _ => None,
    };
    let cap = match command {
        Some(_) => limits
            .capture_bytes
            .as_usize()
            .max(limits.max_output_bytes.as_usize() / 4),
        None => limits.capture_bytes.as_usize(),
    };
    let meter = HostMeter::default();
    let (stdout, stderr) = (
        Capture::new(cap, meter.clone()),
        Capture::new(cap, meter.clone()),
    );
    let denial = DenialCell::default();
    let (live, called, services, shadow, caller) = match &invocation {
        Invocation::Describe => (
            LiveGrants::fixed(Arc::new(Grants::default())),
            None,
            None,
            true,
            None,
        ),
        Invocation::Call {
            work,
            grants,
            services,
            shadow,
            caller,
        } => (
            grants.clone(),
            Some(work.target().to_owned()),
            services.clone(),
            *shadow,
            Some(caller.clone()),
        ),
    };
    // One look at the grants in force: the preopens and their quotas come from the same one.
    let current = called.is_some().then(|| live.current());
    let granted = current.as_deref().map(|g| (&live, g));
    let granted_tcp = current.as_ref().is_some_and(|g| !g.tcp.is_empty());
    let sample_granted = current.as_ref().is_some_and(|g| g.sample);
    let context = wasi_context(
        &prepared.name,
        granted,
        shadow,
        command.as_ref(),
        limits.max_random_bytes.bytes(),
        &stdout,
        &stderr,
        &denial,
    )
    .and_then(|wasi| Ok((wasi, call_files(prepared, current.as_deref(), shadow)?)));
    let (wasi, files, granted) = match context {
        Ok((w, files)) => (w, files, Ok(())),
        // The call fails before the guest runs; an empty context stands in for the store.
        Err(f) => (
            WasiCtxBuilder::new().build(),
            CallFiles::new(limits.max_open_files),
            Err(f),
        ),
    };
    let cooperative = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.max_handles as usize);
    let state = HostState {
        wasi,
        table,
        limiter: MemoryLimiter {
            limit: limits.memory.as_usize(),
            total: 0,
            peak: 0,
        },
        events,
        component: prepared.name.clone(),
        last_progress: f64::NEG_INFINITY,
        http: WasiHttpCtx::new(),
        gate: EgressGate::new(
            live,
            limits.egress(),
            prepared.name.clone(),
            denial.clone(),
            prepared.redactor.clone(),
            shadow,
            signals.traceparent.clone(),
        ),
        denial,
        redactor: prepared.redactor.clone(),
        shapes: prepared.shapes.clone(),
        services,
        cancel: signals.cancel.clone(),
        stop: signals.stop.clone(),
        cooperative: cooperative.clone(),
        budget: MessageBudget {
            per_message: limits.max_message_bytes.as_usize(),
            left: limits.max_message_volume.bytes(),
            volume: limits.max_message_volume,
            question: limits.max_question_bytes,
            signals: limits.max_signals,
        },
        signals_left: limits.max_signals,
        host_work: 0,
        meter: meter.clone(),
        sockets: OpenHandles::new(limits.max_open_sockets),
        tcp_granted: !shadow && granted_tcp,
        sample_granted,
        shadow,
        files,
        caller,
        settings: prepared.settings.clone(),
    };
    let mut store = Store::new(&prepared.engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_hostcall_fuel(hostcall_budget(limits, called.is_none()));
    let fuel_set = store.set_fuel(limits.fuel).and_then(|()| {
        // Yields every so much fuel, besides the epoch ticks: the first one moves a call that
        // keeps running off the serving thread (`on_guest_pool`).
        store.fuel_async_yield_interval(Some(GUEST_YIELD_FUEL))
    });
    // Yield to the executor at every epoch tick: a busy guest then never holds a worker thread
    // for longer than a tick, and the deadline and cancellation below take effect at the yield.
    // The same tick publishes the fuel left, so an operator sees a running call's CPU use.
    store.set_epoch_deadline(1);
    let gauge = signals.fuel_left.clone();
    let demote = signals.demote.clone();
    let started = std::time::Instant::now();
    let carried = store.data().gate.carried();
    let carried_at_end = carried.clone();
    let meter_at_end = meter.clone();
    let budget = limits.fuel;
    store.epoch_deadline_callback(move |ctx| {
        // The callback runs only while guest code runs: a call waiting on I/O or on a person
        // is not moved for that.
        if let Some(d) = &demote
            && started.elapsed() >= LONG_RUNNING
        {
            d.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // The guest's own fuel and the host's work for it (what its imports handled, the HTTP
        // body bytes carried for it) share one budget. The guest's counter is not lowered
        // here: wasmtime does not take a `set_fuel` made inside this callback while wasm runs,
        // so the sum is compared instead.
        let spent = spent_so_far(
            budget,
            ctx.get_fuel().unwrap_or(0),
            ctx.data().host_work,
            &carried,
            &meter,
        );
        if spent >= budget {
            return Err(wasmtime::Error::from(Trap::OutOfFuel));
        }
        if let Some(g) = &gauge {
            g.store(budget - spent, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(UpdateDeadline::Yield(1))
    });

    let clock = signals
        .clock
        .clone()
        .unwrap_or_else(|| Clock::start(limits.timeout.0, None, Arc::default()));
    let result = match fuel_set
        .map_err(|e| CallFailure::HostError(e.to_string()))
        .and(granted)
    {
        Err(f) => Err(f),
        Ok(()) => {
            let invoked = invoke(
                &mut store,
                &prepared.pre,
                invocation,
                (&stdout, &stderr),
                limits.max_output_bytes.as_usize(),
            );
            tokio::pin!(invoked);
            let stopped = tokio::select! {
                biased;
                _ = signals.stop.cancelled() => Err(CallFailure::StoppedByOperator),
                _ = signals.cancel.cancelled() => Err(CallFailure::Cancelled),
                _ = clock.expired() => Ok(Err(CallFailure::TimedOut { after: limits.timeout })),
                r = &mut invoked => Ok(r),
            };
            match stopped {
                Ok(r) => r,
                Err(f) => {
                    // A tool that watches `cancelled()` gets a moment to stop at a safe point;
                    // one that never asked is dropped at once.
                    if cooperative.load(std::sync::atomic::Ordering::Acquire) {
                        let _ = tokio::time::timeout(STOP_GRACE, &mut invoked).await;
                    }
                    Err(f)
                }
            }
        }
    };
    // The store's fuel count is brought up to date only when wasm returns to the host, so it is
    // unknown for a call dropped while suspended (timed out or cancelled).
    let spent = match &result {
        Err(
            CallFailure::TimedOut { .. } | CallFailure::Cancelled | CallFailure::StoppedByOperator,
        ) => None,
        _ => Some(spent_so_far(
            limits.fuel,
            store.get_fuel().unwrap_or(0),
            store.data().host_work,
            &carried_at_end,
            &meter_at_end,
        )),
    };
    let fuel_used = spent.map(|s| s.min(limits.fuel));
    // Host work done since the last tick is charged too: a call that ends before the next tick
    // does not get the host's work past its budget for free.
    let result = match result {
        Ok(_) if spent.is_some_and(|s| s > limits.fuel) => Err(CallFailure::CpuBudgetExhausted),
        other => other,
    };
    // Whatever the tool wrote into its failure, at most `max_error_bytes` of it goes on.
    let (stdout, stderr) = (stdout.take(), stderr.take());
    // A guest that panicked said why on stderr before it trapped: that, not the trap, is what
    // the caller and the record need.
    let result = match result {
        Err(CallFailure::Trapped(trap)) => Err(CallFailure::Trapped(
            panic_message(&stderr.0).unwrap_or(trap),
        )),
        other => other,
    };
    let result = result.map_err(|f| f.cut(limits.max_error_bytes.as_usize()));
    let peak_memory = store.data().limiter.peak;
    // A refused request ends the call as blocked, whatever the tool made of the refusal.
    // An operator's stop is what ended the call, whatever it was refused before.
    let result = match (store.data().denial.get().cloned(), called) {
        (Some(denial), Some(tool)) if !matches!(result, Err(CallFailure::StoppedByOperator)) => {
            Err(CallFailure::Blocked { tool, denial })
        }
        _ => result,
    };
    drop(store);
    RunReport {
        result,
        fuel_used,
        peak_memory,
        stdout,
        stderr,
    }
}

/// Bytes of host values one crossing from the guest may make the host hold (wasmtime's
/// "hostcall fuel": lifting a string costs its length, each list item, record field or tuple
/// element the size of a `Val`): a result, or an import's arguments. Past it the call traps
/// before the host allocates more. Sixteen times the output limit (at least 16 MiB) leaves
/// room for any result that could pass the output limit once converted, and bounds what a
/// component can make the host hold per call by its limits rather than by its memory. What
/// `describe()` answers (`describing`) may be as large as the description limits allow.
fn hostcall_budget(limits: &Limits, describing: bool) -> usize {
    let per_call = limits
        .max_output_bytes
        .as_usize()
        .saturating_mul(16)
        .max(16 << 20)
        .max(limits.max_argument_bytes.as_usize().saturating_mul(4));
    if !describing {
        return per_call;
    }
    // Tools, resources, templates and prompts: each kind up to `max_tools` items, each with a
    // description and up to two schemas, and as much again for the values' own overhead.
    let item = limits
        .max_description_bytes
        .as_usize()
        .saturating_add(limits.max_schema_bytes.as_usize().saturating_mul(2));
    (limits.max_tools as usize)
        .saturating_mul(item)
        .saturating_mul(8)
        .max(per_call)
}

/// The last panic a Rust guest reported on stderr (`panicked at FILE:LINE:COL:` and its
/// message), as one line.
fn panic_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let at = text.rfind("panicked at ")?;
    let panic: Vec<&str> = text[at + "panicked at ".len()..]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    Some(format!("the tool panicked: {}", panic.join(" ")))
}

/// The filesystem state of a call: its open-file cap, and the quota of every grant it may
/// write (none in the shadow tier, where nothing is written).
fn call_files(
    prepared: &Prepared,
    grants: Option<&Grants>,
    shadow: bool,
) -> Result<CallFiles, CallFailure> {
    let mut files = CallFiles::new(prepared.limits.max_open_files);
    let writable = grants
        .into_iter()
        .flat_map(|g| g.fs.iter())
        .filter(|g| !shadow && g.mode == FsMode::Rw);
    for g in writable {
        let Some(quota) = g.quota else { continue };
        // Every rw grant was given its ledger at load; one missing is a bug, and the call
        // does not run unmetered.
        let ledger = prepared.ledgers.get(&g.host).ok_or_else(|| {
            CallFailure::HostError(format!(
                "grant {} has a quota of {quota} but no tally; the call is not run",
                g.id
            ))
        })?;
        files.add_quota(&g.id, &g.guest, ledger);
    }
    if let Some(now) = grants {
        for g in revoked_fs(&prepared.grants, now) {
            files.add_revoked(&g.id, &g.guest);
        }
    }
    Ok(files)
}

/// Fuel a call has spent of `budget`: its guest's (what `left` says is gone) and the host's
/// work for it (through imports, HTTP body bytes carried, and its streams and random bytes).
fn spent_so_far(
    budget: u64,
    left: u64,
    host_work: u64,
    carried: &std::sync::atomic::AtomicU64,
    meter: &HostMeter,
) -> u64 {
    budget
        .saturating_sub(left)
        .saturating_add(host_work)
        .saturating_add(meter.fuel())
        .saturating_add(
            carried
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_mul(FUEL_PER_HOST_BYTE),
        )
}

/// The WASI context of one invocation: captured stdout and stderr and nothing ambient (no env,
/// no args, no directories, no network, no name lookup), then, for a call (`describe()` gets
/// nothing), what `grants` say: each filesystem grant as a preopen with its mode, TCP behind the socket check,
/// secrets exposed as environment variables. A granted directory that can no longer be opened
/// fails the call rather than running the tool without it. One `wasi:random` request may ask
/// for at most `max_random` bytes (wasmtime-wasi's own bound is 64 MiB, made in one host step).
#[allow(clippy::too_many_arguments)]
pub fn wasi_context(
    component: &Arc<str>,
    grants: Option<(&LiveGrants, &Grants)>,
    shadow: bool,
    command: Option<&CommandInput>,
    max_random: u64,
    stdout: &Capture,
    stderr: &Capture,
    denial: &DenialCell,
) -> Result<WasiCtx, CallFailure> {
    let mut builder = WasiCtxBuilder::new();
    // Both generators are the host's secure one: a guest asking for "insecure" bytes gets
    // bytes no worse, and both are charged to the call.
    let meter = stdout.meter();
    builder
        .secure_random(meter.random(wasmtime_wasi::thread_rng()))
        .insecure_random(meter.random(wasmtime_wasi::thread_rng()))
        .max_random_size(max_random)
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if let Some(c) = command {
        builder.arg(component.as_ref()).args(&c.args).stdin(
            wasmtime_wasi::p2::pipe::MemoryInputPipe::new(c.stdin.clone()),
        );
    }
    if let Some((live, grants)) = grants {
        grant(&mut builder, component, live, grants, shadow, denial)?;
    }
    Ok(builder.build())
}

/// `grants` are those in force now (`live` as revocations left them); `live` itself goes to
/// the TCP check, which looks again at every connect.
fn grant(
    builder: &mut WasiCtxBuilder,
    component: &Arc<str>,
    live: &LiveGrants,
    grants: &Grants,
    shadow: bool,
    denial: &DenialCell,
) -> Result<(), CallFailure> {
    // TCP is on for every call, behind the check: with no TCP grant every connect is refused
    // there, so the attempt becomes a named denial instead of a silent error.
    builder.allow_tcp(true).socket_addr_check(egress::tcp_check(
        live.clone(),
        component.clone(),
        denial.clone(),
        shadow,
    ));
    for s in &grants.secrets {
        if s.usage == SecretUse::Env {
            builder.env(&s.name, s.value.expose());
        }
    }
    for g in &grants.fs {
        let perms = match g.mode {
            _ if shadow => FsPerms::ReadOnly,
            FsMode::Ro => FsPerms::ReadOnly,
            FsMode::Rw => FsPerms::ReadWrite,
        };
        builder
            .preopened_dir(&g.host, &g.guest, perms)
            .map_err(|e| {
                CallFailure::HostError(format!(
                    "grant {} cannot open {}: {e}",
                    g.id,
                    g.host.display()
                ))
            })?;
    }
    // A revoked filesystem grant is still mounted, as an empty read-only stand-in: the
    // guest's opens there reach the host, which ends the call as blocked by the revocation.
    if let Some(standin) = live.standin_dir() {
        for g in revoked_fs(live.configured(), grants) {
            builder
                .preopened_dir(standin, &g.guest, FsPerms::ReadOnly)
                .map_err(|e| {
                    CallFailure::HostError(format!(
                        "cannot mount the stand-in of revoked grant {} ({}): {e}",
                        g.id,
                        standin.display()
                    ))
                })?;
        }
    }
    Ok(())
}

/// The filesystem grants `configured` that are not in force now.
fn revoked_fs<'a>(
    configured: &'a Grants,
    now: &'a Grants,
) -> impl Iterator<Item = &'a crate::config::grants::FsGrant> {
    configured
        .fs
        .iter()
        .filter(|g| !now.fs.iter().any(|n| n.id == g.id))
}

async fn invoke(
    store: &mut Store<HostState>,
    pre: &ComponentPre,
    invocation: Invocation<'_>,
    captured: (&Capture, &Capture),
    output_budget: usize,
) -> Result<Answer, CallFailure> {
    match pre {
        ComponentPre::Current(pre) => invoke_current(store, pre, invocation).await,
        ComponentPre::V1(pre) => invoke_v1(store, pre, invocation).await,
        ComponentPre::Generic(pre) => {
            invoke_generic(store, pre, invocation, captured, output_budget).await
        }
    }
}

/// A function of a generic component, or its command.
async fn invoke_generic(
    store: &mut Store<HostState>,
    pre: &GenericPre,
    invocation: Invocation<'_>,
    (stdout, stderr): (&Capture, &Capture),
    output_budget: usize,
) -> Result<Answer, CallFailure> {
    let work = match invocation {
        // Worked out from the component's type at load: nothing runs.
        Invocation::Describe => return Ok(Answer::Described(pre.exports.offer.clone())),
        Invocation::Call { work, .. } => work,
    };
    let Work::Call { tool, arguments } = work else {
        return Err(CallFailure::NotFound(format!(
            "{} (a component outside the airlock:tool world offers tools only)",
            work.target()
        )));
    };
    let function = pre
        .exports
        .function(tool)
        .ok_or_else(|| CallFailure::ToolFailed(format!("the component serves no tool `{tool}`")))?;
    let params = function.params(arguments)?;
    let mut results = function.result_slots();
    let instance = pre
        .pre
        .instantiate_async(&mut *store)
        .await
        .map_err(|e| classify(e, Stage::Instantiate))?;
    let func = instance
        .get_func(&mut *store, function.index())
        .ok_or_else(|| CallFailure::HostError(format!("export {} is gone", function.id)))?;
    let ran = func.call_async(&mut *store, &params, &mut results).await;
    if function.command {
        // `wasi:cli/exit` ends the run with its status; `run` returning is 0, or 1 on error.
        let code = match ran {
            Ok(()) => match results.first() {
                Some(Val::Result(Err(_))) => 1,
                _ => 0,
            },
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => exit.0,
                None => return Err(classify(e, Stage::Run)),
            },
        };
        return Ok(Answer::Called(generic::command_output(
            code,
            stdout.take(),
            stderr.take(),
            output_budget,
        )));
    }
    ran.map_err(|e| classify(e, Stage::Run))?;
    Ok(Answer::Called(function.output(results)))
}

async fn invoke_current(
    store: &mut Store<HostState>,
    pre: &ToolPre<HostState>,
    invocation: Invocation<'_>,
) -> Result<Answer, CallFailure> {
    use airlock_host_api::RequestError;
    let instance = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(|e| classify(e, Stage::Instantiate))?;
    let run = |e| classify(e, Stage::Run);
    let refused = |e: RequestError| match e {
        RequestError::NotFound(m) => CallFailure::NotFound(m),
        RequestError::InvalidArguments(m) => CallFailure::InvalidArguments(m),
        RequestError::Failed(m) => CallFailure::ToolFailed(m),
    };
    let work = match invocation {
        Invocation::Describe => {
            return instance
                .call_describe(&mut *store)
                .await
                .map(Answer::Described)
                .map_err(run);
        }
        Invocation::Call { work, .. } => work,
    };
    match work {
        Work::Call { tool, arguments } => {
            called(instance.call_call(&mut *store, tool, arguments).await)
        }
        Work::ReadResource { uri } => instance
            .call_read_resource(&mut *store, uri)
            .await
            .map_err(run)?
            .map(Answer::Read)
            .map_err(refused),
        Work::GetPrompt { name, arguments } => instance
            .call_get_prompt(&mut *store, name, arguments)
            .await
            .map_err(run)?
            .map(Answer::Prompted)
            .map_err(refused),
        Work::Complete(request) => instance
            .call_complete(&mut *store, request)
            .await
            .map_err(run)?
            .map(Answer::Completed)
            .map_err(refused),
    }
}

/// A 0.1.0 component: its tools, in 0.2.0 terms. It offers nothing else, so nothing else is
/// routed to it.
async fn invoke_v1(
    store: &mut Store<HostState>,
    pre: &airlock_host_api::v1::ToolPre<HostState>,
    invocation: Invocation<'_>,
) -> Result<Answer, CallFailure> {
    let instance = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(|e| classify(e, Stage::Instantiate))?;
    let work = match invocation {
        Invocation::Describe => {
            let specs = instance
                .call_describe(&mut *store)
                .await
                .map_err(|e| classify(e, Stage::Run))?;
            return Ok(Answer::Described(Offer {
                tools: specs.into_iter().map(Into::into).collect(),
                resources: Vec::new(),
                resource_templates: Vec::new(),
                prompts: Vec::new(),
            }));
        }
        Invocation::Call { work, .. } => work,
    };
    let Work::Call { tool, arguments } = work else {
        return Err(CallFailure::NotFound(format!(
            "{} (an airlock:tool@0.1.0 component offers tools only)",
            work.target()
        )));
    };
    let answer = instance.call_call(&mut *store, tool, arguments).await;
    called(answer.map(|r| r.map(Into::into).map_err(Into::into)))
}

/// A tool call's answer, in either contract version's terms once converted.
fn called(
    answer: wasmtime::Result<Result<ToolOutput, airlock_host_api::CallError>>,
) -> Result<Answer, CallFailure> {
    use airlock_host_api::CallError;
    match answer {
        Ok(Ok(out)) => Ok(Answer::Called(out)),
        Ok(Err(CallError::InvalidArguments(m))) => Err(CallFailure::InvalidArguments(m)),
        Ok(Err(CallError::Failed(m))) => Err(CallFailure::ToolFailed(m)),
        Ok(Err(CallError::UnknownTool(t))) => Err(CallFailure::ToolFailed(format!(
            "the component does not implement tool `{t}` it declared"
        ))),
        Err(e) => Err(classify(e, Stage::Run)),
    }
}

#[derive(Clone, Copy)]
enum Stage {
    Instantiate,
    Run,
}

fn classify(err: wasmtime::Error, stage: Stage) -> CallFailure {
    if let Some(EndRun(f)) = err.downcast_ref::<EndRun>() {
        return f.clone();
    }
    if let Some(m) = err.downcast_ref::<MemoryLimitExceeded>() {
        return CallFailure::MemoryLimitExceeded { limit: m.limit };
    }
    if let Some(wasmtime::component::ResourceTableError::Full) =
        err.downcast_ref::<wasmtime::component::ResourceTableError>()
    {
        return CallFailure::Trapped(
            "the call holds more handles at once than its limit (max_handles)".into(),
        );
    }
    // wasmtime-wasi's error for a `wasi:random` request over `max_random_size` (an untyped
    // error; its text is what identifies it).
    let cause = err.root_cause().to_string();
    if cause.starts_with("requested len") && cause.contains("exceeds limit") {
        return CallFailure::Trapped(
            "the tool asked for more random bytes at once than its limit (max_random_bytes)".into(),
        );
    }
    // wasmtime's own error for a crossing over the store's hostcall budget (its type is
    // private; its text is what identifies it).
    if format!("{err:#}").contains("fuel allocated for hostcalls has been exhausted") {
        return CallFailure::TransferTooLarge;
    }
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return CallFailure::Trapped(format!("the tool exited with status {}", exit.0));
    }
    match (err.downcast_ref::<Trap>(), stage) {
        (Some(Trap::OutOfFuel), _) => CallFailure::CpuBudgetExhausted,
        (Some(Trap::StackOverflow), _) => CallFailure::StackOverflow,
        (Some(trap), _) => CallFailure::Trapped(trap.to_string()),
        (None, Stage::Instantiate) => {
            CallFailure::HostError(format!("cannot instantiate the component: {err:#}"))
        }
        (None, Stage::Run) => CallFailure::Trapped(format!("{err:#}")),
    }
}
