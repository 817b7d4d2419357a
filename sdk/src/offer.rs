//! Resources, resource templates and prompts a component serves, and the completions it
//! suggests for their arguments.
//!
//! ```ignore
//! use airlock_sdk::{Contents, Prompt, PromptOutput, Resource, ResourceTemplate, Toolbox};
//!
//! fn toolbox() -> Toolbox {
//!     Toolbox::new()
//!         .resource(Resource::text("docs://readme", "README", "Read me first."))
//!         .template(ResourceTemplate::new("docs://pages/{name}", "page", |uri, vars| {
//!             Ok(vec![Contents::text(uri, format!("page {}", vars.get("name").unwrap_or("")))])
//!         }))
//!         .prompt(
//!             Prompt::new("review", "Review a change", |args| {
//!                 Ok(PromptOutput::new().user_text(format!("Review {}", args.require("change")?)))
//!             })
//!             .argument("change", "What to review", true),
//!         )
//! }
//! ```

use crate::bindings::airlock::tool::types as wit;
use crate::{Content, ToolError};

/// The contents of one resource: text or bytes, with its URI and media type.
#[derive(Debug, Clone)]
pub struct Contents {
    uri: String,
    mime_type: Option<String>,
    body: wit::ResourceBody,
}

impl Contents {
    /// UTF-8 text (`text/plain` unless [`Contents::mime`] says otherwise).
    pub fn text(uri: impl Into<String>, text: impl Into<String>) -> Contents {
        Contents {
            uri: uri.into(),
            mime_type: Some("text/plain".into()),
            body: wit::ResourceBody::Text(text.into()),
        }
    }

    /// Raw bytes (the host base64-encodes them).
    pub fn blob(uri: impl Into<String>, data: Vec<u8>, mime_type: impl Into<String>) -> Contents {
        Contents {
            uri: uri.into(),
            mime_type: Some(mime_type.into()),
            body: wit::ResourceBody::Blob(data),
        }
    }

    /// Set the media type.
    pub fn mime(mut self, mime_type: impl Into<String>) -> Contents {
        self.mime_type = Some(mime_type.into());
        self
    }

    fn into_wit(self) -> wit::EmbeddedResource {
        wit::EmbeddedResource {
            uri: self.uri,
            mime_type: self.mime_type,
            body: self.body,
        }
    }
}

type Reader = Box<dyn Fn() -> Result<Vec<Contents>, ToolError>>;
type TemplateReader = Box<dyn Fn(&str, &Vars) -> Result<Vec<Contents>, ToolError>>;
type Completer = Box<dyn Fn(&str, &str, &[(String, String)]) -> Vec<String>>;

/// One resource at a fixed URI.
pub struct Resource {
    uri: String,
    name: String,
    title: Option<String>,
    description: Option<String>,
    mime_type: Option<String>,
    size: Option<u64>,
    read: Reader,
}

impl Resource {
    /// The resource `uri` (with a scheme, unique on the server), called `name`, whose contents
    /// `read` returns.
    pub fn new(
        uri: impl Into<String>,
        name: impl Into<String>,
        read: impl Fn() -> Result<Vec<Contents>, ToolError> + 'static,
    ) -> Resource {
        Resource {
            uri: uri.into(),
            name: name.into(),
            title: None,
            description: None,
            mime_type: None,
            size: None,
            read: Box::new(read),
        }
    }

    /// A resource whose contents are fixed text (`text/plain`).
    pub fn text(
        uri: impl Into<String>,
        name: impl Into<String>,
        text: impl Into<String>,
    ) -> Resource {
        let uri = uri.into();
        let (at, text) = (uri.clone(), text.into());
        Resource::new(uri, name, move || {
            Ok(vec![Contents::text(at.clone(), text.clone())])
        })
        .mime("text/plain")
    }

    pub fn title(mut self, title: impl Into<String>) -> Resource {
        self.title = Some(title.into());
        self
    }

    pub fn description(mut self, description: impl Into<String>) -> Resource {
        self.description = Some(description.into());
        self
    }

    pub fn mime(mut self, mime_type: impl Into<String>) -> Resource {
        self.mime_type = Some(mime_type.into());
        self
    }

    pub fn size(mut self, bytes: u64) -> Resource {
        self.size = Some(bytes);
        self
    }

    pub(crate) fn spec(&self) -> wit::ResourceSpec {
        wit::ResourceSpec {
            uri: self.uri.clone(),
            name: self.name.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            mime_type: self.mime_type.clone(),
            size: self.size,
        }
    }
}

/// The values a URI gave a template's variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars(Vec<(String, String)>);

impl Vars {
    /// The value of the variable `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A family of resources named by a URI template of `{name}` (one path segment) and `{+name}`
/// (anything, `/` included) expressions, such as `docs://{+path}`.
pub struct ResourceTemplate {
    uri_template: String,
    name: String,
    title: Option<String>,
    description: Option<String>,
    mime_type: Option<String>,
    read: TemplateReader,
    complete: Option<Completer>,
}

impl ResourceTemplate {
    /// The template `uri_template`, called `name`; `read` gets the URI asked for and the
    /// values of its variables.
    pub fn new(
        uri_template: impl Into<String>,
        name: impl Into<String>,
        read: impl Fn(&str, &Vars) -> Result<Vec<Contents>, ToolError> + 'static,
    ) -> ResourceTemplate {
        ResourceTemplate {
            uri_template: uri_template.into(),
            name: name.into(),
            title: None,
            description: None,
            mime_type: None,
            read: Box::new(read),
            complete: None,
        }
    }

    pub fn title(mut self, title: impl Into<String>) -> ResourceTemplate {
        self.title = Some(title.into());
        self
    }

    pub fn description(mut self, description: impl Into<String>) -> ResourceTemplate {
        self.description = Some(description.into());
        self
    }

    pub fn mime(mut self, mime_type: impl Into<String>) -> ResourceTemplate {
        self.mime_type = Some(mime_type.into());
        self
    }

    /// Suggest values for a variable: `f(variable, typed so far, variables already chosen)`.
    pub fn complete_with(
        mut self,
        f: impl Fn(&str, &str, &[(String, String)]) -> Vec<String> + 'static,
    ) -> ResourceTemplate {
        self.complete = Some(Box::new(f));
        self
    }

    pub(crate) fn spec(&self) -> wit::ResourceTemplate {
        wit::ResourceTemplate {
            uri_template: self.uri_template.clone(),
            name: self.name.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            mime_type: self.mime_type.clone(),
        }
    }

    /// The variables' values when `uri` is one of the template's URIs.
    pub fn matches(&self, uri: &str) -> Option<Vars> {
        let mut vars = Vec::new();
        matches(&self.uri_template, uri, &mut vars).then_some(Vars(vars))
    }
}

/// Match `uri` against `template`, collecting the variables' values (the shortest value that
/// lets the rest match).
fn matches(template: &str, uri: &str, vars: &mut Vec<(String, String)>) -> bool {
    let Some(open) = template.find('{') else {
        return template == uri;
    };
    let (literal, rest) = template.split_at(open);
    let Some(uri) = uri.strip_prefix(literal) else {
        return false;
    };
    let Some(close) = rest.find('}') else {
        return false;
    };
    let expr = &rest[1..close];
    let after = &rest[close + 1..];
    let (reserved, name) = match expr.strip_prefix('+') {
        Some(n) => (true, n),
        None => (false, expr),
    };
    let limit = if reserved {
        uri.len()
    } else {
        uri.find(['/', '?', '#']).unwrap_or(uri.len())
    };
    for end in (1..=limit).filter(|i| uri.is_char_boundary(*i)) {
        let mut inner = Vec::new();
        if matches(after, &uri[end..], &mut inner) {
            vars.push((name.to_owned(), uri[..end].to_owned()));
            vars.extend(inner);
            return true;
        }
    }
    false
}

/// The arguments a prompt was given, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptArgs(Vec<(String, String)>);

impl PromptArgs {
    /// The argument `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The argument `name`, or an invalid-arguments error naming it.
    pub fn require(&self, name: &str) -> Result<&str, ToolError> {
        self.get(name)
            .ok_or_else(|| ToolError::invalid(format!("the argument {name} is required")))
    }
}

/// A prompt, filled in: messages for the model, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptOutput {
    description: Option<String>,
    messages: Vec<(wit::Role, Content)>,
}

impl PromptOutput {
    pub fn new() -> PromptOutput {
        PromptOutput::default()
    }

    /// A message from the user.
    pub fn user(mut self, content: Content) -> PromptOutput {
        self.messages.push((wit::Role::User, content));
        self
    }

    /// A text message from the user.
    pub fn user_text(self, text: impl Into<String>) -> PromptOutput {
        self.user(Content::Text(text.into()))
    }

    /// A message from the assistant.
    pub fn assistant(mut self, content: Content) -> PromptOutput {
        self.messages.push((wit::Role::Assistant, content));
        self
    }

    pub fn description(mut self, description: impl Into<String>) -> PromptOutput {
        self.description = Some(description.into());
        self
    }
}

type PromptHandler = Box<dyn Fn(&PromptArgs) -> Result<PromptOutput, ToolError>>;

/// A prompt (a message template a user picks), with its arguments.
pub struct Prompt {
    name: String,
    title: Option<String>,
    description: String,
    arguments: Vec<wit::PromptArgument>,
    handler: PromptHandler,
    complete: Option<Completer>,
}

impl Prompt {
    /// The prompt `name` (1 to 64 characters from `A-Z a-z 0-9 _ - .`), filled in by `f`.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        f: impl Fn(&PromptArgs) -> Result<PromptOutput, ToolError> + 'static,
    ) -> Prompt {
        Prompt {
            name: name.into(),
            title: None,
            description: description.into(),
            arguments: Vec::new(),
            handler: Box::new(f),
            complete: None,
        }
    }

    /// Declare an argument. The host refuses a request without a required one.
    pub fn argument(mut self, name: &str, description: &str, required: bool) -> Prompt {
        self.arguments.push(wit::PromptArgument {
            name: name.to_owned(),
            title: None,
            description: Some(description.to_owned()),
            required,
        });
        self
    }

    pub fn title(mut self, title: impl Into<String>) -> Prompt {
        self.title = Some(title.into());
        self
    }

    /// Suggest values for an argument: `f(argument, typed so far, arguments already chosen)`.
    pub fn complete_with(
        mut self,
        f: impl Fn(&str, &str, &[(String, String)]) -> Vec<String> + 'static,
    ) -> Prompt {
        self.complete = Some(Box::new(f));
        self
    }

    pub(crate) fn spec(&self) -> wit::PromptSpec {
        wit::PromptSpec {
            name: self.name.clone(),
            title: self.title.clone(),
            description: Some(self.description.clone()),
            arguments: self.arguments.clone(),
        }
    }
}

fn refused(e: ToolError) -> wit::RequestError {
    match e {
        ToolError::InvalidArguments(m) => wit::RequestError::InvalidArguments(m),
        ToolError::Failed(m) => wit::RequestError::Failed(m),
    }
}

pub(crate) fn read(
    resources: &[Resource],
    templates: &[ResourceTemplate],
    uri: &str,
) -> Result<Vec<wit::EmbeddedResource>, wit::RequestError> {
    let contents = if let Some(r) = resources.iter().find(|r| r.uri == uri) {
        (r.read)()
    } else if let Some((t, vars)) = templates.iter().find_map(|t| Some((t, t.matches(uri)?))) {
        (t.read)(uri, &vars)
    } else {
        return Err(wit::RequestError::NotFound(format!("resource {uri}")));
    };
    Ok(contents
        .map_err(refused)?
        .into_iter()
        .map(Contents::into_wit)
        .collect())
}

pub(crate) fn get_prompt(
    prompts: &[Prompt],
    name: &str,
    arguments: Vec<(String, String)>,
) -> Result<wit::Prompt, wit::RequestError> {
    let prompt = prompts
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| wit::RequestError::NotFound(format!("prompt {name}")))?;
    let out = (prompt.handler)(&PromptArgs(arguments)).map_err(refused)?;
    Ok(wit::Prompt {
        description: out.description,
        messages: out
            .messages
            .into_iter()
            .map(|(role, content)| wit::PromptMessage {
                role,
                content: crate::content_to_wit(content),
            })
            .collect(),
    })
}

pub(crate) fn complete(
    prompts: &[Prompt],
    templates: &[ResourceTemplate],
    request: wit::CompletionRequest,
) -> Result<wit::Completion, wit::RequestError> {
    let completer = match &request.target {
        wit::CompletionTarget::Prompt(name) => prompts
            .iter()
            .find(|p| p.name == *name)
            .map(|p| &p.complete)
            .ok_or_else(|| wit::RequestError::NotFound(format!("prompt {name}")))?,
        wit::CompletionTarget::ResourceTemplate(t) => templates
            .iter()
            .find(|x| x.uri_template == *t)
            .map(|x| &x.complete)
            .ok_or_else(|| wit::RequestError::NotFound(format!("resource template {t}")))?,
    };
    let values = completer.as_ref().map_or_else(Vec::new, |f| {
        f(&request.argument, &request.value, &request.context)
    });
    Ok(wit::Completion {
        total: Some(values.len() as u32),
        has_more: false,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_capture_their_variables() {
        let t = ResourceTemplate::new("test://template/{id}/data", "t", |_, _| Ok(Vec::new()));
        assert_eq!(
            t.matches("test://template/123/data").unwrap().get("id"),
            Some("123")
        );
        assert!(t.matches("test://template/1/2/data").is_none());
        assert!(t.matches("test://template//data").is_none());
        let r = ResourceTemplate::new("docs://{+path}", "d", |_, _| Ok(Vec::new()));
        assert_eq!(
            r.matches("docs://a/b.md").unwrap().get("path"),
            Some("a/b.md")
        );
    }
}
