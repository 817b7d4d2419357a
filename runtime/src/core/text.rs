//! Text that came from tools and clients, made safe to show: no control character reaches a
//! log line or a terminal raw (a newline cannot forge a line, an escape sequence cannot rewrite
//! the operator's screen).

use std::fmt::Write as _;

/// Whether `c` must not reach a log raw: C0 and C1 controls and DEL (a tab is harmless), and
/// the bidi embeddings, overrides and isolates (which reorder what a reader sees).
pub fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// `text` with every unsafe character written as `\n`, `\r` or `\u{XXXX}`.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// JSON text with every unsafe character but a newline written as a JSON `\uXXXX` escape:
/// serde escapes C0 controls only, and in serialized JSON the others can only stand inside
/// strings, where the escape means the same character.
pub fn escape_json_controls(json: &str) -> std::borrow::Cow<'_, str> {
    if !json.chars().any(|c| is_unsafe(c) && c != '\n') {
        return std::borrow::Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_unsafe(c) && c != '\n' {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped_and_plain_text_is_not_copied() {
        assert!(matches!(
            escape_controls("plain text, tab\tok"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("a\nforged INFO line\r\u{1b}[2J\u{9b}x\u{202e}y"),
            "a\\nforged INFO line\\r\\u{001b}[2J\\u{009b}x\\u{202e}y"
        );
        let json = serde_json::json!({"t": "x\u{9b}2J\u{202e}y\u{7f}"}).to_string();
        let escaped = escape_json_controls(&json);
        assert_eq!(escaped, r#"{"t":"x\u009b2J\u202ey\u007f"}"#);
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["t"], "x\u{9b}2J\u{202e}y\u{7f}");
    }
}
