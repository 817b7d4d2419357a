//! Files Airlock keeps for itself: the private state directory, and the 32-byte secrets kept
//! in it (the audit signing seed, the request-state sealing key), read when present and
//! created with mode 0600 on first start.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Create the state directory (mode 0700) or check an existing one: it holds the admin sockets
/// and the operator state, so nobody else may be able to write in it.
pub fn private_state_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the state directory {}", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "the state directory {} belongs to uid {}, not to this process (uid {me})",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "the state directory {} is writable by other users (mode {:o}); make it 0700",
            dir.display(),
            meta.mode() & 0o777
        );
    }
    Ok(())
}

/// The key in `path` (64 hex characters), created from the OS's entropy when the file does
/// not exist. Returns the key and whether it was just created.
pub fn load_or_create(path: &Path) -> Result<([u8; 32], bool), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what} {}: {e}", path.display());
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| fail("bad key in", &"not 32 hex bytes"))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            getrandom::getrandom(&mut key).map_err(|e| fail("cannot create", &e))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| fail("cannot create", &e))?;
            }
            // Written whole under a name of its own, then linked into place: a server starting
            // at the same moment on the same state directory either links its own first or
            // reads this one, and nobody reads a key half written. What is returned is what
            // the file holds (another server's key, if it linked first).
            let tmp = path.with_file_name(format!(
                ".{}.{}.tmp",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
                &crate::core::ids::random_id()[..12]
            ));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let written = options.open(&tmp).and_then(|mut f| {
                f.write_all(hex::encode(key).as_bytes())?;
                f.sync_all()
            });
            let linked = written.and_then(|_| std::fs::hard_link(&tmp, path));
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok((key, true)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_or_create(path).map(|(key, _)| (key, false))
                }
                // A filesystem (or a confinement) without links: created in place, never over
                // another's.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied
                    ) =>
                {
                    let mut options = std::fs::OpenOptions::new();
                    options.write(true).create_new(true);
                    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                    match options.open(path) {
                        Ok(mut f) => {
                            f.write_all(hex::encode(key).as_bytes())
                                .and_then(|_| f.sync_all())
                                .map_err(|e| fail("cannot write", &e))?;
                            Ok((key, true))
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            load_or_create(path).map(|(key, _)| (key, false))
                        }
                        Err(e) => Err(fail("cannot create", &e)),
                    }
                }
                Err(e) => Err(fail("cannot create", &e)),
            }
        }
        Err(e) => Err(fail("cannot read", &e)),
    }
}

/// All of the open `file` (at `path`, for messages), if it is at most `max` bytes: what is
/// read to learn that is never more than one byte past the limit.
pub fn read_at_most(file: std::fs::File, max: u64, path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    Ok(bytes)
}

/// A file Airlock trusts (its configuration, a component, the JWKS) must not be writable by
/// anyone but Airlock's own user or root: whoever can rewrite it controls what Airlock
/// does. The file and the directory holding it (which decides who may replace it) are
/// checked. The error completes "the configuration …".
pub fn trusted_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let resolved = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = resolved.parent().unwrap_or(Path::new("/"));
    // A symlink on the way decides what Airlock reads as much as the file does: whoever may
    // replace it (its directory's writers) may point it elsewhere.
    let links = links_on_the_way(path);
    let link_dirs = links
        .iter()
        .filter_map(|l| l.parent())
        .map(|d| ("directory ", d));
    for (what, p) in [("", resolved.as_path()), ("directory ", dir)]
        .into_iter()
        .chain(link_dirs)
    {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let owner = meta.uid();
        if owner != me && owner != 0 {
            return Err(format!(
                "{} is in {what}{}, which belongs to uid {owner}, not to this process (uid {me}) \
                 or root: that user could rewrite it",
                path.display(),
                p.display()
            ));
        }
        // Group- or world-writable; a directory with the sticky bit (/tmp) keeps others from
        // replacing a file they do not own.
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
        if meta.mode() & 0o022 != 0 && !sticky_dir {
            return Err(format!(
                "{} is in {what}{}, which other users may write (mode {:o}); make it writable by \
                 its owner only",
                path.display(),
                p.display(),
                meta.mode() & 0o7777
            ));
        }
        // In a sticky directory, the owner of a link may still replace it.
        if sticky_dir {
            for link in links.iter().filter(|l| l.parent() == Some(p)) {
                let owner = std::fs::symlink_metadata(link)
                    .map_err(|e| format!("{}: {e}", link.display()))?
                    .uid();
                if owner != me && owner != 0 {
                    return Err(format!(
                        "{} is reached through the link {}, which belongs to uid {owner}, not to \
                         this process (uid {me}) or root: that user could point it elsewhere",
                        path.display(),
                        link.display()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every symlink followed on the way to `path`, each named by its resolved directory and its
/// own name (what a grant would be compared with). Whoever can replace one of them chooses
/// what Airlock reads, so each counts as one of Airlock's own files. Links that point to
/// links are followed too, up to the kernel's own limit of 40.
pub fn links_on_the_way(path: &Path) -> Vec<PathBuf> {
    let mut links = Vec::new();
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut budget = MAX_LINKS_FOLLOWED;
    resolve_noting_links(&absolute, &mut links, &mut budget);
    links
}

/// Links followed in one resolution at most, as the kernel allows (ELOOP past it): without a
/// total, links that each name the previous one twice would be followed 2^depth times.
const MAX_LINKS_FOLLOWED: u32 = 40;

/// `path` (absolute) resolved the way the kernel does, with each link it passes pushed to
/// `links`. A part that does not exist is kept as written.
fn resolve_noting_links(path: &Path, links: &mut Vec<PathBuf>, budget: &mut u32) -> PathBuf {
    let mut at = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::RootDir | Component::Prefix(_) => at = PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop();
            }
            Component::Normal(name) => {
                let next = at.join(name);
                let is_link =
                    std::fs::symlink_metadata(&next).is_ok_and(|m| m.file_type().is_symlink());
                match std::fs::read_link(&next) {
                    Ok(target) if is_link && *budget > 0 => {
                        *budget -= 1;
                        links.push(next);
                        // An absolute target replaces `at`; a relative one is read from it.
                        let target = at.join(target);
                        at = resolve_noting_links(&target, links, budget);
                    }
                    _ => at = next,
                }
            }
        }
    }
    at
}
