"""Session-scoped real SmolLM2 weights (loaded once, ~17 s) shared by every engine test, and HF's own greedy
`generate` on the very same dequantised model as the reference."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fleetserve.engine import loader  # noqa: E402
from fleetserve.engine.config import EngineConfig  # noqa: E402
from fleetserve.engine.llm_engine import LLMEngine  # noqa: E402

# small enough to stay light on a shared 24 GB machine, large enough for every test's batch
TEST_ENGINE_DEFAULTS = dict(device="cpu", num_kv_blocks=512, max_model_len=2048)


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread():
    """One intra-op thread: on a small shared CPU, OpenMP threads spinning against other processes make small
    matmuls ~20x slower. Restored after each module so other test areas keep their setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def hf_reference():
    hf_model, tokenizer = loader.load_builtin_hf()
    return hf_model, tokenizer


@pytest.fixture(scope="session")
def loaded_model(hf_reference):
    hf_model, tokenizer = hf_reference
    return loader.from_hf_model(hf_model, tokenizer, "cpu", torch.float32)


@pytest.fixture(scope="session")
def tokenizer(hf_reference):
    return hf_reference[1]


@pytest.fixture(scope="session")
def make_engine(loaded_model):
    """LLMEngine factory over the shared weights; keyword arguments override EngineConfig fields."""

    def make(**overrides) -> LLMEngine:
        return LLMEngine(EngineConfig(**{**TEST_ENGINE_DEFAULTS, **overrides}), loaded_model)

    return make


@pytest.fixture(scope="session")
def hf_greedy(hf_reference):
    """HF transformers greedy generate for one prompt (no padding), cached: the ground truth for our engine."""
    hf_model, _ = hf_reference
    cache: dict[tuple, list[int]] = {}

    def generate(prompt_ids: list[int], max_tokens: int) -> list[int]:
        key = (tuple(prompt_ids), max_tokens)
        if key not in cache:
            ids = torch.tensor([prompt_ids])
            with torch.inference_mode():
                out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                        do_sample=False, pad_token_id=hf_model.config.eos_token_id)
            cache[key] = out[0, len(prompt_ids):].tolist()
        return cache[key]

    return generate


PROMPTS = [
    "Hi!",
    "The capital of France is",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three fruits:",
    "Question: What is 12 times 7?\nAnswer:",
    "Translate 'good morning' into Spanish:",
    "Here is a short tip for writing clean Python code, with an example function that adds two numbers:",
    "Romeo and Juliet was written by",
    "def fibonacci(n):",
    "The three primary colors are red, yellow and blue. Mixed together in pairs they give",
    "Name a planet:",
    "Once upon a time, a girl called Cinderella lived with her stepmother and two stepsisters. One day",
    "We sleep because",
    "A joke about computers:",
    "Photosynthesis is",
    "1, 2, 3, 4,",
    "A good name for a dog is",
]


@pytest.fixture(scope="session")
def prompts(tokenizer):
    """Token ids of plain-text prompts of clearly different lengths (3 to ~20 tokens: cheap on a shared CPU)."""
    return [tokenizer.encode(p) for p in PROMPTS]


@pytest.fixture(scope="session")
def chat_prompt(tokenizer):
    def encode(messages: list[dict]) -> list[int]:
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])

    return encode
