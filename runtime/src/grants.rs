//! What a component may reach beyond its own memory: `[tool.grants]`. Grants are data with
//! stable ids (`fs:/reports`) so that the operator plane can name and revoke one of them.
//! Everything is resolved and checked at load time.

use serde::Deserialize;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// `[tool.grants]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantsSection {
    #[serde(default)]
    fs: Vec<FsGrantSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FsGrantSection {
    host: PathBuf,
    guest: String,
    mode: FsMode,
}

/// Access a filesystem grant gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsMode {
    /// Read files and list directories.
    Ro,
    /// Also create, write, rename and remove.
    Rw,
}

impl fmt::Display for FsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsMode::Ro => "ro",
            FsMode::Rw => "rw",
        })
    }
}

/// A host directory made visible to the guest at `guest`, as a WASI preopen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsGrant {
    /// `fs:<guest path>`, unique within the component.
    pub id: String,
    /// Canonical host path (symlinks resolved at load).
    pub host: PathBuf,
    pub guest: String,
    pub mode: FsMode,
}

/// Everything one component is granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub fs: Vec<FsGrant>,
}

impl Grants {
    /// True when the component can reach nothing outside itself.
    pub fn is_empty(&self) -> bool {
        self.fs.is_empty()
    }
}

/// Resolve and check the grants of one component. `base` is the configuration's directory;
/// `protected` are host directories no grant may expose (the state directory).
/// Errors are (key, problem).
pub(crate) fn resolve(
    section: &GrantsSection,
    base: &Path,
    protected: &[PathBuf],
) -> Result<Grants, (String, String)> {
    let mut fs: Vec<FsGrant> = Vec::with_capacity(section.fs.len());
    for (i, g) in section.fs.iter().enumerate() {
        let key = format!("grants › fs[{i}]");
        let guest = normalize_guest(&g.guest).map_err(|p| (format!("{key} › guest"), p))?;
        let id = format!("fs:{guest}");
        if fs.iter().any(|f| f.id == id) {
            return Err((
                format!("{key} › guest"),
                format!("\"{guest}\" is granted twice"),
            ));
        }
        let wanted = base.join(&g.host);
        let host = wanted.canonicalize().map_err(|e| {
            (
                format!("{key} › host"),
                format!("{}: {e}", wanted.display()),
            )
        })?;
        if !host.is_dir() {
            return Err((
                format!("{key} › host"),
                format!("{} is not a directory", host.display()),
            ));
        }
        for p in protected {
            if p.starts_with(&host) || host.starts_with(p) {
                return Err((
                    format!("{key} › host"),
                    format!(
                        "{} would expose airlock's own state directory {}",
                        host.display(),
                        p.display()
                    ),
                ));
            }
        }
        fs.push(FsGrant {
            id,
            host,
            guest,
            mode: g.mode,
        });
    }
    Ok(Grants { fs })
}

/// Guest paths are absolute and plain: no `.`, `..` or empty segments.
fn normalize_guest(guest: &str) -> Result<String, String> {
    if !guest.starts_with('/') {
        return Err(format!(
            "\"{guest}\" must be an absolute path such as /data"
        ));
    }
    let mut out = String::new();
    for c in Path::new(guest).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => {
                let s = s
                    .to_str()
                    .ok_or_else(|| format!("\"{guest}\" is not valid UTF-8"))?;
                out.push('/');
                out.push_str(s);
            }
            _ => return Err(format!("\"{guest}\" must not contain `.` or `..`")),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The best absolute form of `p` for comparisons: canonical when it exists.
pub(crate) fn comparable(p: &Path) -> PathBuf {
    p.canonicalize()
        .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> GrantsSection {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn guest_paths_are_normalised_or_refused() {
        assert_eq!(normalize_guest("/data//x/").unwrap(), "/data/x");
        assert_eq!(normalize_guest("/").unwrap(), "/");
        assert!(normalize_guest("data").is_err());
        assert!(normalize_guest("/data/../etc").is_err());
    }

    #[test]
    fn grants_resolve_and_protect_the_state_directory() {
        let dir = std::env::temp_dir().join(format!("airlock-grants-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("file"), b"x").unwrap();
        let g = resolve(
            &section("fs = [{ host = \"data\", guest = \"/d\", mode = \"ro\" }]"),
            &dir,
            &[],
        )
        .unwrap();
        assert_eq!(g.fs[0].id, "fs:/d");
        assert_eq!(g.fs[0].host, dir.join("data").canonicalize().unwrap());

        let e = resolve(
            &section("fs = [{ host = \"file\", guest = \"/d\", mode = \"ro\" }]"),
            &dir,
            &[],
        )
        .unwrap_err();
        assert!(e.1.ends_with("is not a directory"), "{e:?}");
        let e = resolve(
            &section("fs = [{ host = \"nope\", guest = \"/d\", mode = \"ro\" }]"),
            &dir,
            &[],
        )
        .unwrap_err();
        assert_eq!(e.0, "grants › fs[0] › host");
        let state = comparable(&dir.join("data"));
        let e = resolve(
            &section("fs = [{ host = \".\", guest = \"/d\", mode = \"rw\" }]"),
            &dir,
            &[state],
        )
        .unwrap_err();
        assert!(
            e.1.contains("would expose airlock's own state directory"),
            "{e:?}"
        );
        let e = resolve(
            &section("fs = [{ host = \"data\", guest = \"/d\", mode = \"ro\" }, { host = \"data\", guest = \"/d/\", mode = \"rw\" }]"),
            &dir,
            &[],
        )
        .unwrap_err();
        assert!(e.1.contains("granted twice"), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
