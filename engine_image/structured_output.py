"""Grammar-constrained decoding with xgrammar (chosen over llguidance and outlines-core: benchmarks/results/
grammar-libraries.md): JSON schemas compile once per request in the server's worker thread; each constrained
request then gets a matcher, whose next-token bitmask sets every token the grammar forbids to -inf in that request's
row only. Rows of unconstrained requests are never read or written.

The matchers live in worker processes (grammar_workers.py): accepting tokens holds the GIL, and in the engine's
process it would hold up every request in the batch. A matcher must see a request's previous token before it can
mask the next one; with overlapped steps (GPU) that token may still be on the device when the next step is launched.
So the engine, for a batch holding a constrained request, waits for the step before's tokens (it reads them next
anyway), hands them to the workers with `prepare`, reads that step back while the workers accept and fill, and
samples after (LLMEngine.step); `apply` collects the masks.
"""

import functools
import json
import re
from typing import TYPE_CHECKING

import torch
import xgrammar as xgr

from fleetserve.engine.grammar_workers import GrammarWorkers, default_processes

if TYPE_CHECKING:  # the sampler imports this module
    from fleetserve.engine.logits_processing import Upload
    from fleetserve.engine.sampler import SampledBatch


class GrammarCompiler:
    """Compiles JSON schemas against one tokenizer; the compiler's cache makes a repeated schema free."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: list[int]):
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        self.compiler = xgr.GrammarCompiler(info)

    def json_schema(self, schema: dict | None) -> xgr.CompiledGrammar:
        """schema None: any JSON object (response_format json_object). Raises ValueError for a schema xgrammar
        cannot compile. No free whitespace between tokens: a small model would otherwise pad forever."""
        try:
            return self.compiler.compile_json_schema(json.dumps(schema if schema is not None else {"type": "object"}),
                                                     any_whitespace=False, strict_mode=True)
        except (RuntimeError, ValueError, TypeError) as error:
            # xgrammar's C++ messages start with "[time] /project/cpp/file.cc:line: "; the client needs the rest
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            raise ValueError(re.sub(r"^\[[^\]]*\] \S+:\d+: ", "", first_line)) from None


@functools.lru_cache(maxsize=4)
def grammar_compiler(tokenizer, vocab_size: int, stop_token_ids: tuple[int, ...]) -> GrammarCompiler:
    return GrammarCompiler(tokenizer, vocab_size, list(stop_token_ids))


class GrammarMasks:
    """The sampler's side: a key in the grammar workers per constrained request."""

    def __init__(self, device: torch.device):
        self.device = device
        self.workers: GrammarWorkers | None = None  # started with the first constrained request
        self.keys: dict[str, tuple[GrammarWorkers, int]] = {}
        # the last step's tokens, not yet accepted, with the (row, key) of its constrained requests
        self._unaccepted: tuple["SampledBatch", list[tuple[int, tuple[GrammarWorkers, int]]]] | None = None
        self._started: GrammarWorkers | None = None  # the workers filling the next batch's masks
        self._started_rows: list[int] = []  # the batch's constrained rows, in the order of the masks' slots

    def add(self, request_id: str, grammar: xgr.CompiledGrammar | None) -> None:
        if grammar is None:
            return
        if self.workers is None or not self.workers.alive:  # a pool that died keeps failing its own requests
            self.workers = GrammarWorkers(grammar.tokenizer_info.serialize_json(), default_processes(),
                                          pin=self.device.type == "cuda")
        self.keys[request_id] = (self.workers, self.workers.add(str(grammar.grammar)))

    def remove(self, request_id: str) -> None:
        entry = self.keys.pop(request_id, None)
        if entry is not None:
            entry[0].remove(entry[1])

    def prepare(self, request_ids: list[str], vocab: int) -> bool:
        """For a batch about to be sampled: if it holds a constrained request, waits for the previous step's
        tokens and has the workers accept them and fill this batch's masks, meanwhile the caller reads that step
        back; `apply` collects the masks. False (nothing started) if no request in the batch is constrained."""
        constrained = self._constrained(request_ids)
        if constrained:
            self._start(constrained, vocab)
        return bool(constrained)

    def apply(self, logits: torch.Tensor, request_ids: list[str], upload: "Upload") -> torch.Tensor:
        """Masks the constrained rows of logits [n, vocab] in place (the caller has taken logprobs already). A
        request whose grammar has ended (it accepted EOS) is left unmasked: with overlapped steps it can be in one
        more batch before its end is seen, and the token drawn for it there is dropped."""
        if self._started is None:
            constrained = self._constrained(request_ids)
            if not constrained:
                return logits
            self._start(constrained, logits.shape[-1])
        workers, self._started = self._started, None
        slots, shared = workers.finish_step()
        if not slots:
            return logits
        # straight from the (pinned) shared memory; the workers write it again only once this step's tokens are
        # read back, i.e. after this copy
        bitmask = shared[:len(self._started_rows)].to(self.device, non_blocking=True)
        if len(slots) < len(self._started_rows):  # some grammars have ended: their rows stay unmasked
            bitmask = bitmask.index_select(0, upload(slots, torch.long))
        index = upload([self._started_rows[slot] for slot in slots], torch.long)  # pinned: a pageable copy
        # would wait for the step's forward pass
        allowed = unpack_bitmask(bitmask, logits.shape[-1])
        with torch.inference_mode():  # the runner's logits are inference tensors: in place, only the masked rows
            logits[index] = logits.index_select(0, index).masked_fill(~allowed, float("-inf"))
        return logits

    def record(self, sampled: "SampledBatch", request_ids: list[str]) -> None:
        """The step's tokens; sent to the workers with the next step's masks to fill."""
        constrained = self._constrained(request_ids)
        if constrained:
            self._unaccepted = (sampled, constrained)

    def _constrained(self, request_ids: list[str]) -> list[tuple[int, tuple[GrammarWorkers, int]]]:
        """The batch's rows under a grammar, with their keys (asked of every batch: most have none)."""
        if not self.keys:
            return []
        return [(row, self.keys[rid]) for row, rid in enumerate(request_ids) if rid in self.keys]

    def _start(self, constrained, vocab: int) -> None:
        if self._started is not None:  # a step's masks never collected (its step failed): not this batch's
            self._started, uncollected = None, self._started
            uncollected.finish_step()
        workers = self.workers
        if any(entry[0] is not workers or not workers.alive for _, entry in constrained):
            raise RuntimeError("the grammar worker of a request in this batch has exited")
        accepts = []
        unaccepted, self._unaccepted = self._unaccepted, None
        if unaccepted is not None:
            sampled, previous = unaccepted
            tokens = sampled.result()
            accepts = [(key, tokens[row].token_id) for row, (owner, key) in previous if owner is workers]
        fills = [(key, slot) for slot, (_, (_, key)) in enumerate(constrained)]
        workers.start_step(accepts, fills, len(fills), (vocab + 31) // 32)
        self._started, self._started_rows = workers, [row for row, _ in constrained]


def unpack_bitmask(bitmask: torch.Tensor, vocab: int) -> torch.Tensor:
    """int32 [m, words], bit j of word i = token 32*i + j -> bool [m, vocab]."""
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    return ((bitmask.unsqueeze(-1) >> shifts) & 1).flatten(1)[:, :vocab].bool()
