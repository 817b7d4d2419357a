//! The filesystem imports a call's writes and opens go through first, linked in front of
//! wasmtime-wasi's own: every open counts against the call's `max_open_files`, and every write
//! into an `rw` grant is charged to its directory's quota ([`crate::sandbox::quota`]) before
//! it happens. wasmtime-wasi then does the work as always (permissions, path resolution that
//! cannot leave the preopen).
//!
//! Which grant a descriptor belongs to is known from how it was made: the preopens are the
//! grants, and every other descriptor comes from `open-at` on one of them. What counts as open
//! is the host file itself, not the guest's handle to it: a stream made from a descriptor keeps
//! the file open after the descriptor is dropped, and still counts.

use crate::core::denial::{Denial, HandleKind};
use crate::core::failure::CallFailure;
use crate::sandbox::capture::HostMeter;
use crate::sandbox::quota::{ENTRY_BYTES, Ledger, Writing};
use crate::sandbox::store::{HostState, OpenHandles, end_run};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::ReaddirIterator;
use wasmtime_wasi::p2::bindings::filesystem::{preopens, types};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, FsResult, InputStream, OutputStream, Pollable, StreamError,
};

/// The interfaces shadowed here, at the version wasmtime-wasi links (components importing any
/// 0.2.x version are linked to it).
const TYPES: &str = "wasi:filesystem/types@0.2.12";
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

/// A writable grant of the call with a quota.
struct QuotaGrant {
    id: String,
    guest: String,
    ledger: Arc<Ledger>,
    /// Taken at the call's first change to the tree (a call that only reads never holds the
    /// tree's measurement back).
    writing: Option<Writing>,
}

/// The filesystem state of one call.
pub struct CallFiles {
    quotas: Vec<QuotaGrant>,
    /// Descriptors under a grant with a quota, by table index, to the index in `quotas`. Every
    /// descriptor is made by `get-directories` or `open-at`, which keep this current.
    under: HashMap<u32, usize>,
    /// The host files and directories the call opened, alive while any handle of the guest's
    /// (descriptor or stream) holds them.
    open: Vec<std::sync::Weak<std::fs::File>>,
    /// Directory listings the guest holds (each a copy of a directory's entries in memory).
    listings: OpenHandles<ReaddirIterator>,
    max_open: u32,
    /// The host files and directories under a quota the call used: work the tool started on
    /// them may still run on the blocking pool after the call (holding them); the trees are
    /// measured only once they are closed.
    quota_files: Vec<std::sync::Weak<std::fs::File>>,
    /// The call's revoked filesystem grants (id, guest path), each mounted as an empty
    /// stand-in, and the stand-ins' descriptors by table index to the index here.
    revoked: Vec<(String, String)>,
    standins: HashMap<u32, usize>,
}

impl CallFiles {
    pub fn new(max_open: u32) -> CallFiles {
        CallFiles {
            quotas: Vec::new(),
            under: HashMap::new(),
            open: Vec::new(),
            listings: OpenHandles::new(max_open),
            max_open,
            quota_files: Vec::new(),
            revoked: Vec::new(),
            standins: HashMap::new(),
        }
    }

    /// The grant `id`, mounted at `guest`, is revoked: its stand-in refuses every open.
    pub fn add_revoked(&mut self, id: &str, guest: &str) {
        self.revoked.push((id.to_owned(), guest.to_owned()));
    }

    /// Refuse an open or a listing through the stand-in of a revoked grant (the call ends
    /// as blocked, naming the grant).
    fn refuse_revoked(state: &mut HostState, fd: u32, path: &str) -> Result<(), types::ErrorCode> {
        let Some(&r) = state.files.standins.get(&fd) else {
            return Ok(());
        };
        let (grant, guest) = &state.files.revoked[r];
        let target = match path {
            "" | "." => guest.clone(),
            p => format!("{}/{p}", guest.trim_end_matches('/')),
        };
        state.refuse(Denial::Revoked {
            grant: grant.clone(),
            target,
        });
        Err(types::ErrorCode::NotPermitted)
    }

    /// Whether the call may open one more file or listing (files and listings share the cap).
    fn room(&mut self, table: &wasmtime::component::ResourceTable) -> bool {
        self.open.retain(|f| f.strong_count() > 0);
        self.open.len() + self.listings.held_now(table) < self.max_open as usize
    }

    /// Count the host file behind the descriptor just opened (and remember it when it is under
    /// a quota).
    fn opened(
        &mut self,
        table: &wasmtime::component::ResourceTable,
        fd: &Resource<Descriptor>,
        quota: Option<usize>,
    ) {
        let Some(file) = host_file(table, fd) else {
            return;
        };
        if quota.is_some() {
            self.quota_files.push(file.clone());
        }
        self.open.push(file);
    }

    /// Refuse the open past the cap (the call ends as blocked).
    fn refuse_open(state: &mut HostState) -> Result<(), types::ErrorCode> {
        if state.files.room(&state.table) {
            return Ok(());
        }
        state.refuse(Denial::Handles {
            kind: HandleKind::Files,
            limit: state.files.max_open,
        });
        Err(types::ErrorCode::NotPermitted)
    }

    /// The call may write the grant `id` (mounted at `guest`) under `ledger`'s quota.
    pub fn add_quota(&mut self, id: &str, guest: &str, ledger: &Arc<Ledger>) {
        self.quotas.push(QuotaGrant {
            id: id.to_owned(),
            guest: guest.to_owned(),
            ledger: ledger.clone(),
            writing: None,
        });
    }

    /// The call is about to change the tree of `q`.
    fn writes(&mut self, q: usize) -> &Ledger {
        let grant = &mut self.quotas[q];
        if grant.writing.is_none() {
            grant.writing = Some(grant.ledger.writing());
        }
        &grant.ledger
    }

    /// Something left the tree of the grant `q` (when it has a quota): measured after the call.
    fn touch(&mut self, q: Option<usize>) {
        if let Some(q) = q {
            self.writes(q).touch();
        }
    }

    /// Give back a charge under `q` whose operation failed with an error code (a trap keeps
    /// it: what failed may have been done in part).
    fn uncharge<T>(&mut self, q: Option<usize>, bytes: u64, r: &FsResult<T>) {
        if let (Some(q), Err(e)) = (q, r)
            && e.downcast_ref().is_some()
        {
            self.writes(q).uncharge(bytes);
        }
    }

    fn quota_of(&self, fd: u32) -> Option<usize> {
        self.under.get(&fd).copied()
    }

    /// Charge `bytes` of growth under the grant `q`, or end the call.
    fn charge(&mut self, q: usize, bytes: u64) -> wasmtime::Result<()> {
        if self.writes(q).charge(bytes) {
            return Ok(());
        }
        let grant = &self.quotas[q];
        let ledger = &grant.ledger;
        tracing::warn!(
            target: "airlock::policy",
            grant = %grant.id,
            quota = %ledger.quota(),
            held = ledger.held(),
            "a write would grow the grant past its quota"
        );
        Err(over_quota(&grant.id, ledger))
    }
}

/// The host file or directory behind `fd`, to watch without keeping it open.
fn host_file(
    table: &wasmtime::component::ResourceTable,
    fd: &Resource<Descriptor>,
) -> Option<std::sync::Weak<std::fs::File>> {
    match table.get(fd) {
        Ok(Descriptor::File(f)) => Some(Arc::downgrade(&f.file)),
        Ok(Descriptor::Dir(d)) => Some(Arc::downgrade(&d.dir)),
        Err(_) => None,
    }
}

/// How long the end of a call waits for work it started on files under a quota (which runs
/// on the blocking pool and cannot be stopped) before it gives up measuring the trees.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Drop for CallFiles {
    fn drop(&mut self) {
        let writing: Vec<Writing> = self.quotas.drain(..).filter_map(|q| q.writing).collect();
        if writing.is_empty() {
            return;
        }
        let files = std::mem::take(&mut self.quota_files);
        let settle = move || {
            let until = std::time::Instant::now() + SETTLE_LIMIT;
            let mut pause = std::time::Duration::from_millis(1);
            while files.iter().any(|f| f.strong_count() > 0) {
                if std::time::Instant::now() >= until {
                    tracing::warn!(
                        "file work of an ended call is still running after {SETTLE_LIMIT:?}; \
                         its quota'd trees are not measured now"
                    );
                    writing.into_iter().for_each(Writing::release_unmeasured);
                    return;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            // Dropping each measures its tree if it was the last writer.
            drop(writing);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(settle);
            }
            Err(_) => settle(),
        }
    }
}

fn over_quota(grant: &str, ledger: &Ledger) -> wasmtime::Error {
    end_run(CallFailure::QuotaExceeded {
        grant: grant.to_owned(),
        quota: ledger.quota(),
    })
}

/// The result of a wasmtime-wasi filesystem function as the guest gets it: its error code, or
/// a trap.
fn to_guest<T>(
    state: &mut HostState,
    r: FsResult<T>,
) -> wasmtime::Result<Result<T, types::ErrorCode>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) => {
            let mut view = state.filesystem();
            Ok(Err(types::Host::convert_error_code(&mut view, e)?))
        }
    }
}

/// The current size of the file behind `fd` (0 for a directory).
fn file_size(state: &mut HostState, fd: &Resource<Descriptor>) -> wasmtime::Result<u64> {
    Ok(match state.table.get(fd)? {
        Descriptor::File(f) => f.file.metadata().map(|m| m.len()).unwrap_or(0),
        Descriptor::Dir(_) => 0,
    })
}

/// Whether the directory `fd` may be written through (its grant is `rw`).
fn writable(state: &HostState, fd: &Resource<Descriptor>) -> bool {
    matches!(state.table.get(fd), Ok(Descriptor::Dir(d)) if !d.perms.write_not_permitted())
}

/// Whether `path` names an entry under the directory `fd`, looked up as the open will look it
/// up (`flags`: a dangling symlink the open follows names nothing yet), and as the guest's own
/// lookups are: inside the grant, off the async threads. Only a clear "no such entry" counts
/// as absent (and is charged for).
async fn exists_at(
    state: &mut HostState,
    fd: &Resource<Descriptor>,
    path: &str,
    flags: types::PathFlags,
) -> bool {
    let dir = Resource::<Descriptor>::new_borrow(fd.rep());
    let r =
        types::HostDescriptor::stat_at(&mut state.filesystem(), dir, flags, path.to_owned()).await;
    match r {
        Ok(_) => true,
        Err(e) => !matches!(e.downcast_ref(), Some(types::ErrorCode::NoEntry)),
    }
}

type Sent<T> = wasmtime::Result<(Result<T, types::ErrorCode>,)>;

/// Link the guarded functions in front of wasmtime-wasi's (which must be linked already).
/// Each first charges its host work to the call's fuel (a host call; a write, its bytes too).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let mut inst = linker.instance(PREOPENS)?;
    inst.func_wrap("get-directories", |mut store, (): ()| {
        let state = store.data_mut();
        state.charge(0);
        let dirs = preopens::Host::get_directories(&mut state.filesystem())?;
        for (fd, guest) in &dirs {
            // Table slots are reused once a handle is dropped: each descriptor handed out is
            // tagged afresh, never by what an earlier one in its slot was.
            if let Some(r) = state.files.revoked.iter().position(|(_, g)| g == guest) {
                state.files.standins.insert(fd.rep(), r);
                state.files.under.remove(&fd.rep());
                continue;
            }
            state.files.standins.remove(&fd.rep());
            match state.files.quotas.iter().position(|q| &q.guest == guest) {
                Some(q) => {
                    state.files.under.insert(fd.rep(), q);
                    if let Some(dir) = host_file(&state.table, fd) {
                        state.files.quota_files.push(dir);
                    }
                }
                // Every writable grant has a quota: one without is not run unmetered.
                None if writable(state, fd) => {
                    return Err(end_run(CallFailure::HostError(format!(
                        "the writable grant at {guest} has no quota tally; the call is not run"
                    ))));
                }
                None => {
                    state.files.under.remove(&fd.rep());
                }
            }
        }
        Ok((dirs,))
    })?;

    let mut inst = linker.instance(TYPES)?;
    inst.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            types::PathFlags,
            String,
            types::OpenFlags,
            types::DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                state.charge(0);
                if let Err(e) = CallFiles::refuse_revoked(state, fd.rep(), &path)
                    .and_then(|()| CallFiles::refuse_open(state))
                {
                    return Ok((Err(e),));
                }
                // A new entry costs its entry.
                let quota = state.files.quota_of(fd.rep());
                let mut charged = 0;
                if let Some(q) = quota
                    && oflags.contains(types::OpenFlags::CREATE)
                    && !exists_at(state, &fd, &path, path_flags).await
                {
                    state.files.charge(q, ENTRY_BYTES)?;
                    charged = ENTRY_BYTES;
                }
                let r = types::HostDescriptor::open_at(
                    &mut state.filesystem(),
                    fd,
                    path_flags,
                    path,
                    oflags,
                    flags,
                )
                .await;
                match &r {
                    Ok(child) => {
                        state.files.standins.remove(&child.rep());
                        state.files.opened(&state.table, child, quota);
                        match quota {
                            Some(q) => state.files.under.insert(child.rep(), q),
                            None => state.files.under.remove(&child.rep()),
                        };
                    }
                    Err(_) => state.files.uncharge(quota, charged, &r),
                }
                Ok((to_guest(state, r)?,))
            })
        },
    )?;

    inst.func_wrap_async(
        "[method]descriptor.read-directory",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let state = store.data_mut();
                state.charge(0);
                if let Err(e) = CallFiles::refuse_revoked(state, fd.rep(), "")
                    .and_then(|()| CallFiles::refuse_open(state))
                {
                    return Ok((Err(e),));
                }
                let r = types::HostDescriptor::read_directory(&mut state.filesystem(), fd).await;
                if let Ok(listing) = &r {
                    state.files.listings.opened(listing);
                }
                Ok((to_guest(state, r)?,))
            })
        },
    )?;

    inst.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                state.charge(buf.len());
                let quota = state.files.quota_of(fd.rep());
                let mut growth = 0;
                if let Some(q) = quota {
                    let end = offset.saturating_add(buf.len() as u64);
                    growth = end.saturating_sub(file_size(state, &fd)?);
                    state.files.charge(q, growth)?;
                }
                let r =
                    types::HostDescriptor::write(&mut state.filesystem(), fd, buf, offset).await;
                state.files.uncharge(quota, growth, &r);
                let sent: Sent<u64> = Ok((to_guest(state, r)?,));
                sent
            })
        },
    )?;

    inst.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store, (fd, size): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                state.charge(0);
                let quota = state.files.quota_of(fd.rep());
                let mut growth = 0;
                if let Some(q) = quota {
                    growth = size.saturating_sub(file_size(state, &fd)?);
                    state.files.charge(q, growth)?;
                }
                let r = types::HostDescriptor::set_size(&mut state.filesystem(), fd, size).await;
                match &r {
                    Ok(()) => state.files.touch(quota),
                    Err(_) => state.files.uncharge(quota, growth, &r),
                }
                let sent: Sent<()> = Ok((to_guest(state, r)?,));
                sent
            })
        },
    )?;

    // Reads cost the host as writes do: charged to the call's fuel, by call and by byte.
    inst.func_wrap_async(
        "[method]descriptor.read",
        |mut store, (fd, len, offset): (Resource<Descriptor>, u64, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let r = types::HostDescriptor::read(&mut state.filesystem(), fd, len, offset).await;
                state.charge(r.as_ref().map_or(0, |(bytes, _)| bytes.len()));
                let sent: Sent<(Vec<u8>, bool)> = Ok((to_guest(state, r)?,));
                sent
            })
        },
    )?;

    inst.func_wrap(
        "[method]descriptor.read-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            state.charge(0);
            let r = types::HostDescriptor::read_via_stream(&mut state.filesystem(), fd, offset);
            let r = match r {
                Ok(stream) => {
                    let inner = state.table.delete(stream)?;
                    let charged: DynInputStream = Box::new(ChargedInput {
                        inner,
                        meter: state.meter.clone(),
                    });
                    Ok(state.table.push(charged)?)
                }
                Err(e) => Err(e),
            };
            Ok((to_guest(state, r)?,))
        },
    )?;

    inst.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            state.charge(0);
            let quota = state.files.quota_of(fd.rep());
            let size = match quota {
                Some(_) => file_size(state, &fd)?,
                None => 0,
            };
            let r = types::HostDescriptor::write_via_stream(&mut state.filesystem(), fd, offset);
            let r = match (r, quota) {
                (Ok(stream), Some(q)) => Ok(state.metered(
                    stream,
                    q,
                    Growth::At {
                        position: offset,
                        end: size,
                    },
                )?),
                (r, _) => r,
            };
            let r = state.charged_output(r)?;
            Ok((to_guest(state, r)?,))
        },
    )?;

    inst.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            let state = store.data_mut();
            state.charge(0);
            let quota = state.files.quota_of(fd.rep());
            let r = types::HostDescriptor::append_via_stream(&mut state.filesystem(), fd);
            let r = match (r, quota) {
                (Ok(stream), Some(q)) => Ok(state.metered(stream, q, Growth::Append)?),
                (r, _) => r,
            };
            let r = state.charged_output(r)?;
            Ok((to_guest(state, r)?,))
        },
    )?;

    inst.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                state.charge(0);
                let quota = state.files.quota_of(fd.rep());
                if let Some(q) = quota {
                    state.files.charge(q, ENTRY_BYTES)?;
                }
                let r =
                    types::HostDescriptor::create_directory_at(&mut state.filesystem(), fd, path)
                        .await;
                state.files.uncharge(quota, ENTRY_BYTES, &r);
                let sent: Sent<()> = Ok((to_guest(state, r)?,));
                sent
            })
        },
    )?;

    inst.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store, (fd, target, path): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let state = store.data_mut();
                state.charge(0);
                let quota = state.files.quota_of(fd.rep());
                let cost = ENTRY_BYTES.saturating_add(target.len() as u64);
                if let Some(q) = quota {
                    state.files.charge(q, cost)?;
                }
                let r =
                    types::HostDescriptor::symlink_at(&mut state.filesystem(), fd, target, path)
                        .await;
                state.files.uncharge(quota, cost, &r);
                let sent: Sent<()> = Ok((to_guest(state, r)?,));
                sent
            })
        },
    )?;

    inst.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store,
         (fd, flags, old, new_fd, new): (
            Resource<Descriptor>,
            types::PathFlags,
            String,
            Resource<Descriptor>,
            String,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                state.charge(0);
                let (from, to) = (
                    state.files.quota_of(fd.rep()),
                    state.files.quota_of(new_fd.rep()),
                );
                if writable(state, &new_fd) && !state.files.same_tally(from, to) {
                    return Ok((Err(types::ErrorCode::CrossDevice),));
                }
                if let Some(q) = to {
                    state.files.charge(q, ENTRY_BYTES)?;
                }
                let r = types::HostDescriptor::link_at(
                    &mut state.filesystem(),
                    fd,
                    flags,
                    old,
                    new_fd,
                    new,
                )
                .await;
                state.files.uncharge(to, ENTRY_BYTES, &r);
                Ok((to_guest(state, r)?,))
            })
        },
    )?;

    inst.func_wrap_async(
        "[method]descriptor.rename-at",
        |mut store,
         (fd, old, new_fd, new): (Resource<Descriptor>, String, Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                state.charge(0);
                let (from, to) = (state.files.quota_of(fd.rep()), state.files.quota_of(new_fd.rep()));
                // Moving a tree in from elsewhere would grow the tally unseen. (Where either
                // side is read-only, wasmtime-wasi refuses the rename itself.)
                if writable(state, &fd) && writable(state, &new_fd) && !state.files.same_tally(from, to)
                {
                    return Ok((Err(types::ErrorCode::CrossDevice),));
                }
                let r =
                    types::HostDescriptor::rename_at(&mut state.filesystem(), fd, old, new_fd, new)
                        .await;
                // A rename over an existing entry removes it: the next measurement sees that.
                if r.is_ok() {
                    state.files.touch(to);
                }
                Ok((to_guest(state, r)?,))
            })
        },
    )?;
    inst.func_wrap_async(
        "[method]descriptor.unlink-file-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                state.charge(0);
                let quota = state.files.quota_of(fd.rep());
                let r =
                    types::HostDescriptor::unlink_file_at(&mut state.filesystem(), fd, path).await;
                if r.is_ok() {
                    state.files.touch(quota);
                }
                let sent: Sent<()> = Ok((to_guest(state, r)?,));
                sent
            })
        },
    )?;

    inst.func_wrap_async(
        "[method]descriptor.remove-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                state.charge(0);
                let quota = state.files.quota_of(fd.rep());
                let r =
                    types::HostDescriptor::remove_directory_at(&mut state.filesystem(), fd, path)
                        .await;
                if r.is_ok() {
                    state.files.touch(quota);
                }
                let sent: Sent<()> = Ok((to_guest(state, r)?,));
                sent
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

impl CallFiles {
    /// Whether a link or rename between two grants keeps its bytes in one tally: both without
    /// a quota, or both under the same ledger.
    fn same_tally(&self, a: Option<usize>, b: Option<usize>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&self.quotas[a].ledger, &self.quotas[b].ledger),
            _ => false,
        }
    }
}

impl HostState {
    /// Put a file's output stream (just made) behind the call's fuel meter.
    fn charged_output(
        &mut self,
        made: FsResult<Resource<DynOutputStream>>,
    ) -> wasmtime::Result<FsResult<Resource<DynOutputStream>>> {
        let Ok(stream) = made else {
            return Ok(made);
        };
        let inner = self.table.delete(stream)?;
        let charged: DynOutputStream = Box::new(ChargedOutput {
            inner,
            meter: self.meter.clone(),
        });
        Ok(Ok(self.table.push(charged)?))
    }

    /// Put `stream` (just made by wasmtime-wasi for a file under the grant `q`) behind a meter.
    fn metered(
        &mut self,
        stream: Resource<DynOutputStream>,
        q: usize,
        growth: Growth,
    ) -> wasmtime::Result<Resource<DynOutputStream>> {
        let inner = self.table.delete(stream)?;
        // A stream that can write the tree makes the call one of its writers.
        self.files.writes(q);
        let grant = &self.files.quotas[q];
        let metered: DynOutputStream = Box::new(MeteredStream {
            inner,
            ledger: grant.ledger.clone(),
            grant: grant.id.clone(),
            growth,
        });
        Ok(self.table.push(metered)?)
    }
}

/// How a stream's writes grow its file.
enum Growth {
    /// Written at `position`; the file is known to end at `end`.
    At { position: u64, end: u64 },
    /// Appended: every byte is growth.
    Append,
}

/// A file's output stream whose writes are charged to the grant's quota before they happen.
struct MeteredStream {
    inner: DynOutputStream,
    ledger: Arc<Ledger>,
    grant: String,
    growth: Growth,
}

#[async_trait::async_trait]
impl Pollable for MeteredStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[async_trait::async_trait]
impl OutputStream for MeteredStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        let len = bytes.len() as u64;
        let grown = match &mut self.growth {
            Growth::At { position, end } => {
                let new_end = (*end).max(position.saturating_add(len));
                let grown = new_end - *end;
                *position = position.saturating_add(len);
                *end = new_end;
                grown
            }
            Growth::Append => len,
        };
        if !self.ledger.charge(grown) {
            return Err(StreamError::Trap(over_quota(&self.grant, &self.ledger)));
        }
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

/// A file's input stream whose reads are charged to the call's fuel.
struct ChargedInput {
    inner: DynInputStream,
    meter: HostMeter,
}

#[async_trait::async_trait]
impl Pollable for ChargedInput {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[async_trait::async_trait]
impl InputStream for ChargedInput {
    fn read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        let bytes = self.inner.read(size)?;
        self.meter.charge_transfer(bytes.len());
        Ok(bytes)
    }

    async fn blocking_read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        let bytes = self.inner.blocking_read(size).await?;
        self.meter.charge_transfer(bytes.len());
        Ok(bytes)
    }

    // A file stream skips by reading: the bytes skipped are host work like bytes read.
    fn skip(&mut self, nelem: usize) -> Result<usize, StreamError> {
        let skipped = self.inner.skip(nelem)?;
        self.meter.charge_transfer(skipped);
        Ok(skipped)
    }

    async fn blocking_skip(&mut self, nelem: usize) -> Result<usize, StreamError> {
        let skipped = self.inner.blocking_skip(nelem).await?;
        self.meter.charge_transfer(skipped);
        Ok(skipped)
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

/// A file's output stream whose writes are charged to the call's fuel (a quota, where the
/// grant has one, is charged by the `MeteredStream` inside).
struct ChargedOutput {
    inner: DynOutputStream,
    meter: HostMeter,
}

#[async_trait::async_trait]
impl Pollable for ChargedOutput {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[async_trait::async_trait]
impl OutputStream for ChargedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.meter.charge_transfer(bytes.len());
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.inner.check_write()
    }

    fn write_zeroes(&mut self, nelem: usize) -> Result<(), StreamError> {
        // Charged once written: `nelem` is the guest's number, and only a write the stream
        // accepted (at most what `check_write` allows) did the work.
        self.inner.write_zeroes(nelem)?;
        self.meter.charge_transfer(nelem);
        Ok(())
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}
