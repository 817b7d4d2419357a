//! The filesystem imports a call's writes and opens go through first, linked in front of
//! wasmtime-wasi's own: every open counts against the call's `max_open_files`, and every write
//! into an `rw` grant is charged to its directory's quota ([`crate::sandbox::quota`]) before
//! it happens. wasmtime-wasi then does the work as always (permissions, path resolution that
//! cannot leave the preopen).
//!
//! Which grant a descriptor belongs to is known from how it was made: the preopens are the
//! grants, and every other descriptor comes from `open-at` on one of them.

use crate::core::denial::{Denial, HandleKind};
use crate::core::failure::CallFailure;
use crate::sandbox::quota::{ENTRY_BYTES, Ledger, Writing};
use crate::sandbox::store::{HostState, OpenHandles, end_run};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::{preopens, types};
use wasmtime_wasi::p2::{DynOutputStream, FsResult, OutputStream, Pollable, StreamError};

/// The interfaces shadowed here, at the version wasmtime-wasi links (components importing any
/// 0.2.x version are linked to it).
const TYPES: &str = "wasi:filesystem/types@0.2.12";
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

/// A writable grant of the call with a quota.
struct QuotaGrant {
    id: String,
    guest: String,
    writing: Writing,
}

/// The filesystem state of one call.
pub struct CallFiles {
    quotas: Vec<QuotaGrant>,
    /// Descriptors under a grant with a quota, by table index, to the index in `quotas`. Every
    /// descriptor is made by `get-directories` or `open-at`, which keep this current.
    under: HashMap<u32, usize>,
    open: OpenHandles<Descriptor>,
}

impl CallFiles {
    pub fn new(max_open: u32) -> CallFiles {
        CallFiles {
            quotas: Vec::new(),
            under: HashMap::new(),
            open: OpenHandles::new(max_open),
        }
    }

    /// The call may write the grant `id` (mounted at `guest`) under `ledger`'s quota.
    pub fn add_quota(&mut self, id: &str, guest: &str, ledger: &Arc<Ledger>) {
        self.quotas.push(QuotaGrant {
            id: id.to_owned(),
            guest: guest.to_owned(),
            writing: ledger.writing(),
        });
    }

    /// `bytes` left the tree of the grant `q` (when it has a quota).
    fn free(&self, q: Option<usize>, bytes: u64) {
        if let Some(q) = q {
            self.quotas[q].writing.ledger().free(bytes);
        }
    }

    fn quota_of(&self, fd: u32) -> Option<usize> {
        self.under.get(&fd).copied()
    }

    /// Charge `bytes` of growth under the grant `q`, or end the call.
    fn charge(&self, q: usize, bytes: u64) -> wasmtime::Result<()> {
        let grant = &self.quotas[q];
        let ledger = grant.writing.ledger();
        if ledger.charge(bytes) {
            return Ok(());
        }
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

/// The entry `path` names under the directory `fd`, if any (never following a symlink).
fn stat_at(state: &HostState, fd: &Resource<Descriptor>, path: &str) -> Option<rustix::fs::Stat> {
    match state.table.get(fd) {
        Ok(Descriptor::Dir(d)) => {
            rustix::fs::statat(&*d.dir, path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()
        }
        _ => None,
    }
}

/// Whether the directory `fd` may be written through (its grant is `rw`).
fn writable(state: &HostState, fd: &Resource<Descriptor>) -> bool {
    matches!(state.table.get(fd), Ok(Descriptor::Dir(d)) if !d.perms.write_not_permitted())
}

/// What removing the entry `stat` describes gives back (its data only with its last link).
fn entry_bytes(stat: &rustix::fs::Stat) -> u64 {
    let data = match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
        rustix::fs::FileType::RegularFile if stat.st_nlink > 1 => 0,
        rustix::fs::FileType::RegularFile | rustix::fs::FileType::Symlink => stat.st_size as u64,
        _ => 0,
    };
    ENTRY_BYTES + data
}

type Sent<T> = wasmtime::Result<(Result<T, types::ErrorCode>,)>;

/// Link the guarded functions in front of wasmtime-wasi's (which must be linked already).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let mut inst = linker.instance(PREOPENS)?;
    inst.func_wrap("get-directories", |mut store, (): ()| {
        let state = store.data_mut();
        let dirs = preopens::Host::get_directories(&mut state.filesystem())?;
        for (fd, guest) in &dirs {
            match state.files.quotas.iter().position(|q| &q.guest == guest) {
                Some(q) => state.files.under.insert(fd.rep(), q),
                None => state.files.under.remove(&fd.rep()),
            };
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
                if !state.files.open.room(&state.table) {
                    let limit = state.files.open.limit();
                    state.refuse(Denial::Handles {
                        kind: HandleKind::Files,
                        limit,
                    });
                    return Ok((Err(types::ErrorCode::NotPermitted),));
                }
                let quota = state.files.quota_of(fd.rep());
                // A new entry costs its entry; truncating an old file gives its data back.
                let mut freed = 0;
                if let Some(q) = quota {
                    match stat_at(state, &fd, &path) {
                        None if oflags.contains(types::OpenFlags::CREATE) => {
                            state.files.charge(q, ENTRY_BYTES)?;
                        }
                        Some(st) if oflags.contains(types::OpenFlags::TRUNCATE) => {
                            freed = entry_bytes(&st) - ENTRY_BYTES;
                        }
                        _ => {}
                    }
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
                if let Ok(child) = &r {
                    state.files.free(quota, freed);
                    state.files.open.opened(child);
                    match quota {
                        Some(q) => state.files.under.insert(child.rep(), q),
                        None => state.files.under.remove(&child.rep()),
                    };
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
                if let Some(q) = state.files.quota_of(fd.rep()) {
                    let end = offset.saturating_add(buf.len() as u64);
                    let growth = end.saturating_sub(file_size(state, &fd)?);
                    state.files.charge(q, growth)?;
                }
                let r =
                    types::HostDescriptor::write(&mut state.filesystem(), fd, buf, offset).await;
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
                let quota = state.files.quota_of(fd.rep());
                let mut freed = 0;
                if let Some(q) = quota {
                    let current = file_size(state, &fd)?;
                    state.files.charge(q, size.saturating_sub(current))?;
                    freed = current.saturating_sub(size);
                }
                let r = types::HostDescriptor::set_size(&mut state.filesystem(), fd, size).await;
                if r.is_ok() {
                    state.files.free(quota, freed);
                }
                let sent: Sent<()> = Ok((to_guest(state, r)?,));
                sent
            })
        },
    )?;

    inst.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
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
            Ok((to_guest(state, r)?,))
        },
    )?;

    inst.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            let state = store.data_mut();
            let quota = state.files.quota_of(fd.rep());
            let r = types::HostDescriptor::append_via_stream(&mut state.filesystem(), fd);
            let r = match (r, quota) {
                (Ok(stream), Some(q)) => Ok(state.metered(stream, q, Growth::Append)?),
                (r, _) => r,
            };
            Ok((to_guest(state, r)?,))
        },
    )?;

    inst.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                if let Some(q) = state.files.quota_of(fd.rep()) {
                    state.files.charge(q, ENTRY_BYTES)?;
                }
                let r =
                    types::HostDescriptor::create_directory_at(&mut state.filesystem(), fd, path)
                        .await;
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
                if let Some(q) = state.files.quota_of(fd.rep()) {
                    state
                        .files
                        .charge(q, ENTRY_BYTES.saturating_add(target.len() as u64))?;
                }
                let r =
                    types::HostDescriptor::symlink_at(&mut state.filesystem(), fd, target, path)
                        .await;
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
                    state.files.free(to, 0);
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
                let quota = state.files.quota_of(fd.rep());
                let freed = match quota {
                    Some(_) => stat_at(state, &fd, &path).map_or(0, |st| entry_bytes(&st)),
                    None => 0,
                };
                let r =
                    types::HostDescriptor::unlink_file_at(&mut state.filesystem(), fd, path).await;
                if r.is_ok() {
                    state.files.free(quota, freed);
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
                let quota = state.files.quota_of(fd.rep());
                let r =
                    types::HostDescriptor::remove_directory_at(&mut state.filesystem(), fd, path)
                        .await;
                if r.is_ok() {
                    state.files.free(quota, ENTRY_BYTES);
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
            (Some(a), Some(b)) => Arc::ptr_eq(
                self.quotas[a].writing.ledger(),
                self.quotas[b].writing.ledger(),
            ),
            _ => false,
        }
    }
}

impl HostState {
    /// Put `stream` (just made by wasmtime-wasi for a file under the grant `q`) behind a meter.
    fn metered(
        &mut self,
        stream: Resource<DynOutputStream>,
        q: usize,
        growth: Growth,
    ) -> wasmtime::Result<Resource<DynOutputStream>> {
        let inner = self.table.delete(stream)?;
        let grant = &self.files.quotas[q];
        let metered: DynOutputStream = Box::new(MeteredStream {
            inner,
            ledger: grant.writing.ledger().clone(),
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
