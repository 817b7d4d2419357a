//! Secrets: values airlock reads at load time from its own environment or from files in a
//! secrets directory (`[secrets]`), handed to tools only as grants say, and redacted from
//! everything that leaves the host. A value is never printed, logged or shown in a `Debug`.

use crate::core::redact::{Redactor, SecretValue};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Shortest value accepted: shorter ones cannot be redacted without mangling ordinary text.
const MIN_LEN: usize = 8;

/// `[secrets]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretsSection {
    /// Directory of secret files, one per secret, named after it.
    dir: Option<PathBuf>,
    /// Secrets read from airlock's own environment.
    #[serde(default)]
    env: Vec<String>,
    /// Secrets read from `<dir>/<NAME>` (a trailing newline is dropped).
    #[serde(default)]
    files: Vec<String>,
}

/// The secrets declared in `[secrets]`, loaded.
#[derive(Debug, Default, Clone)]
pub struct SecretStore {
    secrets: Vec<(String, SecretValue)>,
    /// The directory secret files are read from, if any (no filesystem grant may expose it).
    pub dir: Option<PathBuf>,
}

impl SecretStore {
    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.secrets.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(|(n, _)| n.as_str())
    }

    /// A redactor for every loaded secret. All of them, not only a tool's own: a tool may come
    /// upon another's value (in a granted file, say), and it must not leave the host either.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.secrets.iter().map(|(n, v)| (n.as_str(), v)))
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl SecretStore {
    /// Add one secret, refusing bad names, repeats and values too short to redact.
    pub(crate) fn insert(&mut self, name: &str, value: String) -> Result<(), String> {
        if !valid_name(name) {
            return Err(format!("\"{name}\" must be letters, digits and _"));
        }
        if self.get(name).is_some() {
            return Err(format!("secret {name} is declared twice"));
        }
        if value.len() < MIN_LEN {
            return Err(format!(
                "secret {name} is shorter than {MIN_LEN} bytes, too short to redact reliably"
            ));
        }
        self.secrets
            .push((name.to_owned(), SecretValue::new(value)));
        Ok(())
    }
}

/// Load every declared secret; `dir` resolves against `base`. Errors are (key, problem) and
/// never contain a value.
pub(crate) fn load(section: &SecretsSection, base: &Path) -> Result<SecretStore, (String, String)> {
    let mut store = SecretStore::default();
    for name in &section.env {
        let key = || "secrets › env".to_owned();
        let value = std::env::var(name).map_err(|_| {
            (
                key(),
                format!("secret {name} is not set in airlock's environment"),
            )
        })?;
        store.insert(name, value).map_err(|p| (key(), p))?;
    }
    if section.files.is_empty() {
        return Ok(store);
    }
    let dir = section.dir.as_ref().map(|d| base.join(d)).ok_or_else(|| {
        (
            "secrets › dir".to_owned(),
            "`files` needs `dir`, the directory holding them".to_owned(),
        )
    })?;
    store.dir = Some(dir.clone());
    for name in &section.files {
        let key = || "secrets › files".to_owned();
        if !valid_name(name) {
            return Err((key(), format!("\"{name}\" must be letters, digits and _")));
        }
        let path = dir.join(name);
        let mut value = std::fs::read_to_string(&path).map_err(|e| {
            (
                key(),
                format!("cannot read secret {name} from {}: {e}", path.display()),
            )
        })?;
        // Files written by editors and `echo` end with a newline that is not part of the value.
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        store.insert(name, value).map_err(|p| (key(), p))?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_missing_secrets_are_load_errors() {
        let s: SecretsSection =
            toml::from_str("env = [\"AIRLOCK_TEST_SURELY_UNSET_VAR\"]").unwrap();
        let e = load(&s, Path::new(".")).unwrap_err();
        assert!(e.1.contains("is not set"), "{e:?}");
        let s: SecretsSection = toml::from_str("files = [\"X\"]").unwrap();
        assert!(
            load(&s, Path::new("."))
                .unwrap_err()
                .1
                .contains("needs `dir`")
        );
    }
}
