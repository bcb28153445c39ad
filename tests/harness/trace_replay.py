"""Client load for the scenario: the Azure LLM inference trace (conversation, 2023) replayed through the router
with the official openai client, scaled to what this machine serves.

Scaling keeps the trace's shape at the scale of a few requests: each phase takes the next stretch of the trace, and
every group of ten consecutive gaps is stretched to the phase's rate, so bursts stay bursts and each phase holds its
rate; prompt and output lengths are divided down and capped.
"""

import asyncio
import os
import csv
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai

DATA = Path(os.environ.get("FLEETSERVE_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))  # ../shared/data
TRACE = DATA / "azure-llm-2023" / "conv.csv"
LONGEST_GAP = 5.0  # in mean gaps: the trace's rare minute-long lulls would leave a short run idle
BURST = 10  # requests whose gaps keep the trace's own proportions (see trace_requests)
WORDS = ("ship", "parcel", "route", "harbour", "crane", "ledger", "signal", "anchor", "timber", "copper", "river",
         "market", "lantern", "orchard", "compass", "harvest")  # one token each in SmolLM2's vocabulary, roughly


@dataclass(frozen=True)
class Phase:
    seconds: float
    rate: float  # requests per second


@dataclass
class Outcome:
    sent: float
    first_token: float | None = None
    done: float | None = None
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.sent


@dataclass
class TraceRequest:
    offset: float  # seconds from the start of the run
    prompt_words: int
    max_tokens: int


def trace_requests(phases: list[Phase], prompt_divisor: int, max_prompt: int, max_output: int) -> list[TraceRequest]:
    with TRACE.open() as handle:
        rows = [(row["TIMESTAMP"], int(row["ContextTokens"]), int(row["GeneratedTokens"])) for row in csv.DictReader(handle)]
    stamps = [time.mktime(time.strptime(ts.split(".")[0], "%Y-%m-%d %H:%M:%S")) + float("0." + ts.split(".")[1])
              for ts, _, _ in rows]
    # Each phase replays the next stretch of the trace, its gaps rescaled in groups of BURST requests so that every
    # group keeps the phase's mean rate: bursts within a group stay bursts, while the trace's drift over minutes
    # (a slow stretch landing in the high phase) would blur the step the scenario is about.
    gaps = [max(0.0, b - a) for a, b in zip(stamps, stamps[1:])]
    requests, index, phase_start = [], 0, 0.0
    for phase in phases:
        clock = phase_start
        for _ in range(0, max(1, round(phase.seconds * phase.rate)), BURST):
            group = [gaps[(index + i) % len(gaps)] for i in range(BURST)]
            raw_mean = sum(group) / BURST or 1.0
            group = [min(gap, LONGEST_GAP * raw_mean) for gap in group]
            scale = BURST / phase.rate / (sum(group) or 1.0)
            for gap in group:
                if clock >= phase_start + phase.seconds:
                    break
                _, context, generated = rows[index % len(rows)]
                requests.append(TraceRequest(clock, max(8, min(max_prompt, context // prompt_divisor)),
                                             max(4, min(max_output, generated))))
                clock += gap * scale
                index += 1
        phase_start += phase.seconds
    return requests


@dataclass
class LoadRun:
    base_url: str
    model: str
    outcomes: list[Outcome] = field(default_factory=list)

    async def replay(self, requests: list[TraceRequest], started: float) -> None:
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key="unused", max_retries=0, timeout=600)
        rng = random.Random(7)
        tasks = []
        for request in requests:
            delay = started + request.offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            prompt = " ".join(rng.choice(WORDS) for _ in range(request.prompt_words))
            tasks.append(asyncio.create_task(self._one(client, prompt, request.max_tokens)))
        await asyncio.gather(*tasks)

    async def _one(self, client: openai.AsyncOpenAI, prompt: str, max_tokens: int) -> None:
        outcome = Outcome(time.monotonic())
        self.outcomes.append(outcome)
        try:
            stream = await client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, stream=True)
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        outcome.first_token = outcome.first_token or time.monotonic()
                        outcome.text += choice.delta.content
                    outcome.finish_reason = choice.finish_reason or outcome.finish_reason
        except Exception as error:  # noqa: BLE001 - every client-visible failure is what the scenario counts
            outcome.error = f"{type(error).__name__}: {error}"
        outcome.done = time.monotonic()
