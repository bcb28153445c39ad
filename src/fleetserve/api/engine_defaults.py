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
