"""Drive an Airlock server with the official Python MCP SDK (mcp==2.3.0) and print what happened.

Usage:
    mcp_client.py --mode legacy|auto --stdio CMD [ARG...] -- PLAN_JSON
    mcp_client.py --mode legacy|auto --http URL -- PLAN_JSON

PLAN_JSON: {"list": true, "log_level": "debug"|null,
            "calls": [{"id": "a", "tool": "...", "args": {...}, "delay_ms": 0,
                       "cancel_after_ms": null, "progress": false},
                      {"id": "l", "op": "list", "delay_ms": 20}],
            "then": [ ...calls run one after another once all of "calls" ended... ],
            "await_tools_changed": false,
            "elicit": [{"action": "accept"|"decline"|"cancel", "content": {...}, "delay_ms": 0}]}
The calls run concurrently, each after its delay. The report, one JSON object on stdout:
    {"protocol": "...", "tools": [...], "calls": {"a": {...}}, "logs": [...]}
With "await_tools_changed", once the calls are done the client waits (up to 60 s) for the
server to say the tool list changed (2026-07-28: a `subscriptions/listen` event; before it:
`notifications/tools/list_changed`), printing "LISTENING" on stderr when it is ready, then lists
the tools again into "tools_after".
With "elicit", the client declares elicitation support and answers each request with the next
answer of the list (the last one repeats), after its delay; the messages it was asked are in
"elicitations". Without it, the client declares no elicitation support.
Each call's report has "finished_ms", its end time since the session started, so tests can
check the order in which calls ended without relying on durations.
"""

import argparse
import asyncio
import json
import sys
import time

import mcp
from mcp import StdioServerParameters


def dump_result(result):
    return {
        "is_error": bool(result.is_error),
        "text": "".join(c.text for c in result.content if getattr(c, "type", None) == "text"),
        "content": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.content],
        "structured": result.structured_content,
        "meta": result.meta,
    }


async def run_call(client, spec, epoch):
    await asyncio.sleep(spec.get("delay_ms", 0) / 1000)
    if spec.get("op") == "list":
        started = time.monotonic()
        tools = await client.list_tools()
        now = time.monotonic()
        return spec["id"], {
            "tools": [t.name for t in tools.tools],
            "elapsed_ms": round((now - started) * 1000, 1),
            "finished_ms": round((now - epoch) * 1000, 1),
        }
    progress = []

    async def on_progress(p, total, message):
        progress.append({"progress": p, "total": total, "message": message})

    started = time.monotonic()
    task = asyncio.ensure_future(
        client.call_tool(
            spec["tool"], spec.get("args"), progress_callback=on_progress if spec.get("progress") else None
        )
    )
    report = {}
    try:
        cancel_after = spec.get("cancel_after_ms")
        if cancel_after is not None:
            done, _ = await asyncio.wait({task}, timeout=cancel_after / 1000)
            if not done:
                task.cancel()
                report["cancelled"] = True
        report.update(dump_result(await task))
    except asyncio.CancelledError:
        report["cancelled"] = True
    except Exception as e:  # a protocol error: report it, the test decides
        report["error"] = f"{type(e).__name__}: {e}"
    now = time.monotonic()
    report["elapsed_ms"] = round((now - started) * 1000, 1)
    report["finished_ms"] = round((now - epoch) * 1000, 1)
    report["progress"] = progress
    return spec["id"], report


async def main():
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit("usage: mcp_client.py --mode MODE (--stdio CMD ARGS... | --http URL) -- PLAN_JSON")
    split = argv.index("--")
    opts, plan = argv[:split], json.loads(argv[split + 1])
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--http")
    parser.add_argument("--stdio", nargs=argparse.REMAINDER)
    args = parser.parse_args(opts)

    if args.http:
        server = args.http
    else:
        server = StdioServerParameters(command=args.stdio[0], args=args.stdio[1:])

    logs = []

    async def on_log(params):
        logs.append({"level": params.level, "logger": params.logger, "data": params.data})

    tools_changed = asyncio.Event()

    async def on_message(message):
        if isinstance(message, mcp.types.ToolListChangedNotification):
            tools_changed.set()

    kwargs = {"mode": args.mode, "logging_callback": on_log, "message_handler": on_message}
    elicitations = []
    if plan.get("elicit") is not None:
        answers = list(plan["elicit"])

        async def on_elicit(ctx, params):
            elicitations.append(params.message)
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            await asyncio.sleep(answer.get("delay_ms", 0) / 1000)
            return mcp.types.ElicitResult(action=answer["action"], content=answer.get("content"))

        kwargs["elicitation_callback"] = on_elicit
    if plan.get("log_level"):
        kwargs["log_level"] = plan["log_level"]
    out = {}
    async with mcp.Client(server, **kwargs) as client:
        out["protocol"] = client.protocol_version
        if plan.get("log_level") and args.mode == "legacy":
            await client.set_logging_level(plan["log_level"])
        if plan.get("list"):
            tools = await client.list_tools()
            out["tools"] = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools.tools]
        epoch = time.monotonic()
        results = await asyncio.gather(*(run_call(client, c, epoch) for c in plan.get("calls", [])))
        out["calls"] = dict(results)
        for spec in plan.get("then", []):
            key, report = await run_call(client, spec, epoch)
            out["calls"][key] = report
        if plan.get("await_tools_changed"):
            if args.mode == "legacy":
                print("LISTENING", file=sys.stderr, flush=True)
                await asyncio.wait_for(tools_changed.wait(), 60)
            else:
                async with client.listen(tools_list_changed=True) as sub:
                    print("LISTENING", file=sys.stderr, flush=True)
                    await asyncio.wait_for(sub.__anext__(), 60)
            out["tools_after"] = [t.name for t in (await client.list_tools()).tools]
        out["logs"] = logs
        out["elicitations"] = elicitations
    print(json.dumps(out))


asyncio.run(main())
