//! Unit-testing tools natively (`cargo test`, not in a component): [`TestHost`] stands in for
//! the host's imports (log, progress, confirm, elicit, nested calls, HTTP, settings, the
//! caller), answers them as the test says, and records what the tool asked.
//!
//! ```ignore
//! use airlock_sdk::testing::TestHost;
//!
//! #[test]
//! fn greets_with_the_configured_greeting() {
//!     let (out, host) = TestHost::new()
//!         .setting("greeting", "howdy")
//!         .caller("alice", &["ops"])
//!         .confirm_answers(&[true])
//!         .http_response("https://api.example/", 200, r#"{"ok": true}"#)
//!         .run(|| greet(GreetArgs { loud: false }));
//!     assert_eq!(out.unwrap(), "howdy, alice");
//!     assert_eq!(host.logs().len(), 1);
//! }
//! ```
//!
//! Outside [`TestHost::run`] the imports panic with a message saying so: a native build has
//! no host.

use crate::bindings::airlock::tool::host as wit_host;
use crate::bindings::airlock::tool::types as wit;
use crate::http::{HttpError, Response, SentRequest};
use crate::{NestedError, Output};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

/// The stand-in host of one test.
#[derive(Default)]
pub struct TestHost {
    settings: BTreeMap<String, String>,
    caller: Option<(String, Vec<String>)>,
    confirms: VecDeque<bool>,
    forms: VecDeque<Option<serde_json::Value>>,
    tools: Vec<(String, Result<Output, NestedError>)>,
    http: Vec<(String, Result<Response, HttpError>)>,
    cancelled: bool,
    logs: Vec<(wit_host::LogLevel, String)>,
    progress: Vec<(f64, Option<f64>, Option<String>)>,
    questions: Vec<(String, String)>,
    nested: Vec<(String, serde_json::Value)>,
    requests: Vec<SentRequest>,
    blocked: Vec<String>,
}

thread_local! {
    static HOST: RefCell<Option<TestHost>> = const { RefCell::new(None) };
}

impl TestHost {
    /// A host with no settings, an unrestricted caller named `test`, nobody to say yes, no
    /// other tools and no network.
    pub fn new() -> Self {
        TestHost::default()
    }

    /// A `[tool.settings]` value.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The caller: a principal holding `roles`.
    pub fn caller(mut self, principal: &str, roles: &[&str]) -> Self {
        self.caller = Some((
            principal.to_owned(),
            roles.iter().map(|r| (*r).to_owned()).collect(),
        ));
        self
    }

    /// The answers to `confirm`, in order; once they run out, every answer is no.
    pub fn confirm_answers(mut self, answers: &[bool]) -> Self {
        self.confirms.extend(answers);
        self
    }

    /// The next form (`elicit`, or a form in `ask`) is accepted with `answer`.
    pub fn form_answer(mut self, answer: serde_json::Value) -> Self {
        self.forms.push_back(Some(answer));
        self
    }

    /// The next form is declined. Once the answers run out, forms are cancelled.
    pub fn form_declined(mut self) -> Self {
        self.forms.push_back(None);
        self
    }

    /// A nested `call_tool` of `name` answers with `answer`; other tools are unknown.
    pub fn tool(mut self, name: &str, answer: Result<Output, NestedError>) -> Self {
        self.tools.push((name.to_owned(), answer));
        self
    }

    /// Requests whose URL starts with `url_prefix` get this response; any other request is
    /// refused as the host refuses what no grant allows (`HttpError::BlockedByPolicy`). The
    /// real host then ends the whole call as `blocked_by_policy`, whatever the tool does next:
    /// [`TestHost::blocked`] lists such refusals, so a test can assert there were none.
    pub fn http_response(mut self, url_prefix: &str, status: u16, body: &str) -> Self {
        self.http.push((
            url_prefix.to_owned(),
            Ok(Response {
                status,
                headers: Vec::new(),
                body: body.as_bytes().to_vec(),
                truncated: false,
            }),
        ));
        self
    }

    /// Requests whose URL starts with `url_prefix` fail with `error`.
    pub fn http_error(mut self, url_prefix: &str, error: HttpError) -> Self {
        self.http.push((url_prefix.to_owned(), Err(error)));
        self
    }

    /// The call counts as cancelled (`cancelled()` is true).
    pub fn cancelled(mut self) -> Self {
        self.cancelled = true;
        self
    }

    /// Run `f` (the tool) against this host; returns its result and the host, to inspect what
    /// the tool asked of it.
    pub fn run<R>(self, f: impl FnOnce() -> R) -> (R, TestHost) {
        HOST.with(|h| *h.borrow_mut() = Some(self));
        // Put the host back even when `f` panics, so the next test on the thread starts clean.
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                HOST.with(|h| h.borrow_mut().take());
            }
        }
        let reset = Reset;
        let r = f();
        let host = HOST
            .with(|h| h.borrow_mut().take())
            .expect("installed above");
        std::mem::forget(reset);
        (r, host)
    }

    /// What the tool logged, in order.
    pub fn logs(&self) -> &[(wit_host::LogLevel, String)] {
        &self.logs
    }

    /// The progress it reported: (progress, total, message).
    pub fn progress_reports(&self) -> &[(f64, Option<f64>, Option<String>)] {
        &self.progress
    }

    /// The `confirm` questions it asked: (prompt, details).
    pub fn questions(&self) -> &[(String, String)] {
        &self.questions
    }

    /// The nested calls it made: (tool, arguments).
    pub fn nested_calls(&self) -> &[(String, serde_json::Value)] {
        &self.nested
    }

    /// The HTTP requests it sent.
    pub fn requests(&self) -> &[SentRequest] {
        &self.requests
    }

    /// The URLs of the requests refused as no grant allowing them: under the real host, the
    /// call would have ended there as `blocked_by_policy`.
    pub fn blocked(&self) -> Vec<&str> {
        self.blocked.iter().map(String::as_str).collect()
    }
}

fn with<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    HOST.with(|h| {
        let mut h = h.borrow_mut();
        let host = h.as_mut().expect(
            "an airlock host import was called outside a component and outside \
             airlock_sdk::testing::TestHost::run: wrap the tool call in TestHost::new().run(|| …)",
        );
        f(host)
    })
}

/// An HTTP request, answered as the test said.
pub(crate) fn send(request: SentRequest) -> Result<Response, HttpError> {
    with(|h| {
        let answer = h
            .http
            .iter()
            .find(|(prefix, _)| request.url.starts_with(prefix.as_str()))
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| {
                Err(HttpError::BlockedByPolicy(format!(
                    "no grant allows {} (the test host answers only the URLs it was given)",
                    request.url
                )))
            });
        if matches!(answer, Err(HttpError::BlockedByPolicy(_))) {
            h.blocked.push(request.url.clone());
        }
        h.requests.push(request);
        answer
    })
}

/// The host imports, with the generated functions' signatures.
pub(crate) mod imports {
    use super::*;

    pub fn log(level: wit_host::LogLevel, message: &str) {
        with(|h| h.logs.push((level, message.to_owned())));
    }

    pub fn progress(progress: f64, total: Option<f64>, message: Option<&str>) {
        with(|h| {
            h.progress
                .push((progress, total, message.map(str::to_owned)))
        });
    }

    pub fn confirm(prompt: &str, details: &str) -> bool {
        with(|h| {
            h.questions.push((prompt.to_owned(), details.to_owned()));
            h.confirms.pop_front().unwrap_or(false)
        })
    }

    pub fn elicit(_message: &str, _schema: &str) -> Result<wit_host::ElicitAnswer, String> {
        Ok(with(next_form))
    }

    fn next_form(h: &mut TestHost) -> wit_host::ElicitAnswer {
        match h.forms.pop_front() {
            Some(Some(v)) => wit_host::ElicitAnswer::Accept(v.to_string()),
            Some(None) => wit_host::ElicitAnswer::Decline,
            None => wit_host::ElicitAnswer::Cancel,
        }
    }

    pub fn ask(requests: &[wit_host::InputRequest]) -> Result<Vec<wit_host::Answer>, String> {
        with(|h| {
            requests
                .iter()
                .map(|r| {
                    let reply = match &r.kind {
                        wit_host::InputKind::Form(_) => wit_host::InputReply::Form(next_form(h)),
                        wit_host::InputKind::Roots => wit_host::InputReply::Roots(Vec::new()),
                        wit_host::InputKind::Sample(_) => {
                            return Err("the test host has no model to sample".to_owned());
                        }
                    };
                    Ok(wit_host::Answer {
                        key: r.key.clone(),
                        reply,
                    })
                })
                .collect()
        })
    }

    pub fn sample(
        _request: &wit_host::SampleRequest,
    ) -> Result<wit_host::SampleReply, wit_host::SampleError> {
        Err(wit_host::SampleError::Declined(
            "the test host has no model to sample".to_owned(),
        ))
    }

    pub fn client_supports() -> wit_host::ClientFeatures {
        wit_host::ClientFeatures {
            elicitation: true,
            sampling: false,
            roots: true,
        }
    }

    pub fn list_changed(_what: wit_host::Listing) {}

    pub fn resource_updated(_uri: &str) {}

    pub fn call_tool(
        name: &str,
        arguments: &str,
    ) -> Result<wit::ToolOutput, wit_host::NestedFailure> {
        with(|h| {
            let args = serde_json::from_str(arguments).unwrap_or(serde_json::Value::Null);
            h.nested.push((name.to_owned(), args));
            match h.tools.iter().find(|(n, _)| n == name) {
                Some((_, Ok(out))) => Ok(crate::to_wit(out.clone())),
                Some((_, Err(e))) => Err(wit_host::NestedFailure {
                    outcome: e.outcome.clone(),
                    message: e.message.clone(),
                }),
                None => Err(wit_host::NestedFailure {
                    outcome: "unknown_tool".to_owned(),
                    message: format!("the test host has no tool {name}"),
                }),
            }
        })
    }

    pub fn cancelled() -> bool {
        with(|h| h.cancelled)
    }

    pub fn caller() -> wit_host::CallerIdentity {
        with(|h| match &h.caller {
            Some((principal, roles)) => wit_host::CallerIdentity {
                principal: principal.clone(),
                roles: roles.clone(),
                unrestricted: false,
            },
            None => wit_host::CallerIdentity {
                principal: "test".to_owned(),
                roles: Vec::new(),
                unrestricted: true,
            },
        })
    }

    pub fn setting(name: &str) -> Option<String> {
        with(|h| h.settings.get(name).cloned())
    }

    pub fn settings() -> Vec<(String, String)> {
        with(|h| {
            h.settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }
}
