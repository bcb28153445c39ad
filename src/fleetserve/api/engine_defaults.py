"""Engine defaults that other components plan with: the simulator sizes a replica as `fleetserve serve` would run it.
Defined once here, so the engine and the autoscaler's simulator share it without importing each other."""

LARGE_GPU_BYTES = 70 * 2**30


def default_max_num_batched_tokens(device: str, memory_bytes: int = 0) -> int:
    """The token budget of a step when none is given: 8192 on a GPU of 70 GiB or more (H100, H200, A100-80GB,
    B200), else 2048 (the CPU, and smaller cards: L4, A10, A100-40GB). A prompt's prefill takes budget-sized chunks,
    so a budget too small for the card leaves it idle between chunks and long prompts queue: on an H200, `serve`
    with 2048 reached 82% of its throughput with 8192 and a TTFT p99 of 4 s on the Azure trace (docs/gpu.md).
    The step's activations come out of the KV cache (the GPU runner profiles a full-budget step), which a large card
    affords; vLLM's server uses the same two values with the same memory threshold. Smaller cards were not
    measured here, so they keep 2048."""
    return 8192 if device == "cuda" and memory_bytes >= LARGE_GPU_BYTES else 2048


def token_buckets(max_model_len: int) -> list[int]:
    """vLLM's buckets for per-request token counts (build_1_2_5_buckets): 1, 2, 5, 10, 20, 50, ... up to
    max_model_len. The engine's prompt-length histogram uses them; the simulator reports its prompts in the same ones."""
    buckets, scale = [], 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > max_model_len:
                return buckets
            buckets.append(mantissa * scale)
        scale *= 10
