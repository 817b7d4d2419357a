"""Airlock tools in Python: declare functions with ``@tool``, build with componentize-py.

The SDK implements the ``airlock:tool@0.2.0`` world (``sdk/wit/v0.2.0``) for you: it answers
``describe`` with a JSON Schema made from each tool's type hints, checks nothing the host has
not already checked (the host validates arguments against that schema before a call), turns
what a tool returns into MCP content, and maps exceptions to the world's errors.

    from airlock_sdk import tool, log, WitWorld

    @tool
    def shout(text: str, times: int = 1) -> str:
        "Repeats the text in capitals."
        return " ".join([text.upper()] * times)

Build (``WitWorld`` must be importable from the app module):

    componentize-py -d sdk/wit/http -w airlock:tool-http/tool componentize -p sdk/python \
        -p . app -o app.wasm

(``sdk/wit/http`` is the ``airlock:tool`` world plus outgoing HTTP, for ``airlock_sdk.http``.)
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

import wit_world
from componentize_py_types import Err
from wit_world.imports import airlock_tool_types as types
from wit_world.imports import host

__all__ = [
    "tool", "Output", "ToolError", "InvalidArguments", "WitWorld", "Caller",
    "log", "debug", "info", "warn", "error", "progress", "confirm", "elicit", "call_tool",
    "NestedError", "cancelled", "caller", "setting", "settings", "schema_of", "http",
]


# ---------------------------------------------------------------------------------------------
# Declaring tools


@dataclasses.dataclass
class _Tool:
    name: str
    description: str
    func: Callable[..., Any]
    input_schema: Dict[str, Any]
    output_schema: Optional[Dict[str, Any]]
    title: Optional[str]
    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool


_TOOLS: Dict[str, _Tool] = {}


def tool(
    func: Optional[Callable[..., Any]] = None,
    *,
    name: Optional[str] = None,
    description: Optional[str] = None,
    title: Optional[str] = None,
    read_only: bool = False,
    destructive: bool = True,
    idempotent: bool = False,
    open_world: bool = True,
    input_schema: Optional[Dict[str, Any]] = None,
):
    """Declare a tool. Its arguments are the function's parameters: their type hints make the
    input schema (a parameter with a default is optional), its docstring the description
    unless ``description`` is given. A return hint of a dataclass, dict or list makes the result
    structured content with that output schema. ``input_schema`` replaces the derived schema."""

    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        tool_name = name or f.__name__
        text = description or inspect.getdoc(f)
        if not text:
            raise ValueError(f"tool {tool_name} needs a description (a docstring or description=)")
        if tool_name in _TOOLS:
            raise ValueError(f"tool {tool_name} is declared twice")
        hints = typing.get_type_hints(f)
        returns = hints.get("return")
        output = None
        if returns is not None and _structured(returns):
            output = {"type": "object", "properties": {"result": schema_of(returns)}, "required": ["result"]}
            if dataclasses.is_dataclass(returns):
                output = schema_of(returns)
        _TOOLS[tool_name] = _Tool(
            name=tool_name,
            description=text,
            func=f,
            input_schema=input_schema or _parameters_schema(f, hints),
            output_schema=output,
            title=title,
            read_only=read_only,
            destructive=destructive,
            idempotent=idempotent,
            open_world=open_world,
        )
        return f

    return register(func) if func is not None else register


def _structured(hint: Any) -> bool:
    if hint is Output:
        return False
    origin = typing.get_origin(hint) or hint
    return dataclasses.is_dataclass(hint) or origin in (dict, list, tuple)


def _parameters_schema(f: Callable[..., Any], hints: Dict[str, Any]) -> Dict[str, Any]:
    properties: Dict[str, Any] = {}
    required: List[str] = []
    for p in inspect.signature(f).parameters.values():
        hint = hints.get(p.name, Any)
        s = schema_of(hint)
        if p.default is not inspect.Parameter.empty:
            if p.default is not None:
                s = dict(s, default=_to_json(p.default))
        elif not _optional(hint):
            required.append(p.name)
        properties[p.name] = s
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)


def schema_of(hint: Any) -> Dict[str, Any]:
    """The JSON Schema of a type hint: str, int, float, bool, None, list[T], tuple[...],
    dict[str, T], Optional[T], Union[...], Literal[...], Enum subclasses, dataclasses and
    TypedDicts. ``Any`` is any JSON value."""
    if hint is Any:
        return {}
    if hint is type(None):
        return {"type": "null"}
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [m.value for m in hint]}
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        props, req = {}, []
        for f in dataclasses.fields(hint):
            props[f.name] = schema_of(hints[f.name])
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if not has_default and not _optional(hints[f.name]):
                req.append(f.name)
        return {"type": "object", "properties": props, "required": req, "additionalProperties": False}
    if typing.is_typeddict(hint):
        hints = typing.get_type_hints(hint)
        return {
            "type": "object",
            "properties": {k: schema_of(v) for k, v in hints.items()},
            "required": sorted(getattr(hint, "__required_keys__", hints.keys())),
        }
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin is typing.Union:
        return {"anyOf": [schema_of(a) for a in args]}
    if origin is list:
        return {"type": "array", "items": schema_of(args[0]) if args else {}}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": schema_of(args[0])}
        return {"type": "array", "prefixItems": [schema_of(a) for a in args], "items": False,
                "minItems": len(args)}
    if origin is dict:
        return {"type": "object", "additionalProperties": schema_of(args[1]) if args else {}}
    if hint is list:
        return {"type": "array"}
    if hint is dict:
        return {"type": "object"}
    raise TypeError(f"no JSON Schema for the type hint {hint!r}; give input_schema= instead")


# ---------------------------------------------------------------------------------------------
# Results and errors


class ToolError(Exception):
    """The tool could not do what was asked: the call fails (outcome ``tool_failed``)."""


class InvalidArguments(ToolError):
    """The arguments are not valid for the tool (outcome ``invalid_arguments``)."""


@dataclasses.dataclass
class Output:
    """A result with full control: text items, structured content, and whether it reports an
    error the model should see (MCP ``isError``)."""

    text: List[str] = dataclasses.field(default_factory=list)
    structured: Optional[Any] = None
    is_error: bool = False

    @staticmethod
    def error(message: str) -> "Output":
        return Output(text=[message], is_error=True)


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _to_json(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


def _output(t: _Tool, value: Any) -> types.ToolOutput:
    if isinstance(value, Output):
        structured = None if value.structured is None else json.dumps(_to_json(value.structured))
        return types.ToolOutput(
            content=[types.Content_Text(s) for s in value.text],
            structured=structured,
            is_error=value.is_error,
        )
    if value is None:
        return types.ToolOutput(content=[], structured=None, is_error=False)
    if isinstance(value, str):
        return types.ToolOutput(content=[types.Content_Text(value)], structured=None, is_error=False)
    data = _to_json(value)
    if t.output_schema is not None and not dataclasses.is_dataclass(value):
        data = {"result": data}
    text = json.dumps(data)
    structured = text if t.output_schema is not None else None
    return types.ToolOutput(content=[types.Content_Text(text)], structured=structured, is_error=False)


def _argument(hint: Any, value: Any) -> Any:
    """A JSON argument as the parameter's type: dataclasses and enums are built from JSON."""
    if value is None:
        return None
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        hints = typing.get_type_hints(hint)
        fields = {k: _argument(hints.get(k, Any), v) for k, v in value.items()}
        for f in dataclasses.fields(hint):
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if f.name not in fields and no_default and _optional(hints.get(f.name, Any)):
                fields[f.name] = None
        return hint(**fields)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args and isinstance(value, list):
        return [_argument(args[0], v) for v in value]
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _argument(inner[0], value)
    return value


class WitWorld(wit_world.WitWorld):
    """The ``airlock:tool`` world, answered from the tools declared with ``@tool``. Import it
    into the app module: componentize-py looks it up there."""

    def describe(self) -> types.Offer:
        return types.Offer(
            tools=[
                types.ToolSpec(
                    name=t.name,
                    title=t.title,
                    description=t.description,
                    input_schema=json.dumps(t.input_schema),
                    output_schema=None if t.output_schema is None else json.dumps(t.output_schema),
                    hints=types.Hints(
                        read_only=t.read_only,
                        destructive=t.destructive,
                        idempotent=t.idempotent,
                        open_world=t.open_world,
                    ),
                )
                for t in _TOOLS.values()
            ],
            resources=[],
            resource_templates=[],
            prompts=[],
        )

    def call(self, name: str, arguments: str) -> types.ToolOutput:
        t = _TOOLS.get(name)
        if t is None:
            raise Err(types.CallError_UnknownTool(name))
        try:
            args = json.loads(arguments or "{}")
        except ValueError as e:
            raise Err(types.CallError_InvalidArguments(f"not JSON: {e}"))
        if not isinstance(args, dict):
            raise Err(types.CallError_InvalidArguments("the arguments are not a JSON object"))
        hints = typing.get_type_hints(t.func)
        kwargs = {k: _argument(hints.get(k, Any), v) for k, v in args.items()}
        # An Optional parameter without a default may be left out: it is None then.
        for p in inspect.signature(t.func).parameters.values():
            if p.name not in kwargs and p.default is inspect.Parameter.empty:
                if _optional(hints.get(p.name, Any)):
                    kwargs[p.name] = None
        try:
            # The result's conversion too: a value JSON cannot hold is the tool's failure.
            return _output(t, t.func(**kwargs))
        except InvalidArguments as e:
            raise Err(types.CallError_InvalidArguments(str(e)))
        except ToolError as e:
            raise Err(types.CallError_Failed(str(e)))
        except Err as e:
            # Only the world's own call errors pass as they are; a host import's error the
            # tool did not handle is its failure.
            if isinstance(
                e.value,
                (types.CallError_UnknownTool, types.CallError_InvalidArguments, types.CallError_Failed),
            ):
                raise
            raise Err(types.CallError_Failed(f"unhandled host error: {e.value!r}"))
        except Exception as e:  # noqa: BLE001 - any other exception is the tool's failure
            raise Err(types.CallError_Failed(f"{type(e).__name__}: {e}"))

    def read_resource(self, uri: str) -> List[types.EmbeddedResource]:
        raise Err(types.RequestError_NotFound(uri))

    def get_prompt(self, name: str, arguments: List[Tuple[str, str]]) -> types.Prompt:
        raise Err(types.RequestError_NotFound(name))

    def complete(self, request: types.CompletionRequest) -> types.Completion:
        return types.Completion(values=[], total=None, has_more=False)


# ---------------------------------------------------------------------------------------------
# The host's services


def log(level: str, message: str) -> None:
    """Send a message to the host's log (and the client, when it asked): level is ``debug``,
    ``info``, ``warn`` or ``error``."""
    host.log(host.LogLevel[level.upper()], message)


def debug(message: str) -> None:
    log("debug", message)


def info(message: str) -> None:
    log("info", message)


def warn(message: str) -> None:
    log("warn", message)


def error(message: str) -> None:
    log("error", message)


def progress(done: float, total: Optional[float] = None, message: Optional[str] = None) -> None:
    """Report progress; ``done`` must grow from one report to the next."""
    host.progress(float(done), None if total is None else float(total), message)


def confirm(prompt: str, details: str) -> bool:
    """Ask a person to approve the next step: True only for an explicit yes. Put every side
    effect after it, never before (a 2026-07-28 client's retry runs the tool again)."""
    return host.confirm(prompt, details)


def elicit(message: str, schema: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Ask the user to fill in a form (``schema``: a flat JSON Schema object). The answer, or
    None when they declined or dismissed it. Raises ToolError when the form is unusable."""
    try:
        answer = host.elicit(message, json.dumps(schema))
    except Err as e:
        raise ToolError(f"cannot ask: {e.value}")
    if isinstance(answer, host.ElicitAnswer_Accept):
        return json.loads(answer.value)
    return None


class NestedError(ToolError):
    """A nested call produced no output; ``outcome`` names why."""

    def __init__(self, outcome: str, message: str):
        super().__init__(f"{message} ({outcome})")
        self.outcome = outcome
        self.message = message


def call_tool(name: str, arguments: Dict[str, Any]) -> Output:
    """Call another tool of the same Airlock as the same caller, through the whole pipeline."""
    try:
        out = host.call_tool(name, json.dumps(arguments))
    except Err as e:
        raise NestedError(e.value.outcome, e.value.message)
    text = [c.value for c in out.content if isinstance(c, types.Content_Text)]
    structured = None if out.structured is None else json.loads(out.structured)
    return Output(text=text, structured=structured, is_error=out.is_error)


def cancelled() -> bool:
    """True once the caller cancelled or an operator stopped the call: return early."""
    return host.cancelled()


@dataclasses.dataclass
class Caller:
    principal: str
    roles: List[str]
    unrestricted: bool

    def has_role(self, role: str) -> bool:
        return self.unrestricted or role in self.roles


def caller() -> Caller:
    """Who made the current call, as the host authenticated them."""
    c = host.caller()
    return Caller(principal=c.principal, roles=list(c.roles), unrestricted=c.unrestricted)


def setting(name: str, default: Optional[str] = None) -> Optional[str]:
    """The operator's ``[tool.settings]`` value ``name`` (plain configuration, never secret)."""
    value = host.setting(name)
    return default if value is None else value


def settings() -> Dict[str, str]:
    """Every ``[tool.settings]`` value, by name."""
    return dict(host.settings())


# Last: the HTTP module imports the errors above.
from . import http  # noqa: E402
