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
// Build:  componentize-js tool.js --wit sdk/wit/v0.2.0 --world-name tool -o tool.wasm
// The host validates every call's arguments against `input` before the tool runs.

import * as host from "airlock:tool/host@0.2.0";

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
  let value;
  try {
    value = t.run(args);
  } catch (e) {
    if (e instanceof InvalidArguments) {
      throw { tag: "invalid-arguments", val: e.message };
    }
    throw { tag: "failed", val: e instanceof Error ? e.message : String(e) };
  }
  return toOutput(t.options, value);
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
