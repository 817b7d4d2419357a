//! Redaction: secret values, and secret-shaped strings, replaced by a marker in everything that
//! leaves the host or reaches a record.

use std::fmt;
use std::sync::Arc;

/// A secret's value. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Arc<str>);

impl SecretValue {
    pub fn new(value: String) -> SecretValue {
        SecretValue(Arc::from(value))
    }

    /// The value itself, for injection and redaction only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

/// The marker a secret value is replaced by. It names no secret: a name would tell whoever
/// reads the result which secret a guessed value was.
pub const REDACTED: &str = "[REDACTED]";

/// Replaces secret values with [`REDACTED`].
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest values first, so that a value containing another is replaced whole.
    values: Vec<SecretValue>,
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a SecretValue)>) -> Self {
        let mut values: Vec<SecretValue> = secrets.into_iter().map(|(_, v)| v.clone()).collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.expose().len()));
        values.dedup();
        Redactor { values }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced; borrowed when there is nothing to replace.
    pub fn redact<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for value in &self.values {
            if out.contains(value.expose()) {
                out = std::borrow::Cow::Owned(out.replace(value.expose(), REDACTED));
            }
        }
        out
    }

    /// Redact a string in place.
    pub fn redact_in_place(&self, text: &mut String) {
        if let std::borrow::Cow::Owned(r) = self.redact(text) {
            *text = r;
        }
    }

    /// Redact every string inside a JSON value, object keys included.
    pub fn redact_json(&self, v: &mut serde_json::Value) {
        rewrite_json_strings(v, &|s| self.redact(s));
    }
}

/// Apply `f` to every string in `v`, object keys included; a borrowed result leaves the string
/// as it was.
pub fn rewrite_json_strings(
    v: &mut serde_json::Value,
    f: &dyn for<'s> Fn(&'s str) -> std::borrow::Cow<'s, str>,
) {
    use std::borrow::Cow;
    match v {
        serde_json::Value::String(s) => {
            if let Cow::Owned(new) = f(s) {
                *s = new;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| rewrite_json_strings(x, f)),
        serde_json::Value::Object(o) => {
            if o.keys().any(|k| matches!(f(k), Cow::Owned(_))) {
                *o = std::mem::take(o)
                    .into_iter()
                    .map(|(k, v)| (f(&k).into_owned(), v))
                    .collect();
            }
            o.values_mut().for_each(|x| rewrite_json_strings(x, f));
        }
        _ => {}
    }
}

/// Secret-shaped strings: tokens and keys recognisable by their form, whoever's they are.
/// Applied to what the audit log keeps, on top of the known values.
#[derive(Debug, Clone)]
pub struct Shapes {
    patterns: Vec<(regex::Regex, String)>,
}

/// The built-in shapes: (label, pattern).
const BUILTIN_SHAPES: [(&str, &str); 6] = [
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}",
    ),
    ("bearer", r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"),
    ("aws-key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github-token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    ("slack-token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    (
        "private-key",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    ),
];

impl Shapes {
    /// The built-in shapes plus `extra` (already validated), each extra one labelled
    /// `pattern-<index>`.
    pub fn new(extra: &[String]) -> Result<Shapes, regex::Error> {
        let mut patterns = Vec::with_capacity(BUILTIN_SHAPES.len() + extra.len());
        for (label, p) in BUILTIN_SHAPES {
            patterns.push((regex::Regex::new(p)?, format!("[REDACTED:{label}]")));
        }
        for (i, p) in extra.iter().enumerate() {
            patterns.push((regex::Regex::new(p)?, format!("[REDACTED:pattern-{i}]")));
        }
        Ok(Shapes { patterns })
    }

    /// `text` with every secret-shaped match replaced; borrowed when nothing matched.
    pub fn redact<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for (re, mark) in &self.patterns {
            if let std::borrow::Cow::Owned(r) = re.replace_all(&out, mark.as_str()) {
                out = std::borrow::Cow::Owned(r);
            }
        }
        out
    }
}

/// The forms an injected secret can come back in from a server that echoes its request: the
/// value as is, base64 (standard and URL-safe alphabets, at each of the three alignments it
/// can have inside a longer encoding), hex, and the value escaped (percent-encoding of any of
/// its other bytes, in either case; form encoding; backslash escapes).
/// Compiled once, at load, into one matcher.
#[derive(Clone)]
pub struct Reflections {
    matcher: regex::bytes::Regex,
    /// Bytes of the longest form: a match can span at most this many bytes.
    longest: usize,
}

impl fmt::Debug for Reflections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reflections")
    }
}

impl PartialEq for Reflections {
    fn eq(&self, other: &Self) -> bool {
        self.matcher.as_str() == other.matcher.as_str()
    }
}

impl Eq for Reflections {}

impl Reflections {
    /// The forms of every value in `values`; `None` when there are none.
    pub fn of<'a>(
        values: impl IntoIterator<Item = &'a SecretValue>,
    ) -> Result<Option<Reflections>, String> {
        // (shortest match, longest match, pattern) of every form.
        let mut forms: Vec<(usize, usize, String)> = Vec::new();
        for v in values {
            let value = v.expose().as_bytes();
            forms.extend(
                encoded_forms(value)
                    .iter()
                    .map(|f| (f.len(), f.len(), regex::escape(&String::from_utf8_lossy(f)))),
            );
            if let Some(escaped) = escaped_form(value) {
                forms.push(escaped);
            }
        }
        if forms.is_empty() {
            return Ok(None);
        }
        // Longest first: a form containing another is replaced whole.
        forms.sort_by_key(|f| std::cmp::Reverse((f.0, f.1)));
        forms.dedup();
        let longest = forms.iter().map(|f| f.1).max().unwrap_or(0);
        let pattern = forms
            .iter()
            .map(|f| f.2.as_str())
            .collect::<Vec<_>>()
            .join("|");
        let matcher = regex::bytes::RegexBuilder::new(&pattern)
            .size_limit(64 << 20)
            .build()
            .map_err(|e| format!("the header secrets are too many or too long to scrub: {e}"))?;
        Ok(Some(Reflections { matcher, longest }))
    }

    /// Bytes of the longest form.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// `data` with every form replaced by [`REDACTED`]; borrowed when there is none.
    pub fn scrub<'d>(&self, data: &'d [u8]) -> std::borrow::Cow<'d, [u8]> {
        self.matcher.replace_all(data, REDACTED.as_bytes())
    }

    /// Where the part of `data` that can be scrubbed now ends, for a stream: everything before
    /// it either holds its matches whole or cannot start one that the next bytes complete.
    pub fn safe_end(&self, data: &[u8]) -> usize {
        // A form not yet complete starts at or after `tail`; a match that crosses it is held
        // back whole (and with it any longer form it may be part of).
        let mut end = data.len().saturating_sub(self.longest.saturating_sub(1));
        for m in self.matcher.find_iter(data) {
            if m.start() < end && m.end() > end {
                end = m.start();
            }
        }
        end
    }
}

/// Every form of `value` [`Reflections`] looks for. Forms shorter than 8 bytes would match
/// ordinary text and are left out.
fn encoded_forms(value: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = vec![value.to_vec()];
    // Inside a longer base64 text the value starts at one of three byte offsets; only the
    // characters whose six bits all come from the value are fixed.
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(value);
        let first = (8 * offset).div_ceil(6);
        let last = 8 * padded.len() / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let text = engine.encode(&padded);
            if last > first {
                forms.push(text.as_bytes()[first..last].to_vec());
            }
        }
    }
    let hex = hex::encode(value);
    forms.push(hex.to_ascii_uppercase().into_bytes());
    forms.push(hex.into_bytes());
    forms.retain(|f| f.len() >= 8);
    forms.sort();
    forms.dedup();
    forms
}

/// The value as escaping encoders leave it, as one pattern (shortest and longest match, the
/// pattern): letters and digits as they are; every other byte as itself, as `%XX` in either
/// case (whichever bytes an encoder chose to keep: `quote`, `encodeURIComponent`, form
/// encoding), behind a backslash (JSON's `\/`), and a space also as `+`. `None` for a value
/// under 8 bytes, which would match ordinary text.
fn escaped_form(value: &[u8]) -> Option<(usize, usize, String)> {
    if value.len() < 8 || value.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let mut pattern = String::from("(?:");
    for &b in value {
        if b.is_ascii_alphanumeric() {
            pattern.push(b as char);
            continue;
        }
        let literal = match b {
            0x20..=0x7e => regex::escape(&(b as char).to_string()),
            _ => format!("(?-u:\\x{b:02X})"),
        };
        let plus = if b == b' ' { "|\\+" } else { "" };
        pattern.push_str(&format!("(?:\\\\?{literal}|%(?i:{b:02x}){plus})"));
    }
    pattern.push(')');
    Some((value.len(), 3 * value.len(), pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_every_value_and_debug_hides_them() {
        let a = SecretValue(Arc::from("s3cr3t-value-1"));
        let b = SecretValue(Arc::from("s3cr3t-value-1-longer"));
        let r = Redactor::new([("A", &a), ("B", &b)]);
        assert_eq!(
            r.redact("x s3cr3t-value-1-longer y s3cr3t-value-1"),
            "x [REDACTED] y [REDACTED]"
        );
        assert!(matches!(
            r.redact("nothing here"),
            std::borrow::Cow::Borrowed(_)
        ));
        let mut j = serde_json::json!({"k": ["s3cr3t-value-1", 3], "s3cr3t-value-1": true});
        r.redact_json(&mut j);
        assert_eq!(
            j,
            serde_json::json!({"k": ["[REDACTED]", 3], "[REDACTED]": true})
        );
        assert_eq!(format!("{a:?}"), "[secret]");
    }

    #[test]
    fn secret_shapes_are_redacted() {
        let shapes = Shapes::new(&["internal-[0-9]{6}".into()]).unwrap();
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
        assert_eq!(
            shapes.redact(&format!("token {jwt} end")),
            "token [REDACTED:jwt] end"
        );
        assert_eq!(
            shapes.redact("Authorization: Bearer abcdefghijklmnop1234"),
            "Authorization: [REDACTED:bearer]"
        );
        assert_eq!(
            shapes.redact("key AKIAIOSFODNN7EXAMPLE id internal-123456"),
            "key [REDACTED:aws-key] id [REDACTED:pattern-0]"
        );
        assert_eq!(
            shapes
                .redact("a -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- b"),
            "a [REDACTED:private-key] b"
        );
        assert!(matches!(
            shapes.redact("plain text"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn reflections_catch_the_value_in_every_encoding_and_alignment() {
        use base64::Engine as _;
        let v = SecretValue::new("tok/3n+val:ue-1".into());
        let r = Reflections::of([&v]).unwrap().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        for prefix in ["", "x", "xy"] {
            let text = b64.encode(format!("{prefix}tok/3n+val:ue-1 trailing"));
            assert!(
                matches!(r.scrub(text.as_bytes()), std::borrow::Cow::Owned(_)),
                "{prefix}: {text}"
            );
            let url = base64::engine::general_purpose::URL_SAFE
                .encode(format!("{prefix}tok/3n+val:ue-1!"));
            assert!(
                matches!(r.scrub(url.as_bytes()), std::borrow::Cow::Owned(_)),
                "{prefix}: {url}"
            );
        }
        for text in [
            "echo tok/3n+val:ue-1".to_owned(),
            hex::encode("tok/3n+val:ue-1"),
            hex::encode_upper("tok/3n+val:ue-1"),
            "q=tok%2F3n%2Bval%3Aue-1".to_owned(),
            "q=tok%2f3n%2bval%3aue-1".to_owned(),
            // Python's quote() keeps `/`; encodeURIComponent keeps `-`; mixed case.
            "q=tok/3n%2Bval%3aue-1".to_owned(),
            "q=tok%2F3n%2Bval%3Aue%2D1".to_owned(),
            // JSON's escaped slash.
            r#"{"q":"tok\/3n+val:ue-1"}"#.to_owned(),
        ] {
            let out = r.scrub(text.as_bytes());
            assert!(
                String::from_utf8_lossy(&out).contains(REDACTED),
                "{text} -> {}",
                String::from_utf8_lossy(&out)
            );
        }
        assert!(matches!(
            r.scrub(b"nothing to see"),
            std::borrow::Cow::Borrowed(_)
        ));
        // A stream keeps back what the next bytes could complete.
        let data = b"abc tok/3n+val:ue";
        assert!(r.safe_end(data) <= data.len() - "tok/3n+val:ue".len());
    }
}
