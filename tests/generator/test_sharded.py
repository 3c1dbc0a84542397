"""Expert parallelism on real Ray actors: equal to the local model, recovers from a dead shard."""

from __future__ import annotations

import pytest
import ray
import torch

from rayrag.config import GeneratorConfig
from rayrag.errors import RayRagError
from rayrag.generator.checkpoint import load_checkpoint, save_checkpoint
from rayrag.generator.generate import generate
from rayrag.generator.model import MoETransformer
from rayrag.generator.sharded import ShardedGenerator, expert_ranges

pytestmark = pytest.mark.slow

PROMPTS = [[5, 17, 42, 9, 88, 3, 61], [120, 7], [33, 150, 2, 19]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        vocab_size=200,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=48,
        n_experts=4,
        experts_per_token=2,
        max_seq_len=64,
        adaptive_softmax_cutoffs=(40, 120),
    )
    path = tmp_path_factory.mktemp("ep") / "ckpt"
    save_checkpoint(MoETransformer(cfg, token_order=torch.randperm(200)), path)
    return path


@pytest.fixture(scope="module", params=["compiled", "actor"])
def sharded(request, ray_local, checkpoint):
    generator = ShardedGenerator(checkpoint, num_shards=2, transport=request.param, dtype="float32")
    assert generator.transport == request.param  # compiled graphs work here: no silent fallback
    yield generator
    generator.shutdown()


def test_expert_ranges_are_contiguous_and_even():
    assert expert_ranges(8, 3) == [(0, 3), (3, 6), (6, 8)]
    assert expert_ranges(4, 1) == [(0, 4)]
    with pytest.raises(RayRagError, match="num_shards"):
        expert_ranges(4, 5)


def test_messages_round_trip_exactly():
    from rayrag.generator.sharded import pack, pack_reply, unpack, unpack_request

    rows, counts = torch.randn(5, 8, dtype=torch.bfloat16), torch.tensor([2, 0, 3])
    layer, got_rows, got_counts = unpack_request(pack(3, rows, counts), width=8)
    assert (
        layer == 3
        and torch.equal(got_counts, counts)
        and torch.equal(got_rows.to(torch.bfloat16), rows)
    )
    reply, seconds = unpack(pack_reply(rows.float(), 0.25))
    assert torch.equal(reply, rows.float()) and seconds == 0.25
    empty, _ = unpack(pack_reply(torch.empty(0, 8), 0.0))
    assert empty.shape == (0, 8)


def test_sharded_forward_equals_the_local_model(sharded, checkpoint):
    local = load_checkpoint(checkpoint).eval()
    ids = torch.tensor([[5, 17, 42, 9, 88, 3, 61, 7], [120, 7, 33, 150, 2, 19, 11, 12]])
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.inference_mode():
        expected = local(ids, attention_mask=mask).logits
        got = sharded.model(ids, attention_mask=mask).logits
    assert (got - expected).abs().max().item() <= 1e-4
    assert all(load > 0 for load in sharded.shard_load)  # both shards did work
    assert all(seconds > 0 for seconds in sharded.compute_s)  # and timed their own arithmetic
    assert sharded.load_imbalance() >= 0
    assert all(
        layer.block_sparse_moe.experts.w1.numel() == 0 for layer in sharded.model.model.layers
    )


def test_sharded_greedy_generations_are_identical(sharded, checkpoint):
    local = load_checkpoint(checkpoint).eval()
    expected = generate(local, PROMPTS, max_new_tokens=12, eos_id=None, pad_id=0)
    got = generate(sharded.model, PROMPTS, max_new_tokens=12, eos_id=None, pad_id=0)
    assert [g.tokens for g in got] == [g.tokens for g in expected]


def test_a_killed_shard_is_recreated_and_the_call_retried(sharded, checkpoint):
    local = load_checkpoint(checkpoint).eval()
    ids = torch.tensor([PROMPTS[0]])
    with torch.inference_mode():
        expected = local(ids).logits
    restarts = sharded.restarts
    ray.kill(sharded.shards[1])
    with torch.inference_mode():
        got = sharded.model(ids).logits  # notices, recreates shard 1 from the checkpoint, retries
    assert sharded.restarts > restarts
    assert (got - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("transport", ["compiled", "actor"])
def test_a_shard_that_cannot_come_back_is_a_shard_failure(
    ray_local, checkpoint, tmp_path, transport
):
    import shutil

    from rayrag.errors import ShardFailure

    copy = tmp_path / "ckpt"
    shutil.copytree(checkpoint, copy)
    generator = ShardedGenerator(copy, num_shards=2, transport=transport)
    try:
        shutil.rmtree(copy)  # the checkpoint a replacement would load is gone
        ray.kill(generator.shards[0])
        with pytest.raises(ShardFailure), torch.inference_mode():
            generator.model(torch.tensor([PROMPTS[0]]))
    finally:
        generator.shutdown()


def test_the_reader_and_the_serve_graph_use_shards_when_configured(ray_local, checkpoint, tmp_path):
    from rayrag.config import RAGConfig, resolve_config
    from rayrag.generator.reader import Reader
    from rayrag.generator.tokenizer import train_tokenizer
    from rayrag.serve.app import shard_placement
    from rayrag.types import Evidence, Passage

    tok = train_tokenizer(
        [f"Helix Corp acquired Brightwater Labs in {2000 + i}." for i in range(50)], 300
    )
    cfg = GeneratorConfig(
        vocab_size=300,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=48,
        n_experts=4,
        experts_per_token=2,
        max_seq_len=128,
        adaptive_softmax_cutoffs=(),
    )
    ckpt = save_checkpoint(MoETransformer(cfg), tmp_path / "ckpt")
    tok.save(ckpt)
    config = RAGConfig().with_overrides(["generator.num_shards=2", "decoding.max_new_tokens=4"])
    reader = Reader(ckpt, config)
    evidence = Evidence(
        passages=(Passage("c1", "d1", "Helix Corp acquired Brightwater Labs.", 1.0),)
    )
    result = reader.answer("Who acquired Brightwater Labs?", evidence)
    assert reader.sharded is not None and sum(reader.sharded.shard_load) > 0
    assert len(result.shard_share) == 2 and abs(sum(result.shard_share) - 1) < 1e-3
    assert result.completion_tokens > 0
    reader.sharded.shutdown()
    placement = shard_placement(
        resolve_config("demo", ["generator.num_shards=2", "generator.shard_num_cpus=0.25"])
    )
    assert placement["placement_group_bundles"][1:] == [{"CPU": 0.25}] * 2  # no GPUs here
    assert shard_placement(resolve_config("demo")) == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_shards_take_a_gpu_each_when_the_cluster_has_them(ray_local, checkpoint):
    # Ray detects the machine's GPUs at init (ray_local gives only num_cpus), so with CUDA
    # present the cluster has >= 1 GPU and the default placement puts a shard on it.
    assert ray.cluster_resources().get("GPU", 0) >= 1
    generator = ShardedGenerator(checkpoint, num_shards=1, transport="actor", dtype="float32")
    try:
        assert generator.use_gpu and generator.actor_options["num_gpus"] == 1
        placed = ray.get(
            generator.shards[0].__ray_call__.remote(
                lambda shard: {
                    (experts.w1.device.type, str(experts.w1.dtype)) for experts in shard.experts
                }
            )
        )
        assert placed == {("cuda", "torch.float32")}  # dtype pinned: the logits compare in fp32
        local = load_checkpoint(checkpoint).eval()
        ids = torch.tensor([PROMPTS[0]])
        with torch.inference_mode():
            expected, got = local(ids).logits, generator.model(ids).logits
        assert (got - expected).abs().max().item() <= 1e-3  # fp32 on GPU vs CPU matmuls
    finally:
        generator.shutdown()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_shards_default_to_bfloat16(ray_local, checkpoint):
    generator = ShardedGenerator(checkpoint, num_shards=1, transport="actor")  # decoding.dtype auto
    try:
        dtypes = ray.get(
            generator.shards[0].__ray_call__.remote(
                lambda shard: {str(experts.w1.dtype) for experts in shard.experts}
            )
        )
        assert dtypes == {"torch.bfloat16"}
        with torch.inference_mode():
            logits = generator.model(torch.tensor([PROMPTS[0]])).logits
        assert torch.isfinite(logits).all()
    finally:
        generator.shutdown()
