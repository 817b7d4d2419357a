//! Identifiers of calls, questions and tickets, and of this process in a fleet.

/// This process's replica id in a fleet, as the audit records carry it: the JSON field with
/// its trailing comma (`"replica":"ID",`), set once before the audit log opens.
static REPLICA_FIELD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Name this process replica `id` in every audit record from now on (once).
pub fn set_replica(id: &str) {
    let quoted = serde_json::to_string(id).unwrap_or_else(|_| "\"?\"".into());
    let _ = REPLICA_FIELD.set(format!("\"replica\":{quoted},"));
}

/// The audit records' replica field, in a fleet.
pub fn replica_field() -> Option<&'static str> {
    REPLICA_FIELD.get().map(String::as_str)
}

/// 128 random bits, hex.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    // getrandom fails only without any entropy source; a time-and-counter id still keeps calls
    // apart in the record.
    if getrandom::getrandom(&mut b).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b[..8].copy_from_slice(&t.to_be_bytes());
        b[8..].copy_from_slice(&n.to_be_bytes());
    }
    hex::encode(b)
}
