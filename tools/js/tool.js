// An example Airlock tool in JavaScript, built with componentize-js against the SDK in
// sdk/js (scripts/build-authors builds it; docs/authors.md walks through it).
import {
  tool,
  log,
  setting,
  caller,
  callTool,
  confirm,
  progress,
  request,
  ToolError,
  InvalidArguments,
} from "./airlock.js";
export { describe, call, readResource, getPrompt, complete } from "./airlock.js";

tool(
  "js_word_stats",
  {
    description: "Counts the words of a text and names the most frequent ones.",
    input: {
      type: "object",
      properties: {
        text: { type: "string", description: "The text to count." },
        top: { type: "integer", minimum: 1, maximum: 20, description: "How many to name." },
      },
      required: ["text"],
      additionalProperties: false,
    },
    output: {
      type: "object",
      properties: {
        words: { type: "integer" },
        top: { type: "array", items: { type: "string" } },
      },
      required: ["words", "top"],
    },
    readOnly: true,
    destructive: false,
    idempotent: true,
    openWorld: false,
  },
  ({ text, top = 3 }) => {
    const counts = new Map();
    for (const w of text.toLowerCase().split(/\W+/).filter(Boolean)) {
      counts.set(w, (counts.get(w) ?? 0) + 1);
    }
    log("info", `counted ${counts.size} distinct words`);
    const ranked = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    return {
      words: [...counts.values()].reduce((a, b) => a + b, 0),
      top: ranked.slice(0, top).map(([w]) => w),
    };
  },
);

tool(
  "js_greet",
  {
    description: "Greets the caller with the configured greeting.",
    input: {
      type: "object",
      properties: { loud: { type: "boolean" } },
      additionalProperties: false,
    },
  },
  ({ loud = false }) => {
    const greeting = `${setting("greeting", "hello")}, ${caller().principal}`;
    return loud ? greeting.toUpperCase() : greeting;
  },
);

tool(
  "js_divide",
  {
    description: "Divides a by b.",
    input: {
      type: "object",
      properties: { a: { type: "number" }, b: { type: "number" } },
      required: ["a", "b"],
    },
  },
  ({ a, b }) => {
    if (b === 0) {
      throw new InvalidArguments("b must not be 0");
    }
    if (!Number.isFinite(a / b)) {
      throw new ToolError("the quotient is not finite");
    }
    return String(a / b);
  },
);

tool(
  "js_relay",
  {
    description: "Calls another tool of this Airlock, as the same caller, and returns its text.",
    input: {
      type: "object",
      properties: { tool: { type: "string" }, arguments: { type: "object" } },
      required: ["tool", "arguments"],
      additionalProperties: false,
    },
  },
  ({ tool: name, arguments: args }) => callTool(name, args).text.join("\n"),
);

tool(
  "js_fetch",
  {
    description: "Fetches a URL the operator's grants allow: its status and body as text.",
    input: {
      type: "object",
      properties: { url: { type: "string" } },
      required: ["url"],
      additionalProperties: false,
    },
    output: {
      type: "object",
      properties: {
        status: { type: "integer" },
        body: { type: "string" },
        truncated: { type: "boolean" },
      },
      required: ["status", "body", "truncated"],
    },
    readOnly: true,
    destructive: false,
  },
  ({ url }) => {
    const response = request(url, { maxResponseBytes: 64 * 1024 });
    return { status: response.status, body: response.text(), truncated: response.truncated };
  },
);

tool(
  "js_careful",
  {
    description: "Reports progress, then asks a person before it runs `step` (an example: nothing changes).",
    input: {
      type: "object",
      properties: { step: { type: "string" } },
      required: ["step"],
      additionalProperties: false,
    },
  },
  ({ step }) => {
    progress(0, 1, `about to run ${step}`);
    if (!confirm(`Run ${step}?`, "An example: nothing is changed.")) {
      return `${step}: skipped`;
    }
    progress(1, 1);
    return `${step}: done`;
  },
);
