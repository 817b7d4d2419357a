//! What a call asks people, and what they answer.

use rmcp::model::JsonObject;
use serde::{Deserialize, Serialize};

/// What a call asks a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Asking {
    /// May this call run? (tier or approval rule)
    Approval,
    /// The tool's `confirm()`: may it take the next step?
    Confirm,
    /// The tool's `elicit()`: a form for the user to fill in.
    Elicit,
}

impl std::fmt::Display for Asking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Asking::Approval => "approval",
            Asking::Confirm => "confirmation",
            Asking::Elicit => "input",
        })
    }
}

/// What the person answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Reply {
    Accept { content: JsonObject },
    Decline,
    Cancel,
}

impl Reply {
    /// An explicit yes to a yes/no question.
    pub fn is_yes(&self) -> bool {
        matches!(self, Reply::Accept { content } if content.get("approve") == Some(&serde_json::Value::Bool(true)))
    }

    /// An MCP `ElicitResult` (as the client sent it); anything unreadable is a cancel.
    pub fn from_elicit_result(v: &serde_json::Value) -> Reply {
        match v.get("action").and_then(|a| a.as_str()) {
            Some("accept") => Reply::Accept {
                content: v
                    .get("content")
                    .and_then(|c| c.as_object())
                    .cloned()
                    .unwrap_or_default(),
            },
            Some("decline") => Reply::Decline,
            _ => Reply::Cancel,
        }
    }
}
