"""A worker holding a third of a model's layers has a clearly smaller peak resident
memory than one holding all of them: only the slice's weights are ever read (a dense Llama, and a
MoE whose bytes are nearly all experts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from deploy.local import LocalWorkerSpec, start_local_workers, stop_pids
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc
from proto import grpc_options
from tests.cluster_harness import free_ports
from tests.model_factory import model_bytes, write_random_llama

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

LAYERS = 9


@pytest.fixture(scope="module")
def big_model(tmp_path_factory) -> Path:
    # ~670 MB of float32: 9 layers of hidden 1024 / MLP 4096, plus embedding and head.
    return write_random_llama(
        tmp_path_factory.mktemp("big") / "llama600",
        hidden_size=1024, num_layers=LAYERS, intermediate_size=4096, num_heads=16, num_kv_heads=16,
        vocab_size=8192, layers_per_shard=3,
    )


async def _load_and_measure(address: str, model: Path, start: int, end: int) -> pb.NodeInfo:
    return await _load(address, model, start, end, LAYERS)


def test_third_of_layers_has_much_smaller_peak_rss(big_model, tmp_path):
    size = model_bytes(big_model)
    assert size > 600e6
    ports = free_ports(2)
    workers = start_local_workers(
        [LocalWorkerSpec("whole", "127.0.0.1", ports[0]), LocalWorkerSpec("third", "127.0.0.1", ports[1])],
        tmp_path / "logs",
    )
    try:
        whole = asyncio.run(_load_and_measure(f"127.0.0.1:{ports[0]}", big_model, 0, LAYERS))
        third = asyncio.run(_load_and_measure(f"127.0.0.1:{ports[1]}", big_model, 2 * LAYERS // 3, LAYERS))
    finally:
        stop_pids([w.pid for w in workers])
    print(f"\nmodel {size / 1e6:.0f} MB; peak RSS: all {LAYERS} layers {whole.peak_rss_bytes / 1e6:.0f} MB, "
          f"last {LAYERS // 3} layers + head {third.peak_rss_bytes / 1e6:.0f} MB")
    assert whole.loaded and third.loaded
    assert whole.peak_rss_bytes > size, "holding every layer needs at least the model's size"
    # A third of the layers (plus the head) is ~40% of the weights; allow interpreter overhead.
    assert third.peak_rss_bytes < 0.6 * whole.peak_rss_bytes


EXPERT_LAYERS = 6


@pytest.fixture(scope="module")
def many_expert_moe(tmp_path_factory) -> Path:
    # ~600 MB of float32, nearly all of it experts: 6 layers of 256 experts (gate, up, down 128 x 256).
    from tests.tiny_models import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("moe") / "qwen3_moe", "qwen3_moe", hidden_size=128,
                            num_hidden_layers=EXPERT_LAYERS, num_experts=256, moe_intermediate_size=256,
                            mlp_only_layers=[])


async def _baseline_and_load(address: str, model: Path, start: int, end: int) -> tuple[int, pb.NodeInfo]:
    async with grpc.aio.insecure_channel(address, options=grpc_options()) as channel:
        before = await pb_grpc.WorkerStub(channel).GetInfo(pb.InfoRequest())
    return before.peak_rss_bytes, await _load(address, model, start, end, EXPERT_LAYERS)


async def _load(address: str, model: Path, start: int, end: int, num_layers: int) -> pb.NodeInfo:
    async with grpc.aio.insecure_channel(address, options=grpc_options()) as channel:
        stub = pb_grpc.WorkerStub(channel)
        spec = pb.SliceSpec(model_path=str(model), layer_start=start, layer_end=end, num_layers=num_layers,
                            stage_index=0, num_stages=1)
        async for event in stub.LoadSlice(spec):
            if event.phase == "ready":
                break
        return await stub.GetInfo(pb.InfoRequest())


def test_a_third_of_a_many_expert_moe_takes_about_a_third(many_expert_moe, tmp_path):
    """Experts are most of a MoE model's bytes: a worker holding a third of the layers reads only
    their experts (the stacked expert tensors of other layers are never evaluated)."""
    size = model_bytes(many_expert_moe)
    assert size > 500e6
    ports = free_ports(2)
    workers = start_local_workers(
        [LocalWorkerSpec("whole", "127.0.0.1", ports[0]), LocalWorkerSpec("third", "127.0.0.1", ports[1])],
        tmp_path / "logs",
    )
    try:
        base_whole, whole = asyncio.run(_baseline_and_load(f"127.0.0.1:{ports[0]}", many_expert_moe, 0, EXPERT_LAYERS))
        base_third, third = asyncio.run(_baseline_and_load(f"127.0.0.1:{ports[1]}", many_expert_moe,
                                                           2 * EXPERT_LAYERS // 3, EXPERT_LAYERS))
    finally:
        stop_pids([w.pid for w in workers])
    grown_whole, grown_third = whole.peak_rss_bytes - base_whole, third.peak_rss_bytes - base_third
    print(f"\nMoE model {size / 1e6:.0f} MB; peak RSS grew by {grown_whole / 1e6:.0f} MB holding all "
          f"{EXPERT_LAYERS} layers, {grown_third / 1e6:.0f} MB holding the last 2 (and the small head) "
          f"({grown_third / grown_whole:.2f} of it)")
    assert whole.loaded and third.loaded
    assert grown_whole > 0.9 * size
    assert grown_third < 0.45 * grown_whole, "a third of the layers, near a third of the memory"
