"""A tensor-parallel size that doesn't divide the model's heads is refused at start, naming what doesn't divide."""

import re
import subprocess

import pytest
from transformers import AutoConfig

from fleetserve.engine.models.llama import LlamaForCausalLM, check_tensor_parallel


@pytest.fixture(scope="module")
def tiny_config(tiny):
    return AutoConfig.from_pretrained(tiny.path)  # 8 query heads, 4 KV heads, 256 MLP columns


@pytest.mark.parametrize("tp_size", [1, 2, 4])
def test_sizes_that_divide_are_accepted(tiny_config, tp_size):
    check_tensor_parallel(tiny_config, tp_size)


@pytest.mark.parametrize("tp_size, named", [
    (3, "num_attention_heads (8), num_key_value_heads (4), intermediate_size (256)"),
    (8, "num_key_value_heads (4)"),
])
def test_sizes_that_do_not_divide_are_refused(tiny_config, tp_size, named):
    with pytest.raises(ValueError, match=re.escape(f"tensor_parallel_size {tp_size} must divide the model's {named};")):
        LlamaForCausalLM(tiny_config, tp_rank=0, tp_size=tp_size)


def test_serve_refuses_to_start(tiny, start_serve):
    served = start_serve(["--tensor-parallel-size", "3", *tiny.engine_args])
    try:
        assert served.process.wait(timeout=120) == 2
    except subprocess.TimeoutExpired:
        pytest.fail(f"fleetserve serve did not refuse to start:\n{served.log()}")
    assert "ERROR fleetserve.serve: tensor_parallel_size 3 must divide the model's num_attention_heads" in served.log()
    assert served.health() == 0  # never served
