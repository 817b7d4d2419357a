//! Evidence bundles (`airlock audit export`): the records of a time window, exactly as the log
//! holds them, with the checkpoints that sign them, the configuration's digest and the
//! overrides in force, signed as a whole with the audit key. `airlock audit verify BUNDLE`
//! checks the signature, the chain inside the window and every checkpoint.
//!
//! The file is JSON lines:
//! 1. the header: `{"airlock_evidence":2, "created", "since", "until", "config", "overrides", "key"}`;
//! 2. for each chain of the audit directory with records in the window (each server on it
//!    writes its own), first chain first:
//!    - `{"airlock_evidence_chain": N}`;
//!    - the records, byte for byte as in the log: from the first written at or after `since`
//!      to the last written at or before `until`, then on to the next checkpoint (so that the
//!      window's last record is under a signed head), or to the end of a log still being
//!      written;
//!    - the summary: `{"airlock_evidence_end": {"first_seq", "last_seq", "records",
//!      "checkpoints", "signed_head"}}`;
//! 3. `{"signature": hex}`: ed25519 over `airlock-evidence-bundle\0` and the sha256 of the
//!    lines before it (a domain of its own: no checkpoint signature can pass for it, nor the
//!    reverse).
//!
//! Format 1 (one chain, no `airlock_evidence_chain` line) is still verified.

use crate::gate::audit::{ChainCheck, verifying_key};
use crate::gate::audit_view::record_time;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const FORMAT: u64 = 2;
const DOMAIN: &[u8] = b"airlock-evidence-bundle\0";
/// Records taken after the window while looking for the checkpoint that signs it (a log that
/// checkpoints every `checkpoint_every` records, at most 1,000,000, has one sooner unless it
/// is still being written).
const MAX_AFTER: u64 = 1_000_000;

/// What an export or a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    pub checkpoints: u64,
    /// Whether the last record of the bundle is a checkpoint (the window's head is signed).
    pub signed_head: bool,
}

/// What the bundle says about the server beside the records.
pub struct Context<'a> {
    /// Where the configuration came from, and its sha256.
    pub config_origin: &'a str,
    pub config_sha256: &'a str,
    /// `overrides.json` as it is now (`null` when there is none).
    pub overrides: Value,
}

/// One chain's part of a bundle.
pub type ChainSummary = (u32, Summary);

/// Write the bundle of the records of `chains` (each chain's number and files, oldest first)
/// written between `since` and `until` to `out` (a new file: an existing one is not replaced).
pub fn export(
    chains: &[(u32, Vec<PathBuf>)],
    since: SystemTime,
    until: SystemTime,
    context: Context<'_>,
    key: &SigningKey,
    out: &Path,
) -> Result<Vec<ChainSummary>, String> {
    if out.exists() {
        return Err(format!("cannot create {}: it exists", out.display()));
    }
    // Written beside its name (its own: two exports at once do not share it) and linked into
    // place once whole: an export that fails leaves nothing that looks like a bundle.
    let partial = out.with_file_name(format!(
        ".{}.{}-{}.partial",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("bundle"),
        std::process::id(),
        &crate::core::ids::random_id()[..8]
    ));
    let result = write_bundle(chains, since, until, context, key, &partial);
    let placed = result.and_then(|s| {
        // A link fails if `out` appeared meanwhile; a filesystem without links (vfat) gets a
        // rename after the check above.
        let linked = match std::fs::hard_link(&partial, out) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
            Err(_) if !out.exists() => std::fs::rename(&partial, out),
            other => other,
        };
        linked.map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(s)
    });
    // Ours only (its name is this export's); gone already after a rename.
    let _ = std::fs::remove_file(&partial);
    placed
}

fn write_bundle(
    chains: &[(u32, Vec<PathBuf>)],
    since: SystemTime,
    until: SystemTime,
    context: Context<'_>,
    key: &SigningKey,
    out: &Path,
) -> Result<Vec<ChainSummary>, String> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let mut hash = Sha256::new();
    let mut emit = |line: &str| -> Result<(), String> {
        hash.update(line.as_bytes());
        hash.update(b"\n");
        writeln!(writer, "{line}").map_err(|e| format!("cannot write {}: {e}", out.display()))
    };
    let header = json!({
        "airlock_evidence": FORMAT,
        "created": time(SystemTime::now()),
        "since": time(since),
        "until": time(until),
        "config": {"origin": context.config_origin, "sha256": context.config_sha256},
        "overrides": context.overrides,
        "key": hex::encode(key.verifying_key().as_bytes()),
    });
    emit(&header.to_string())?;
    let mut summaries = Vec::new();
    for (n, files) in chains {
        // A chain with no records in the window is left out.
        let Some(summary) = chain_window(*n, files, since, until, &key.verifying_key(), &mut emit)?
        else {
            continue;
        };
        let end = json!({"airlock_evidence_end": {
            "first_seq": summary.first_seq,
            "last_seq": summary.last_seq,
            "records": summary.records,
            "checkpoints": summary.checkpoints,
            "signed_head": summary.signed_head,
        }});
        emit(&end.to_string())?;
        summaries.push((*n, summary));
    }
    if summaries.is_empty() {
        return Err(format!(
            "the log has no records written between {} and {}",
            time(since),
            time(until)
        ));
    }
    let signature = key.sign(&message(&hash.finalize()));
    writeln!(
        writer,
        "{}",
        json!({"signature": hex::encode(signature.to_bytes())})
    )
    .and_then(|()| writer.flush())
    .and_then(|()| writer.get_ref().sync_all())
    .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(summaries)
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Emit the records of chain `n`'s `files` in the window, after the chain's start line, and
/// say what they are (`None`: the chain has none there, and nothing was emitted). What is
/// taken is verified first: a log edited after its last checkpoint, or damaged inside the
/// window, is not vouched for.
fn chain_window(
    n: u32,
    files: &[PathBuf],
    since: SystemTime,
    until: SystemTime,
    verifying: &ed25519_dalek::VerifyingKey,
    emit: &mut dyn FnMut(&str) -> Result<(), String>,
) -> Result<Option<Summary>, String> {
    let mut chain: Option<ChainCheck> = None;
    // A line that is not a record: only the log's last line may be one (a write cut short).
    let mut torn: Option<String> = None;
    let mut summary: Option<Summary> = None;
    // Past `until`, records are taken up to the next checkpoint (the chain to it is what its
    // signature covers), at most MAX_AFTER of them.
    let mut closing = false;
    let mut after = 0u64;
    'files: for path in files {
        let mut reader = BufReader::new(
            std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let read = reader
                .read_until(b'\n', &mut raw)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            // The end of the file, or a line still being written (a live log): not a record,
            // and nothing after it in this file is either.
            if read == 0 || raw.last() != Some(&b'\n') {
                break;
            }
            raw.pop();
            let line = String::from_utf8_lossy(&raw).into_owned();
            if let Some(bad) = &torn {
                return Err(format!(
                    "the log is damaged ({bad}): `airlock audit verify` says where; nothing \
                     was exported"
                ));
            }
            let parsed = serde_json::from_str::<Value>(&line).ok();
            let Some((r, at, seq)) = parsed.and_then(|r| {
                let (at, seq) = (record_time(&r)?, r["seq"].as_u64()?);
                Some((r, at, seq))
            }) else {
                if summary.is_some() {
                    torn = Some(format!("a line of {} is not a record", path.display()));
                }
                continue;
            };
            let checkpoint = r["kind"] == "checkpoint";
            match &summary {
                // A clock set back may have put later records inside the window.
                None if at < since || at > until => continue,
                None => {}
                // The window ended on a checkpoint: nothing more is needed.
                Some(s) if at > until && s.signed_head => break 'files,
                Some(_) if at > until => {
                    closing = true;
                    after += 1;
                    if after > MAX_AFTER {
                        break 'files;
                    }
                }
                Some(_) => {}
            }
            chain
                .get_or_insert_with(|| ChainCheck::from(*verifying, seq))
                .push(&line, &format!("{} record {seq}", path.display()))
                .map_err(|e| format!("the log does not verify: {e}; nothing was exported"))?;
            if summary.is_none() {
                emit(&json!({ "airlock_evidence_chain": n }).to_string())?;
            }
            emit(&line)?;
            let s = summary.get_or_insert(Summary {
                first_seq: seq,
                last_seq: seq,
                records: 0,
                checkpoints: 0,
                signed_head: false,
            });
            s.last_seq = seq;
            s.signed_head = checkpoint;
            if checkpoint {
                s.checkpoints += 1;
            } else {
                s.records += 1;
            }
            if closing && checkpoint {
                break 'files;
            }
        }
    }
    Ok(summary)
}

fn message(digest: &[u8]) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(digest);
    m
}

/// Whether `path` is an evidence bundle (its first line is a bundle's header).
pub fn is_bundle(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    // The header's first key (serde_json writes keys in order).
    let mut start = [0u8; 20];
    std::io::Read::read_exact(&mut &f, &mut start).is_ok() && &start == b"{\"airlock_evidence\":"
}

/// What a verified bundle holds.
#[derive(Debug)]
pub struct Verified {
    pub chains: Vec<ChainSummary>,
    pub header: Value,
}

/// Check the bundle at `path` against `key` (hex): its signature, then for each chain in it
/// the chain of its records and every checkpoint, and that its summary says what they are.
pub fn verify(path: &Path, key: &str) -> Result<Verified, String> {
    use std::io::Read;
    let verifying = verifying_key(key)?;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map(|i| i + 1)
        .ok_or("not an evidence bundle: too short")?;
    let (body, last) = text.split_at(body_end);
    let signature: Value =
        serde_json::from_str(last.trim_end()).map_err(|_| "the last line is not its signature")?;
    let signature = signature["signature"]
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or("the last line is not its signature")?;
    verifying
        .verify(&message(&Sha256::digest(body.as_bytes())), &signature)
        .map_err(|_| {
            "the bundle's signature does not match: it was changed after export, or signed by \
             another key"
                .to_owned()
        })?;
    let mut lines = body.lines().enumerate();
    let header: Value = lines
        .next()
        .ok_or("not an evidence bundle: no header")
        .and_then(|(_, l)| {
            serde_json::from_str(l).map_err(|_| "not an evidence bundle: no header")
        })?;
    let format = header["airlock_evidence"].as_u64();
    if !matches!(format, Some(1 | 2)) {
        return Err(format!(
            "not an evidence bundle of format 1 or 2: {}",
            header["airlock_evidence"]
        ));
    }
    let mut chains = Vec::new();
    // Format 1: one section, with no chain line before it.
    let mut section: Option<(u32, Vec<(usize, &str)>)> =
        (format == Some(1)).then(|| (1, Vec::new()));
    for (i, line) in lines {
        match section.as_mut() {
            None => {
                let marker: Value = serde_json::from_str(line).unwrap_or_default();
                let n = marker["airlock_evidence_chain"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("line {}: not a chain's start", i + 1))?;
                section = Some((n, Vec::new()));
            }
            Some((n, records)) if line.starts_with("{\"airlock_evidence_end\":") => {
                // Each chain once, in order, with its records: an export writes no other.
                if chains.last().is_some_and(|(last, _)| *last >= *n) {
                    return Err(format!("chain {n} is out of order, or repeated"));
                }
                if records.is_empty() {
                    return Err(format!("chain {n} has no records"));
                }
                let end: Value = serde_json::from_str(line).map_err(|e| format!("summary: {e}"))?;
                let summary = check_section(path, &verifying, records, &end)
                    .map_err(|e| format!("chain {n}: {e}"))?;
                chains.push((*n, summary));
                section = None;
            }
            Some((_, records)) => records.push((i, line)),
        }
    }
    if section.is_some() || chains.is_empty() {
        return Err("not an evidence bundle: a chain has no summary".into());
    }
    Ok(Verified { chains, header })
}

/// One chain's records (with their line index) against its summary.
fn check_section(
    path: &Path,
    verifying: &ed25519_dalek::VerifyingKey,
    records: &[(usize, &str)],
    end: &Value,
) -> Result<Summary, String> {
    let claimed = &end["airlock_evidence_end"];
    let first_seq = claimed["first_seq"]
        .as_u64()
        .filter(|&s| s > 0)
        .ok_or("the summary has no first_seq")?;
    let mut chain = ChainCheck::from(*verifying, first_seq);
    for (i, line) in records {
        chain.push(line, &format!("{} line {}", path.display(), i + 1))?;
    }
    let found = chain.found;
    let summary = Summary {
        first_seq,
        last_seq: found.last_seq,
        records: found.records,
        checkpoints: found.checkpoints,
        signed_head: found.sealed,
    };
    let said = Summary {
        first_seq,
        last_seq: claimed["last_seq"].as_u64().unwrap_or(0),
        records: claimed["records"].as_u64().unwrap_or(0),
        checkpoints: claimed["checkpoints"].as_u64().unwrap_or(0),
        signed_head: claimed["signed_head"] == true,
    };
    if summary != said {
        return Err(format!(
            "the summary ({said:?}) does not match the records ({summary:?})"
        ));
    }
    Ok(summary)
}
