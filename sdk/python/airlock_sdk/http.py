"""Outgoing HTTP through the host (``wasi:http``).

The operator's ``net`` grants decide what a tool may reach: a request no grant allows raises
``BlockedByPolicy``, and the host then ends the call as ``blocked_by_policy`` whatever the tool
does next. Redirects are not followed: a redirect is a response like any other, and following
it is a new request the grants check again.

    from airlock_sdk import http, setting

    response = http.get(f"{setting('base_url')}/status", headers={"accept": "application/json"})
    status = response.json()
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from componentize_py_types import Err
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as wasi

from . import InvalidArguments, ToolError

__all__ = ["Response", "HttpError", "BlockedByPolicy", "InvalidRequest", "request", "get", "post"]

#: Response bodies longer than this are cut unless ``max_response_bytes`` says otherwise (the
#: host has its own cap, ``max_response_bytes``, too).
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20

_METHODS = {
    "GET": wasi.Method_Get(),
    "HEAD": wasi.Method_Head(),
    "POST": wasi.Method_Post(),
    "PUT": wasi.Method_Put(),
    "PATCH": wasi.Method_Patch(),
    "DELETE": wasi.Method_Delete(),
}


class HttpError(ToolError):
    """The request produced no response: name resolution, connection, TLS, a timeout."""


class BlockedByPolicy(HttpError):
    """The host's policy refused the request: no grant allows this destination or method."""


class InvalidRequest(HttpError, InvalidArguments):
    """The request cannot be sent as given (a malformed URL, header or method)."""


@dataclass
class Response:
    status: int
    headers: List[Tuple[str, str]]
    body: bytes
    #: The body was longer than ``max_response_bytes`` and was cut.
    truncated: bool

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise HttpError(f"the response is not JSON: {e}")

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _split(url: str) -> Tuple[bool, str, str]:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise InvalidRequest(f"only http and https URLs can be fetched: {url}")
    cut = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0] or [len(rest)])
    authority, path = rest[:cut], rest[cut:]
    if not authority:
        raise InvalidRequest(f"no host in the URL: {url}")
    path = path.split("#", 1)[0] or "/"
    if path.startswith("?"):
        path = "/" + path
    return scheme.lower() == "https", authority, path


def _failed(code: Any) -> HttpError:
    if isinstance(code, wasi.ErrorCode_HttpRequestDenied):
        return BlockedByPolicy("the host's network grants do not allow it")
    return HttpError(f"request failed: {type(code).__name__.removeprefix('ErrorCode_')}")


def request(
    method: str,
    url: str,
    headers: Optional[Dict[str, str]] = None,
    body: bytes = b"",
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Response:
    """Send a request and read its response."""
    https, authority, path = _split(url)
    wasi_method = _METHODS.get(method.upper())
    if wasi_method is None:
        raise InvalidRequest(f"unsupported method {method}")
    try:
        fields = wasi.Fields.from_list([(k, v.encode()) for k, v in (headers or {}).items()])
    except Err as e:
        raise InvalidRequest(f"invalid header: {e.value}")
    req = wasi.OutgoingRequest(fields)
    try:
        req.set_method(wasi_method)
        req.set_scheme(wasi.Scheme_Https() if https else wasi.Scheme_Http())
        req.set_authority(authority)
        req.set_path_with_query(path)
    except Err:
        raise InvalidRequest(f"cannot send {method} {url}")
    outgoing = req.body()
    try:
        future = outgoing_handler.handle(req, None)
    except Err as e:
        raise _failed(e.value)
    write_failed = False
    if body:
        stream = outgoing.write()
        try:
            for i in range(0, len(body), 4096):
                stream.blocking_write_and_flush(body[i : i + 4096])
        except Err:
            # The request was refused, or the server stopped reading: the response (or its
            # error) below says which.
            write_failed = True
        stream.__exit__(None, None, None)
    try:
        wasi.OutgoingBody.finish(outgoing, None)
    except Err as e:
        if not write_failed:
            raise _failed(e.value)
    pollable = future.subscribe()
    pollable.block()
    pollable.__exit__(None, None, None)
    answer = future.get()
    if answer is None or isinstance(answer, Err):
        raise HttpError("the response never arrived")
    inner = answer.value
    if isinstance(inner, Err):
        raise _failed(inner.value)
    response = inner.value
    status = response.status()
    fields = response.headers()
    got = [(k, v.decode("utf-8", errors="replace")) for k, v in fields.entries()]
    fields.__exit__(None, None, None)
    incoming = response.consume()
    stream = incoming.stream()
    data, truncated = bytearray(), False
    while True:
        try:
            chunk = stream.blocking_read(16 * 1024)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                break
            raise HttpError("reading the response body failed")
        room = max_response_bytes - len(data)
        if len(chunk) > room:
            data += chunk[:room]
            truncated = True
            break
        data += chunk
    # Children before their parents: the host refuses to drop a parent first.
    stream.__exit__(None, None, None)
    incoming.__exit__(None, None, None)
    return Response(status=status, headers=got, body=bytes(data), truncated=truncated)


def get(url: str, headers: Optional[Dict[str, str]] = None, **kw: Any) -> Response:
    """``GET url``."""
    return request("GET", url, headers=headers, **kw)


def post(
    url: str,
    body: bytes = b"",
    headers: Optional[Dict[str, str]] = None,
    json: Any = None,
    **kw: Any,
) -> Response:
    """``POST url``; ``json=`` sends a value as JSON with its content type."""
    headers = dict(headers or {})
    if json is not None:
        body = _json.dumps(json).encode()
        headers.setdefault("content-type", "application/json")
    return request("POST", url, headers=headers, body=body, **kw)
