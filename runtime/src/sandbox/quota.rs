//! Quotas on writable grants: the bytes a granted directory tree may hold. One tally per
//! directory, shared by every call of every tool that writes it, so a tool cannot fill the disk
//! one call at a time.
//!
//! What a tree holds is measured by walking it, relative to directory descriptors and never
//! following a link or leaving the filesystem: the size of every file (a file with several
//! links once), plus [`ENTRY_BYTES`] for every file, directory and link. A walk happens at load
//! and when the last call writing the tree ends, and counts only if no call wrote the tree
//! while it ran and nothing in it failed; otherwise the tally keeps what it had (it never
//! shrinks on a guess). Between measurements each write is charged before it happens, by the
//! growth it can cause (a write past a file's end, a longer `set-size`, a new entry); an
//! operation that fails gives its charge back. Nothing the tool removes or truncates is given
//! back before the next measurement: room comes back after the call, never from the tool's own
//! account of what it freed.

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
    /// Bytes; set again when a reload changes it.
    quota: std::sync::atomic::AtomicU64,
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    /// What the last measurement found.
    measured: u64,
    /// Charged since it.
    charged: u64,
    /// Calls holding the directory writable now.
    writers: u32,
    /// Counts every call that began writing: a walk that saw it change does not count.
    generation: u64,
    /// Something may have changed since the last measurement.
    dirty: bool,
    /// A walk is under way (one at a time).
    measuring: bool,
}

impl Ledger {
    /// A ledger for `host`, measured now (blocking: call at load).
    pub fn measured(host: &Path, quota: ByteSize) -> Arc<Ledger> {
        let ledger = Arc::new(Ledger {
            host: host.to_path_buf(),
            quota: std::sync::atomic::AtomicU64::new(quota.bytes()),
            tally: Mutex::new(Tally {
                dirty: true,
                ..Tally::default()
            }),
        });
        ledger.measure();
        ledger
    }

    pub fn quota(&self) -> ByteSize {
        ByteSize(self.quota.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// What the tree holds, as far as the ledger knows (an upper bound between measurements).
    pub fn held(&self) -> u64 {
        let t = self.lock();
        t.measured.saturating_add(t.charged)
    }

    /// Take `bytes` of growth out of the quota; `false` (nothing taken) when it does not fit.
    pub fn charge(&self, bytes: u64) -> bool {
        if bytes == 0 {
            return true;
        }
        let mut t = self.lock();
        if t.measured.saturating_add(t.charged).saturating_add(bytes) > self.quota().bytes() {
            return false;
        }
        t.charged += bytes;
        t.dirty = true;
        true
    }

    /// Give back a charge whose operation failed (nothing was written for it).
    pub fn uncharge(&self, bytes: u64) {
        let mut t = self.lock();
        t.charged = t.charged.saturating_sub(bytes);
    }

    /// Something left the tree: the next measurement will see it.
    pub fn touch(&self) {
        self.lock().dirty = true;
    }

    /// A call that may write the tree; dropping it (the call's end) measures the tree again if
    /// it was the last writer and anything may have changed.
    pub fn writing(self: &Arc<Self>) -> Writing {
        let mut t = self.lock();
        t.writers += 1;
        t.generation += 1;
        Writing {
            ledger: self.clone(),
            measure: true,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Walk the tree and take what it holds as the new basis, if no call wrote it meanwhile
    /// and the walk saw all of it.
    fn measure(&self) {
        let generation = {
            let mut t = self.lock();
            if t.writers > 0 || !t.dirty || t.measuring {
                return;
            }
            t.measuring = true;
            t.generation
        };
        let found = tree_bytes(&self.host);
        let mut t = self.lock();
        t.measuring = false;
        match found {
            Ok(bytes) if t.writers == 0 && t.generation == generation => {
                t.measured = bytes;
                t.charged = 0;
                t.dirty = false;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                directory = %self.host.display(),
                "cannot measure a quota'd grant ({e}); its tally keeps what it had"
            ),
        }
    }
}

/// One call's hold on a writable tree (see [`Ledger::writing`]).
pub struct Writing {
    ledger: Arc<Ledger>,
    measure: bool,
}

impl Writing {
    /// Stop writing without measuring the tree (its tally keeps what it has, and stays due for
    /// a measurement).
    pub fn release_unmeasured(mut self) {
        self.measure = false;
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let remeasure = {
            let mut t = self.ledger.lock();
            t.writers -= 1;
            t.dirty |= !self.measure;
            self.measure && t.writers == 0 && t.dirty
        };
        if !remeasure {
            return;
        }
        let ledger = self.ledger.clone();
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

/// Every ledger in use, by directory: a directory granted to two tools, or kept across a
/// reload, has one tally (a reload that changes its quota changes it in place).
fn shared(host: &Path, quota: ByteSize) -> Arc<Ledger> {
    static ALL: Mutex<Vec<std::sync::Weak<Ledger>>> = Mutex::new(Vec::new());
    let existing = {
        let mut all = ALL.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.iter()
            .filter_map(|w| w.upgrade())
            .find(|l| l.host == host)
    };
    if let Some(l) = existing {
        l.quota
            .store(quota.bytes(), std::sync::atomic::Ordering::Relaxed);
        // Measured again at every load (when no call writes it): an operator may have
        // cleaned the directory up.
        l.touch();
        l.measure();
        return l;
    }
    let l = Ledger::measured(host, quota);
    ALL.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::downgrade(&l));
    l
}

/// How deep a measured tree may go (each level holds a descriptor while the walk is below it);
/// a deeper one fails the walk, and the tally keeps what it had.
const MAX_DEPTH: usize = 128;

/// What the tree under `root` holds (see the module's notes). Every directory is opened
/// relative to its parent's descriptor, without following links; only the directories above
/// the one being read are held open. Any entry that cannot be read, a mount inside the tree
/// (another filesystem, which the tally could not bound) or a tree deeper than [`MAX_DEPTH`]
/// fails the walk: skipping would count less than there is.
pub fn tree_bytes(root: &Path) -> std::io::Result<u64> {
    let top = rustix::fs::openat(rustix::fs::CWD, root, WALK_FLAGS, rustix::fs::Mode::empty())?;
    let mut walk = Walk {
        device: rustix::fs::fstat(&top)?.st_dev,
        total: 0,
        linked: HashSet::new(),
    };
    walk.dir(&top, 0)?;
    Ok(walk.total)
}

const WALK_FLAGS: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::DIRECTORY)
    .union(rustix::fs::OFlags::NOFOLLOW)
    .union(rustix::fs::OFlags::CLOEXEC);

struct Walk {
    device: u64,
    total: u64,
    /// Files with several links already counted.
    linked: HashSet<(u64, u64)>,
}

impl Walk {
    fn dir(&mut self, dir: &rustix::fd::OwnedFd, depth: usize) -> std::io::Result<()> {
        use rustix::fs::{AtFlags, Dir, FileType, Mode, openat, statat};
        if depth > MAX_DEPTH {
            return Err(std::io::Error::other(format!(
                "the tree is deeper than {MAX_DEPTH} levels"
            )));
        }
        let mut below: Vec<std::ffi::CString> = Vec::new();
        for entry in Dir::read_from(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let st = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
            self.total = self.total.saturating_add(ENTRY_BYTES);
            let size = u64::try_from(st.st_size).unwrap_or(0);
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory if st.st_dev != self.device => {
                    return Err(std::io::Error::other(
                        "another filesystem is mounted inside the tree",
                    ));
                }
                FileType::Directory => below.push(name.to_owned()),
                FileType::RegularFile => {
                    // A file with several links holds its data once.
                    if st.st_nlink > 1 && !self.linked.insert((st.st_dev, st.st_ino)) {
                        continue;
                    }
                    self.total = self.total.saturating_add(size);
                }
                FileType::Symlink => self.total = self.total.saturating_add(size),
                _ => {}
            }
        }
        for name in below {
            let sub = openat(dir, name.as_c_str(), WALK_FLAGS, Mode::empty())?;
            self.dir(&sub, depth + 1)?;
        }
        Ok(())
    }
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
        assert_eq!(tree_bytes(&d).unwrap(), 4 * ENTRY_BYTES + 1000 + 5);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn charges_stop_at_the_quota_and_a_measurement_replaces_them() {
        let d = scratch("charge");
        std::fs::write(d.join("a"), vec![0u8; 1000]).unwrap();
        let l = Ledger::measured(&d, ByteSize(ENTRY_BYTES + 3000));
        assert_eq!(l.held(), ENTRY_BYTES + 1000);
        let w = l.writing();
        assert!(l.charge(2000));
        assert!(!l.charge(1), "one byte past the quota");
        l.uncharge(500);
        assert!(l.charge(500), "a failed operation's charge came back");
        // Removing the file gives nothing back while the call writes...
        std::fs::remove_file(d.join("a")).unwrap();
        l.touch();
        assert!(!l.charge(1));
        // ...and everything once the last writer is done and the tree is measured.
        drop(w);
        assert_eq!(l.held(), 0);
        assert!(l.charge(3000));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_tree_deeper_than_the_walk_goes_fails_the_walk() {
        let d = scratch("deep");
        let mut p = d.clone();
        for _ in 0..=MAX_DEPTH + 1 {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        assert!(tree_bytes(&d).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_walk_that_cannot_see_everything_keeps_the_tally() {
        let d = scratch("unreadable");
        let l = Ledger::measured(&d, ByteSize(1 << 20));
        let w = l.writing();
        assert!(l.charge(10_000));
        // The tree is gone from under the ledger: the walk fails, the charges stay.
        std::fs::remove_dir_all(&d).unwrap();
        drop(w);
        assert_eq!(l.held(), 10_000);
    }
}
