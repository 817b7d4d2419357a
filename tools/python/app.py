"""An example Airlock tool in Python, built with componentize-py against the SDK in
sdk/python (scripts/build-authors builds it; docs/authors.md walks through it)."""

from collections import Counter
from dataclasses import dataclass
from typing import List, Literal, Optional

from airlock_sdk import (
    WitWorld,
    InvalidArguments,
    Output,
    ToolError,
    call_tool,
    caller,
    confirm,
    http,
    info,
    progress,
    setting,
    tool,
)

__all__ = ["WitWorld"]


@dataclass
class Stats:
    words: int
    top: List[str]


@tool(read_only=True, destructive=False, idempotent=True, open_world=False)
def py_word_stats(text: str, top: int = 3) -> Stats:
    """Counts the words of a text and names the most frequent ones."""
    words = [w for w in "".join(c.lower() if c.isalnum() else " " for c in text).split()]
    counts = Counter(words)
    info(f"counted {len(counts)} distinct words")
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return Stats(words=len(words), top=[w for w, _ in ranked[:top]])


@tool
def py_greet(name: Optional[str], style: Literal["plain", "loud"] = "plain") -> Output:
    """Greets `name`, or else the caller, with the configured greeting."""
    greeting = f"{setting('greeting', 'hello')}, {name or caller().principal}"
    return Output(text=[greeting.upper() if style == "loud" else greeting])


@tool
def py_divide(a: float, b: float) -> str:
    """Divides a by b."""
    if b == 0:
        raise InvalidArguments("b must not be 0")
    if a != a:
        raise ToolError("a is not a number")
    return str(a / b)


@tool(read_only=True, destructive=False)
def py_fetch(url: str) -> dict:
    """Fetches a URL the operator's grants allow: its status and body as text."""
    response = http.get(url, max_response_bytes=64 * 1024)
    return {"status": response.status, "body": response.text(), "truncated": response.truncated}


@tool
def py_relay(tool_name: str, arguments: dict) -> str:
    """Calls another tool of this Airlock, as the same caller, and returns its text."""
    out = call_tool(tool_name, arguments)
    return "\n".join(out.text)


@tool
def py_careful(step: str) -> str:
    """Reports progress, then asks a person before it runs `step` (an example: nothing changes)."""
    progress(0, 1, f"about to run {step}")
    if not confirm(f"Run {step}?", "An example: nothing is changed."):
        return f"{step}: skipped"
    progress(1, 1)
    return f"{step}: done"
