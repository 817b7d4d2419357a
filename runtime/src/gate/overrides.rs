//! The operator's live overrides: tools, principals or everything killed, and single grants of
//! single components revoked. They are read on every call (a lock-free snapshot), changed only
//! from the admin plane, and persisted atomically in the state directory so that they survive
//! restarts and reloads. Every server on a state directory shares them: a change is made under
//! a lock on the file, to what the file holds then, and each server watches the file
//! ([`OverrideStore::refresh`]) for the changes the others make.

use crate::config::grants::Grants;
use crate::core::kill_scope::KillScope;
use crate::sandbox::live_grants::Revocations;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file, in the state directory.
pub const FILE: &str = "overrides.json";
/// Locked (`flock`) while a server changes the file: changes from servers sharing it queue.
const LOCK_FILE: &str = "overrides.lock";
/// The directory shown to calls in place of a revoked filesystem grant (kept empty).
const STANDIN_DIR: &str = "revoked-grant";
const VERSION: u32 = 1;

/// What an operator has switched off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    version: u32,
    /// Every tool is off.
    pub all: bool,
    /// Tool names, or `[[tool]]` names (all of that component's tools).
    pub tools: BTreeSet<String>,
    pub principals: BTreeSet<String>,
    /// `[[tool]]` names whose resources are off.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub resources: BTreeSet<String>,
    /// `[[tool]]` names whose prompts are off.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub prompts: BTreeSet<String>,
    /// `[[tool]]` name → revoked grants.
    pub revoked: BTreeMap<String, Revoked>,
}

/// What a component offers besides tools, as an operator kills it: all of one kind at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Resources,
    Prompts,
}

impl Family {
    /// The rate bucket of a component's resources or prompts (beside its tools' buckets).
    pub fn rate_key(self, component: &str) -> String {
        match self {
            Family::Resources => format!("{component} (resources)"),
            Family::Prompts => format!("{component} (prompts)"),
        }
    }
}

/// Grants of one component taken away by an operator, by grant id (`fs:/data`,
/// `net:https://api.example.com`, `tcp:10.0.0.5:5432`) or, for secrets, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    pub grants: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

impl Revoked {
    fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.secrets.is_empty()
    }
}

impl Overrides {
    /// The kill that stops `principal` calling `tool` of component `component`, if any.
    pub fn kill_for(&self, principal: &str, tool: &str, component: &str) -> Option<KillScope> {
        if self.all {
            return Some(KillScope::All);
        }
        if self.principals.contains(principal) {
            return Some(KillScope::Principal(principal.to_owned()));
        }
        [tool, component]
            .into_iter()
            .find(|t| self.tools.contains(*t))
            .map(|t| KillScope::Tool(t.to_owned()))
    }

    /// The kill that stops `principal` reaching `component`'s resources or prompts, if any:
    /// everything, the principal, the whole component, or that family of it.
    pub fn offer_kill_for(
        &self,
        principal: &str,
        component: &str,
        family: Family,
    ) -> Option<KillScope> {
        if self.all {
            return Some(KillScope::All);
        }
        if self.principals.contains(principal) {
            return Some(KillScope::Principal(principal.to_owned()));
        }
        if self.tools.contains(component) {
            return Some(KillScope::Tool(component.to_owned()));
        }
        match family {
            Family::Resources if self.resources.contains(component) => {
                Some(KillScope::Resources(component.to_owned()))
            }
            Family::Prompts if self.prompts.contains(component) => {
                Some(KillScope::Prompts(component.to_owned()))
            }
            _ => None,
        }
    }

    /// Are `component`'s resources or prompts listed (not killed for everyone)?
    pub fn offer_listed(&self, component: &str, family: Family) -> bool {
        !self.all
            && !self.tools.contains(component)
            && !match family {
                Family::Resources => self.resources.contains(component),
                Family::Prompts => self.prompts.contains(component),
            }
    }

    /// Is `tool` of `component` listed (not killed for everyone)?
    pub fn tool_listed(&self, tool: &str, component: &str) -> bool {
        !self.all && !self.tools.contains(tool) && !self.tools.contains(component)
    }

    pub fn is_empty(&self) -> bool {
        !self.all
            && self.tools.is_empty()
            && self.principals.is_empty()
            && self.resources.is_empty()
            && self.prompts.is_empty()
            && self.revoked.is_empty()
    }

    /// Add or remove a kill. Returns whether anything changed.
    pub fn set_kill(&mut self, scope: &KillScope, killed: bool) -> bool {
        let set = |s: &mut BTreeSet<String>, v: &str| {
            if killed {
                s.insert(v.to_owned())
            } else {
                s.remove(v)
            }
        };
        match scope {
            KillScope::All => std::mem::replace(&mut self.all, killed) != killed,
            KillScope::Tool(t) => set(&mut self.tools, t),
            KillScope::Principal(p) => set(&mut self.principals, p),
            KillScope::Resources(c) => set(&mut self.resources, c),
            KillScope::Prompts(c) => set(&mut self.prompts, c),
        }
    }

    /// Revoke or restore one grant (or secret) of `component`. Returns whether anything changed.
    pub fn set_revoked(&mut self, component: &str, target: &GrantRef, revoked: bool) -> bool {
        let entry = self.revoked.entry(component.to_owned()).or_default();
        let (set, key) = match target {
            GrantRef::Grant(id) => (&mut entry.grants, id),
            GrantRef::Secret(name) => (&mut entry.secrets, name),
        };
        let changed = if revoked {
            set.insert(key.clone())
        } else {
            set.remove(key)
        };
        if entry.is_empty() {
            self.revoked.remove(component);
        }
        changed
    }
}

/// One revocable thing of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantRef {
    /// A filesystem, network or TCP grant, by id.
    Grant(String),
    /// Every grant of the secret of this name.
    Secret(String),
}

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantRef::Grant(id) => f.write_str(id),
            GrantRef::Secret(name) => write!(f, "secret:{name}"),
        }
    }
}

/// `grants` without what `revoked` takes away.
pub fn without(grants: &Grants, revoked: &Revoked) -> Grants {
    let keep = |id: &str| !revoked.grants.contains(id);
    Grants {
        fs: grants.fs.iter().filter(|g| keep(&g.id)).cloned().collect(),
        net: grants.net.iter().filter(|g| keep(&g.id)).cloned().collect(),
        tcp: grants.tcp.iter().filter(|g| keep(&g.id)).cloned().collect(),
        secrets: grants
            .secrets
            .iter()
            .filter(|s| !revoked.secrets.contains(&s.name))
            .cloned()
            .collect(),
        sample: grants.sample && keep(crate::config::grants::SAMPLE_GRANT_ID),
        // A revoked secret is no longer sent; scrubbing its forms still costs nothing wrong.
        reflections: grants.reflections.clone(),
    }
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot use the operator state file {path}: {problem}. Airlock refuses to start without it \
     (its overrides may disable tools or revoke grants, in every server on its state \
     directory); fix it, or start with --reset-state (no other server running) to discard \
     every override"
)]
pub struct StateError {
    pub path: PathBuf,
    pub problem: String,
}

/// The overrides before and after another server's change was put in force.
pub type Adopted = (Arc<Overrides>, Arc<Overrides>);

/// The overrides in force, and their file.
pub struct OverrideStore {
    /// `None`: kept in memory only (a library user without a state directory).
    path: Option<PathBuf>,
    current: ArcSwap<Overrides>,
    /// Serialises changes: read, change, persist, publish.
    change: Mutex<()>,
    /// The file's content as last read or written (`None`: absent), to notice another
    /// server's change.
    seen: Mutex<Option<Vec<u8>>>,
    /// `<state_dir>/revoked-grant`, empty: shown to calls in place of a revoked `fs` grant.
    standin: Option<PathBuf>,
}

impl OverrideStore {
    /// Overrides kept in memory only, starting empty.
    pub fn in_memory() -> OverrideStore {
        OverrideStore {
            path: None,
            current: ArcSwap::from_pointee(Overrides {
                version: VERSION,
                ..Overrides::default()
            }),
            change: Mutex::new(()),
            seen: Mutex::new(None),
            standin: None,
        }
    }

    /// Load `<state_dir>/overrides.json` (absent: no overrides). With `reset`, whatever is
    /// there is discarded and an empty state written.
    pub fn open(state_dir: &Path, reset: bool) -> Result<OverrideStore, StateError> {
        let path = state_dir.join(FILE);
        let fail = |problem: String| StateError {
            path: path.clone(),
            problem,
        };
        let overrides = if reset {
            let empty = Overrides {
                version: VERSION,
                ..Overrides::default()
            };
            let _locked = lock_file(&path).map_err(|e| fail(format!("cannot lock it: {e}")))?;
            let written =
                persist(&path, &empty).map_err(|e| fail(format!("cannot reset it: {e}")))?;
            tracing::warn!(path = %path.display(), "operator state reset (--reset-state): every override is discarded");
            (empty, Some(written))
        } else {
            let bytes = read_bytes(&path).map_err(|e| fail(format!("it cannot be read: {e}")))?;
            let overrides = match &bytes {
                Some(b) => parse(b).map_err(fail)?,
                None => Overrides {
                    version: VERSION,
                    ..Overrides::default()
                },
            };
            (overrides, bytes)
        };
        let (overrides, seen) = overrides;
        if !overrides.is_empty() {
            tracing::warn!(
                all = overrides.all,
                tools = ?overrides.tools,
                principals = ?overrides.principals,
                revoked = ?overrides.revoked.keys().collect::<Vec<_>>(),
                "operator overrides in force"
            );
        }
        let standin = state_dir.join(STANDIN_DIR);
        match std::fs::create_dir_all(&standin) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StateError {
                    path: standin,
                    problem: format!("cannot create it: {e}"),
                });
            }
        }
        // It must be an empty directory (what a call sees of a revoked grant): anything else
        // there is refused rather than shown.
        let is_dir = std::fs::symlink_metadata(&standin).is_ok_and(|m| m.is_dir());
        if !is_dir || !std::fs::read_dir(&standin).is_ok_and(|mut d| d.next().is_none()) {
            return Err(StateError {
                path: standin,
                problem: "it must be an empty directory (what a call sees in place of a revoked \
                          filesystem grant); remove what is there"
                    .into(),
            });
        }
        Ok(OverrideStore {
            path: Some(path),
            current: ArcSwap::from_pointee(overrides),
            change: Mutex::new(()),
            seen: Mutex::new(seen),
            standin: Some(standin),
        })
    }

    /// Put in force what the file holds now, if another server (or a hand edit) changed it
    /// since this one last read or wrote it. Returns the overrides before and after such a
    /// change; `Err` when the file cannot be used (the overrides in force stay, and the next
    /// change writes the file again from them).
    pub fn refresh(&self) -> Result<Option<Adopted>, StateError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        // A change under way reads the file itself: the next look is soon enough.
        let _one_at_a_time = match self.change.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        let fail = |problem: String| StateError {
            path: path.clone(),
            problem,
        };
        // Read whole: a change is renamed into place, never written in it.
        let bytes = read_bytes(path).map_err(|e| fail(format!("it cannot be read: {e}")))?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if bytes == *seen {
            return Ok(None);
        }
        // Gone after it was there: not "no overrides" (that would lift every kill).
        let Some(bytes) = bytes else {
            return Err(fail("it was removed".into()));
        };
        let next = parse(&bytes).map_err(fail)?;
        *seen = Some(bytes);
        let before = self.current.load_full();
        if *before == next {
            return Ok(None);
        }
        let next = Arc::new(next);
        self.current.store(next.clone());
        Ok(Some((before, next)))
    }

    /// Put `next` (the fleet store's overrides) in force, and keep the file as this server's
    /// copy of them. Returns the overrides before and after, when they differ.
    pub fn adopt(&self, mut next: Overrides) -> std::io::Result<Option<Adopted>> {
        next.version = VERSION;
        let _one_at_a_time = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.current.load_full();
        if *before == next {
            return Ok(None);
        }
        if let Some(path) = &self.path {
            let _locked = lock_file(path)?;
            let written = persist(path, &next)?;
            *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(written);
        }
        let next = Arc::new(next);
        self.current.store(next.clone());
        Ok(Some((before, next)))
    }

    /// The current overrides.
    pub fn current(&self) -> arc_swap::Guard<Arc<Overrides>> {
        self.current.load()
    }

    /// Apply `change`, persist the result (durably) and only then put it in force. Returns
    /// whether anything changed; a failure to persist changes nothing.
    ///
    /// The change applies to what the file holds under its lock, so that changes made by the
    /// servers sharing it at the same time all stay. A file that was removed, or is not valid
    /// (a bad hand edit), does not stop a kill: the change applies to the overrides in force
    /// here, and the file is written again.
    pub fn update(&self, change: impl FnOnce(&mut Overrides) -> bool) -> std::io::Result<bool> {
        let _one_at_a_time = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.path else {
            let mut next = Overrides::clone(&self.current.load());
            let changed = change(&mut next);
            self.current.store(Arc::new(next));
            return Ok(changed);
        };
        let _locked = lock_file(path)?;
        let on_disk = read_bytes(path)?;
        let (mut next, whole) = match on_disk.as_deref().map(parse) {
            Some(Ok(o)) => (o, true),
            Some(Err(problem)) => {
                tracing::error!(
                    path = %path.display(),
                    "the operator state file is not valid ({problem}): the change applies to the overrides in force here, and the file is written again"
                );
                (Overrides::clone(&self.current.load()), false)
            }
            None => (Overrides::clone(&self.current.load()), false),
        };
        let changed = change(&mut next);
        let seen = if changed || !whole {
            Some(persist(path, &next)?)
        } else {
            on_disk
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        // Another server's change read here is in force from now on too.
        self.current.store(Arc::new(next));
        Ok(changed)
    }
}

/// The file's content; `None` when it does not exist.
fn read_bytes(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn parse(bytes: &[u8]) -> Result<Overrides, String> {
    let o: Overrides =
        serde_json::from_slice(bytes).map_err(|e| format!("it is not valid: {e}"))?;
    if o.version != VERSION {
        return Err(format!(
            "version {} is not the supported version {VERSION}",
            o.version
        ));
    }
    Ok(o)
}

/// How long a change waits for another server's change of the file to end.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Hold the lock of the state file beside `path` until the returned file is dropped; waited
/// for at most [`LOCK_WAIT`].
fn lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    let lock_path = path.with_file_name(LOCK_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let f = options.open(&lock_path)?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::other(format!(
                    "{} has been held by another process for over {} s (a server stopped while \
                     changing the overrides?)",
                    lock_path.display(),
                    LOCK_WAIT.as_secs()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Write `overrides` to a temporary file, fsync it, rename it over `path` and fsync the
/// directory: after a crash the file is either the old state or the new one.
fn persist(path: &Path, overrides: &Overrides) -> std::io::Result<Vec<u8>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    let mut text = serde_json::to_vec_pretty(overrides).map_err(std::io::Error::other)?;
    text.push(b'\n');
    f.write_all(&text)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    // The new state is in place; a failed directory sync only weakens its durability.
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), "cannot sync the state directory: {e}");
    }
    Ok(text)
}

impl Revocations for OverrideStore {
    fn grants_left(&self, component: &str, configured: &Arc<Grants>) -> Arc<Grants> {
        match self.current().revoked.get(component) {
            None => configured.clone(),
            Some(revoked) => Arc::new(without(configured, revoked)),
        }
    }

    fn standin_dir(&self) -> Option<&Path> {
        self.standin.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_apply_by_tool_component_principal_or_all() {
        let mut o = Overrides::default();
        assert!(o.kill_for("alice", "files_read", "files").is_none());
        assert!(o.set_kill(&KillScope::Tool("files".into()), true));
        assert!(
            !o.set_kill(&KillScope::Tool("files".into()), true),
            "no change"
        );
        assert_eq!(
            o.kill_for("alice", "files_read", "files"),
            Some(KillScope::Tool("files".into()))
        );
        assert!(!o.tool_listed("files_read", "files"));
        assert!(o.tool_listed("text_stats", "text"));
        o.set_kill(&KillScope::Principal("bob".into()), true);
        assert_eq!(
            o.kill_for("bob", "text_stats", "text"),
            Some(KillScope::Principal("bob".into()))
        );
        o.set_kill(&KillScope::All, true);
        assert_eq!(
            o.kill_for("alice", "text_stats", "text"),
            Some(KillScope::All)
        );
        o.set_kill(&KillScope::All, false);
        o.set_kill(&KillScope::Tool("files".into()), false);
        assert!(o.kill_for("alice", "files_read", "files").is_none());
    }

    #[test]
    fn servers_sharing_the_file_see_each_others_changes_and_lose_none() {
        let dir =
            std::env::temp_dir().join(format!("airlock-overrides-shared-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (a, b) = (
            OverrideStore::open(&dir, false).unwrap(),
            OverrideStore::open(&dir, false).unwrap(),
        );
        let kill = |s: &OverrideStore, t: &str| {
            s.update(|o| o.set_kill(&KillScope::Tool(t.into()), true))
                .unwrap()
        };
        assert!(kill(&a, "one"));
        // b has not looked yet: its own change builds on the file, so a's kill stays.
        assert!(kill(&b, "two"));
        assert_eq!(b.current().tools, ["one", "two"].map(String::from).into());
        let (before, now) = a.refresh().unwrap().expect("b's change is seen");
        assert!(before.tools.contains("one") && !before.tools.contains("two"));
        assert!(now.tools.contains("two"));
        assert!(a.refresh().unwrap().is_none(), "nothing new");
        // A kill already made elsewhere is no change, and is in force here after it.
        assert!(!kill(&a, "two"));

        // The file removed: not "no overrides" (that would lift every kill).
        std::fs::remove_file(dir.join(FILE)).unwrap();
        let e = a.refresh().unwrap_err();
        assert!(e.problem.contains("removed"), "{e}");
        assert!(a.current().tools.contains("one"), "the kills stay in force");
        // The next change writes it again from what is in force.
        assert!(kill(&a, "three"));
        let again = OverrideStore::open(&dir, false).unwrap();
        assert_eq!(
            again.current().tools,
            ["one", "three", "two"].map(String::from).into()
        );
        // A bad hand edit does not stop a kill either.
        std::fs::write(dir.join(FILE), b"{oops").unwrap();
        assert!(b.refresh().is_err());
        assert!(kill(&b, "four"));
        assert!(
            OverrideStore::open(&dir, false)
                .unwrap()
                .current()
                .tools
                .contains("four")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn state_persists_and_a_corrupt_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("airlock-overrides-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = OverrideStore::open(&dir, false).unwrap();
        store
            .update(|o| o.set_revoked("files", &GrantRef::Grant("fs:/data".into()), true))
            .unwrap();
        let again = OverrideStore::open(&dir, false).unwrap();
        assert!(again.current().revoked["files"].grants.contains("fs:/data"));
        again
            .update(|o| o.set_revoked("files", &GrantRef::Grant("fs:/data".into()), false))
            .unwrap();
        assert!(again.current().revoked.is_empty(), "emptied entries go");

        std::fs::write(dir.join(FILE), b"{\"version\":1,\"all\":tru").unwrap();
        let e = OverrideStore::open(&dir, false).err().unwrap();
        assert!(e.to_string().contains("--reset-state"), "{e}");
        let reset = OverrideStore::open(&dir, true).unwrap();
        assert!(reset.current().is_empty());
        assert!(
            OverrideStore::open(&dir, false).is_ok(),
            "reset wrote a good file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
