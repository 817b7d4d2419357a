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
    /// The tool's `elicit()` or a form of its `ask()`: a form for the user to fill in.
    Elicit,
    /// The tool's `sample()`: a message from the client's model.
    Sample,
    /// The tool's `ask()` for the client's roots.
    Roots,
}

impl Asking {
    /// The client capability this needs when the client is asked.
    pub fn capability(self) -> &'static str {
        match self {
            Asking::Approval | Asking::Confirm | Asking::Elicit => "elicitation",
            Asking::Sample => "sampling",
            Asking::Roots => "roots",
        }
    }

    /// A question whose answer is data for the tool (not a yes that authorises a step).
    pub fn is_data(self) -> bool {
        matches!(self, Asking::Elicit | Asking::Sample | Asking::Roots)
    }
}

impl std::fmt::Display for Asking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Asking::Approval => "approval",
            Asking::Confirm => "confirmation",
            Asking::Elicit => "input",
            Asking::Sample => "sampling request",
            Asking::Roots => "roots request",
        })
    }
}

/// What the person answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Reply {
    Accept {
        content: JsonObject,
    },
    Decline,
    Cancel,
    /// The client's result for a sampling or roots request, as it sent it.
    Returned {
        result: JsonObject,
    },
}

impl Reply {
    /// An explicit yes to a yes/no question.
    pub fn is_yes(&self) -> bool {
        matches!(self, Reply::Accept { content } if content.get("approve") == Some(&serde_json::Value::Bool(true)))
    }

    /// The client's answer to a question of `asking`, as it sent it: an `ElicitResult` for
    /// forms, the result object for sampling and roots; anything unreadable is a cancel.
    pub fn from_response(asking: Asking, v: &serde_json::Value) -> Reply {
        match (asking, v) {
            (Asking::Sample | Asking::Roots, serde_json::Value::Object(o)) => {
                Reply::Returned { result: o.clone() }
            }
            (Asking::Sample | Asking::Roots, _) => Reply::Cancel,
            _ => Reply::from_elicit_result(v),
        }
    }

    /// The client's answer to a question of `asking` when it is well formed: an `ElicitResult`
    /// with a known action (and an object of content to accept), a result object with
    /// `roots` or with `role` and `content`. None for anything else.
    pub fn well_formed(asking: Asking, v: &serde_json::Value) -> Option<Reply> {
        let ok = match asking {
            Asking::Sample => {
                v.get("role").is_some_and(|r| r.is_string()) && v.get("content").is_some()
            }
            Asking::Roots => v.get("roots").is_some_and(|r| r.is_array()),
            _ => match v.get("action").and_then(|a| a.as_str()) {
                Some("accept") => v.get("content").is_some_and(|c| c.is_object()),
                Some("decline" | "cancel") => true,
                _ => false,
            },
        };
        ok.then(|| Reply::from_response(asking, v))
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
