"""A worker holding a third of a model's layers has a clearly smaller peak resident
memory than one holding all of them: only the slice's weights are ever read."""

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
    async with grpc.aio.insecure_channel(address, options=grpc_options()) as channel:
        stub = pb_grpc.WorkerStub(channel)
        spec = pb.SliceSpec(model_path=str(model), layer_start=start, layer_end=end, num_layers=LAYERS,
                            stage_index=0, num_stages=1)
        async for event in stub.LoadSlice(spec):
            if event.phase == "ready":
                break
        return await stub.GetInfo(pb.InfoRequest())


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
