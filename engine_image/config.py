"""Everything that shapes one engine instance, in one dataclass."""

import dataclasses
from dataclasses import dataclass, field

from fleetserve.api.engine_defaults import default_max_num_batched_tokens

DEFAULT_MODEL = "builtin://smollm2-135m-instruct"


def served_name_for(source: str) -> str:
    """The name clients use for a model source: `hf://org/name@rev` -> `org/name`, a path -> its last folder."""
    scheme, sep, rest = source.partition("://")
    if not sep:
        rest = source
    rest = rest.split("@", 1)[0].rstrip("/")
    if scheme == "hf" and sep:
        return rest
    last = rest.rsplit("/", 1)[-1]
    return last.removesuffix(".json") or source


def default_hub_offline(source: str, environ) -> None:
    """Only hf:// sources need the Hugging Face Hub; every other source is local, so it gets offline mode and a start
    never waits on the network. HF_HUB_OFFLINE set by the user always wins. Call it before huggingface_hub is
    imported: the hub reads the variable once, at import."""
    if not source.startswith("hf://"):
        environ.setdefault("HF_HUB_OFFLINE", "1")


def _cuda_unavailable_reason(torch) -> str:
    """torch's own words for why CUDA is unavailable (no driver, driver too old, no device visible), which
    `torch.cuda.is_available()` keeps to itself."""
    build = f"torch {torch.__version__}, built for CUDA {torch.version.cuda}"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    try:
        torch.cuda.init()
    except (RuntimeError, AssertionError) as error:
        return f"{build}: {str(error).strip()}"
    return build


@dataclass
class EngineConfig:
    model: str = DEFAULT_MODEL
    served_model_name: str | None = None  # None: derived from `model`
    device: str = "auto"  # "cpu" | "cuda" | "auto"
    dtype: str = "auto"  # "auto": float32 on CPU, bfloat16 on GPU; or "float32" | "bfloat16" | "float16"
    block_size: int = 16
    num_kv_blocks: int | None = None  # None: derived from the memory budget below
    kv_cache_memory_bytes: int = 1 << 30  # CPU budget for the KV cache
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None  # per-step token budget (prefill chunks + decodes); None: by device
    max_model_len: int | None = None  # None: the model's own context length
    enable_prefix_caching: bool = True
    overlap_steps: bool | None = None  # None: on where the device runs asynchronously (a GPU), without TP
    tensor_parallel_size: int = 1
    hf_overrides: dict = field(default_factory=dict)  # e.g. {"num_hidden_layers": 2} for a shrunken random model
    seed: int = 0  # random weights

    def __post_init__(self):
        if self.served_model_name is None:
            self.served_model_name = served_name_for(self.model)
        if self.block_size < 1 or self.max_num_seqs < 1 or (self.max_num_batched_tokens or 1) < 1:
            raise ValueError("block_size, max_num_seqs and max_num_batched_tokens must be >= 1")
        if self.tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be >= 1")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")

    def overlap_steps_on(self, device) -> bool:
        """Whether a step is launched before the previous one's tokens are read back (see LLMEngine.step).
        Tensor-parallel steps send every input id to the other ranks, so they must know them: never there."""
        if self.tensor_parallel_size > 1:
            return False
        return device.type == "cuda" if self.overlap_steps is None else self.overlap_steps

    def resolved_device(self) -> str:
        if self.device == "cpu":
            return "cpu"
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if self.device == "cuda":  # asked for a GPU: serving on the CPU instead would only look like it works
            raise ValueError(f"device: --device cuda, but torch sees no GPU ({_cuda_unavailable_reason(torch)}); "
                             "check that the pod requests nvidia.com/gpu, that the driver libraries are visible "
                             "(LD_LIBRARY_PATH, NVIDIA_VISIBLE_DEVICES, runtimeClassName: nvidia where the GPU "
                             "Operator needs it) and that the node's driver supports this torch build, "
                             "or use --device cpu")
        return "cpu"

    def with_device_defaults(self) -> "EngineConfig":
        """This config with the defaults that depend on the device filled in (the token budget). Raises
        ValueError for --device cuda without a usable GPU."""
        device, memory = self.resolved_device(), 0
        if self.max_num_batched_tokens is not None:
            return self
        if device == "cuda":
            import torch

            memory = torch.cuda.get_device_properties(0).total_memory
        return dataclasses.replace(self, max_num_batched_tokens=default_max_num_batched_tokens(device, memory))

    def resolved_dtype(self):
        import torch

        if self.dtype == "auto":
            return torch.float32 if self.resolved_device() == "cpu" else torch.bfloat16
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]
