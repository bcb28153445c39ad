"""`fleetserve serve`: load a model, serve it over the OpenAI API, and drain gracefully on SIGTERM.

The operator renders exactly these flags into pods (docs/server.md lists them), so their names are a contract.
"""

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from fleetserve.engine.config import DEFAULT_MODEL, EngineConfig, default_hub_offline
from fleetserve.engine.group_layout import group_layout
from fleetserve.engine.startup_heap import freeze_startup_heap

logger = logging.getLogger("fleetserve.serve")

API_KEY_ENV = "FLEETSERVE_API_KEY"
ENGINE_PROCESS_MODES = ("auto", "on", "off")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    engine = parser.add_argument_group("engine")
    engine.add_argument("--model", default=DEFAULT_MODEL,
                        help="builtin://smollm2-135m-instruct, an HF model folder, hf://org/name[@revision], or "
                             "random://CONFIG for random weights (default: %(default)s)")
    engine.add_argument("--served-model-name", default=None, help="the name clients send as `model`")
    engine.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    engine.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    engine.add_argument("--max-num-seqs", type=int, default=256, help="most sequences in one batch")
    engine.add_argument("--max-model-len", type=int, default=None,
                        help="context window (prompt + completion); default: the model's")
    engine.add_argument("--max-num-batched-tokens", type=int, default=None,
                        help="token budget of one engine step; default: 8192 on a GPU of 70 GiB or more, else 2048")
    engine.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                        help="fraction of GPU memory the engine may use (weights + KV cache)")
    engine.add_argument("--num-kv-blocks", type=int, default=None,
                        help="KV-cache blocks; default: sized from the memory budget")
    engine.add_argument("--block-size", type=int, default=16, help="tokens per KV-cache block")
    engine.add_argument("--tensor-parallel-size", type=int, default=1,
                        help="ranks that shard the model, one per GPU, started by this command; a multi-node group "
                             "takes its layout from FLEETSERVE_NNODES and the rest of its environment (docs/tp.md)")
    engine.add_argument("--engine-process", choices=ENGINE_PROCESS_MODES, default="auto",
                        help="on: the engine core in a process of its own, the API server's event loop in this one; "
                             "off: the engine on a thread of this process; auto (default): on with a GPU, off on "
                             "the CPU and under tensor parallelism (docs/server.md)")
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8000)
    server.add_argument("--max-waiting", type=int, default=None,
                        help="answer 429 once this many requests wait beyond the batch's free slots, so a burst of "
                             "--max-num-seqs + --max-waiting is admitted (default: --max-num-seqs)")
    server.add_argument("--drain-seconds", type=float, default=30.0,
                        help="on SIGTERM, how long in-flight requests may take to finish before exit")
    server.add_argument("--api-key-file", type=Path, default=None,
                        help=f"require 'Authorization: Bearer <key>' with the key in this file "
                             f"(or in ${API_KEY_ENV})")


def engine_config_from(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        model=args.model, served_model_name=args.served_model_name, device=args.device, dtype=args.dtype,
        max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens, gpu_memory_utilization=args.gpu_memory_utilization,
        num_kv_blocks=args.num_kv_blocks, block_size=args.block_size,
        tensor_parallel_size=args.tensor_parallel_size)


def read_api_key(key_file: Path | None, environ: dict) -> str | None:
    """The file wins over the environment; blank means no auth."""
    key = key_file.read_text().strip() if key_file is not None else environ.get(API_KEY_ENV, "").strip()
    return key or None


def how_to_query(host: str, port: int, model: str, with_key: bool) -> str:
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    auth = ' -H "Authorization: Bearer $FLEETSERVE_API_KEY"' if with_key else ""
    key = "os.environ['FLEETSERVE_API_KEY']" if with_key else "'unused'"
    return (
        f"serving {model!r} on {base}\n"
        f"  curl -s {base}/v1/chat/completions -H 'Content-Type: application/json'{auth} \\\n"
        f"    -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}], "
        f"\"max_tokens\": 32}}'\n"
        f"  python -c \"import os, openai; c = openai.OpenAI(base_url='{base}/v1', api_key={key}); "
        f"print(c.chat.completions.create(model='{model}', messages=[{{'role': 'user', 'content': 'Hello!'}}], "
        f"max_tokens=32).choices[0].message.content)\""
    )


def validate(args: argparse.Namespace) -> None:
    if args.engine_process == "on" and args.tensor_parallel_size > 1:
        raise ValueError("--engine-process on: tensor parallelism keeps the engine in the API server's process "
                         "(rank 0's group lives there); use auto or off")
    if args.max_waiting is not None and args.max_waiting < 1:
        raise ValueError("--max-waiting must be >= 1")
    if args.drain_seconds < 0:
        raise ValueError("--drain-seconds must be >= 0")
    if not 0 < args.port < 65536:
        raise ValueError("--port must be in 1..65535")


def engine_in_own_process(mode: str, device: str, tensor_parallel_size: int) -> bool:
    """auto: only on a GPU, where the event loop's per-chunk work for hundreds of streams would otherwise take the GIL
    from the launches that keep the GPU busy; on the CPU the step itself is the bottleneck and a second process
    would only add its own torch and tokenizer (~650 MB). Tensor parallelism keeps the engine here: rank 0's group
    (its TCP store, the ranks it spawned, the watchdog behind `healthy`) lives in this process."""
    if tensor_parallel_size > 1:
        return False
    return mode == "on" or (mode == "auto" and device == "cuda")


def build_engine(config: EngineConfig, mode: str):
    if engine_in_own_process(mode, config.resolved_device(), config.tensor_parallel_size):
        from fleetserve.engine.engine_process import EngineProcess

        return EngineProcess(config)
    from fleetserve.engine.async_engine import AsyncEngine

    return AsyncEngine(config)


async def serve(args: argparse.Namespace, config: EngineConfig, api_key: str | None) -> int:
    from fleetserve.engine.server import ServerOptions, STATE, build_app, start_site

    engine = build_engine(config, args.engine_process)
    await engine.start()
    max_waiting = args.max_waiting or config.max_num_seqs  # a queue as deep as one batch by default
    app = build_app(engine, ServerOptions(max_waiting=max_waiting, max_num_seqs=config.max_num_seqs,
                                         api_key=api_key))
    freeze_startup_heap()  # its one full collection before the port opens, so no request or probe waits on it
    runner = await start_site(app, args.host, args.port)
    logger.info(how_to_query(args.host, args.port, engine.model_name, api_key is not None))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    admission = app[STATE].admission
    logger.info("stopping: draining %d in-flight requests (up to %.0fs)", admission.in_flight, args.drain_seconds)
    if not await admission.drain(args.drain_seconds):
        logger.warning("grace period over: aborting %d requests still in flight", admission.in_flight)
    await runner.cleanup()
    await engine.shutdown()
    logger.info("stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        validate(args)
        config = engine_config_from(args)
        default_hub_offline(config.model, os.environ)  # spawned ranks inherit the environment
        # refuses --device cuda without a usable GPU here, before any rank starts; every rank gets the same budget
        config = config.with_device_defaults()
        api_key = read_api_key(args.api_key_file, os.environ)
        layout = group_layout(config.tensor_parallel_size, os.environ)
    except (ValueError, OSError) as error:
        logger.error("%s", error)
        return 2
    from fleetserve.engine import distributed
    from fleetserve.engine.tp_launch import leader_group, run_worker_node

    if layout.node_rank > 0:  # a worker node of a multi-node group: no API, its ranks follow rank 0's steps
        code = run_worker_node(layout, config, args.host, args.port)
    else:
        try:
            with leader_group(layout, config):
                code = asyncio.run(serve(args, config, api_key))
        except (ValueError, distributed.GroupError) as error:  # refused at start: a model it can't shard, a group
            logger.error("%s", error)  # that didn't form
            code = 2
    if layout.world_size > 1:
        distributed.exit_process(code)
    return code
