"""Going on with a stream whose replica died: pure functions over what the router saw of it.

The router re-submits the prompt as the engine saw it (token ids) plus the tokens already sent to the client, as a
`/v1/completions` stream on another replica, and rewrites that stream's chunks into the client's stream: the same
id, creation time and model, and chat deltas for a chat client. The client sees one uninterrupted answer.
"""

from dataclasses import dataclass

# Sampling settings the continuation keeps; the rest of the body (messages, n, logprobs, tools) shaped only the
# part already sent, or is not supported across a failover.
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "seed", "stop", "ignore_eos", "repetition_penalty",
                 "presence_penalty", "frequency_penalty", "stream_options")


@dataclass
class StreamSoFar:
    """What the client has received of one stream."""

    kind: str  # "chat" or "completions"
    id: str | None = None
    created: int | None = None
    model: str | None = None
    text: str = ""
    finish_reason: str | None = None
    usage_seen: bool = False

    def absorb(self, chunk: dict) -> None:
        """Remembers one chunk the client got."""
        self.id = self.id or chunk.get("id")
        self.created = self.created or chunk.get("created")
        self.model = self.model or chunk.get("model")
        self.usage_seen = self.usage_seen or bool(chunk.get("usage"))
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content") if self.kind == "chat" else choice.get("text")
            if piece:
                self.text += piece
            self.finish_reason = choice.get("finish_reason") or self.finish_reason


def continuation_request(body: dict, prompt_ids: list[int], generated_ids: list[int]) -> dict | None:
    """The completions request that generates the rest; None when the token budget is already spent."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    request = {"model": body.get("model"), "prompt": prompt_ids + generated_ids, "stream": True,
               **{key: body[key] for key in SAMPLING_KEYS if key in body}}
    if limit is not None:
        if len(generated_ids) >= limit:
            return None
        request["max_tokens"] = limit - len(generated_ids)
    return request


def client_chunk(so_far: StreamSoFar, chunk: dict, tokens_before: int) -> dict:
    """A continuation chunk as the client's stream carries it."""
    out = {"id": so_far.id, "created": so_far.created, "model": so_far.model}
    if so_far.kind == "chat":
        out["object"] = "chat.completion.chunk"
        out["choices"] = [{"index": c.get("index", 0), "delta": {"content": c.get("text", "")}, "logprobs": None,
                           "finish_reason": c.get("finish_reason")} for c in chunk.get("choices") or []]
    else:
        out["object"] = chunk.get("object", "text_completion")
        out["choices"] = chunk.get("choices") or []
    usage = chunk.get("usage")
    if usage:  # count the answer as one request: the continuation's prompt held the tokens sent before
        out["usage"] = {**usage, "prompt_tokens": usage["prompt_tokens"] - tokens_before,
                        "completion_tokens": usage["completion_tokens"] + tokens_before}
    elif "usage" in chunk:
        out["usage"] = None
    return out


def closing_chunk(so_far: StreamSoFar) -> dict:
    """Ends a stream whose token budget was spent when its replica died."""
    choice = {"index": 0, "finish_reason": "length", "logprobs": None}
    choice.update({"delta": {}} if so_far.kind == "chat" else {"text": ""})
    return {"id": so_far.id, "created": so_far.created, "model": so_far.model,
            "object": "chat.completion.chunk" if so_far.kind == "chat" else "text_completion", "choices": [choice]}
