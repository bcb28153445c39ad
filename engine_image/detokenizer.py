"""Incremental detokenisation for one request.

Byte-level tokenizers split characters (emoji, CJK) across tokens, so a token's text only counts once decoding it
together with its neighbours no longer ends in U+FFFD; until then it is held back (vLLM's prefix/read offsets).
Stop strings: text that might be the start of a stop string is held back until the next tokens rule that out; a
matched stop string and everything after it are never returned.
"""

import weakref

from tokenizers import decoders
from transformers import TokenizersBackend


class TokenText:
    """How one tokenizer's ids become text, for every detokenizer of its requests (built once: see `token_text`).

    `decode(ids)` is `tokenizer.decode(ids, skip_special_tokens=True)`, called twice per generated token. For a
    plain fast tokenizer that is one Rust call behind transformers' per-call argument conversion, which costs twice
    the decode itself, so the Rust tokenizer is called directly where nothing else would happen.

    `pieces`: for a byte-level tokenizer (GPT-2's scheme: Llama 3, Qwen, SmolLM), each token's own text where its
    bytes are complete UTF-8 (None where not, or where it has no text). Byte-level decoding joins the tokens' bytes
    before decoding them, so such a token appended at a character boundary adds exactly its own text, and the
    detokenizer can skip both decodes. Other decoders (SentencePiece's leading space, WordPiece's "##") look at the
    neighbouring tokens: `pieces` is None for them."""

    def __init__(self, tokenizer):
        cls = type(tokenizer)
        plain = (cls.decode is TokenizersBackend.decode and cls._decode is TokenizersBackend._decode
                 and not cleans_up_spaces(tokenizer))
        self.pieces: list[str | None] | None = None
        if not plain:
            self.decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)
            return
        backend = tokenizer.backend_tokenizer
        self.decode = lambda ids: backend.decode(ids, skip_special_tokens=True)
        if isinstance(backend.decoder, decoders.ByteLevel):
            texts = backend.decode_batch([[i] for i in range(backend.get_vocab_size(with_added_tokens=True))],
                                         skip_special_tokens=True)
            self.pieces = [t if t and "\ufffd" not in t else None for t in texts]


_token_texts: "weakref.WeakKeyDictionary[object, TokenText]" = weakref.WeakKeyDictionary()


def token_text(tokenizer) -> TokenText:
    if tokenizer not in _token_texts:
        _token_texts[tokenizer] = TokenText(tokenizer)
    return _token_texts[tokenizer]


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
        text = token_text(tokenizer)
        self._decode, self._pieces = text.decode, text.pieces
        self.ids = list(prompt_token_ids[-self.CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.stop = [s for s in stop if s]
        self.text = ""  # complete characters decoded so far
        self.emitted = 0  # how much of `text` was handed out

    def add_token(self, token_id: int) -> None:
        self.ids.append(token_id)
        if self._pieces is not None and self.read_offset == len(self.ids) - 1 and 0 <= token_id < len(self._pieces):
            piece = self._pieces[token_id]
            if piece is not None:  # whole characters after a boundary: what the two decodes below would add
                self.text += piece
                self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
                return
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
