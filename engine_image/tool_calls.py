"""Tool calls (pure; no engine): the JSON schema that `tool_choice` "required" or a named function constrains the
output to, and parsers that turn model output into OpenAI `tool_calls`.

- tool_choice "auto": the model writes calls in its own format; we parse the Hermes format that Qwen2.5/Qwen3 and
  Hermes templates teach (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`), streaming.
- tool_choice "required": the output is constrained to a JSON array of {"name", "arguments"} objects, one of the
  tools each (at most one with parallel_tool_calls false).
- a named function: the output is constrained to that function's arguments object.
"""

import json
import uuid
from dataclasses import dataclass

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"


@dataclass
class ParsedCall:
    name: str
    arguments: str  # JSON text, as OpenAI returns it
    id: str = ""

    def __post_init__(self):
        self.id = self.id or f"call_{uuid.uuid4().hex[:24]}"

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def arguments_schema(parameters: dict | None) -> dict:
    return parameters if parameters else {"type": "object"}


def required_schema(tools: list[tuple[str, dict | None]], parallel: bool) -> dict:
    """tools: (name, parameters schema) -> the schema of a non-empty array of calls."""
    calls = [{"type": "object", "properties": {"name": {"const": name}, "arguments": arguments_schema(params)},
              "required": ["name", "arguments"], "additionalProperties": False} for name, params in tools]
    schema = {"type": "array", "minItems": 1, "items": calls[0] if len(calls) == 1 else {"anyOf": calls}}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def parse_required(text: str) -> list[ParsedCall]:
    """The output of a "required" request: a JSON array of calls (the grammar guarantees the shape)."""
    return [ParsedCall(call["name"], json.dumps(call["arguments"])) for call in json.loads(text)]


class HermesStream:
    """Splits streamed model text into content and complete `<tool_call>` blocks. Text that might be the start of
    `<tool_call>` is held back until the next piece tells; a block that never closes (or does not parse as a call)
    comes back as content, as the model wrote it."""

    def __init__(self):
        self.pending = ""  # held back: a possible tag prefix, or an open block
        self.calls: list[ParsedCall] = []

    def feed(self, text: str) -> tuple[str, list[ParsedCall]]:
        """-> (content to emit now, calls completed by this piece)."""
        self.pending += text
        content, calls = "", []
        while True:
            start = self.pending.find(HERMES_OPEN)
            if start < 0:
                keep = _partial_suffix(self.pending, HERMES_OPEN)
                content += self.pending[:len(self.pending) - keep]
                self.pending = self.pending[len(self.pending) - keep:]
                break
            content += self.pending[:start]
            end = self.pending.find(HERMES_CLOSE, start)
            if end < 0:
                self.pending = self.pending[start:]
                break
            block = self.pending[start:end + len(HERMES_CLOSE)]
            self.pending = self.pending[end + len(HERMES_CLOSE):]
            call = _hermes_call(block[len(HERMES_OPEN):-len(HERMES_CLOSE)])
            if call is None:
                content += block
            else:
                calls.append(call)
        self.calls += calls
        return content, calls

    def finish(self) -> str:
        """The content still held back at the end of the output."""
        rest, self.pending = self.pending, ""
        return rest


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest suffix of text that is a proper prefix of tag."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def _hermes_call(body: str) -> ParsedCall | None:
    try:
        call = json.loads(body)
    except ValueError:
        return None
    if not (isinstance(call, dict) and isinstance(call.get("name"), str)):
        return None
    arguments = call.get("arguments", call.get("parameters", {}))
    return ParsedCall(call["name"], arguments if isinstance(arguments, str) else json.dumps(arguments))


class ChoiceToolCalls:
    """One choice's output -> content and tool calls, by the request's tool mode: "none" (all content), "auto"
    (Hermes blocks parsed out when the template teaches them, else all content), "required" and "named" (the
    constrained output is the calls). Streaming feeds pieces; `finish` gives what is left and the finish reason."""

    def __init__(self, mode: str, hermes: bool, function_name: str | None = None):
        self.mode, self.function_name = mode, function_name
        self.stream = HermesStream() if mode == "auto" and hermes else None
        self.buffer: list[str] = []
        self.num_calls = 0

    def feed(self, text: str) -> tuple[str, list[ParsedCall]]:
        if self.mode in ("required", "named"):
            self.buffer.append(text)
            return "", []
        if self.stream is None:
            return text, []
        content, calls = self.stream.feed(text)
        self.num_calls += len(calls)
        return content, calls

    def finish(self, finish_reason: str | None) -> tuple[str, list[ParsedCall], str | None]:
        if self.stream is not None:
            return self.stream.finish(), [], "tool_calls" if self.num_calls and finish_reason == "stop" else \
                finish_reason
        if self.mode not in ("required", "named"):
            return "", [], finish_reason
        text = "".join(self.buffer)
        if finish_reason != "stop":  # cut by max_tokens: the JSON is incomplete, so it goes back as content
            return text, [], finish_reason
        if self.mode == "named":  # as OpenAI: a forced function ends with "stop"
            return "", [ParsedCall(self.function_name, text)], "stop"
        return "", parse_required(text), "tool_calls"
