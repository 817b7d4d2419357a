// Airlock tools in JavaScript: declare tools with `tool()`, build with componentize-js.
//
// This module implements the `airlock:tool@0.2.0` world (sdk/wit/v0.2.0) for you: re-export
// its world functions from your entry module and declare your tools:
//
//     import { tool } from "./airlock.js";
//     export { describe, call, readResource, getPrompt, complete } from "./airlock.js";
//
//     tool("shout", {
//       description: "Repeats the text in capitals.",
//       input: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
//     }, ({ text }) => text.toUpperCase());
//
// Build, with this module and sdk/wit/http (the airlock:tool world plus outgoing HTTP) copied
// beside tool.js as wit/ (componentize-js reads only its working directory):
//     componentize-js tool.js --wit wit --world-name airlock:tool-http/tool -o tool.wasm
// The host validates every call's arguments against `input` before the tool runs.

import * as host from "airlock:tool/host@0.2.0";
import { handle } from "wasi:http/outgoing-handler@0.2.12";
import { Fields, OutgoingBody, OutgoingRequest } from "wasi:http/types@0.2.12";

/** @typedef {{ type?: string, [key: string]: unknown }} JsonSchema */
/**
 * @typedef {object} ToolOptions
 * @property {string} description What the tool does, for the model and the person reviewing it.
 * @property {JsonSchema} [input] JSON Schema of the arguments (default: no arguments).
 * @property {JsonSchema} [output] JSON Schema of the structured result; the tool's return value
 *   is then sent as structured content.
 * @property {string} [title]
 * @property {boolean} [readOnly]
 * @property {boolean} [destructive]
 * @property {boolean} [idempotent]
 * @property {boolean} [openWorld]
 */

/** @type {Map<string, {options: ToolOptions, run: (args: any) => any}>} */
const tools = new Map();

/**
 * Declare a tool. `run` gets the arguments (an object matching `input`) and returns a string
 * (text), an `Output`, or any JSON value (structured when `output` is given, else its JSON as
 * text). Throwing a `ToolError` fails the call; an `InvalidArguments` refuses its arguments.
 * @param {string} name
 * @param {ToolOptions} options
 * @param {(args: any) => any} run
 */
export function tool(name, options, run) {
  if (!options || !options.description) {
    throw new Error(`tool ${name} needs a description`);
  }
  if (tools.has(name)) {
    throw new Error(`tool ${name} is declared twice`);
  }
  tools.set(name, { options, run });
}

/** The tool could not do what was asked (outcome `tool_failed`). */
export class ToolError extends Error {}
/** The arguments are not valid for the tool (outcome `invalid_arguments`). */
export class InvalidArguments extends ToolError {}

/** A result with full control over text, structured content and `isError`. */
export class Output {
  /**
   * @param {{ text?: string[], structured?: unknown, isError?: boolean }} parts
   */
  constructor({ text = [], structured = undefined, isError = false } = {}) {
    this.text = text;
    this.structured = structured;
    this.isError = isError;
  }
}

// The world's exports -----------------------------------------------------------------------

export function describe() {
  return {
    tools: [...tools.entries()].map(([name, { options }]) => ({
      name,
      title: options.title,
      description: options.description,
      inputSchema: JSON.stringify(options.input ?? { type: "object", properties: {} }),
      outputSchema: options.output ? JSON.stringify(options.output) : undefined,
      hints: {
        readOnly: options.readOnly ?? false,
        destructive: options.destructive ?? true,
        idempotent: options.idempotent ?? false,
        openWorld: options.openWorld ?? true,
      },
    })),
    resources: [],
    resourceTemplates: [],
    prompts: [],
  };
}

export function call(name, argumentsJson) {
  const t = tools.get(name);
  if (!t) {
    throw { tag: "unknown-tool", val: name };
  }
  let args;
  try {
    args = JSON.parse(argumentsJson || "{}");
  } catch (e) {
    throw { tag: "invalid-arguments", val: `not JSON: ${e}` };
  }
  try {
    const value = t.run(args);
    if (value !== null && typeof value === "object" && typeof value.then === "function") {
      throw new ToolError("the tool returned a Promise: tools are synchronous");
    }
    // The result's conversion too: a value JSON cannot hold is the tool's failure.
    return toOutput(t.options, value);
  } catch (e) {
    if (e instanceof InvalidArguments) {
      throw { tag: "invalid-arguments", val: e.message };
    }
    throw { tag: "failed", val: e instanceof Error ? e.message : String(e) };
  }
}

export function readResource(uri) {
  throw { tag: "not-found", val: uri };
}

export function getPrompt(name) {
  throw { tag: "not-found", val: name };
}

export function complete() {
  return { values: [], total: undefined, hasMore: false };
}

function toOutput(options, value) {
  if (value instanceof Output) {
    return {
      content: value.text.map((t) => ({ tag: "text", val: t })),
      structured: value.structured === undefined ? undefined : JSON.stringify(value.structured),
      isError: value.isError,
    };
  }
  if (value === undefined || value === null) {
    return { content: [], structured: undefined, isError: false };
  }
  if (typeof value === "string" && !options.output) {
    return { content: [{ tag: "text", val: value }], structured: undefined, isError: false };
  }
  const text = JSON.stringify(value);
  return {
    content: [{ tag: "text", val: text }],
    structured: options.output ? text : undefined,
    isError: false,
  };
}

// The host's services -------------------------------------------------------------------------

/**
 * Send a message to the host's log (and the client, when it asked).
 * @param {"debug"|"info"|"warn"|"error"} level
 * @param {string} message
 */
export function log(level, message) {
  host.log(level, message);
}

/** Report progress; `done` must grow from one report to the next. */
export function progress(done, total, message) {
  host.progress(done, total, message);
}

/**
 * Ask a person to approve the next step: true only for an explicit yes. Put every side effect
 * after it, never before.
 */
export function confirm(prompt, details) {
  return host.confirm(prompt, details);
}

/**
 * Ask the user to fill in a form (a flat JSON Schema object): the answer, or undefined when
 * they declined or dismissed it.
 */
export function elicit(message, schema) {
  let answer;
  try {
    answer = host.elicit(message, JSON.stringify(schema));
  } catch (e) {
    throw new ToolError(`cannot ask: ${e?.payload ?? e}`);
  }
  return answer.tag === "accept" ? JSON.parse(answer.val) : undefined;
}

/** A nested call produced no output; `outcome` names why. */
export class NestedError extends ToolError {
  constructor(outcome, message) {
    super(`${message} (${outcome})`);
    this.outcome = outcome;
  }
}

/** Call another tool of the same Airlock as the same caller, through the whole pipeline. */
export function callTool(name, args) {
  let out;
  try {
    out = host.callTool(name, JSON.stringify(args));
  } catch (e) {
    const failure = e?.payload ?? e;
    throw new NestedError(failure.outcome, failure.message);
  }
  return new Output({
    text: out.content.filter((c) => c.tag === "text").map((c) => c.val),
    structured: out.structured === undefined ? undefined : JSON.parse(out.structured),
    isError: out.isError,
  });
}

/** True once the caller cancelled or an operator stopped the call. */
export function cancelled() {
  return host.cancelled();
}

/** Who made the current call: `{ principal, roles, unrestricted }`. */
export function caller() {
  return host.caller();
}

/** The operator's `[tool.settings]` value `name` (plain configuration, never secret). */
export function setting(name, fallback = undefined) {
  return host.setting(name) ?? fallback;
}

/** Every `[tool.settings]` value, by name. */
export function settings() {
  return Object.fromEntries(host.settings());
}

// Outgoing HTTP ----------------------------------------------------------------------------

/** The request produced no response: name resolution, connection, TLS, a timeout. */
export class HttpError extends ToolError {}
/** The host's policy refused the request: no grant allows this destination or method. */
export class BlockedByPolicy extends HttpError {}
/** The request cannot be sent as given (a malformed URL, header or method). */
export class InvalidRequest extends InvalidArguments {}

const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/**
 * Send an HTTP request through the host (`wasi:http`) and read the response, synchronously.
 * The operator's `net` grants decide what it may reach: a request they do not allow throws
 * `BlockedByPolicy` (and the host ends the call as `blocked_by_policy`). Redirects are not
 * followed: following one is a new request the grants check again.
 * @param {string} url
 * @param {{ method?: string, headers?: Record<string, string>, body?: string | Uint8Array,
 *   maxResponseBytes?: number }} [options]
 * @returns {{ status: number, headers: [string, string][], body: Uint8Array, truncated: boolean,
 *   text: () => string, json: () => any }}
 */
export function request(url, options = {}) {
  const method = (options.method ?? "GET").toUpperCase();
  if (!METHODS.includes(method)) {
    throw new InvalidRequest(`unsupported method ${method}`);
  }
  let target;
  try {
    target = new URL(url);
  } catch {
    throw new InvalidRequest(`not a URL: ${url}`);
  }
  if (target.protocol !== "http:" && target.protocol !== "https:") {
    throw new InvalidRequest(`only http and https URLs can be fetched: ${url}`);
  }
  const max = options.maxResponseBytes ?? 1 << 20;
  const encoder = new TextEncoder();
  let fields;
  try {
    fields = Fields.fromList(
      Object.entries(options.headers ?? {}).map(([k, v]) => [k, encoder.encode(String(v))]),
    );
  } catch (e) {
    throw new InvalidRequest(`invalid header: ${e?.payload?.tag ?? e}`);
  }
  const req = new OutgoingRequest(fields);
  try {
    req.setMethod({ tag: method.toLowerCase() });
    req.setScheme({ tag: target.protocol === "https:" ? "HTTPS" : "HTTP" });
    req.setAuthority(target.host);
    req.setPathWithQuery(`${target.pathname}${target.search}`);
  } catch {
    throw new InvalidRequest(`cannot send ${method} ${url}`);
  }
  const outgoing = req.body();
  let future;
  try {
    future = handle(req, undefined);
  } catch (e) {
    throw failed(e?.payload ?? e);
  }
  let writeFailed = false;
  if (options.body !== undefined && options.body.length > 0) {
    const bytes = typeof options.body === "string" ? encoder.encode(options.body) : options.body;
    const stream = outgoing.write();
    try {
      for (let i = 0; i < bytes.length; i += 4096) {
        stream.blockingWriteAndFlush(bytes.subarray(i, i + 4096));
      }
    } catch {
      // The request was refused, or the server stopped reading: the response (or its error)
      // below says which.
      writeFailed = true;
    }
    stream[Symbol.dispose]?.();
  }
  try {
    OutgoingBody.finish(outgoing, undefined);
  } catch (e) {
    if (!writeFailed) {
      throw failed(e?.payload ?? e);
    }
  }
  const pollable = future.subscribe();
  pollable.block();
  pollable[Symbol.dispose]?.();
  const answer = future.get();
  if (answer === undefined || answer.tag !== "ok") {
    throw new HttpError("the response never arrived");
  }
  if (answer.val.tag !== "ok") {
    throw failed(answer.val.val);
  }
  const response = answer.val.val;
  const status = response.status();
  const decoder = new TextDecoder();
  const received = response.headers();
  const headers = received.entries().map(([k, v]) => [k, decoder.decode(v)]);
  received[Symbol.dispose]?.();
  const incoming = response.consume();
  const stream = incoming.stream();
  const chunks = [];
  let size = 0;
  let truncated = false;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(16384n);
    } catch (e) {
      if ((e?.payload ?? e)?.tag === "closed") {
        break;
      }
      throw new HttpError("reading the response body failed");
    }
    const room = max - size;
    if (chunk.length > room) {
      chunks.push(chunk.subarray(0, room));
      size += room;
      truncated = true;
      break;
    }
    chunks.push(chunk);
    size += chunk.length;
  }
  // Children before their parents: the host refuses to drop a parent first.
  stream[Symbol.dispose]?.();
  incoming[Symbol.dispose]?.();
  response[Symbol.dispose]?.();
  future[Symbol.dispose]?.();
  const body = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    body.set(c, at);
    at += c.length;
  }
  return {
    status,
    headers,
    body,
    truncated,
    text: () => decoder.decode(body),
    json: () => JSON.parse(decoder.decode(body)),
  };
}

function failed(code) {
  if (code?.tag === "HTTP-request-denied") {
    return new BlockedByPolicy("the host's network grants do not allow it");
  }
  return new HttpError(`request failed: ${code?.tag ?? code}`);
}
