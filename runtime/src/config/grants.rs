//! What a component may reach beyond its own memory: `[tool.grants]`. Grants are data with
//! stable ids (`fs:/reports`) so that the operator plane can name and revoke one of them.
//! Everything is resolved and checked at load time.

use crate::config::secrets::SecretStore;
use crate::core::redact::{Reflections, SecretValue};
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// `[tool.grants]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantsSection {
    #[serde(default)]
    fs: Vec<FsGrantSection>,
    #[serde(default)]
    net: Vec<NetGrantSection>,
    #[serde(default)]
    tcp: Vec<String>,
    #[serde(default)]
    secrets: Vec<SecretGrantSection>,
    /// May ask the client's model for messages (MCP sampling).
    #[serde(default)]
    sample: bool,
}

/// `{ name, host, header, format }` (injected at egress) or `{ name, expose = "env" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretGrantSection {
    name: String,
    host: Option<String>,
    header: Option<String>,
    format: Option<String>,
    expose: Option<Expose>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expose {
    Env,
}

/// `"https://api.example.com"` or `{ url = "…", methods = ["GET"], addresses = ["10.0.0.0/8"] }`.
/// Read by hand rather than `untagged`, so that a wrong value is told what is expected (not
/// the name of a Rust type) and a mistake inside the table is named as such.
#[derive(Debug, Clone)]
enum NetGrantSection {
    Url(String),
    Full(NetGrantTable),
}

impl<'de> Deserialize<'de> for NetGrantSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = NetGrantSection;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a URL in quotes (\"https://api.example.com\") or a table ({ url = \"…\", methods = [\"GET\"] })",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(NetGrantSection::Url(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                NetGrantTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(NetGrantSection::Full)
            }
        }
        d.deserialize_any(Form)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetGrantTable {
    url: String,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    addresses: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FsGrantSection {
    host: PathBuf,
    guest: String,
    mode: FsMode,
    quota: Option<crate::core::units::ByteSize>,
}

/// The id of the `sample = true` grant, as an operator revokes it.
pub const SAMPLE_GRANT_ID: &str = "sample";

/// What an `rw` grant's tree may hold when its `quota` is not set.
pub const DEFAULT_QUOTA: crate::core::units::ByteSize = crate::core::units::ByteSize::mib(1024);

/// Access a filesystem grant gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsMode {
    /// Read files and list directories.
    Ro,
    /// Also create, write, rename and remove.
    Rw,
}

impl fmt::Display for FsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsMode::Ro => "ro",
            FsMode::Rw => "rw",
        })
    }
}

/// A host directory made visible to the guest at `guest`, as a WASI preopen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsGrant {
    /// `fs:<guest path>`, unique within the component.
    pub id: String,
    /// Canonical host path (symlinks resolved at load).
    pub host: PathBuf,
    pub guest: String,
    pub mode: FsMode,
    /// `rw` only: the bytes the granted tree may hold (file sizes, plus 4 KiB per file,
    /// directory and link); a write past it ends the call (`quota_exceeded`).
    pub quota: Option<crate::core::units::ByteSize>,
}

/// How a network grant names hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name or IP literal (lower case).
    Exact(String),
    /// Any subdomain of this suffix (`*.example.com` matches `a.example.com`, not `example.com`).
    Subdomains(String),
}

impl HostPattern {
    /// Does this pattern name `host` (lower case, no trailing dot)?
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }

    /// Does every host this pattern names also match `other`?
    fn within(&self, other: &HostPattern) -> bool {
        match self {
            HostPattern::Exact(h) => other.matches(h),
            HostPattern::Subdomains(s) => {
                matches!(other, HostPattern::Subdomains(o) if o == s) || other.matches(s)
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Subdomains(s) => write!(f, "*.{s}"),
        }
    }
}

/// Outgoing HTTP the component may make: scheme, host, port, optionally methods, and the
/// non-public address ranges the names may resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetGrant {
    /// `net:<url as written>`.
    pub id: String,
    pub https: bool,
    pub host: HostPattern,
    pub port: u16,
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
    /// Non-public ranges explicitly allowed (an IP-literal host allows itself).
    pub addresses: Vec<ipnet::IpNet>,
}

impl NetGrant {
    /// Does this grant cover a request to `host:port` over `https` with `method`? A grant
    /// without `methods` covers the standard ones, never TRACE, CONNECT or invented ones.
    pub fn covers(&self, https: bool, host: &str, port: u16, method: &str) -> bool {
        self.https == https
            && self.port == port
            && (if self.methods.is_empty() {
                METHODS.contains(&method)
            } else {
                self.methods.iter().any(|m| m == method)
            })
            && self.host.matches(host)
    }

    /// May a connection under this grant go to `ip`? Public addresses always may; loopback,
    /// private, link-local, unique-local, metadata and other special ranges only when the grant
    /// names them (as its IP-literal host or in `addresses`).
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        special_range(ip).is_none()
            || matches!(&self.host, HostPattern::Exact(h) if h.parse::<IpAddr>().ok().map(canonical_ip) == Some(ip))
            || self.addresses.iter().any(|n| n.contains(&ip))
    }
}

/// A raw TCP connection the component may open through `wasi:sockets`, to one address and
/// port. Names are not grantable: `wasi:sockets` name lookup cannot be limited to one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpGrant {
    /// `tcp:<address>:<port>`.
    pub id: String,
    pub address: SocketAddr,
}

/// How a granted secret reaches the component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretUse {
    /// Set as `header` on every allowed request to `host`; the component never sees it.
    Header {
        host: HostPattern,
        header: http::HeaderName,
        /// The formatted value, built at load and marked sensitive.
        value: http::HeaderValue,
    },
    /// Passed as an environment variable of the same name: the component can read it.
    Env,
}

/// One secret granted to a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretGrant {
    /// `secret:<NAME>@<host>` or `secret:<NAME>:env`.
    pub id: String,
    pub name: String,
    pub value: SecretValue,
    pub usage: SecretUse,
}

/// Everything one component is granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub fs: Vec<FsGrant>,
    pub net: Vec<NetGrant>,
    pub tcp: Vec<TcpGrant>,
    pub secrets: Vec<SecretGrant>,
    /// May ask the client's model for messages (`sample`): it spends the client's tokens.
    pub sample: bool,
    /// The forms the secrets injected as headers can come back in: scrubbed from every
    /// response before the component reads it.
    pub reflections: Option<Arc<Reflections>>,
}

impl Grants {
    /// The ids of the filesystem, network and TCP grants (what an operator revokes by id).
    pub fn ids(&self) -> impl Iterator<Item = &str> + Clone {
        self.fs
            .iter()
            .map(|g| g.id.as_str())
            .chain(self.net.iter().map(|g| g.id.as_str()))
            .chain(self.tcp.iter().map(|g| g.id.as_str()))
            .chain(self.sample.then_some(SAMPLE_GRANT_ID))
    }

    /// True when the component can reach nothing outside itself.
    pub fn is_empty(&self) -> bool {
        self.fs.is_empty()
            && self.net.is_empty()
            && self.tcp.is_empty()
            && self.secrets.is_empty()
            && !self.sample
    }

    /// True when a secret is passed where the component can read it.
    pub fn holds_readable_secret(&self) -> bool {
        self.secrets.iter().any(|s| s.usage == SecretUse::Env)
    }

    /// Does a TCP grant allow connecting to `address`? An IPv4-mapped IPv6 address is the
    /// same socket as its IPv4 address; a NAT64 address is another route and is not.
    pub fn allows_tcp(&self, address: SocketAddr) -> bool {
        self.tcp_grant(address).is_some()
    }

    /// The TCP grant of `address` (an IPv4-mapped address is its IPv4 address).
    pub fn tcp_grant(&self, address: SocketAddr) -> Option<&TcpGrant> {
        let ip = address.ip().to_canonical();
        self.tcp
            .iter()
            .find(|g| g.address.port() == address.port() && g.address.ip().to_canonical() == ip)
    }
}

/// Methods a network grant can cover. TRACE (which echoes request headers, injected secrets
/// included) and CONNECT (a tunnel past the checks) are never granted.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// IPv4-mapped and NAT64 IPv6 addresses are judged as the IPv4 address they carry.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return IpAddr::V4(std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ));
            }
            ip
        }
        v4 => v4,
    }
}

/// The name of the non-public range `ip` is in, if any.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(match o {
                [127, ..] => "loopback",
                [10, ..] | [192, 168, ..] => "private",
                [172, b, ..] if (16..32).contains(&b) => "private",
                [169, 254, 169, 254] => "cloud metadata",
                [169, 254, ..] => "link-local",
                [100, b, ..] if (64..128).contains(&b) => "shared (CGNAT)",
                [0, ..] => "unspecified",
                [192, 0, 0, _] => "IETF protocol assignments",
                [198, b, ..] if b == 18 || b == 19 => "benchmarking",
                [a, ..] if a >= 224 => "multicast or reserved",
                _ => return None,
            })
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(if v6.is_loopback() {
                "loopback"
            } else if v6.is_unspecified() {
                "unspecified"
            } else if s[0] & 0xfe00 == 0xfc00 {
                "unique-local"
            } else if s[0] & 0xffc0 == 0xfe80 {
                "link-local"
            } else if s[0] & 0xff00 == 0xff00 {
                "multicast"
            } else if s[0] == 0x2002 {
                "6to4"
            } else if s[0] == 0x2001 && s[1] == 0 {
                "Teredo"
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                "documentation"
            } else if s[0] & 0xe000 != 0x2000 {
                // Global unicast is 2000::/3; everything else (IPv4-compatible, local NAT64,
                // site-local, reserved) is not public address space.
                "reserved IPv6"
            } else {
                return None;
            })
        }
    }
}

fn parse_net_grant(section: &NetGrantSection) -> Result<NetGrant, String> {
    let (url, methods, addresses) = match section {
        NetGrantSection::Url(u) => (u.as_str(), &[][..], &[][..]),
        NetGrantSection::Full(t) => (t.url.as_str(), &t.methods[..], &t.addresses[..]),
    };
    let bad = |why: &str| {
        format!("\"{url}\": {why} (expected scheme://host[:port], e.g. https://api.example.com)")
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(bad("only scheme, host and port may be given"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
        if !after.is_empty() && !after.starts_with(':') {
            return Err(bad("unexpected text after `]`"));
        }
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("bad port"))?,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let valid_name = |h: &str| {
        !h.is_empty()
            && h.split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    let host = if let Some(suffix) = host.strip_prefix("*.") {
        let top_is_numeric = suffix
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
        if !valid_name(suffix) || !suffix.contains('.') || top_is_numeric {
            return Err(bad(
                "a wildcard must cover subdomains of a domain with a dot, like *.example.com",
            ));
        }
        HostPattern::Subdomains(suffix.to_owned())
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        // One textual form per address, the one requests are compared in.
        HostPattern::Exact(ip.to_string())
    } else if valid_name(&host) {
        HostPattern::Exact(host)
    } else {
        return Err(bad("bad host"));
    };
    let methods = methods
        .iter()
        .map(|m| {
            let m = m.to_ascii_uppercase();
            if METHODS.contains(&m.as_str()) {
                Ok(m)
            } else {
                Err(format!("\"{url}\": unknown method \"{m}\""))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let addresses = addresses
        .iter()
        .map(|a| {
            a.parse::<ipnet::IpNet>()
                .or_else(|_| a.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("\"{url}\": \"{a}\" is not an address or CIDR range"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for a in &addresses {
        if special_range(a.network()).is_none() && special_range(a.broadcast()).is_none() {
            return Err(format!(
                "\"{url}\": \"{a}\" is public address space, which needs no `addresses` entry; list only the \
                 loopback, private or other special ranges the host may resolve to"
            ));
        }
    }
    Ok(NetGrant {
        id: format!("net:{url}"),
        https,
        host,
        port,
        methods,
        addresses,
    })
}

fn parse_tcp_grant(target: &str) -> Result<TcpGrant, String> {
    let address: SocketAddr = target.parse().map_err(|_| {
        format!(
            "\"{target}\" is not an IP address and port such as 10.0.0.5:5432 or [fd00::5]:5432; \
             host names cannot be granted because wasi:sockets name lookup cannot be limited to one name"
        )
    })?;
    if address.port() == 0 || address.ip().is_unspecified() {
        return Err(format!(
            "\"{target}\" must name one address and a non-zero port"
        ));
    }
    Ok(TcpGrant {
        id: format!("tcp:{address}"),
        address,
    })
}

/// Headers a secret may not be injected as: they frame or route the request.
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

fn parse_secret_grant(
    g: &SecretGrantSection,
    store: &SecretStore,
    net: &[NetGrant],
) -> Result<SecretGrant, String> {
    let name = &g.name;
    let value = store
        .get(name)
        .ok_or_else(|| {
            format!("secret {name} is not declared in [secrets] (declare it under env or files)")
        })?
        .clone();
    match (g.expose, &g.host, &g.header) {
        (Some(Expose::Env), None, None) => {
            if g.format.is_some() {
                return Err(format!(
                    "secret {name}: `format` applies only to a header grant"
                ));
            }
            Ok(SecretGrant {
                id: format!("secret:{name}:env"),
                name: name.clone(),
                value,
                usage: SecretUse::Env,
            })
        }
        (None, Some(host), Some(header)) => {
            let pattern = match parse_net_grant(&NetGrantSection::Url(format!("https://{host}"))) {
                Ok(g) if !host.contains(':') => g.host,
                _ => {
                    return Err(format!(
                        "secret {name}: \"{host}\" is not a host name (such as api.example.com or *.example.com) or IP address"
                    ));
                }
            };
            if !net.iter().any(|n| pattern.within(&n.host)) {
                return Err(format!(
                    "secret {name}: no net grant of this tool covers {pattern}, so the header would never be sent"
                ));
            }
            let header = http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("secret {name}: \"{header}\" is not a valid header name"))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(format!(
                    "secret {name}: {header} frames or routes the request and cannot carry a secret"
                ));
            }
            let format = g.format.as_deref().unwrap_or("{}");
            let (prefix, suffix) = match format.split_once("{}") {
                Some((p, s)) if !s.contains("{}") => (p, s),
                _ => {
                    return Err(format!(
                        "secret {name}: format \"{format}\" must contain `{{}}` exactly once, where the value goes"
                    ));
                }
            };
            let mut formatted =
                http::HeaderValue::from_str(&format!("{prefix}{}{suffix}", value.expose()))
                    .map_err(|_| {
                        format!("secret {name}: the formatted value is not a valid header value")
                    })?;
            formatted.set_sensitive(true);
            Ok(SecretGrant {
                id: format!("secret:{name}@{pattern}"),
                name: name.clone(),
                value,
                usage: SecretUse::Header {
                    host: pattern,
                    header,
                    value: formatted,
                },
            })
        }
        _ => Err(format!(
            "secret {name}: give either host and header (injected at egress) or expose = \"env\""
        )),
    }
}

/// Resolve and check the grants of one component. `base` is the configuration's directory;
/// `secrets` are the loaded `[secrets]`. Errors are (key, problem). Whether a grant exposes
/// Airlock's own files is checked once every component is known (`config::policy`).
pub(crate) fn resolve(
    section: &GrantsSection,
    base: &Path,
    secrets: &SecretStore,
) -> Result<Grants, (String, String)> {
    let mut fs: Vec<FsGrant> = Vec::with_capacity(section.fs.len());
    for (i, g) in section.fs.iter().enumerate() {
        let key = format!("grants › fs[{i}]");
        let guest = normalize_guest(&g.guest).map_err(|p| (format!("{key} › guest"), p))?;
        let id = format!("fs:{guest}");
        if fs.iter().any(|f| f.id == id) {
            return Err((
                format!("{key} › guest"),
                format!("\"{guest}\" is granted twice"),
            ));
        }
        let wanted = base.join(&g.host);
        let host = wanted.canonicalize().map_err(|e| {
            (
                format!("{key} › host"),
                format!("{}: {e}", wanted.display()),
            )
        })?;
        if !host.is_dir() {
            return Err((
                format!("{key} › host"),
                format!("{} is not a directory", host.display()),
            ));
        }
        let quota = match (g.mode, g.quota) {
            (FsMode::Rw, q) => Some(q.unwrap_or(DEFAULT_QUOTA)),
            (FsMode::Ro, None) => None,
            (FsMode::Ro, Some(_)) => {
                return Err((
                    format!("{key} › quota"),
                    "a quota applies to rw grants only; this grant is ro".into(),
                ));
            }
        };
        fs.push(FsGrant {
            id,
            host,
            guest,
            mode: g.mode,
            quota,
        });
    }
    let mut net: Vec<NetGrant> = Vec::with_capacity(section.net.len());
    for (i, g) in section.net.iter().enumerate() {
        let grant = parse_net_grant(g).map_err(|p| (format!("grants › net[{i}]"), p))?;
        if net
            .iter()
            .any(|n| n.https == grant.https && n.host == grant.host && n.port == grant.port)
        {
            return Err((
                format!("grants › net[{i}]"),
                format!(
                    "{} repeats an earlier grant for the same scheme, host and port",
                    grant.id
                ),
            ));
        }
        net.push(grant);
    }
    let mut tcp: Vec<TcpGrant> = Vec::with_capacity(section.tcp.len());
    for (i, t) in section.tcp.iter().enumerate() {
        let key = || format!("grants › tcp[{i}]");
        let grant = parse_tcp_grant(t).map_err(|p| (key(), p))?;
        if tcp.iter().any(|g| g.id == grant.id) {
            return Err((key(), format!("{} is granted twice", grant.id)));
        }
        tcp.push(grant);
    }
    let mut granted: Vec<SecretGrant> = Vec::with_capacity(section.secrets.len());
    for (i, g) in section.secrets.iter().enumerate() {
        let key = || format!("grants › secrets[{i}]");
        let grant = parse_secret_grant(g, secrets, &net).map_err(|p| (key(), p))?;
        if granted.iter().any(|s| s.id == grant.id) {
            return Err((key(), format!("{} is granted twice", grant.id)));
        }
        if let SecretUse::Header { host, header, .. } = &grant.usage
            && granted.iter().any(|s| {
                matches!(&s.usage, SecretUse::Header { host: h, header: n, .. } if h == host && n == header)
            })
        {
            return Err((
                key(),
                format!("another secret is already injected as {header} for {host}"),
            ));
        }
        granted.push(grant);
    }
    let reflections = Reflections::of(
        granted
            .iter()
            .filter(|s| matches!(s.usage, SecretUse::Header { .. }))
            .map(|s| &s.value),
    )
    .map_err(|p| ("grants › secrets".to_owned(), p))?
    .map(Arc::new);
    Ok(Grants {
        fs,
        net,
        tcp,
        secrets: granted,
        sample: section.sample,
        reflections,
    })
}

/// Guest paths are absolute and plain: no `.`, `..` or empty segments.
fn normalize_guest(guest: &str) -> Result<String, String> {
    if !guest.starts_with('/') {
        return Err(format!(
            "\"{guest}\" must be an absolute path such as /data"
        ));
    }
    let mut out = String::new();
    for c in Path::new(guest).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => {
                let s = s
                    .to_str()
                    .ok_or_else(|| format!("\"{guest}\" is not valid UTF-8"))?;
                out.push('/');
                out.push_str(s);
            }
            _ => return Err(format!("\"{guest}\" must not contain `.` or `..`")),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The best absolute form of `p` for comparisons: canonical when it exists.
pub(crate) fn comparable(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    // Not there yet (a state directory before the first start): the deepest ancestor that
    // exists, resolved, with the rest appended, so that a symlink on the way is followed.
    let absolute = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut rest = Vec::new();
    let mut at = absolute.as_path();
    while let Some(parent) = at.parent() {
        if let Some(name) = at.file_name() {
            rest.push(name.to_owned());
        }
        if let Ok(base) = parent.canonicalize() {
            return rest.iter().rev().fold(base, |acc, n| acc.join(n));
        }
        at = parent;
    }
    absolute
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> GrantsSection {
        toml::from_str(toml_text).unwrap()
    }

    fn net(url: &str) -> Result<NetGrant, String> {
        parse_net_grant(&NetGrantSection::Url(url.to_owned()))
    }

    #[test]
    fn net_grants_parse_and_match() {
        let g = net("https://API.example.com").unwrap();
        assert_eq!(
            (g.https, g.port, &g.host),
            (true, 443, &HostPattern::Exact("api.example.com".into()))
        );
        assert!(g.covers(true, "api.example.com", 443, "GET"));
        assert!(!g.covers(false, "api.example.com", 443, "GET"));
        assert!(!g.covers(true, "api.example.com", 8443, "GET"));
        assert!(!g.covers(true, "evil-api.example.com", 443, "GET"));
        let w = net("http://*.example.com:8080").unwrap();
        assert!(w.covers(false, "a.b.example.com", 8080, "POST"));
        assert!(!w.covers(false, "example.com", 8080, "POST"));
        assert!(!w.covers(false, "badexample.com", 8080, "POST"));
        let m = parse_net_grant(&NetGrantSection::Full(NetGrantTable {
            url: "https://x.example.com".into(),
            methods: vec!["get".into()],
            addresses: vec!["10.0.0.0/8".into()],
        }))
        .unwrap();
        assert!(m.covers(true, "x.example.com", 443, "GET"));
        assert!(!m.covers(true, "x.example.com", 443, "DELETE"));
        assert!(!g.covers(true, "api.example.com", 443, "TRACE"));
        assert!(!g.covers(true, "api.example.com", 443, "CONNECT"));
        let v6 = net("http://[fd00::0001]:8080").unwrap();
        assert_eq!(v6.host, HostPattern::Exact("fd00::1".into()));
        assert!(m.allows_address("10.1.2.3".parse().unwrap()));
        assert!(!m.allows_address("192.168.1.1".parse().unwrap()));
        for bad in [
            "ftp://x.com",
            "https://x.com/path",
            "https://*.com",
            "https://x.com:0",
            "https://user@x.com",
            "x.com",
            "https://[::1]junk",
            "https://*.0.0.1",
        ] {
            assert!(net(bad).is_err(), "{bad}");
        }
        assert!(
            parse_net_grant(&NetGrantSection::Full(NetGrantTable {
                url: "https://x.example.com".into(),
                methods: vec![],
                addresses: vec!["8.8.8.0/24".into()],
            }))
            .is_err()
        );
    }

    #[test]
    fn special_ranges_are_refused_unless_named() {
        let g = net("https://api.example.com").unwrap();
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "::7f00:1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
            "fec0::1",
        ] {
            assert!(!g.allows_address(ip.parse().unwrap()), "{ip}");
        }
        assert!(g.allows_address("93.184.216.34".parse().unwrap()));
        assert!(g.allows_address("2606:2800:220:1::1".parse().unwrap()));
        assert_eq!(
            special_range("169.254.169.254".parse().unwrap()),
            Some("cloud metadata")
        );
        let lit = net("http://127.0.0.1:8080").unwrap();
        assert!(lit.allows_address("127.0.0.1".parse().unwrap()));
        assert!(!lit.allows_address("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn guest_paths_are_normalised_or_refused() {
        assert_eq!(normalize_guest("/data//x/").unwrap(), "/data/x");
        assert_eq!(normalize_guest("/").unwrap(), "/");
        assert!(normalize_guest("data").is_err());
        assert!(normalize_guest("/data/../etc").is_err());
    }

    #[test]
    fn grants_resolve_to_existing_directories() {
        let dir = std::env::temp_dir().join(format!("airlock-grants-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("file"), b"x").unwrap();
        let g = resolve(
            &section("fs = [{ host = \"data\", guest = \"/d\", mode = \"ro\" }]"),
            &dir,
            &SecretStore::default(),
        )
        .unwrap();
        assert_eq!(g.fs[0].id, "fs:/d");
        assert_eq!(g.fs[0].host, dir.join("data").canonicalize().unwrap());

        let e = resolve(
            &section("fs = [{ host = \"file\", guest = \"/d\", mode = \"ro\" }]"),
            &dir,
            &SecretStore::default(),
        )
        .unwrap_err();
        assert!(e.1.ends_with("is not a directory"), "{e:?}");
        let e = resolve(
            &section("fs = [{ host = \"nope\", guest = \"/d\", mode = \"ro\" }]"),
            &dir,
            &SecretStore::default(),
        )
        .unwrap_err();
        assert_eq!(e.0, "grants › fs[0] › host");
        let e = resolve(
            &section("fs = [{ host = \"data\", guest = \"/d\", mode = \"ro\" }, { host = \"data\", guest = \"/d/\", mode = \"rw\" }]"),
            &dir,
            &SecretStore::default(),
        )
        .unwrap_err();
        assert!(e.1.contains("granted twice"), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn store() -> SecretStore {
        let mut s = SecretStore::default();
        s.insert("TOKEN", "token-value-123".into()).unwrap();
        s
    }

    fn secret_error(grant: &str) -> String {
        let text = format!(
            "net = [\"https://api.example.com\", \"https://*.corp.example\"]\nsecrets = [{grant}]"
        );
        resolve(&section(&text), Path::new("."), &store())
            .unwrap_err()
            .1
    }

    #[test]
    fn secret_grants_resolve_and_are_checked() {
        let g = resolve(
            &section(
                "net = [\"https://*.example.com\"]\nsecrets = [{ name = \"TOKEN\", host = \"api.example.com\", header = \"Authorization\", format = \"Bearer {}\" }, { name = \"TOKEN\", expose = \"env\" }]",
            ),
            Path::new("."),
            &store(),
        )
        .unwrap();
        assert_eq!(g.secrets[0].id, "secret:TOKEN@api.example.com");
        match &g.secrets[0].usage {
            SecretUse::Header { header, value, .. } => {
                assert_eq!(header, "authorization");
                assert_eq!(value, "Bearer token-value-123");
                assert!(value.is_sensitive());
            }
            SecretUse::Env => panic!("a header grant"),
        }
        assert_eq!(g.secrets[1].id, "secret:TOKEN:env");
        assert!(g.holds_readable_secret());

        let h = "host = \"api.example.com\", header = \"Authorization\"";
        assert!(
            secret_error(&format!("{{ name = \"OTHER\", {h} }}"))
                .contains("not declared in [secrets]")
        );
        assert!(
            secret_error("{ name = \"TOKEN\", host = \"api.other.com\", header = \"X-Key\" }")
                .contains("no net grant of this tool covers api.other.com")
        );
        assert!(
            secret_error("{ name = \"TOKEN\", host = \"*.example.com\", header = \"X-Key\" }")
                .contains("no net grant")
        );
        // A subdomain pattern inside a wildcard grant is covered.
        let ok = "net = [\"https://*.corp.example\"]\nsecrets = [{ name = \"TOKEN\", host = \"*.a.corp.example\", header = \"X-Key\" }]";
        assert!(resolve(&section(ok), Path::new("."), &store()).is_ok());
        assert!(
            secret_error(&format!("{{ name = \"TOKEN\", {h}, format = \"Bearer\" }}"))
                .contains("exactly once")
        );
        assert!(
            secret_error(&format!(
                "{{ name = \"TOKEN\", {h}, format = \"{{}}{{}}\" }}"
            ))
            .contains("exactly once")
        );
        assert!(
            secret_error("{ name = \"TOKEN\", host = \"api.example.com\", header = \"Host\" }")
                .contains("cannot carry a secret")
        );
        assert!(
            secret_error(
                "{ name = \"TOKEN\", host = \"api.example.com\", header = \"Bad Header\" }"
            )
            .contains("not a valid header name")
        );
        assert!(
            secret_error("{ name = \"TOKEN\", host = \"api.example.com\" }")
                .contains("either host and header")
        );
        assert!(
            secret_error(&format!("{{ name = \"TOKEN\", {h}, expose = \"env\" }}"))
                .contains("either host and header")
        );
        assert!(
            secret_error(&format!(
                "{{ name = \"TOKEN\", {h} }}, {{ name = \"TOKEN\", {h} }}"
            ))
            .contains("granted twice")
        );
    }

    #[test]
    fn tcp_grants_name_one_address_and_port() {
        let g = resolve(
            &section("tcp = [\"127.0.0.1:5432\", \"[::1]:22\"]"),
            Path::new("."),
            &SecretStore::default(),
        )
        .unwrap();
        assert_eq!(g.tcp[0].id, "tcp:127.0.0.1:5432");
        assert!(g.allows_tcp("127.0.0.1:5432".parse().unwrap()));
        assert!(g.allows_tcp("[::ffff:127.0.0.1]:5432".parse().unwrap()));
        assert!(!g.allows_tcp("127.0.0.1:5433".parse().unwrap()));
        assert!(!g.allows_tcp("127.0.0.2:5432".parse().unwrap()));
        assert!(g.allows_tcp("[::1]:22".parse().unwrap()));
        assert!(!g.allows_tcp("[64:ff9b::7f00:1]:5432".parse().unwrap()));
        for bad in ["db.internal:5432", "127.0.0.1", "127.0.0.1:0", "0.0.0.0:80"] {
            let text = format!("tcp = [\"{bad}\"]");
            assert!(
                resolve(&section(&text), Path::new("."), &SecretStore::default()).is_err(),
                "{bad}"
            );
        }
    }
}
