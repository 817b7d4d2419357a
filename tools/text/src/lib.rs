//! Text utilities: statistics, case and shape transforms, literal find-and-replace.

use airlock_sdk::{Json, Tool, ToolError, Toolbox, export_tools};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
struct StatsArgs {
    /// The text to measure.
    text: String,
}

#[derive(Serialize, JsonSchema)]
struct Stats {
    bytes: usize,
    chars: usize,
    words: usize,
    lines: usize,
}

fn stats(args: StatsArgs) -> Result<Json<Stats>, ToolError> {
    let t = &args.text;
    Ok(Json(Stats {
        bytes: t.len(),
        chars: t.chars().count(),
        words: t.split_whitespace().count(),
        lines: if t.is_empty() { 0 } else { t.lines().count() },
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Op {
    /// UPPER CASE
    Upper,
    /// lower case
    Lower,
    /// Title Case Of Each Word
    Title,
    /// Remove leading and trailing whitespace
    Trim,
    /// Reverse the characters
    Reverse,
    /// url-friendly-slug
    Slug,
}

#[derive(Deserialize, JsonSchema)]
struct TransformArgs {
    /// The text to transform.
    text: String,
    /// The transformation to apply.
    op: Op,
}

fn transform(args: TransformArgs) -> Result<String, ToolError> {
    let t = args.text;
    Ok(match args.op {
        Op::Upper => t.to_uppercase(),
        Op::Lower => t.to_lowercase(),
        Op::Title => t
            .split(' ')
            .map(|w| {
                let mut c = w.chars();
                match c.next() {
                    Some(f) => f
                        .to_uppercase()
                        .chain(c.flat_map(char::to_lowercase))
                        .collect(),
                    None => String::new(),
                }
            })
            .collect::<Vec<String>>()
            .join(" "),
        Op::Trim => t.trim().to_owned(),
        Op::Reverse => t.chars().rev().collect(),
        Op::Slug => {
            let mut slug = String::with_capacity(t.len());
            for c in t.chars().flat_map(char::to_lowercase) {
                if c.is_alphanumeric() {
                    slug.push(c);
                } else if !slug.is_empty() && !slug.ends_with('-') {
                    slug.push('-');
                }
            }
            slug.trim_end_matches('-').to_owned()
        }
    })
}

#[derive(Deserialize, JsonSchema)]
struct ReplaceArgs {
    /// The text to edit.
    text: String,
    /// The literal text to find (not a pattern). Must not be empty.
    find: String,
    /// What to put in its place.
    replace: String,
    /// Replace at most this many occurrences (all when absent).
    limit: Option<usize>,
}

#[derive(Serialize, JsonSchema)]
struct Replaced {
    text: String,
    replacements: usize,
}

fn replace(args: ReplaceArgs) -> Result<Json<Replaced>, ToolError> {
    if args.find.is_empty() {
        return Err(ToolError::invalid("`find` must not be empty"));
    }
    let total = args.text.matches(args.find.as_str()).count();
    let n = args.limit.map_or(total, |l| l.min(total));
    let text = args.text.replacen(args.find.as_str(), &args.replace, n);
    Ok(Json(Replaced {
        text,
        replacements: n,
    }))
}

fn toolbox() -> Toolbox {
    Toolbox::new()
        .with(
            Tool::new(
                "text_stats",
                "Count bytes, characters, words and lines of a text.",
                stats,
            )
            .title("Text statistics")
            .output::<Stats>()
            .read_only()
            .idempotent()
            .closed_world(),
        )
        .with(
            Tool::new(
                "text_transform",
                "Transform a text: upper, lower or title case, trim, reverse, or make a URL slug.",
                transform,
            )
            .title("Transform text")
            .read_only()
            .idempotent()
            .closed_world(),
        )
        .with(
            Tool::new(
                "text_replace",
                "Replace occurrences of a literal string in a text, optionally at most N of them.",
                replace,
            )
            .title("Find and replace")
            .output::<Replaced>()
            .read_only()
            .idempotent()
            .closed_world(),
        )
}

export_tools!(toolbox());
