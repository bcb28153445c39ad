"""What the engine hands back to its caller for a request, one object per step that produced something."""

from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)  # alternative token text -> logprob


@dataclass
class RequestTimings:
    """Wall-clock instants (time.monotonic) for the metrics histograms."""

    arrival: float
    first_scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None


@dataclass
class RequestOutput:
    request_id: str
    new_token_ids: list[int]
    new_text: str  # only complete UTF-8 characters; stop strings are never included
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "abort", set when finished
    prompt_tokens: int
    completion_tokens: int  # so far
    logprobs: list[TokenLogprob] | None = None  # one per new token when requested
    timings: RequestTimings | None = None  # set on the final output
    error: str | None = None  # why a request ended with finish_reason "abort" because of an engine fault


@dataclass
class EngineStats:
    """A snapshot for the metrics exporter; the counters are cumulative since start."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float  # 0..1, blocks in use (cached-but-free blocks count as free)
    prefix_cache_queries: int  # tokens
    prefix_cache_hits: int  # tokens
    num_preemptions: int
    prompt_tokens: int
    generation_tokens: int
