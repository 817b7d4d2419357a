//! Airlock's own log (stderr), in text or JSON. Much of what it shows comes from tools and
//! clients (`host.log` messages, error texts, tool names, principals), so no control
//! character reaches it raw: a newline cannot forge a log line, and an escape sequence cannot
//! rewrite the operator's terminal.
//!
//! - Text: every field value is written through `core::text::escape_controls`.
//! - JSON: serde already escapes C0 controls; the writer also escapes C1 controls and bidi
//!   overrides, as JSON `\u` escapes (valid wherever they occur, which is inside strings).

use crate::core::text::{escape_controls, escape_json_controls};
use std::io::Write;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// The text format's fields (`message` bare, the others `name=value`), escaped.
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = Visitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for Visitor<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{}", escape_controls(value)));
        } else {
            // Quoted, as the default format shows string fields.
            self.write(
                field,
                format_args!("{}", escape_controls(&format!("{value:?}"))),
            );
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.write(field, format_args!("{}", escape_controls(&text)));
    }
}

impl Visitor<'_, '_> {
    fn write(&mut self, field: &tracing::field::Field, value: std::fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        // Fields tracing adds for `log` records are noise here.
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        self.result = if name == "message" {
            write!(self.writer, "{separator}{value}")
        } else {
            write!(self.writer, "{separator}{name}={value}")
        };
    }
}

/// stderr for the JSON format: C1 controls and bidi overrides escaped as `\uXXXX`.
pub struct JsonStderr;

impl Write for JsonStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        match std::str::from_utf8(buf) {
            Ok(text) => err.write_all(escape_json_controls(text).as_bytes())?,
            Err(_) => err.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn directive(text: &str) -> tracing_subscriber::filter::Directive {
    text.parse().expect("a valid directive")
}

/// Install the process's log: `json` or text, filtered by `RUST_LOG` (default `info`).
pub fn init(json: bool) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    let parsed = EnvFilter::try_from_default_env();
    // RUST_LOG as it applies: absent or invalid, the filter is `info`.
    let spec = match &parsed {
        Ok(_) => std::env::var("RUST_LOG").unwrap_or_default(),
        Err(_) => "info".to_owned(),
    };
    let mut filter = parsed.unwrap_or_else(|_| EnvFilter::new("info"));
    // rmcp's own lines (a session started or ended, a notification received, each with a
    // `Debug` dump of the client's parameters) are chatter per request at its `info`: shown
    // only when the log is at `debug` or finer, or when RUST_LOG names rmcp itself.
    // The level for targets RUST_LOG does not name (`RUST_LOG=info,airlock=debug` is `info`):
    // rmcp gets the lower of it and `warn`, so that the log is never louder for it.
    // With no bare level, targets RUST_LOG does not name are off.
    let global = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains('='))
        .filter_map(|d| d.parse::<LevelFilter>().ok())
        .next_back()
        .unwrap_or(if spec.trim().is_empty() {
            LevelFilter::INFO
        } else {
            LevelFilter::OFF
        });
    let rmcp_named = spec.contains("rmcp");
    if !rmcp_named && global < LevelFilter::DEBUG {
        filter = filter.add_directive(directive(&format!(
            "rmcp={}",
            global.min(LevelFilter::WARN)
        )));
    }
    // rmcp logs whole session ids (a session's bearer capability) at info, in an error when a
    // session fails to close, and in its workers' TRACE spans: those targets are held below
    // the levels that would show them, whatever RUST_LOG says. The worker's own lines (a
    // session's end, at debug) stay at rmcp's level unless RUST_LOG names rmcp.
    let worker = if rmcp_named {
        LevelFilter::DEBUG
    } else {
        global.min(LevelFilter::WARN)
    };
    let filter = filter
        .add_directive(directive(
            "rmcp::transport::streamable_http_server::session::local=warn",
        ))
        .add_directive(directive(&format!("rmcp::transport::worker={worker}")))
        .add_directive(directive(
            "rmcp::transport::streamable_http_server::tower=off",
        ))
        .add_directive(directive("rmcp::transport::common::server_side_http=off"));
    // rustls warns of what a TLS client sends (an unexpected message, an alert): anyone who
    // can connect could fill the log. Failed handshakes are counted in the metrics instead.
    let filter = if spec.contains("rustls") {
        filter
    } else {
        filter.add_directive(directive("rustls=error"))
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().with_writer(|| JsonStderr).init();
    } else {
        builder
            .with_ansi(ansi)
            .fmt_fields(EscapedFields)
            .with_writer(std::io::stderr)
            .init();
    }
}
