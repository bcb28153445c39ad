"""Grammar-constrained decoding with xgrammar (chosen over llguidance and outlines-core: benchmarks/results/
grammar-libraries.md): JSON schemas compile once per request in the server's worker thread; each constrained
request then gets a matcher in the sampler, whose next-token bitmask sets every token the grammar forbids to -inf
in that request's row only. Rows of unconstrained requests are never read or written.

A matcher must see a request's previous token before it can mask the next one. With overlapped steps (GPU) that
token may still be on the device when the next step is launched, so `apply` waits for it (the model's forward pass
for the step is already queued, and the host reads that token back next anyway), accepts it, then fills the masks.
That work is all on the host's side of the step, and all of it holds the GIL (xgrammar's bindings do not release
it): a helper thread beside the engine's read back gained nothing and lost up to Python's 5 ms switch interval a
step waiting for the GIL (benchmarks/results/structured-output-gpu.md). So it runs in line, as few Python calls as
possible: one batched accept, one batched fill (xgrammar's own threads fill the rows in parallel).
"""

import functools
import json
import logging
import re
from typing import TYPE_CHECKING

import torch
import xgrammar as xgr

if TYPE_CHECKING:  # the sampler imports this module
    from fleetserve.engine.logits_processing import Upload
    from fleetserve.engine.sampler import SampledBatch

log = logging.getLogger(__name__)


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
    """The sampler's side: one matcher per constrained request."""

    def __init__(self, device: torch.device):
        self.device = device
        self.defer = device.type == "cuda"  # overlapped steps: a step's tokens may still be on the device
        self.matchers: dict[str, xgr.GrammarMatcher] = {}
        self.batch_matcher = xgr.BatchGrammarMatcher()  # threads: half the host's cores (xgrammar's "auto")
        # the last step's tokens, not yet accepted, with the constrained rows' matchers they go to (a request
        # removed since, or a new one under the same id, must not get them)
        self._unaccepted: tuple["SampledBatch", list[tuple[int, str, xgr.GrammarMatcher]]] | None = None

    def add(self, request_id: str, grammar: xgr.CompiledGrammar | None) -> None:
        if grammar is not None:
            self.matchers[request_id] = xgr.GrammarMatcher(grammar)

    def remove(self, request_id: str) -> None:
        self.matchers.pop(request_id, None)

    def apply(self, logits: torch.Tensor, request_ids: list[str], upload: "Upload") -> torch.Tensor:
        """Masks the constrained rows of logits [n, vocab] in place (the caller has taken logprobs already). A
        request whose grammar has ended (it accepted EOS) is left unmasked: with overlapped steps it can be in one
        more batch before its end is seen, and the token drawn for it there is dropped."""
        constrained = self._constrained(request_ids)
        if not constrained:
            return logits
        self._accept(self._take_unaccepted())
        live = [(row, matcher) for row, matcher in constrained if not matcher.is_terminated()]
        if not live:
            return logits
        rows = [row for row, _ in live]
        bitmask = self.fill([matcher for _, matcher in live], logits.shape[-1])
        if self.device.type == "cuda":
            bitmask = bitmask.to(self.device, non_blocking=True)
        index = upload(rows, torch.long)  # a pageable copy here would wait for the step's forward pass
        allowed = unpack_bitmask(bitmask, logits.shape[-1])
        with torch.inference_mode():  # the runner's logits are inference tensors: in place, only the masked rows
            logits[index] = logits.index_select(0, index).masked_fill(~allowed, float("-inf"))
        return logits

    def _constrained(self, request_ids: list[str]) -> list[tuple[int, xgr.GrammarMatcher]]:
        """The batch's rows under a grammar, with their matchers."""
        return [(row, self.matchers[rid]) for row, rid in enumerate(request_ids) if rid in self.matchers]

    def fill(self, matchers: list[xgr.GrammarMatcher], vocab: int) -> torch.Tensor:
        """The matchers' next-token bitmasks, int32 [len(matchers), words], in pinned memory on a GPU machine. The
        rows are filled in parallel by xgrammar's own threads: one after another, 64 rows of a JSON schema took up
        to 5 ms a step."""
        bitmask = torch.full(xgr.get_bitmask_shape(len(matchers), vocab), -1, dtype=xgr.bitmask_dtype,
                             pin_memory=self.device.type == "cuda")
        self.batch_matcher.batch_fill_next_token_bitmask(matchers, bitmask)
        return bitmask

    def record(self, sampled: "SampledBatch", request_ids: list[str]) -> None:
        """The step's tokens; accepted into the matchers when the next step needs them (or at once on the CPU,
        where they are already on the host)."""
        constrained = [(row, rid, self.matchers[rid]) for row, rid in enumerate(request_ids) if rid in self.matchers]
        if constrained:
            self._unaccepted = (sampled, constrained)
            if not self.defer:
                self._accept(self._take_unaccepted())

    def _take_unaccepted(self):
        unaccepted, self._unaccepted = self._unaccepted, None
        return unaccepted

    @staticmethod
    def _accept(unaccepted) -> None:
        if unaccepted is None:
            return
        sampled, constrained = unaccepted
        tokens = sampled.result()
        live = [(rid, matcher, tokens[row].token_id) for row, rid, matcher in constrained
                if not matcher.is_terminated()]
        if not live:
            return
        accepted = xgr.BatchGrammarMatcher.batch_accept_token([m for _, m, _ in live], [t for _, _, t in live])
        for (rid, _, token), ok in zip(live, accepted):
            if not ok:
                log.error("request %s: grammar rejected token %d", rid, token)


def unpack_bitmask(bitmask: torch.Tensor, vocab: int) -> torch.Tensor:
    """int32 [m, words], bit j of word i = token 32*i + j -> bool [m, vocab]."""
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    return ((bitmask.unsqueeze(-1) >> shifts) & 1).flatten(1)[:, :vocab].bool()
