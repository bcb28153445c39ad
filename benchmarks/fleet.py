"""Building FleetServe engines for the benchmarks: from an HF model's weights (so both sides compute the same
function) or from a random config, on the GPU in bf16."""

import json
import os

import torch

from fleetserve.engine import loader
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.llm_engine import LLMEngine

CONFIG_DIR = os.path.join(os.path.dirname(loader.__file__), "configs")


def shape_config(name: str) -> dict:
    with open(os.path.join(CONFIG_DIR, f"{name}.json")) as f:
        return json.load(f)


def random_hf_model(name: str, dtype=torch.bfloat16):
    """HF transformers' own model of a published shape, random weights, built directly on the GPU."""
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.from_pretrained(os.path.join(CONFIG_DIR, f"{name}.json"))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    return model.eval()


def engine_config(**overrides) -> EngineConfig:
    settings = dict(device="cuda", dtype="bfloat16", max_model_len=4096, max_num_batched_tokens=8192,
                    max_num_seqs=256, gpu_memory_utilization=0.9)
    settings.update(overrides)
    return EngineConfig(**settings)


def engine_from_hf(hf_model, tokenizer, **overrides) -> LLMEngine:
    """Our engine over a copy of the HF model's weights (fused into our layout)."""
    loaded = loader.from_hf_model(hf_model, tokenizer, "cuda", torch.bfloat16)
    return LLMEngine(engine_config(**overrides), loaded)


def builtin_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(loader.builtin_dir(), gguf_file=loader.BUILTIN_GGUF)


def free_gpu_memory() -> None:
    """Return freed GPU memory (callers drop their references first), so the next engine sizes its KV cache on a
    clean card."""
    import gc

    gc.unfreeze()  # an engine frozen by startup_heap.freeze_startup_heap is a cycle only the collector frees
    gc.collect()
    torch.cuda.empty_cache()
