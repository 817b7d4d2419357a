//! Which calls an operator's kill switch covers.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which calls a kill applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KillScope {
    All,
    Tool(String),
    Principal(String),
    /// The resources (and resource templates) of one `[[tool]]` entry.
    Resources(String),
    /// The prompts of one `[[tool]]` entry.
    Prompts(String),
}

impl fmt::Display for KillScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillScope::All => f.write_str("all tools are disabled"),
            KillScope::Tool(t) => write!(f, "tool {t} is disabled"),
            KillScope::Principal(p) => write!(f, "principal {p} is disabled"),
            KillScope::Resources(c) => write!(f, "the resources of {c} are disabled"),
            KillScope::Prompts(c) => write!(f, "the prompts of {c} are disabled"),
        }
    }
}
