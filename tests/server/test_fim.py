"""`suffix` on /v1/completions through the official `openai` client: fill-in-the-middle in PSM order where the
tokenizer has FIM tokens (Qwen2.5-Coder's `<|fim_prefix|>` ..., StarCoder's `<fim_prefix>` ...), a 400 naming
`suffix` where it has none. The model: random://qwen3-0.6b shrunk, its vocabulary grown by a few ids, with its
tokenizer given the FIM tokens in those ids (SmolLM2's has none)."""

import copy

import openai
import pytest
from tiny_servers import openai_servers, tiny_engine

MODEL = "tiny-coder"
QWEN_FIM = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
STARCODER_FIM = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]


class FimEngine:
    """The engine with a tokenizer that has these special tokens; records the prompts it is handed."""

    def __init__(self, engine, special_tokens: list[str]):
        self._engine, self.prompts = engine, []
        self.tokenizer = copy.deepcopy(engine.tokenizer)  # the engine's own stays as it is
        if special_tokens:
            self.tokenizer.add_special_tokens({"additional_special_tokens": special_tokens})

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def generate(self, request_id, prompt_ids, params):
        self.prompts.append(prompt_ids)
        return self._engine.generate(request_id, prompt_ids, params)


@pytest.fixture(scope="module")
def engine(engine_loop):
    with tiny_engine(engine_loop, "qwen3-0.6b", MODEL, max_model_len=512, vocab_size=49152 + 64) as engine:
        yield engine


@pytest.fixture(scope="module")
def serve(engine_loop):
    with openai_servers(engine_loop) as start:
        yield start


@pytest.mark.parametrize("fim_tokens", [QWEN_FIM, STARCODER_FIM])
def test_suffix_builds_a_prefix_suffix_middle_prompt(engine, serve, fim_tokens):
    fim = FimEngine(engine, fim_tokens)
    client = serve(fim)
    prefix, suffix = "def add(a, b):\n    ", "\n    return total\n"
    reply = client.completions.create(model=MODEL, prompt=prefix, suffix=suffix, max_tokens=5, temperature=0)
    tokenizer, ids = fim.tokenizer, fim.tokenizer.convert_tokens_to_ids(fim_tokens)
    assert fim.prompts[-1] == [ids[0], *tokenizer.encode(prefix, add_special_tokens=False), ids[1],
                               *tokenizer.encode(suffix, add_special_tokens=False), ids[2]]
    assert reply.usage.prompt_tokens == len(fim.prompts[-1]) and reply.choices[0].finish_reason in ("stop", "length")
    # token-id prompts and streaming take the same prompt and give the same middle
    stream = client.completions.create(model=MODEL, prompt=tokenizer.encode(prefix, add_special_tokens=False),
                                       suffix=suffix, max_tokens=5, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream) == reply.choices[0].text
    assert fim.prompts[-1] == fim.prompts[-2]


def test_suffix_without_fim_tokens_is_a_400_naming_it(engine, serve):
    client = serve(FimEngine(engine, []))
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model=MODEL, prompt="def f():", suffix="    return 1", max_tokens=4)
    assert error.value.body["param"] == "suffix" and "fill-in-the-middle" in error.value.body["message"]
    assert client.completions.create(model=MODEL, prompt="x", suffix="", max_tokens=1).choices[0].text is not None
