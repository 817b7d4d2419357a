//! What a `[[tool]]` entry says about its tools beyond grants and limits: their names
//! (`rename`), their descriptions from WIT doc comments (`wit`), and their settings
//! (`[tool.settings]`, plain strings a tool reads at run time).

use crate::config::secrets::SecretStore;
use std::collections::BTreeMap;
use std::path::Path;

/// Most settings one entry may have.
pub const MAX_SETTINGS: usize = 64;
/// Longest setting name.
pub const MAX_SETTING_NAME: usize = 64;
/// Longest setting value.
pub const MAX_SETTING_VALUE: usize = 4096;
/// Largest WIT file or directory read for doc comments.
const MAX_WIT_BYTES: u64 = 1 << 20;

/// Check `[tool.settings]`: names of `a-z 0-9 _ - .`, values bounded, and none carries a
/// secret (settings are shown as written, in `ctl`, logs and records, so a secret there would
/// leak; secrets go in `[grants] secrets`).
pub fn check_settings(
    settings: &BTreeMap<String, String>,
    secrets: &SecretStore,
) -> Result<(), String> {
    if settings.len() > MAX_SETTINGS {
        return Err(format!(
            "{} settings, more than the {MAX_SETTINGS} allowed",
            settings.len()
        ));
    }
    for (name, value) in settings {
        if name.is_empty()
            || name.len() > MAX_SETTING_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
        {
            return Err(format!(
                "setting name \"{}\" must be 1 to {MAX_SETTING_NAME} characters of a-z 0-9 _ - .",
                name.escape_debug()
            ));
        }
        if value.len() > MAX_SETTING_VALUE {
            return Err(format!(
                "setting \"{name}\" is {} bytes, more than {MAX_SETTING_VALUE}",
                value.len()
            ));
        }
        if secrets.redactor().redact(value) != *value {
            return Err(format!(
                "setting \"{name}\" contains the value of a secret; settings are never secret \
                 (they are shown and logged as written): grant the secret instead"
            ));
        }
    }
    Ok(())
}

/// Check `rename`: each new name a valid tool name.
pub fn check_rename(rename: &BTreeMap<String, String>) -> Result<(), String> {
    for (function, tool) in rename {
        let valid = (1..=64).contains(&tool.len())
            && tool
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !valid {
            return Err(format!(
                "the new name of {function}, \"{}\", must be 1 to 64 characters of A-Z a-z 0-9 _ - .",
                tool.escape_debug()
            ));
        }
    }
    Ok(())
}

/// The doc comment of every function in the WIT at `path` (a `.wit` file or a package
/// directory): world-level exports as `name`, interface functions as `interface/name`.
pub fn wit_docs(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let size = wit_size(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if size > MAX_WIT_BYTES {
        return Err(format!(
            "{} holds {size} bytes of WIT, more than {MAX_WIT_BYTES}",
            path.display()
        ));
    }
    let mut resolve = wit_parser::Resolve::default();
    resolve
        .push_path(path)
        .map_err(|e| format!("cannot parse the WIT in {}: {e:#}", path.display()))?;
    let mut docs = BTreeMap::new();
    let mut add = |id: String, d: &wit_parser::Docs| {
        if let Some(text) = d
            .contents
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            docs.entry(id).or_insert_with(|| text.to_owned());
        }
    };
    for (_, world) in resolve.worlds.iter() {
        for (key, item) in &world.exports {
            if let (wit_parser::WorldKey::Name(name), wit_parser::WorldItem::Function(f)) =
                (key, item)
            {
                add(name.clone(), &f.docs);
            }
        }
    }
    for (_, iface) in resolve.interfaces.iter() {
        let Some(iname) = &iface.name else { continue };
        for (fname, f) in &iface.functions {
            add(format!("{iname}/{fname}"), &f.docs);
        }
    }
    Ok(docs)
}

/// Bytes of the files at `path`: the file, or the directory and its `deps/` (the only
/// subdirectories WIT packages have).
fn wit_size(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let in_deps = path.file_name().is_some_and(|n| n == "deps");
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() && (in_deps || entry.file_name() == "deps") {
            total += wit_size(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}
