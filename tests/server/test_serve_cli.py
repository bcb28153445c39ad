"""`fleetserve serve` flags: the names the operator renders, and how they become an EngineConfig."""

import argparse

import pytest

from fleetserve.engine.config import default_max_num_batched_tokens
from fleetserve.engine.serve_cli import (
    add_arguments,
    engine_config_from,
    engine_in_own_process,
    how_to_query,
    read_api_key,
    run,
    validate,
)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_engine_flag_reaches_the_config():
    args = parse("--model", "/models/x", "--served-model-name", "x", "--device", "cpu", "--dtype", "float32",
                 "--max-num-seqs", "8", "--max-model-len", "512", "--max-num-batched-tokens", "256",
                 "--gpu-memory-utilization", "0.5", "--num-kv-blocks", "64", "--block-size", "32",
                 "--tensor-parallel-size", "1")
    config = engine_config_from(args)
    assert (config.model, config.served_model_name, config.device, config.dtype) == ("/models/x", "x", "cpu",
                                                                                    "float32")
    assert (config.max_num_seqs, config.max_model_len, config.max_num_batched_tokens) == (8, 512, 256)
    assert (config.gpu_memory_utilization, config.num_kv_blocks, config.block_size) == (0.5, 64, 32)


def test_server_flags_and_defaults():
    args = parse()
    assert (args.host, args.port, args.max_waiting, args.drain_seconds, args.api_key_file) == (
        "127.0.0.1", 8000, None, 30.0, None)  # None: as deep as one batch
    assert engine_config_from(args).served_model_name == "smollm2-135m-instruct"
    args = parse("--host", "0.0.0.0", "--port", "9000", "--max-waiting", "4", "--drain-seconds", "5")
    assert (args.host, args.port, args.max_waiting, args.drain_seconds) == ("0.0.0.0", 9000, 4, 5.0)


@pytest.mark.parametrize("argv", [["--max-waiting", "0"], ["--drain-seconds", "-1"], ["--port", "0"],
                                  ["--engine-process", "on", "--tensor-parallel-size", "2"]])
def test_bad_server_flags_are_rejected(argv):
    with pytest.raises(ValueError, match=argv[0]):
        validate(parse(*argv))


@pytest.mark.parametrize("mode,device,tp,own", [
    ("auto", "cuda", 1, True), ("auto", "cpu", 1, False), ("auto", "cuda", 2, False),
    ("on", "cpu", 1, True), ("off", "cuda", 1, False)])
def test_the_engine_gets_a_process_of_its_own_by_default_only_on_a_gpu(mode, device, tp, own):
    assert parse().engine_process == "auto"
    assert engine_in_own_process(mode, device, tp) is own


def test_api_key_from_file_then_environment(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert read_api_key(key_file, {"FLEETSERVE_API_KEY": "from-env"}) == "from-file"
    assert read_api_key(None, {"FLEETSERVE_API_KEY": "from-env"}) == "from-env"
    assert read_api_key(None, {"FLEETSERVE_API_KEY": "  "}) is None
    assert read_api_key(None, {}) is None


def test_startup_message_shows_curl_and_openai_client():
    message = how_to_query("0.0.0.0", 8123, "smollm2-135m-instruct", with_key=False)
    assert "curl -s http://127.0.0.1:8123/v1/chat/completions" in message
    assert "openai.OpenAI(base_url='http://127.0.0.1:8123/v1'" in message
    assert "Authorization" in how_to_query("127.0.0.1", 8000, "m", with_key=True)


def test_device_cuda_without_a_usable_gpu_is_refused_with_torchs_reason(monkeypatch, caplog):
    import torch

    def no_driver():
        raise RuntimeError("Found no NVIDIA driver on your system.")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "init", no_driver)
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # run() sets it for the built-in model
    assert run(parse("--device", "cuda")) == 2
    assert (f"device: --device cuda, but torch sees no GPU (torch {torch.__version__}, built for CUDA 12.6: Found no "
            "NVIDIA driver on your system.); check that the pod requests nvidia.com/gpu") in caplog.text
    assert engine_config_from(parse("--device", "auto")).resolved_device() == "cpu"  # auto still falls back


@pytest.mark.parametrize("device,memory_gib,budget", [
    ("cpu", 0, 2048), ("cpu", 512, 2048),  # the CPU keeps its default, whatever the host's memory
    ("cuda", 24, 2048), ("cuda", 40, 2048),  # L4, A100-40GB: not measured larger
    ("cuda", 79.6, 8192), ("cuda", 139.8, 8192),  # H100 80GB and H200 as torch reports them
])
def test_default_token_budget_follows_the_device(device, memory_gib, budget):
    assert default_max_num_batched_tokens(device, int(memory_gib * 2**30)) == budget


def test_serve_derives_the_token_budget_from_the_gpu_unless_given(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: argparse.Namespace(total_memory=int(79.6 * 2**30)))
    assert engine_config_from(parse("--device", "cuda")).with_device_defaults().max_num_batched_tokens == 8192
    given = parse("--device", "cuda", "--max-num-batched-tokens", "1024")
    assert engine_config_from(given).with_device_defaults().max_num_batched_tokens == 1024
    assert engine_config_from(parse("--device", "cpu")).with_device_defaults().max_num_batched_tokens == 2048
