//! Quotas on writable grants: the bytes a granted directory tree may hold. One tally per
//! directory, shared by every call of every tool that writes it, so a tool cannot fill the disk
//! one call at a time.
//!
//! What a tree holds is measured by walking it (at load, and after calls that wrote to it):
//! the size of every file (a file with several links once), plus [`ENTRY_BYTES`] for every
//! file, directory and link. Between measurements each write is charged before it happens,
//! by the growth it can cause (a write past a file's end, a longer `set-size`, a new entry);
//! overwriting bytes a file already has is free. The charges are kept until the next
//! measurement replaces them, so a tool that deletes files gets the room back after its call.

use crate::core::units::ByteSize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What one entry (file, directory, link) costs beyond its data: a tree of empty files is not
/// free (each takes an inode and a directory slot).
pub const ENTRY_BYTES: u64 = 4096;

/// The tally of one granted directory.
pub struct Ledger {
    host: PathBuf,
    quota: ByteSize,
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    /// What the last measurement found.
    measured: u64,
    /// Everything ever charged and freed (monotonic), and how much of each the last
    /// measurement already covers: held = measured + (charged - covered) - (freed - freed_covered).
    charged: u64,
    covered: u64,
    freed: u64,
    freed_covered: u64,
    /// Calls holding the directory writable now; the tree is measured again when the last of
    /// them ends after a charge.
    writers: u32,
    /// Charged, or removed from, since the last measurement began.
    dirty: bool,
}

impl Tally {
    fn held(&self) -> u64 {
        self.measured
            .saturating_add(self.charged - self.covered)
            .saturating_sub(self.freed - self.freed_covered)
    }
}

impl Ledger {
    /// A ledger for `host`, measured now (blocking: call at load).
    pub fn measured(host: &Path, quota: ByteSize) -> Arc<Ledger> {
        let ledger = Arc::new(Ledger {
            host: host.to_path_buf(),
            quota,
            tally: Mutex::new(Tally::default()),
        });
        ledger.measure();
        ledger
    }

    pub fn quota(&self) -> ByteSize {
        self.quota
    }

    /// What the tree holds, as far as the ledger knows (an upper bound between measurements).
    pub fn held(&self) -> u64 {
        self.lock().held()
    }

    /// Take `bytes` of growth out of the quota; `false` (nothing taken) when it does not fit.
    pub fn charge(&self, bytes: u64) -> bool {
        if bytes == 0 {
            return true;
        }
        let mut t = self.lock();
        if t.held().saturating_add(bytes) > self.quota.bytes() {
            return false;
        }
        t.charged = t.charged.saturating_add(bytes);
        t.dirty = true;
        true
    }

    /// `bytes` left the tree (a file removed or cut short): the room is given back now, and
    /// the next measurement checks it.
    pub fn free(&self, bytes: u64) {
        let mut t = self.lock();
        t.freed = t.freed.saturating_add(bytes);
        t.dirty = true;
    }

    /// A call that may write the tree; dropping it (the call's end) measures the tree again if
    /// it was the last writer and anything was charged.
    pub fn writing(self: &Arc<Self>) -> Writing {
        self.lock().writers += 1;
        Writing(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Walk the tree and take what it holds as the new basis. Charges made while the walk runs
    /// stay on top of it (they may be counted twice until the next measurement: never less).
    fn measure(&self) {
        let (charged, freed) = {
            let mut t = self.lock();
            t.dirty = false;
            (t.charged, t.freed)
        };
        let found = tree_bytes(&self.host);
        let mut t = self.lock();
        // A newer measurement may have finished first; keep the newer basis.
        if charged >= t.covered && freed >= t.freed_covered {
            t.measured = found;
            t.covered = charged;
            t.freed_covered = freed;
        }
    }
}

/// One call's hold on a writable tree (see [`Ledger::writing`]).
pub struct Writing(Arc<Ledger>);

impl Writing {
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.0
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let remeasure = {
            let mut t = self.0.lock();
            t.writers -= 1;
            t.writers == 0 && t.dirty
        };
        if !remeasure {
            return;
        }
        let ledger = self.0.clone();
        // Walking a tree is blocking work: off the async threads when there are any.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(move || ledger.measure());
            }
            Err(_) => ledger.measure(),
        }
    }
}

/// The ledgers of one component's writable grants, by host directory. Ledgers of the same
/// directory are shared across components and reloads (one tally per directory).
#[derive(Default)]
pub struct Ledgers(HashMap<PathBuf, Arc<Ledger>>);

impl Ledgers {
    /// Ledgers for the `rw` grants in `grants` (measured now, blocking: call at load).
    pub fn for_grants(grants: &crate::config::grants::Grants) -> Ledgers {
        let mut map = HashMap::new();
        for g in &grants.fs {
            if let Some(quota) = g.quota {
                map.entry(g.host.clone())
                    .or_insert_with(|| shared(&g.host, quota));
            }
        }
        Ledgers(map)
    }

    pub fn get(&self, host: &Path) -> Option<&Arc<Ledger>> {
        self.0.get(host)
    }
}

/// Every ledger in use, by directory: a directory granted to two tools (or kept across a
/// reload) has one tally. A changed quota starts a new ledger for the directory.
fn shared(host: &Path, quota: ByteSize) -> Arc<Ledger> {
    static ALL: Mutex<Vec<std::sync::Weak<Ledger>>> = Mutex::new(Vec::new());
    let mut all = ALL.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|w| w.strong_count() > 0);
    if let Some(l) = all
        .iter()
        .filter_map(|w| w.upgrade())
        .find(|l| l.host == host && l.quota == quota)
    {
        // Measured again at every load: an operator may have cleaned the directory up.
        l.measure();
        return l;
    }
    let l = Ledger::measured(host, quota);
    all.push(Arc::downgrade(&l));
    l
}

/// What the tree under `root` holds (see the module's notes); entries that cannot be read are
/// skipped. Symlinks are counted, never followed.
pub fn tree_bytes(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total: u64 = 0;
    let mut linked: HashSet<(u64, u64)> = HashSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            total = total.saturating_add(ENTRY_BYTES);
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                // A file with several links holds its data once.
                if meta.nlink() > 1 && !linked.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                total = total.saturating_add(meta.len());
            } else if meta.is_symlink() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("airlock-quota-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_tree_holds_its_files_and_entries() {
        let d = scratch("tree");
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/a"), vec![0u8; 1000]).unwrap();
        std::fs::hard_link(d.join("sub/a"), d.join("b")).unwrap();
        std::os::unix::fs::symlink("sub/a", d.join("c")).unwrap();
        // sub, a, b, c: four entries; a's data once; the link's target text.
        assert_eq!(tree_bytes(&d), 4 * ENTRY_BYTES + 1000 + 5);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn charges_stop_at_the_quota_and_a_measurement_replaces_them() {
        let d = scratch("charge");
        std::fs::write(d.join("a"), vec![0u8; 1000]).unwrap();
        let l = Ledger::measured(&d, ByteSize(ENTRY_BYTES + 3000));
        assert_eq!(l.held(), ENTRY_BYTES + 1000);
        assert!(l.charge(2000));
        assert!(!l.charge(1), "one byte past the quota");
        assert_eq!(l.held(), ENTRY_BYTES + 3000);
        // Freed room is given back at once.
        l.free(1500);
        assert!(l.charge(1500));
        assert!(!l.charge(1));
        // The tool deleted the file meanwhile: the call's end measures again.
        std::fs::remove_file(d.join("a")).unwrap();
        let w = l.writing();
        drop(w);
        assert_eq!(l.held(), 0);
        assert!(l.charge(3000));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
