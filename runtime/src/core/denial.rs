//! What a grant check refused: the reason a call ends as `blocked_by_policy`.

use crate::core::redact::Redactor;
use std::fmt;
use std::net::IpAddr;

/// A request the policy refused. The first one of a call ends the call as blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No grant covers the scheme, host, port and method.
    NotGranted { method: String, target: String },
    /// A grant covers the name, but it resolves only to addresses the grant does not allow.
    Address {
        target: String,
        address: IpAddr,
        range: &'static str,
    },
    /// A URL carrying userinfo (`user:password@host`): credentials are never sent in URLs,
    /// and the userinfo would otherwise reach the `Host` header verbatim.
    Userinfo { target: String },
    /// More handles of one kind open at once in one call than its limits allow: each holds a
    /// file descriptor of the host's until the tool drops it.
    Handles { kind: HandleKind, limit: u32 },
    /// A `wasi:sockets` use no TCP grant allows.
    Socket { usage: SocketUse, target: String },
    /// A grant that covered the request was revoked by an operator.
    Revoked { grant: String, target: String },
    /// The tool runs in the shadow tier, where nothing may be written: HTTP other than GET
    /// and HEAD, and raw TCP, are withheld.
    Shadow { what: String, target: String },
    /// MCP sampling (`sample`) without the tool's `sample` grant: it spends the client's model.
    Sampling,
}

/// A kind of handle a call holds a host file descriptor through, with its limit's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleKind {
    /// Files and directories opened through filesystem grants (`max_open_files`).
    Files,
    /// TCP sockets (`max_open_sockets`).
    TcpSockets,
    /// Outgoing HTTP requests whose responses are not yet dropped (`max_requests_in_flight`).
    HttpRequests,
}

impl HandleKind {
    /// The `[limits]` key that sets the cap.
    pub fn limit_key(self) -> &'static str {
        match self {
            HandleKind::Files => "max_open_files",
            HandleKind::TcpSockets => "max_open_sockets",
            HandleKind::HttpRequests => "max_requests_in_flight",
        }
    }
}

impl fmt::Display for HandleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandleKind::Files => "open files",
            HandleKind::TcpSockets => "open TCP sockets",
            HandleKind::HttpRequests => "outgoing HTTP requests",
        })
    }
}

/// What a component tried to do with a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketUse {
    /// Creating a TCP socket at all, without a `tcp` grant (or in the shadow tier).
    Create,
    Connect,
    Bind,
    Listen,
    Udp,
}

impl Denial {
    /// The grant kind, for log events.
    pub fn grant_kind(&self) -> &'static str {
        match self {
            Denial::NotGranted { .. }
            | Denial::Address { .. }
            | Denial::Userinfo { .. }
            | Denial::Handles {
                kind: HandleKind::HttpRequests,
                ..
            } => "net",
            Denial::Handles {
                kind: HandleKind::Files,
                ..
            } => "fs",
            Denial::Handles {
                kind: HandleKind::TcpSockets,
                ..
            } => "tcp",
            Denial::Socket { .. } => "tcp",
            Denial::Revoked { grant, .. } if grant.starts_with("tcp:") => "tcp",
            Denial::Revoked { grant, .. } if grant.starts_with("fs:") => "fs",
            Denial::Revoked { .. } => "net",
            Denial::Shadow { .. } => "tier",
            Denial::Sampling => "sample",
        }
    }

    /// The same denial with secret values taken out of the text the guest supplied.
    pub fn redacted(self, redactor: &Redactor) -> Denial {
        if redactor.is_empty() {
            return self;
        }
        let clean = |t: String| redactor.redact(&t).into_owned();
        match self {
            Denial::NotGranted { method, target } => Denial::NotGranted {
                method: clean(method),
                target: clean(target),
            },
            Denial::Address {
                target,
                address,
                range,
            } => Denial::Address {
                target: clean(target),
                address,
                range,
            },
            Denial::Userinfo { target } => Denial::Userinfo {
                target: clean(target),
            },
            Denial::Revoked { grant, target } => Denial::Revoked {
                grant,
                target: clean(target),
            },
            Denial::Shadow { what, target } => Denial::Shadow {
                what,
                target: clean(target),
            },
            socket => socket,
        }
    }

    /// What was refused, for log events.
    pub fn target(&self) -> &str {
        match self {
            Denial::NotGranted { target, .. }
            | Denial::Address { target, .. }
            | Denial::Userinfo { target }
            | Denial::Socket { target, .. }
            | Denial::Revoked { target, .. }
            | Denial::Shadow { target, .. } => target,
            Denial::Handles { .. } | Denial::Sampling => "",
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::NotGranted { method, target } => {
                write!(f, "network egress to {target} ({method}) is not granted")
            }
            Denial::Address {
                target,
                address,
                range,
            } => write!(
                f,
                "network egress to {target} resolves to {address}, a {range} address, which is not granted"
            ),
            Denial::Handles { kind, limit } => write!(
                f,
                "more than {limit} {kind} at once in one call are not granted ({})",
                kind.limit_key()
            ),
            Denial::Userinfo { target } => write!(
                f,
                "a URL with userinfo (user:password@) to {target} is refused: credentials are never \
                 sent in URLs; grant the secret as a header instead"
            ),
            Denial::Socket { usage, target } => match usage {
                SocketUse::Create => write!(f, "creating a TCP socket is not granted ({target})"),
                SocketUse::Connect => write!(f, "a TCP connection to {target} is not granted"),
                SocketUse::Bind => write!(f, "binding a TCP socket to {target} is not granted"),
                SocketUse::Listen => write!(
                    f,
                    "listening for TCP connections on {target} is not granted"
                ),
                SocketUse::Udp => write!(f, "UDP to {target} is not granted"),
            },
            Denial::Revoked { grant, target } if grant.starts_with("fs:") => write!(
                f,
                "access to {target} was granted by {grant}, which an operator revoked"
            ),
            Denial::Revoked { grant, target } => write!(
                f,
                "network egress to {target} was granted by {grant}, which an operator revoked"
            ),
            Denial::Shadow { what, target } => write!(
                f,
                "{what} to {target} is withheld in the shadow tier (read-only: HTTP GET and HEAD only)"
            ),
            Denial::Sampling => write!(
                f,
                "sampling (asking the client's model for a message) is not granted (grant sample = true)"
            ),
        }
    }
}
