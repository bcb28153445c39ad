"""Model sources: HF folders of every supported architecture match HF transformers token for token; random weights
from the shipped configs load; bad sources name the problem."""

import pytest
import torch
import transformers

from fleetserve.engine import loader
from fleetserve.engine.config import EngineConfig, served_name_for
from fleetserve.engine.llm_engine import LLMEngine
from fleetserve.engine.sampling_params import SamplingParams

TINY = dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2, tie_word_embeddings=False)
ARCHITECTURES = {
    "llama3-rope-scaling": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32}, rope_theta=500000.0)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(tie_word_embeddings=True)),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(head_dim=32)),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(sliding_window=None)),
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_hf_folder_matches_transformers(arch, tmp_path, tokenizer):
    config_cls, model_cls, extra = ARCHITECTURES[arch]
    torch.manual_seed(0)
    hf_model = model_cls(config_cls(**{**TINY, **extra})).eval()
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompt = tokenizer.encode("The quick brown fox jumps over the lazy dog, and then")
    with torch.inference_mode():
        ids = torch.tensor([prompt])
        ref = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False,
                                eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    engine = LLMEngine(EngineConfig(model=str(tmp_path), device="cpu", num_kv_blocks=32, block_size=8))
    [out] = engine.generate([prompt], SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True))
    assert out.new_token_ids == ref
    assert engine.model_name == tmp_path.name


def test_hf_source_resolves_a_revision_from_the_hf_cache(tmp_path, tokenizer, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "models--acme--tiny-llama" / "snapshots" / "0123abcd"
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "v1").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a cache hit must not need the network
    engine = LLMEngine(EngineConfig(model="hf://acme/tiny-llama@v1", device="cpu", num_kv_blocks=32, block_size=8))
    assert engine.model_name == "acme/tiny-llama"
    [out] = engine.generate([[5, 6, 7]], SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
    assert len(out.new_token_ids) == 3


def test_random_qwen3_shrunken_loads_and_generates():
    config = EngineConfig(model="random://qwen3-0.6b", device="cpu", hf_overrides={"num_hidden_layers": 2},
                          num_kv_blocks=16, max_model_len=256)
    engine = LLMEngine(config)
    assert engine.model_name == "qwen3-0.6b"
    assert engine.loaded.hf_config.model_type == "qwen3" and len(engine.loaded.model.model.layers) == 2
    assert engine.loaded.hf_config.vocab_size == 151936
    [out] = engine.generate([[1, 2, 3, 4]], SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
    assert len(out.new_token_ids) == 5


def test_shipped_configs_are_the_published_shapes():
    qwen = transformers.AutoConfig.from_pretrained(f"{loader.CONFIG_DIR}/qwen3-0.6b.json")
    llama = transformers.AutoConfig.from_pretrained(f"{loader.CONFIG_DIR}/llama-3-8b.json")
    assert (qwen.hidden_size, qwen.num_hidden_layers, qwen.num_key_value_heads, qwen.head_dim) == (1024, 28, 8, 128)
    assert (llama.hidden_size, llama.num_hidden_layers, llama.intermediate_size, llama.vocab_size) == (
        4096, 32, 14336, 128256)


@pytest.mark.parametrize("source, name", [
    ("builtin://smollm2-135m-instruct", "smollm2-135m-instruct"),
    ("hf://Qwen/Qwen3-0.6B@main", "Qwen/Qwen3-0.6B"),
    ("/models/llama-3-8b/", "llama-3-8b"),
    ("random://qwen3-0.6b", "qwen3-0.6b"),
    ("random:///tmp/tiny.json", "tiny"),
])
def test_served_name_is_derived_from_the_source(source, name):
    assert served_name_for(source) == name


@pytest.mark.parametrize("source", ["builtin://nope", "random://no-such-config", "s3://bucket/model", "/nonexistent"])
def test_bad_sources_raise_naming_the_model(source):
    with pytest.raises(ValueError, match="model"):
        loader.load(EngineConfig(model=source, device="cpu"))


def test_weights_larger_than_host_memory_are_refused_before_loading(monkeypatch):
    monkeypatch.setattr(loader, "available_host_memory", lambda: 1 << 30)  # a 1 GiB machine
    with pytest.raises(ValueError, match=r"model: its weights need 2\.\d GiB in float32 but only 1\.0 GiB"):
        loader.load(EngineConfig(model="random://qwen3-0.6b", device="cpu"))
