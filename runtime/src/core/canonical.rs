//! Canonical JSON: object keys sorted, no whitespace, so that equal values (arguments, tool
//! metadata) hash equally whatever order their keys came in.

use sha2::Digest;

/// `v` as canonical JSON.
pub fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::Object(o) => write_canonical_object(o, out),
        serde_json::Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        scalar => {
            // Serialising a JSON value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

pub fn write_canonical_object(o: &serde_json::Map<String, serde_json::Value>, out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = o.keys().collect();
    keys.sort();
    out.push(b'{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        write_canonical(&o[k], out);
    }
    out.push(b'}');
}

/// sha256 of `v` as canonical JSON, hex.
pub fn sha256(v: &serde_json::Value) -> String {
    let mut out = Vec::with_capacity(256);
    write_canonical(v, &mut out);
    hex::encode(sha2::Sha256::digest(&out))
}
