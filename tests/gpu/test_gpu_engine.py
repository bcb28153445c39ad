"""The engine on the GPU with a small random Llama-shaped model: CUDA-graph decode against eager decode, and a
batch that forces preemption against each prompt alone. Needs a CUDA device."""

import pytest
import torch

pytest.importorskip("triton")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

from fleetserve.engine.config import EngineConfig  # noqa: E402
from fleetserve.engine.gpu_model_runner import GPUModelRunner  # noqa: E402
from fleetserve.engine.llm_engine import LLMEngine  # noqa: E402
from fleetserve.engine.sampling_params import SamplingParams  # noqa: E402
from fleetserve.engine.sequence import Sequence  # noqa: E402

# two layers; larger random weights than HF's 0.02, so logits are spread out and bf16 near-ties between the
# batched and the lone runs are rare
SMALL = {"num_hidden_layers": 2, "initializer_range": 0.2}


@pytest.fixture(scope="module")
def engine():
    return LLMEngine(EngineConfig(model="random://qwen3-0.6b", device="cuda", hf_overrides=SMALL,
                                  max_model_len=1024, num_kv_blocks=512, max_num_seqs=16))


def test_engine_runs_the_gpu_runner(engine):
    assert isinstance(engine.runner, GPUModelRunner)


def test_graph_decode_matches_eager_decode(engine):
    runner = engine.runner
    seqs = []
    for i in range(3):
        seq = Sequence(f"g{i}", list(range(10 + i, 60 + 7 * i)), SamplingParams())
        seq.block_table = list(range(8 * i, 8 * i + 8))
        seq.num_computed_tokens, seq.num_new_tokens = 0, len(seq)
        seqs.append(seq)
    runner.run(seqs)  # prefill fills the cache
    for seq in seqs:
        seq.token_ids.append(5)
        seq.num_computed_tokens, seq.num_new_tokens = len(seq) - 1, 1
    graph = runner.run(seqs).clone()
    eager = runner._run_eager(seqs)
    assert ((graph - eager).norm() / eager.norm()).item() < 1e-2


def test_preempted_batch_gives_the_same_tokens_as_prompts_alone():
    config = dict(model="random://qwen3-0.6b", device="cuda", hf_overrides=SMALL, max_model_len=512,
                  max_num_seqs=8)
    prompts = [[(7 * i + j) % 1000 for j in range(40 + 10 * i)] for i in range(6)]
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    roomy = LLMEngine(EngineConfig(num_kv_blocks=512, **config))
    alone = [roomy.generate([p], params)[0].new_token_ids for p in prompts]
    tight = LLMEngine(EngineConfig(num_kv_blocks=34, **config), roomy.loaded)
    together = [o.new_token_ids for o in tight.generate(prompts, params)]
    assert tight.scheduler.num_preemptions > 0
    same = sum(a == b for a, b in zip(alone, together))
    assert same >= len(prompts) - 1, f"{same} of {len(prompts)} identical"  # a bf16 near-tie may flip one


def test_overlapped_steps_give_the_step_by_step_tokens(engine):
    """On the GPU a step is launched before the previous one's tokens are read back; the inputs still pending
    come from the GPU's own copy of the sampled tokens, so the outputs must equal the step-by-step engine's."""
    assert engine.overlap
    prompts = [[(11 * i + j) % 1000 for j in range(30 + 9 * i)] for i in range(10)]
    params = [SamplingParams(max_tokens=20 + 3 * i, temperature=0.0 if i % 2 else 0.7, seed=i, ignore_eos=True)
              for i in range(10)]
    step_by_step = LLMEngine(EngineConfig(model="random://qwen3-0.6b", device="cuda", hf_overrides=SMALL,
                                          max_model_len=1024, num_kv_blocks=512, max_num_seqs=16,
                                          overlap_steps=False), engine.loaded)
    want = [o.new_token_ids for o in step_by_step.generate(prompts, params)]
    got = [o.new_token_ids for o in engine.generate(prompts, params)]
    assert got == want
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
