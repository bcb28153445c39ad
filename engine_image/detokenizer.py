"""Incremental detokenisation for one request.

Byte-level tokenizers split characters (emoji, CJK) across tokens, so a token's text only counts once decoding it
together with its neighbours no longer ends in U+FFFD; until then it is held back (vLLM's prefix/read offsets).
Stop strings: text that might be the start of a stop string is held back until the next tokens rule that out; a
matched stop string and everything after it are never returned.
"""

from transformers import TokenizersBackend


def text_decoder(tokenizer):
    """`ids -> tokenizer.decode(ids, skip_special_tokens=True)`, called twice per generated token. For a plain fast
    tokenizer that is one Rust call behind transformers' per-call argument conversion, which costs twice the decode
    itself (a third of `LLMEngine._append` per token), so call the Rust tokenizer directly where nothing else would
    happen."""
    cls = type(tokenizer)
    plain = (cls.decode is TokenizersBackend.decode and cls._decode is TokenizersBackend._decode
             and not cleans_up_spaces(tokenizer))
    if plain:
        backend = tokenizer.backend_tokenizer
        return lambda ids: backend.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


def cleans_up_spaces(tokenizer) -> bool:
    """Whether `decode` post-processes spaces. transformers releases that know the flag below skip that step for
    BPE models unless it is set (GGUF tokenizers come with clean_up_tokenization_spaces=True)."""
    if not tokenizer.clean_up_tokenization_spaces:
        return False
    force = getattr(tokenizer, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", None)
    return force is None or force or type(tokenizer.backend_tokenizer.model).__name__ != "BPE"


class IncrementalDetokenizer:
    CONTEXT_TOKENS = 6  # prompt tail decoded along, so the first output tokens get their leading spaces right

    def __init__(self, tokenizer, prompt_token_ids: list[int], stop: list[str]):
        self._decode = text_decoder(tokenizer)
        self.ids = list(prompt_token_ids[-self.CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.stop = [s for s in stop if s]
        self.text = ""  # complete characters decoded so far
        self.emitted = 0  # how much of `text` was handed out

    def add_token(self, token_id: int) -> None:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        after = self._decode(self.ids[self.prefix_offset:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)

    def take(self) -> tuple[str, bool]:
        """(text that is safe to hand out now, whether a stop string matched). After a match, nothing follows."""
        if not self.stop:  # nothing to hold back (the common case, per token: keep it short)
            out = self.text[self.emitted:]
            self.emitted = len(self.text)
            return out, False
        match = self._first_stop()
        if match is not None:
            out = self.text[self.emitted:match]
            self.text = self.text[:match]
            self.emitted = match
            return out, True
        safe = len(self.text) - self._held_suffix()
        out = self.text[self.emitted:safe]
        self.emitted = max(self.emitted, safe)
        return out, False

    def flush(self) -> str:
        """Everything still held back, once the request ends for another reason than a stop string."""
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        self.text += self._decode(self.ids[self.prefix_offset:])[len(before):]
        self.prefix_offset = self.read_offset = len(self.ids)
        out = self.text[self.emitted:]
        self.emitted = len(self.text)
        return out

    def _first_stop(self) -> int | None:
        found = [i for i in (self.text.find(s, self.emitted) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _held_suffix(self) -> int:
        """Length of the longest unemitted suffix of `text` that is a proper prefix of a stop string."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text) - self.emitted), longest, -1):
                if self.text.endswith(s[:k]):
                    longest = k
                    break
        return longest
