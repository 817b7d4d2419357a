//! `[safety]`, `[tool.safety]`, `data_class` and the clearance of `[roles]`: the content-safety
//! policy as written, and resolved with its defaults. The checks themselves are in
//! `gate::safety`.

use crate::core::units::{ByteSize, Span};
use serde::Deserialize;
use std::collections::BTreeMap;

/// How sensitive a tool's data is, lowest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    Public,
    Internal,
    Confidential,
    Restricted,
}

impl DataClass {
    pub const ALL: [DataClass; 4] = [
        DataClass::Public,
        DataClass::Internal,
        DataClass::Confidential,
        DataClass::Restricted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DataClass::Public => "public",
            DataClass::Internal => "internal",
            DataClass::Confidential => "confidential",
            DataClass::Restricted => "restricted",
        }
    }
}

/// The class of a tool without `data_class`, and the clearance of a role without one: today's
/// configurations keep working, and nothing public is assumed.
pub const DEFAULT_CLASS: DataClass = DataClass::Internal;

/// A data-loss-prevention detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    Email,
    Phone,
    PaymentCard,
    Iban,
    NationalId,
    CloudCredential,
    PrivateKey,
}

impl Detector {
    pub const ALL: [Detector; 7] = [
        Detector::Email,
        Detector::Phone,
        Detector::PaymentCard,
        Detector::Iban,
        Detector::NationalId,
        Detector::CloudCredential,
        Detector::PrivateKey,
    ];

    /// The rule id detections carry.
    pub fn rule_id(self) -> &'static str {
        match self {
            Detector::Email => "dlp-email",
            Detector::Phone => "dlp-phone",
            Detector::PaymentCard => "dlp-payment-card",
            Detector::Iban => "dlp-iban",
            Detector::NationalId => "dlp-national-id",
            Detector::CloudCredential => "dlp-cloud-credential",
            Detector::PrivateKey => "dlp-private-key",
        }
    }

    /// The default action for this detector in a tool of `class`: credentials and private
    /// keys are redacted everywhere; personal data (email, phone) in public tools, and payment
    /// and identity data (cards, IBANs, national IDs) in public and internal ones; confidential
    /// and restricted tools serve only principals cleared for them.
    fn default_action(self, class: DataClass) -> DlpAction {
        match (self, class) {
            (Detector::CloudCredential | Detector::PrivateKey, _) => DlpAction::Redact,
            (_, DataClass::Public) => DlpAction::Redact,
            (
                Detector::PaymentCard | Detector::NationalId | Detector::Iban,
                DataClass::Internal,
            ) => DlpAction::Redact,
            _ => DlpAction::Allow,
        }
    }
}

/// What a DLP detection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlpAction {
    Allow,
    Redact,
    Block,
}

/// What an injection rule's match in a tool's output does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Injection {
    Flag,
    Redact,
    Block,
    Spotlight,
}

/// What invisible and bidi characters and terminal escapes in a tool's output do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invisible {
    Strip,
    Flag,
}

/// What a finding in a tool's metadata (name, description, schemas) does at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataPolicy {
    Warn,
    Refuse,
}

/// `"off"` or one of a setting's words. Read by hand rather than `untagged`, so that a wrong
/// word is told the words it may be (not the name of a Rust type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrOff<T> {
    Off,
    On(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrOff<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = String::deserialize(d)?;
        if word == "off" {
            return Ok(OrOff::Off);
        }
        T::deserialize(serde::de::value::StringDeserializer::<D::Error>::new(word))
            .map(OrOff::On)
            .map_err(|e| {
                serde::de::Error::custom(format!("{}, or `off`", e.to_string().trim_end()))
            })
    }
}

impl<T> OrOff<T> {
    fn on(self) -> Option<T> {
        match self {
            OrOff::Off => None,
            OrOff::On(v) => Some(v),
        }
    }
}

/// Checks on arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputEncoding {
    Reject,
    Off,
}

/// `[safety]` and `[tool.safety]` as written; a tool's keys replace the global ones.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetySection {
    input_encoding: Option<InputEncoding>,
    input_nfkc: Option<bool>,
    max_string_bytes: Option<ByteSize>,
    output: Option<OrOff<Injection>>,
    invisible: Option<OrOff<Invisible>>,
}

/// `[safety]` as written: the per-tool keys' defaults, plus what only the server sets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalSafetySection {
    input_encoding: Option<InputEncoding>,
    input_nfkc: Option<bool>,
    max_string_bytes: Option<ByteSize>,
    output: Option<OrOff<Injection>>,
    invisible: Option<OrOff<Invisible>>,
    metadata: Option<MetadataPolicy>,
    metadata_invisible: Option<MetadataPolicy>,
    max_description_bytes: Option<ByteSize>,
    #[serde(default)]
    rules: Vec<RuleSection>,
    #[serde(default)]
    dlp: BTreeMap<DataClass, BTreeMap<Detector, DlpAction>>,
    scanner: Option<ScannerSection>,
}

/// `[safety.scanner]`: an external classifier every top-level result is also sent to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScannerSection {
    url: String,
    timeout: Option<Span>,
    on_error: Option<OnError>,
}

/// What a scanner that does not answer in time (or answers nonsense) means for the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail closed: the result is withheld (`output_blocked`, rule `scanner-unavailable`).
    Block,
    /// Fail open: the result passes, flagged `scanner-unavailable`.
    Allow,
}

/// `[safety.scanner]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannerSettings {
    pub url: String,
    pub timeout: Span,
    pub on_error: OnError,
}

impl ScannerSettings {
    /// The port the host connects to (for the confinement plan).
    pub fn port(&self) -> u16 {
        crate::config::auth::host_url_port(&self.url)
    }

    /// Whether its host is a name (looked up over DNS) rather than an address.
    pub fn by_name(&self) -> bool {
        crate::config::auth::host_url_by_name(&self.url)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSection {
    id: String,
    pattern: String,
}

/// The inbound checks of one tool, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSettings {
    /// Refuse invisible, bidi and control characters.
    pub encoding: bool,
    /// Refuse text that NFKC normalisation would change.
    pub nfkc: bool,
    pub max_string_bytes: ByteSize,
}

impl InputSettings {
    /// The length limit always applies.
    pub fn enabled(&self) -> bool {
        true
    }
}

/// The outbound policy of one tool, resolved (`None`: off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputPolicy {
    pub injection: Option<Injection>,
    pub invisible: Option<Invisible>,
}

/// One tool's content-safety policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSafety {
    pub input: InputSettings,
    pub output: OutputPolicy,
}

/// The ids of the built-in rules (in `gate::safety`), which `[[safety.rules]]` may not reuse.
pub const BUILTIN_RULE_IDS: &[&str] = &[
    "instruction-override",
    "new-instructions",
    "role-reassignment",
    "concealment",
    "exfiltration-request",
    "sensitive-file-request",
    "role-marker",
    "chat-template-token",
    "system-prompt-marker",
    "hidden-instruction-tag",
    "tool-call-json",
    "markdown-image-exfiltration",
    "markdown-link-exfiltration",
    "html-image-exfiltration",
    "data-url",
    "encoded-payload",
    "unicode-tag",
    "invisible-character",
    "bidi-control",
    "control-character",
    "terminal-escape",
    "unscannable-output",
    "nfkc-changes",
    "string-too-long",
    "spotlight-without-randomness",
    "scanner",
];

/// The longest string argument by default.
pub const DEFAULT_MAX_STRING_BYTES: ByteSize = ByteSize(64 << 10);
/// Patterns in `[[safety.rules]]` are at most this long, and at most this many.
pub const MAX_RULE_PATTERN_BYTES: usize = 4096;
pub const MAX_RULES: usize = 256;

/// `[safety]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetySettings {
    /// The defaults of every tool.
    pub defaults: ToolSafety,
    pub metadata: MetadataPolicy,
    pub metadata_invisible: MetadataPolicy,
    /// A description longer than this is reported as suspicious (under `metadata`).
    pub max_description_bytes: ByteSize,
    /// `[[safety.rules]]`: (id, pattern), compiled into the rule set with the built-in ones.
    pub rules: Vec<(String, String)>,
    dlp: [[DlpAction; Detector::ALL.len()]; DataClass::ALL.len()],
    /// `[safety.scanner]`, when there is one.
    pub scanner: Option<ScannerSettings>,
}

impl Default for SafetySettings {
    fn default() -> Self {
        resolve_global(&GlobalSafetySection::default()).expect("the defaults are valid")
    }
}

impl SafetySettings {
    pub fn dlp_action(&self, class: DataClass, detector: Detector) -> DlpAction {
        self.dlp[class as usize][detector as usize]
    }

    /// A tool's policy: its `[tool.safety]` over these defaults.
    pub fn for_tool(
        &self,
        section: Option<&SafetySection>,
    ) -> Result<ToolSafety, (String, String)> {
        let Some(s) = section else {
            return Ok(self.defaults.clone());
        };
        overlay(&self.defaults, s, "tool › safety")
    }
}

fn overlay(base: &ToolSafety, s: &SafetySection, at: &str) -> Result<ToolSafety, (String, String)> {
    let max_string_bytes = s.max_string_bytes.unwrap_or(base.input.max_string_bytes);
    if !(1..=(16 << 20)).contains(&max_string_bytes.bytes()) {
        return Err((
            format!("{at} › max_string_bytes"),
            "must be between 1 byte and 16 MiB".into(),
        ));
    }
    Ok(ToolSafety {
        input: InputSettings {
            encoding: s
                .input_encoding
                .map_or(base.input.encoding, |e| e == InputEncoding::Reject),
            nfkc: s.input_nfkc.unwrap_or(base.input.nfkc),
            max_string_bytes,
        },
        output: OutputPolicy {
            injection: s.output.map_or(base.output.injection, OrOff::on),
            invisible: s.invisible.map_or(base.output.invisible, OrOff::on),
        },
    })
}

/// Resolve `[safety]`. Errors are (key, problem).
pub fn resolve_global(section: &GlobalSafetySection) -> Result<SafetySettings, (String, String)> {
    let builtin = ToolSafety {
        input: InputSettings {
            encoding: true,
            nfkc: false,
            max_string_bytes: DEFAULT_MAX_STRING_BYTES,
        },
        output: OutputPolicy {
            injection: Some(Injection::Flag),
            invisible: Some(Invisible::Strip),
        },
    };
    let written = SafetySection {
        input_encoding: section.input_encoding,
        input_nfkc: section.input_nfkc,
        max_string_bytes: section.max_string_bytes,
        output: section.output,
        invisible: section.invisible,
    };
    let defaults = overlay(&builtin, &written, "safety")?;
    if section.rules.len() > MAX_RULES {
        return Err((
            "safety › rules".into(),
            format!("at most {MAX_RULES} rules"),
        ));
    }
    let mut rules = Vec::with_capacity(section.rules.len());
    for (i, r) in section.rules.iter().enumerate() {
        let at = format!("safety › rules[{i}]");
        let id_ok = !r.id.is_empty()
            && r.id.len() <= 64
            && r.id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err((
                format!("{at} › id"),
                "1 to 64 characters of a-z, 0-9 and -".into(),
            ));
        }
        if rules.iter().any(|(id, _): &(String, String)| *id == r.id) {
            return Err((
                format!("{at} › id"),
                format!("\"{}\" is listed twice", r.id),
            ));
        }
        if r.pattern.len() > MAX_RULE_PATTERN_BYTES {
            return Err((
                format!("{at} › pattern"),
                format!("longer than {MAX_RULE_PATTERN_BYTES} bytes"),
            ));
        }
        regex::bytes::RegexBuilder::new(&r.pattern)
            .unicode(false)
            .size_limit(8 << 20)
            .build()
            .map_err(|e| (format!("{at} › pattern"), e.to_string()))?;
        let hir = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(&r.pattern)
            .map_err(|e| (format!("{at} › pattern"), e.to_string()))?;
        if hir.properties().minimum_len().unwrap_or(0) == 0 {
            return Err((
                format!("{at} › pattern"),
                "can match empty text, so it would match everywhere".into(),
            ));
        }
        if crate::config::safety::BUILTIN_RULE_IDS.contains(&r.id.as_str())
            || r.id.starts_with("dlp-")
            || r.id.starts_with("scanner-")
        {
            return Err((
                format!("{at} › id"),
                format!("\"{}\" is the id of a built-in rule; choose another", r.id),
            ));
        }
        rules.push((r.id.clone(), r.pattern.clone()));
    }
    let mut dlp = [[DlpAction::Allow; Detector::ALL.len()]; DataClass::ALL.len()];
    for class in DataClass::ALL {
        for d in Detector::ALL {
            dlp[class as usize][d as usize] = section
                .dlp
                .get(&class)
                .and_then(|m| m.get(&d))
                .copied()
                .unwrap_or_else(|| d.default_action(class));
        }
    }
    let scanner = match &section.scanner {
        None => None,
        Some(sc) => {
            crate::config::auth::check_host_url(&sc.url)
                .map_err(|e| ("safety › scanner › url".to_owned(), e))?;
            let timeout = sc
                .timeout
                .unwrap_or(Span(std::time::Duration::from_secs(2)));
            if !(std::time::Duration::from_millis(10)..=std::time::Duration::from_secs(60))
                .contains(&timeout.0)
            {
                return Err((
                    "safety › scanner › timeout".into(),
                    "must be between 10ms and 60s".into(),
                ));
            }
            Some(ScannerSettings {
                url: sc.url.clone(),
                timeout,
                on_error: sc.on_error.unwrap_or(OnError::Block),
            })
        }
    };
    Ok(SafetySettings {
        scanner,
        defaults,
        metadata: section.metadata.unwrap_or(MetadataPolicy::Refuse),
        metadata_invisible: section.metadata_invisible.unwrap_or(MetadataPolicy::Refuse),
        max_description_bytes: section.max_description_bytes.unwrap_or(ByteSize(4 << 10)),
        rules,
        dlp,
    })
}

/// A role in `[roles]`: its claim values, or a table with a clearance as well. Read by hand
/// rather than `untagged`, so that a wrong value is told what is expected.
#[derive(Debug, Clone)]
pub enum RoleSection {
    Claims(Vec<String>),
    Table(RoleTable),
}

impl<'de> Deserialize<'de> for RoleSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = RoleSection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a list of claim values ([\"analysts\"]) or a table ({ claims = […], clearance = \"internal\" })",
                )
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::<String>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(RoleSection::Claims)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                RoleTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RoleSection::Table)
            }
        }
        d.deserialize_any(Form)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleTable {
    claims: Vec<String>,
    clearance: Option<DataClass>,
    #[serde(default)]
    unredacted: bool,
}

/// What a role may see: the highest data class, and whether DLP redactions are lifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clearance {
    pub class: DataClass,
    pub unredacted: bool,
}

impl RoleSection {
    pub fn claims(&self) -> &[String] {
        match self {
            RoleSection::Claims(c) => c,
            RoleSection::Table(t) => &t.claims,
        }
    }

    pub fn clearance(&self) -> Clearance {
        match self {
            RoleSection::Claims(_) => Clearance {
                class: DEFAULT_CLASS,
                unredacted: false,
            },
            RoleSection::Table(t) => Clearance {
                class: t.clearance.unwrap_or(DEFAULT_CLASS),
                unredacted: t.unredacted,
            },
        }
    }
}
