"""Tool calls (pure; no engine): the JSON schema that `tool_choice` "required" or a named function constrains the
output to, and incremental parsers that turn model output into OpenAI `tool_calls`, streamed as OpenAI streams them.

- tool_choice "auto": the model writes calls in the format its chat template teaches:
  - Hermes (Qwen2.5/Qwen3, Hermes): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` anywhere in the text;
  - Llama 3.1/3.2 JSON: the whole reply is `{"name": ..., "parameters": {...}}` (after an optional `<|python_tag|>`;
    several calls separated by `;`).
- tool_choice "required": the output is constrained to a JSON array of {"name", "arguments"} objects, one of the
  tools each (at most one with parallel_tool_calls false).
- a named function: the output is constrained to that function's arguments object.

Every parser reports what it has seen as deltas: a call's first delta (its index, id and name, arguments "") as
soon as its name and the opening brace of its arguments are known, then the arguments' text as the model writes it,
piece by piece. The non-streamed answer is the same deltas accumulated (`calls`), so both carry the same arguments,
byte for byte, whatever pieces the text came in. A call cut by max_tokens keeps what was written of its arguments.
"""

import json
import uuid
from dataclasses import dataclass

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
WHITESPACE = " \t\r\n"


@dataclass
class ParsedCall:
    name: str
    arguments: str  # JSON text, as OpenAI returns it
    id: str = ""

    def __post_init__(self):
        self.id = self.id or f"call_{uuid.uuid4().hex[:24]}"

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class CallDelta:
    """A piece of a choice's index-th call: its first delta carries `call` (id and name), later ones only text."""

    index: int
    arguments: str
    call: ParsedCall | None = None

    def to_openai(self) -> dict:
        if self.call is None:
            return {"index": self.index, "function": {"arguments": self.arguments}}
        return {"index": self.index, "id": self.call.id, "type": "function",
                "function": {"name": self.call.name, "arguments": self.arguments}}


def tool_call_format(chat_template: str | None) -> str | None:
    """How a model writes calls under tool_choice "auto", read off its chat template: "hermes", "llama_json" or None
    (no format we know: the output stays content)."""
    template = chat_template or ""
    if HERMES_OPEN in template:
        return "hermes"
    if PYTHON_TAG in template or ("<|start_header_id|>" in template and '"parameters"' in template.replace('\\"', '"')):
        return "llama_json"
    return None


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


# ---- one streamed call object -------------------------------------------------------------------------------------

class _Calls:
    """What every parser keeps: the calls so far (the non-streamed answer) and the deltas not yet handed out."""

    def __init__(self):
        self.calls: list[ParsedCall] = []
        self._deltas: list[CallDelta] = []

    def start(self, name: str) -> None:
        self.calls.append(ParsedCall(name, ""))
        self._deltas.append(CallDelta(len(self.calls) - 1, "", self.calls[-1]))

    def arguments(self, text: str) -> None:
        if text:
            self.calls[-1].arguments += text
            self._deltas.append(CallDelta(len(self.calls) - 1, text))

    def take_deltas(self) -> list[CallDelta]:
        deltas, self._deltas = self._deltas, []
        return deltas


# a call object's start, token by token (JSON whitespace between them); None: the name, a JSON string
CALL_HEADER = (("{",), ('"name"',), (":",), None, (",",), ('"arguments"', '"parameters"'), (":",), ("{",))


def _match_header(text: str) -> tuple[str, str, int]:
    """Matches CALL_HEADER at the start of text -> ("yes", name, index of the arguments' brace), ("maybe", "", 0)
    while text is a prefix of one, or ("no", "", 0)."""
    i, name = 0, ""
    for options in CALL_HEADER:
        while i < len(text) and text[i] in WHITESPACE:
            i += 1
        if i == len(text):
            return "maybe", "", 0
        if options is None:
            if text[i] != '"':
                return "no", "", 0
            end = _string_end(text, i)
            if end is None:
                return "maybe", "", 0
            try:
                name = json.loads(text[i:end])
            except ValueError:  # a bad escape
                return "no", "", 0
            i = end
            continue
        hit = next((option for option in options if text.startswith(option, i)), None)
        if hit is None:
            return ("maybe", "", 0) if any(option.startswith(text[i:]) for option in options) else ("no", "", 0)
        i += len(hit)
    return "yes", name, i - 1


def _string_end(text: str, start: int) -> int | None:
    """The index after the JSON string that opens at text[start], None if it has not closed yet."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    return None


class _CallObject:
    """One call object, `{"name": ..., "arguments"|"parameters": {...}, ...}`, fed piece by piece. Its call starts
    once the header has arrived; the arguments stream as written up to their closing brace (or a `<` outside a
    string, which JSON cannot hold: a model that closed its tag early); keys after them are skipped. A text that
    cannot start such an object leaves the scanner "failed", holding everything fed in `held`."""

    def __init__(self, sink: _Calls):
        self.sink, self.state, self.held = sink, "header", ""
        self.depth, self.in_string, self.escaped = 0, False, False

    def feed(self, text: str) -> str | None:
        """-> the text after the object once it is done, else None."""
        if self.state == "header":
            self.held += text
            status, name, brace = _match_header(self.held)
            if status != "yes":
                self.state = "failed" if status == "no" else "header"
                return None
            self.sink.start(name)
            self.state, text = "arguments", self.held[brace:]
        if self.state == "arguments":
            end, closed = self._scan(text)
            self.sink.arguments(text[:end])
            if end == len(text) and not closed:
                return None
            if not closed:  # a `<`: the object ends here
                self.state = "done"
                return text[end:]
            self.state, self.depth, text = "tail", 1, text[end:]
        if self.state == "tail":
            end, closed = self._scan(text)
            if end == len(text) and not closed:
                return None
            self.state = "done"
            return text[end:]
        return None

    def _scan(self, text: str) -> tuple[int, bool]:
        """Advances over text until depth returns to 0 -> (index after the closing bracket, True); stops before a
        `<` outside a string -> (its index, False); else (len(text), False)."""
        for i, char in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1, True
            elif char == "<":
                return i, False
        return len(text), False

    @property
    def started(self) -> bool:
        return self.state not in ("header", "failed")


# ---- the formats --------------------------------------------------------------------------------------------------

class HermesCalls(_Calls):
    """`<tool_call>` blocks anywhere in the text; the rest is content. Text that might be the start of a tag is
    held back until the next piece tells. A block whose body starts as a call object streams as a call (text
    after the object in place of `</tool_call>` is content again); any other block (say, the arguments before the
    name) waits for its closing tag and is parsed whole; one that does not parse, or never closes, stays content
    as the model wrote it."""

    def __init__(self):
        super().__init__()
        self.state, self.pending, self.scanner = "content", "", None

    def feed(self, text: str) -> str:
        """-> the content to emit now (the calls' deltas: take_deltas)."""
        self.pending += text
        content = ""
        while True:
            if self.state == "content":
                start = self.pending.find(HERMES_OPEN)
                if start < 0:
                    keep = _partial_suffix(self.pending, HERMES_OPEN)
                    content += self.pending[:len(self.pending) - keep]
                    self.pending = self.pending[len(self.pending) - keep:]
                    return content
                content += self.pending[:start]
                self.pending = self.pending[start + len(HERMES_OPEN):]
                self.state, self.scanner = "call", _CallObject(self)
            elif self.state == "call":
                rest, self.pending = self.scanner.feed(self.pending), ""
                if self.scanner.state == "failed":
                    self.state, self.pending = "whole", self.scanner.held
                elif rest is None:
                    return content
                else:
                    self.state, self.pending = "after", rest
            elif self.state == "after":  # the closing tag; text in its place is content again
                body = self.pending.lstrip(WHITESPACE)
                if HERMES_CLOSE.startswith(body):  # empty, or a prefix of the tag: wait
                    return content
                self.state = "content"
                if body.startswith(HERMES_CLOSE):
                    self.pending = body[len(HERMES_CLOSE):]
            else:  # "whole"
                end = self.pending.find(HERMES_CLOSE)
                if end < 0:
                    return content
                body, self.pending = self.pending[:end], self.pending[end + len(HERMES_CLOSE):]
                self.state = "content"
                call = _whole_call(body)
                if call is None:
                    content += HERMES_OPEN + body + HERMES_CLOSE
                else:
                    self.start(call[0])
                    self.arguments(call[1])

    def finish(self) -> str:
        """The content still held back at the end of the output."""
        rest, self.pending = self.pending, ""
        if self.state == "content":
            return rest
        if self.state == "whole" or (self.state == "call" and not self.scanner.started):
            return HERMES_OPEN + (rest if self.state == "whole" else self.scanner.held)
        return ""  # a call cut short keeps what it has


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest suffix of text that is a proper prefix of tag."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def _whole_call(body: str) -> tuple[str, str] | None:
    """A complete Hermes block's body -> (name, arguments JSON text), None if it is no call."""
    try:
        call = json.loads(body)
    except ValueError:
        return None
    if not (isinstance(call, dict) and isinstance(call.get("name"), str)):
        return None
    arguments = call.get("arguments", call.get("parameters", {}))
    return call["name"], arguments if isinstance(arguments, str) else json.dumps(arguments)


class LlamaJsonCalls(_Calls):
    """Llama 3.1/3.2's JSON calls: a reply that starts (after whitespace and an optional `<|python_tag|>`) with a
    call object is calls, separated by `;` or whitespace; anything after them is content. A reply that does not
    start with one is all content, as written."""

    def __init__(self):
        super().__init__()
        self.state, self.pending, self.scanner = "start", "", None
        self.written = ""  # the reply until its first call starts: content if none does

    def feed(self, text: str) -> str:
        self.pending += text
        if not self.calls:
            self.written += text
        content = ""
        while True:
            if self.state == "start":
                body = self.pending.lstrip(WHITESPACE)
                if body.startswith(PYTHON_TAG):
                    body = body[len(PYTHON_TAG):].lstrip(WHITESPACE)
                elif PYTHON_TAG.startswith(body):
                    return content  # empty, or a prefix of the tag: wait
                if not body:
                    return content
                if body[0] != "{":
                    self.state, self.pending = "content", self.written
                    continue
                self.state, self.pending, self.scanner = "call", body, _CallObject(self)
            elif self.state == "call":
                rest, self.pending = self.scanner.feed(self.pending), ""
                if self.scanner.state == "failed":
                    self.state, self.pending = "content", self.written if not self.calls else self.scanner.held
                elif rest is None:
                    return content
                else:
                    self.state, self.pending = "between", rest
            elif self.state == "between":
                body = self.pending.lstrip(WHITESPACE + ";")
                if not body:
                    self.pending = ""
                    return content
                if body[0] == "{":
                    self.state, self.pending, self.scanner = "call", body, _CallObject(self)
                else:
                    self.state, self.pending = "content", body
            else:  # "content"
                content, self.pending = content + self.pending, ""
                return content

    def finish(self) -> str:
        rest, self.pending = self.pending, ""
        if self.state == "call" and not self.scanner.started:
            return self.written if not self.calls else self.scanner.held
        return rest if self.state in ("start", "content") else ""


class RequiredCalls(_Calls):
    """tool_choice "required": the grammar makes the output `[{"name": ..., "arguments": {...}}, ...]`."""

    def __init__(self):
        super().__init__()
        self.state, self.pending, self.scanner, self.written = "open", "", None, ""

    def feed(self, text: str) -> str:
        self.written += text
        self.pending += text
        while True:
            body = self.pending.lstrip(WHITESPACE)
            if self.state in ("open", "between"):
                if not body:
                    return ""
                expected = "[" if self.state == "open" else ","
                self.state = "call" if body[0] == expected else "end"
                self.pending, self.scanner = body[1:], _CallObject(self)
            elif self.state == "call":
                rest, self.pending = self.scanner.feed(self.pending), ""
                if rest is None and self.scanner.state != "failed":
                    return ""
                self.state, self.pending = ("between", rest) if rest is not None else ("end", "")
            else:  # "end": the closing bracket, or what the grammar would never allow
                self.pending = ""
                return ""

    def finish(self) -> str:
        """A reply cut before its first call started goes back as content."""
        return "" if self.calls else self.written


class NamedCall(_Calls):
    """A named function: the grammar makes the whole output its arguments."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def feed(self, text: str) -> str:
        if not self.calls:
            self.start(self.name)
        self.arguments(text)
        return ""

    def finish(self) -> str:
        return ""


class _NoCalls(_Calls):
    def feed(self, text: str) -> str:
        return text

    def finish(self) -> str:
        return ""


class ChoiceToolCalls:
    """One choice's output -> content and tool-call deltas, by the request's tool mode: "none" (all content),
    "auto" (calls in the template's format parsed out, if it has one we know), "required" and "named" (the
    constrained output is the calls). Feed it the text as it comes; `finish` gives what is left and the finish
    reason. `calls` holds every call so far with its arguments as accumulated."""

    def __init__(self, mode: str, call_format: str | None, function_name: str | None = None):
        self.mode = mode
        if mode == "required":
            self.parser = RequiredCalls()
        elif mode == "named":
            self.parser = NamedCall(function_name)
        elif mode == "auto" and call_format == "hermes":
            self.parser = HermesCalls()
        elif mode == "auto" and call_format == "llama_json":
            self.parser = LlamaJsonCalls()
        else:
            self.parser = _NoCalls()

    @property
    def calls(self) -> list[ParsedCall]:
        return self.parser.calls

    def feed(self, text: str) -> tuple[str, list[CallDelta]]:
        content = self.parser.feed(text)
        return content, self.parser.take_deltas()

    def finish(self, finish_reason: str | None) -> tuple[str, list[CallDelta], str | None]:
        content = self.parser.finish()
        if self.mode != "named" and self.calls and finish_reason == "stop":
            finish_reason = "tool_calls"  # as OpenAI; a forced function ends with "stop"
        return content, self.parser.take_deltas(), finish_reason


def stream_deltas(content: str, deltas: list[CallDelta]) -> list[dict]:
    """One engine output's content and call deltas as chat-chunk deltas (at least one). A call's first delta goes
    out as OpenAI sends it, with `arguments: ""`; its fragments merge into one entry per index and chunk, and a
    chunk never holds two entries of one index (older SDKs' accumulation cannot merge them)."""
    chunks = [{"content": content} if content else {}]
    for delta in deltas:
        entries = chunks[-1].setdefault("tool_calls", [])
        same = next((entry for entry in entries if entry["index"] == delta.index), None)
        if same is not None and delta.call is None and "id" not in same:
            same["function"]["arguments"] += delta.arguments
        elif same is not None:
            chunks.append({"tool_calls": [delta.to_openai()]})
        else:
            entries.append(delta.to_openai())
    return chunks
