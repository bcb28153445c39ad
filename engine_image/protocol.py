"""The OpenAI wire format: request models that validate bodies, the error JSON, and response/stream-chunk shapes.

Everything here is pure (no I/O, no engine): the server parses with these models, asks them for SamplingParams,
and renders engine outputs with the builder functions.
"""

import json
import struct
import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from fleetserve.engine.outputs import TokenLogprob
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.tool_calls import arguments_schema, required_schema

MAX_LOGPROBS = 20
# stop strings are matched against the text after every token, on the engine's thread: bound that work
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 256
MAX_STOP_TOKEN_IDS = 64
MAX_CHOICES = 128  # n times the prompts of a batch: OpenAI's bound on n
MAX_LOGIT_BIAS = 300


class ApiError(Exception):
    """An error the client caused (or a state it must back off from); rendered as OpenAI's error JSON."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.error_type = status, message, param, code, error_type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    # strict: OpenAI rejects "5" for an integer and 1 for a boolean, so we do too
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # OpenAI pads chunks against side channels; ignored: we send no padding


class _SamplingRequest(_Strict):
    """Fields shared by /v1/completions and /v1/chat/completions. None means "the default" (clients send nulls).

    Each endpoint adds `prompt_field`, `max_tokens_field`, `default_max_tokens(room)` and `requested_logprobs()`,
    because the two spell their prompt, length limit and logprobs differently.
    """

    model: str
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: StrictInt | None = Field(None, ge=-1)  # extension (vLLM): 0 or -1 means off
    n: StrictInt | None = Field(None, ge=1, le=MAX_CHOICES)
    seed: StrictInt | None = Field(None, ge=-(2**63), lt=2**64)  # what torch's generator accepts
    stop: list[str] | None = Field(None, max_length=MAX_STOP_STRINGS)
    stop_token_ids: list[StrictInt] | None = Field(None, max_length=MAX_STOP_TOKEN_IDS)  # extension (vLLM)
    ignore_eos: bool = False  # extension (vLLM): benchmarks force an exact output length with it
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0, allow_inf_nan=False)  # extension (vLLM)
    logit_bias: dict[str, float] | None = Field(None, max_length=MAX_LOGIT_BIAS)
    user: str | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and any(isinstance(item, str) and not item for item in value):
            raise ValueError("stop strings must not be empty")
        if isinstance(value, list) and any(isinstance(item, str) and len(item) > MAX_STOP_STRING_CHARS
                                           for item in value):
            raise ValueError(f"stop strings must be at most {MAX_STOP_STRING_CHARS} characters")
        return value

    @field_validator("top_p")
    @classmethod
    def _top_p_survives_float32(cls, value: float | None) -> float | None:
        if value is not None and struct.unpack("f", struct.pack("f", value))[0] == 0.0:
            raise ValueError("must be greater than 0 in float32 (at least about 1e-45)")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias_by_token_id(cls, value: dict | None) -> dict | None:
        for token, bias in (value or {}).items():
            if not token.isdigit():
                raise ValueError(f"keys must be token ids, got {token!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"biases must be in [-100, 100], got {bias} for token {token}")
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise ApiError(400, "stream_options is only allowed when stream is true.", "stream_options",
                           "invalid_value")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def num_choices_per_prompt(self) -> int:
        return self.n or 1

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def sampling_params(self, prompt_len: int, max_model_len: int) -> SamplingParams:
        """Checks the request fits the context window and turns it into engine parameters."""
        if prompt_len >= max_model_len:
            raise ApiError(400, f"This model's maximum context length is {max_model_len} tokens, but the prompt has "
                           f"{prompt_len} tokens, leaving no room for a completion.", self.prompt_field,
                           "context_length_exceeded")
        max_tokens = self.requested_max_tokens()
        if max_tokens is None:
            max_tokens = self.default_max_tokens(max_model_len - prompt_len)
        if prompt_len + max_tokens > max_model_len:
            raise ApiError(400, f"This model's maximum context length is {max_model_len} tokens. However, you "
                           f"requested {prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} "
                           "for the completion). Please reduce the prompt or the completion length.",
                           self.max_tokens_field, "context_length_exceeded")
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=max(self.top_k or 0, 0),
            seed=self.seed,
            stop=self.stop or [],
            stop_token_ids=self.stop_token_ids or [],
            ignore_eos=self.ignore_eos,
            logprobs=self.requested_logprobs(),
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            logit_bias={int(token): bias for token, bias in (self.logit_bias or {}).items()},
        )


class CompletionRequest(_SamplingRequest):
    prompt: list[str | list[StrictInt]]  # a batch of prompts (one prompt is a batch of one)
    logprobs: StrictInt | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool | None = False
    best_of: StrictInt | None = None
    suffix: str | None = None  # fill-in-the-middle: the server checks the tokenizer has the tokens for it

    prompt_field: ClassVar[str] = "prompt"
    max_tokens_field: ClassVar[str] = "max_tokens"

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompts(cls, value: Any) -> Any:
        is_prompt = lambda item: ((isinstance(item, str) and item != "")  # noqa: E731
                                  or (isinstance(item, list) and item != [] and all(type(i) is int for i in item)))
        if is_prompt(value):
            return [value]
        if not (isinstance(value, list) and value and all(is_prompt(item) for item in value)):
            raise ValueError("must be a non-empty string, a non-empty list of token ids, or a non-empty list of "
                             "either (a batch)")
        return value

    @model_validator(mode="after")
    def _bounded_choices(self):
        if len(self.prompt) * self.num_choices_per_prompt > MAX_CHOICES:
            raise ApiError(400, f"A request may ask for at most {MAX_CHOICES} choices (prompts times n).", "n",
                           "invalid_value")
        if self.echo and self.logprobs is not None:
            raise ApiError(400, "echo with logprobs is not supported (it needs the prompt's logprobs).", "echo",
                           "invalid_value")
        return self

    @field_validator("best_of")
    @classmethod
    def _best_of_one(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only best_of=1 is supported")
        return value

    def default_max_tokens(self, room: int) -> int:
        return min(16, room)  # OpenAI's documented default for completions

    def requested_logprobs(self) -> int | None:
        return self.logprobs


class ToolCallFunction(_Strict):
    name: str
    arguments: str  # JSON text, as OpenAI returns it


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's calls, echoed back in the history
    tool_call_id: str | None = None  # a tool message answers this call
    # what the SDK's message.model_dump() carries back into the history; no meaning for the prompt
    refusal: str | None = None
    annotations: list | None = None
    audio: None = None
    function_call: None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_as_string(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not all(isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
                       for part in value):
                raise ValueError('content parts must be {"type": "text", "text": "..."} (only text is supported)')
            return "".join(part["text"] for part in value)
        return value


class JsonSchemaFormat(_Strict):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict | None = Field(None, alias="schema")  # None: any JSON object
    strict: bool | None = None  # the output follows the schema either way (constrained decoding)


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self):
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ApiError(400, "response_format.json_schema is required with type 'json_schema' and allowed only "
                           "with it.", "response_format.json_schema", "invalid_value")
        return self

    @property
    def constrained(self) -> bool:
        return self.type != "text"

    @property
    def schema(self) -> dict | None:
        return self.json_schema.schema_ if self.json_schema is not None else None


class FunctionDefinition(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
    description: str | None = None
    parameters: dict | None = None  # a JSON schema; None: no arguments
    strict: bool | None = None  # arguments follow the schema whenever the grammar constrains them (required, named)


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=MAX_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # accepted and ignored: OpenAI-platform features (stored completions, billing tiers, reasoning models)
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None

    prompt_field: ClassVar[str] = "messages"

    @property
    def max_tokens_field(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ApiError(400, "top_logprobs requires logprobs to be true.", "top_logprobs", "invalid_value")
        return self

    @model_validator(mode="after")
    def _tool_choice_needs_its_tools(self):
        names = [tool.function.name for tool in self.tools or []]
        if self.tool_mode in ("required", "named") and not names:
            raise ApiError(400, "tool_choice 'required' or a named function needs tools.", "tool_choice",
                           "invalid_value")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise ApiError(400, f"tool_choice names function {self.tool_choice.function.name!r}, which is not "
                           "in tools.", "tool_choice.function.name", "invalid_value")
        if self.tool_mode in ("required", "named") and self.response_format and self.response_format.constrained:
            raise ApiError(400, "response_format json_object/json_schema cannot be combined with tool_choice "
                           "'required' or a named function (both constrain the output).", "response_format",
                           "invalid_value")
        return self

    @property
    def tool_mode(self) -> str:
        """none | auto | required | named: how tools shape this request's output."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        if not self.tools:
            return "required" if self.tool_choice == "required" else "none"
        return self.tool_choice or "auto"

    def tool_call_schema(self) -> dict | None:
        """The JSON schema the output is constrained to for tool_choice 'required' or a named function."""
        functions = {tool.function.name: tool.function.parameters for tool in self.tools or []}
        if self.tool_mode == "named":
            return arguments_schema(functions[self.tool_choice.function.name])
        if self.tool_mode == "required":
            return required_schema(list(functions.items()), self.parallel_tool_calls is not False)
        return None

    def template_tools(self) -> list[dict] | None:
        """The tools as chat templates take them; none for tool_choice 'none', so the model is not tempted."""
        if not self.tools or self.tool_mode == "none":
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def default_max_tokens(self, room: int) -> int:
        return room  # as vLLM: generate until EOS or the context window is full

    def requested_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def chat_messages(self) -> list[dict]:
        return [chat_template_message(message) for message in self.messages]


def chat_template_message(message: ChatMessage) -> dict:
    """A history message as chat templates read it: the SDK-only fields dropped, tool-call arguments as objects
    (Qwen's and Llama's templates write them with `tojson`, which would quote a JSON string a second time)."""
    out = message.model_dump(include={"role", "content", "name", "tool_call_id"}, exclude_none=True)
    if message.tool_calls is not None:
        out.setdefault("content", "")  # templates without tool support read content unconditionally
        out["tool_calls"] = [{"id": call.id, "type": "function",
                              "function": {"name": call.function.name,
                                           "arguments": _arguments_object(call.function.arguments)}}
                             for call in message.tool_calls]
    return out


def _arguments_object(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments  # a model's malformed call, echoed back: the template gets it as it was


def parse_request(model: type[_Strict], body: Any) -> Any:
    """Validates a decoded JSON body; the first problem becomes a 400 naming its field."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", None, "invalid_type")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise validation_error_to_api_error(error) from None


def validation_error_to_api_error(error: ValidationError) -> ApiError:
    first = error.errors(include_url=False)[0]
    param = _param_path(first["loc"])
    if first["type"] == "extra_forbidden":
        return ApiError(400, f"Unrecognized request argument supplied: {param}", param, "unknown_parameter")
    if first["type"] == "missing":
        return ApiError(400, f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    message = first["msg"].removeprefix("Value error, ")
    return ApiError(400, f"Invalid value for '{param}': {message}", param, "invalid_value")


def _param_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def check_model_name(requested: str, served: str) -> None:
    if requested != served:
        raise ApiError(400, f"The model '{requested}' does not exist. This server serves '{served}'.", "model",
                       "model_not_found")


# ---- responses --------------------------------------------------------------------------------------------------

def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_logprobs(logprobs: list[TokenLogprob], text_offset: int) -> dict:
    """The legacy completions shape: parallel lists, offsets counted in characters of the returned text."""
    offsets = []
    for entry in logprobs:
        offsets.append(text_offset)
        text_offset += len(entry.token)
    return {
        "tokens": [entry.token for entry in logprobs],
        "token_logprobs": [entry.logprob for entry in logprobs],
        "top_logprobs": [dict(entry.top) for entry in logprobs],
        "text_offset": offsets,
    }


def chat_logprobs(logprobs: list[TokenLogprob]) -> dict:
    return {"content": [
        {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.token.encode()),
         "top_logprobs": [{"token": token, "logprob": logprob, "bytes": list(token.encode())}
                          for token, logprob in entry.top.items()]}
        for entry in logprobs
    ]}


def public_finish_reason(reason: str | None) -> str | None:
    # "abort" only reaches a client that is still listening when the server shuts down mid-request
    return "stop" if reason == "abort" else reason


def completion_response(request_id: str, model: str, choices: list[tuple[str, str | None, dict | None]],
                        prompt_tokens: int, completion_tokens: int) -> dict:
    """choices: (text, finish reason, logprobs) in index order."""
    return {
        "id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": index, "text": text, "logprobs": logprobs,
                     "finish_reason": public_finish_reason(finish_reason)}
                    for index, (text, finish_reason, logprobs) in enumerate(choices)],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def assistant_message(content: str, tool_calls: list[dict]) -> dict:
    """OpenAI's shape: content null when the reply is only tool calls; tool_calls only when there are some."""
    message = {"role": "assistant", "content": content if content or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def chat_response(request_id: str, model: str, choices: list[tuple[dict, str | None, dict | None]],
                  prompt_tokens: int, completion_tokens: int) -> dict:
    """choices: (message, finish reason, logprobs) in index order."""
    return {
        "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": index, "message": message, "logprobs": logprobs,
                     "finish_reason": public_finish_reason(finish_reason)}
                    for index, (message, finish_reason, logprobs) in enumerate(choices)],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def completion_chunk(request_id: str, model: str, created: int, text: str, finish_reason: str | None,
                     logprobs: dict | None, include_usage: bool, index: int = 0) -> dict:
    chunk = {"id": request_id, "object": "text_completion", "created": created, "model": model,
             "choices": [{"index": index, "text": text, "logprobs": logprobs,
                          "finish_reason": public_finish_reason(finish_reason)}]}
    if include_usage:
        chunk["usage"] = None  # OpenAI sends an explicit null until the final usage chunk
    return chunk


def chat_chunk(request_id: str, model: str, created: int, delta: dict, finish_reason: str | None,
               logprobs: dict | None, include_usage: bool, index: int = 0) -> dict:
    chunk = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
             "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                          "finish_reason": public_finish_reason(finish_reason)}]}
    if include_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(request_id: str, object_name: str, model: str, created: int, prompt_tokens: int,
                completion_tokens: int) -> dict:
    return {"id": request_id, "object": object_name, "created": created, "model": model, "choices": [],
            "usage": usage(prompt_tokens, completion_tokens)}


def models_response(model: str, max_model_len: int, created: int) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created,
                                        "owned_by": "fleetserve", "max_model_len": max_model_len}]}
