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

/// Replaces granted secret values with `[REDACTED:NAME]`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest values first, so that a value containing another is replaced whole.
    pairs: Vec<(SecretValue, String)>,
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a SecretValue)>) -> Self {
        let mut pairs: Vec<(SecretValue, String)> = secrets
            .into_iter()
            .map(|(n, v)| (v.clone(), format!("[REDACTED:{n}]")))
            .collect();
        pairs.sort_by_key(|(v, _)| std::cmp::Reverse(v.expose().len()));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Redactor { pairs }
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// `text` with every secret value replaced; borrowed when there is nothing to replace.
    pub fn redact<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for (value, mark) in &self.pairs {
            if out.contains(value.expose()) {
                out = std::borrow::Cow::Owned(out.replace(value.expose(), mark));
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
            "x [REDACTED:B] y [REDACTED:A]"
        );
        assert!(matches!(
            r.redact("nothing here"),
            std::borrow::Cow::Borrowed(_)
        ));
        let mut j = serde_json::json!({"k": ["s3cr3t-value-1", 3], "s3cr3t-value-1": true});
        r.redact_json(&mut j);
        assert_eq!(
            j,
            serde_json::json!({"k": ["[REDACTED:A]", 3], "[REDACTED:A]": true})
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
}
