//! 32-byte secrets kept in the state directory (the audit signing seed, the request-state
//! sealing key): read when present, created with mode 0600 on first start.

use std::io::Write;
use std::path::Path;

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
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(path).map_err(|e| fail("cannot create", &e))?;
            f.write_all(hex::encode(key).as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| fail("cannot write", &e))?;
            Ok((key, true))
        }
        Err(e) => Err(fail("cannot read", &e)),
    }
}
