//! Identifiers of calls, questions and tickets.

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
