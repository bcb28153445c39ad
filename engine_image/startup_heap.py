"""Keeps Python's garbage collector off what a serving process built at start.

A loaded engine's process holds about 470,000 objects that live as long as it does (torch's and transformers' own,
the model's modules, the tokenizer). Python's full collections walk all of them: on the lent H100's host one took
209 ms, and while it ran the GPU waited, so the decode step it landed in took 262 ms instead of 8 and an offline run
lost 4-5% of its tokens a second (benchmarks/results/qwen-offline-probes-h100.json, `gc_pauses`). Frozen, they are
never walked again, and a full collection takes microseconds.

Only for processes that keep their engine until they exit (`fleetserve serve`, its engine process, tensor-parallel
ranks, the benchmarks): a frozen object is never collected, so a process that builds and drops engines (a test
suite) would keep each one's weights, an engine being a reference cycle that only the collector frees.
"""

import gc


def freeze_startup_heap() -> int:
    """Collects what start-up left behind, then moves every object alive now out of the collector's reach (vLLM's
    engine core does the same). Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
