"""MoETransformer: KV cache, left padding, causality, loss and routing stats, on tiny sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rayrag.config import GeneratorConfig
from rayrag.generator.adaptive import AdaptiveSoftmaxHead, FullSoftmaxHead
from rayrag.generator.model import (
    KVCache,
    MoETransformer,
    RMSNorm,
    apply_rope,
    apply_rope_folded,
    rope_cos_sin,
    rope_table,
)
from rayrag.generator.moe import RoutingStats, load_balancing_loss, router_z_loss

VOCAB = 128
HEADS = ["full_tied", "full_untied", "adaptive"]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matmuls: on a shared 2-core box, intra-op thread handoff costs 10x the math.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(head: str = "full_tied", seed: int = 0, **overrides) -> MoETransformer:
    torch.manual_seed(seed)
    fields = dict(
        vocab_size=VOCAB,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=96,
        n_experts=4,
        experts_per_token=2,
        max_seq_len=64,
        adaptive_softmax_cutoffs=(),
        tie_embeddings=head == "full_tied",
    )
    token_order = None
    if head == "adaptive":
        fields["adaptive_softmax_cutoffs"] = (32, 80)
        token_order = torch.randperm(VOCAB)
    fields.update(overrides)
    return MoETransformer(GeneratorConfig(**fields), token_order=token_order).eval()


def log_probs(out) -> torch.Tensor:
    # The full head returns raw logits, the adaptive head log-probs: compare distributions.
    return out.logits.float().log_softmax(-1)


def left_pad(rows: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    return ids, mask


@pytest.mark.parametrize("head", HEADS)
def test_kv_cache_decoding_equals_full_forward(head):
    model = tiny_model(head)
    ids = torch.randint(0, VOCAB, (2, 11))
    with torch.no_grad():
        full = log_probs(model(ids))  # (2, 11, V)
        out = model(ids[:, :6], use_cache=True)
        assert isinstance(out.past_key_values, KVCache) and out.past_key_values.seq_len == 6
        torch.testing.assert_close(log_probs(out), full[:, :6], atol=1e-5, rtol=0)
        for t in range(6, 11):
            out = model(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            torch.testing.assert_close(log_probs(out)[:, -1], full[:, t], atol=1e-5, rtol=0)
        assert out.past_key_values.seq_len == 11
        k = out.past_key_values.keys[0]
        assert k.shape == (2, 2, 11, 16)  # (B, n_kv_heads, S, head_dim)


@pytest.mark.parametrize("head", HEADS)
def test_left_padded_rows_equal_unpadded_rows(head):
    model = tiny_model(head)
    rows = [torch.randint(1, VOCAB, (n,)) for n in (7, 4, 2)]
    ids, mask = left_pad(rows)
    with torch.no_grad():
        batch = log_probs(model(ids, attention_mask=mask))
        assert torch.isfinite(batch).all()
        for i, r in enumerate(rows):
            alone = log_probs(model(r[None]))[0]  # (n, V)
            torch.testing.assert_close(batch[i, -len(r) :], alone, atol=1e-5, rtol=0)


def test_left_padded_cache_decoding_equals_unpadded():
    model = tiny_model("full_untied")
    rows = [torch.randint(1, VOCAB, (n,)) for n in (6, 3)]
    ids, mask = left_pad(rows)
    steps = torch.randint(1, VOCAB, (2, 3))
    with torch.no_grad():
        out = model(ids, attention_mask=mask, use_cache=True)
        decoded = []
        for t in range(steps.shape[1]):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
            out = model(
                steps[:, t : t + 1],
                attention_mask=mask,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            decoded.append(log_probs(out)[:, -1])
        for i, r in enumerate(rows):
            alone = log_probs(model(torch.cat([r, steps[i]])[None]))[0]  # (n + 3, V)
            for t in range(steps.shape[1]):
                torch.testing.assert_close(decoded[t][i], alone[len(r) + t], atol=1e-5, rtol=0)


def test_causal_later_tokens_do_not_change_earlier_logits():
    model = tiny_model()
    ids = torch.randint(0, VOCAB, (1, 10))
    changed = ids.clone()
    changed[0, 6] = (ids[0, 6] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    # Not bit-exact: expert grouping (and so summation order) depends on the whole batch.
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("head", HEADS)
def test_loss_is_shifted_cross_entropy_ignoring_minus_100(head):
    model = tiny_model(head)
    ids = torch.randint(0, VOCAB, (2, 9))
    labels = ids.clone()
    labels[0, 3] = labels[1, 7] = -100
    with torch.no_grad():
        out = model(ids, labels=labels)
        lp = log_probs(out)[:, :-1].reshape(-1, VOCAB)  # (B*(S-1), V)
        expected = F.nll_loss(lp, labels[:, 1:].reshape(-1), ignore_index=-100)
        torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=0)
        lean = model(ids, labels=labels, compute_logits=False)
    assert lean.logits is None
    torch.testing.assert_close(lean.loss, expected, atol=1e-5, rtol=0)


def test_loss_ignores_padded_positions():
    model = tiny_model()
    ids, mask = left_pad([torch.randint(1, VOCAB, (n,)) for n in (8, 5)])
    explicit = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        a = model(ids, attention_mask=mask, labels=ids).loss
        b = model(ids, attention_mask=mask, labels=explicit).loss
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_routing_stats_per_layer_and_total_loss():
    model = tiny_model("adaptive")
    ids, mask = left_pad([torch.randint(1, VOCAB, (n,)) for n in (8, 5)])
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=ids)
    assert len(out.routing) == model.config.n_layers
    for stats in out.routing:
        assert isinstance(stats, RoutingStats)
        assert stats.tokens == 13  # pad tokens are not routed
        assert abs(float(stats.token_share.sum()) - 1.0) < 1e-5
        assert 0.0 <= stats.entropy <= 1.0 and stats.drop_rate == 0.0
    assert out.aux_loss.ndim == 0 and out.z_loss.ndim == 0 and out.aux_loss > 0
    assert out.hidden_states.shape == (2, 8, 64)
    cfg = model.config
    torch.testing.assert_close(
        model.total_loss(out),
        out.loss + cfg.aux_loss_coef * out.aux_loss + cfg.z_loss_coef * out.z_loss,
    )
    with pytest.raises(ValueError, match="labels"):
        model.total_loss(model(ids[:, :2]))


@pytest.mark.parametrize("head", ["full_tied", "adaptive"])
def test_gradients_reach_every_parameter(head):
    model = tiny_model(head).train()
    ids = torch.randint(0, VOCAB, (4, 12))
    out = model(ids, labels=ids, compute_logits=False)
    model.total_loss(out).backward()
    without_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    # The adaptive head's tail clusters see a gradient only when a target falls into them.
    assert [n for n in without_grad if "lm_head.tail" not in n] == []


def test_heads_and_mixtral_names():
    tied, untied, adaptive = (
        tiny_model("full_tied"),
        tiny_model("full_untied"),
        tiny_model("adaptive"),
    )
    assert (
        isinstance(tied.head, FullSoftmaxHead)
        and tied.head.weight is tied.model.embed_tokens.weight
    )
    assert untied.head.weight is not untied.model.embed_tokens.weight
    assert isinstance(adaptive.head, AdaptiveSoftmaxHead)
    keys = set(untied.state_dict())
    for key in (
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.block_sparse_moe.gate.gate.weight",
        "model.layers.0.block_sparse_moe.experts.w1",
    ):
        assert key in keys, key


def test_rmsnorm_matches_formula():
    norm = RMSNorm(8, eps=1e-6)
    x = torch.randn(3, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), expected)


def test_bfloat16_forward_follows_parameter_dtype():
    model = tiny_model().to(torch.bfloat16)
    with torch.no_grad():
        out = model(torch.randint(0, VOCAB, (1, 5)))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()


def test_bad_lengths_raise():
    model = tiny_model(max_seq_len=8)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 5))


# -- the decode step's shortcuts give the reference numbers ---------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_table_and_folded_rotation_equal_the_reference_bit_for_bit(dtype):
    cos_t, sin_folded_t = rope_table(300, 16, 10000.0, torch.device("cpu"), dtype)
    positions = torch.tensor([[0, 1, 5, 63], [7, 64, 200, 299]])  # (B, S)
    cos, sin = rope_cos_sin(positions, 16, 10000.0, dtype)  # (B, 1, S, hd)
    assert torch.equal(cos_t[positions][:, None], cos)
    x = torch.randn(2, 4, 4, 16).to(dtype)  # (B, H, S, hd)
    assert torch.equal(
        apply_rope_folded(x, cos, sin_folded_t[positions][:, None]), apply_rope(x, cos, sin)
    )


@pytest.mark.parametrize("width", [8, 64, 100, 512])
def test_float32_rmsnorm_is_the_hf_formula_bit_for_bit(width):
    norm = RMSNorm(width)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(3, 5, width) * 4
    x32 = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    assert torch.equal(norm(x), norm.weight * x32)


def test_sdpa_grouped_heads_equal_repeated_kv_heads():
    q, k, v = torch.randn(2, 4, 1, 16), torch.randn(2, 2, 9, 16), torch.randn(2, 2, 9, 16)
    repeated = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    )
    assert torch.equal(F.scaled_dot_product_attention(q, k, v, enable_gqa=True), repeated)


def test_unmasked_decode_step_equals_the_masked_one():
    model = tiny_model("adaptive")
    ids = torch.randint(0, VOCAB, (1, 9))
    with torch.inference_mode():
        plain = model(ids[:, :8], use_cache=True)
        masked = model(
            ids[:, :8], attention_mask=torch.ones(1, 8, dtype=torch.long), use_cache=True
        )
        step = model(ids[:, 8:], past_key_values=plain.past_key_values, use_cache=True)
        step_masked = model(
            ids[:, 8:],
            attention_mask=torch.ones(1, 9, dtype=torch.long),
            past_key_values=masked.past_key_values,
            use_cache=True,
        )
        full = model(ids)
    torch.testing.assert_close(step.hidden_states, step_masked.hidden_states, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        step.hidden_states[:, -1], full.hidden_states[:, -1], atol=1e-5, rtol=0
    )


def test_aux_and_z_loss_are_read_lazily_as_sums_over_layers():
    model = tiny_model("full_tied").train()
    ids = torch.randint(0, VOCAB, (2, 10))
    out = model(ids, labels=ids)
    aux = sum(load_balancing_loss(m.router_logits, m.indices, 4) for m in out.router)
    z = sum(router_z_loss(m.router_logits) for m in out.router)
    torch.testing.assert_close(out.aux_loss, aux, rtol=1e-6, atol=0)
    torch.testing.assert_close(out.z_loss, z, rtol=1e-6, atol=0)
    assert out.aux_loss.dtype == out.z_loss.dtype == torch.float32 and out.aux_loss.ndim == 0
    out.aux_loss.backward()
    assert all(
        layer.block_sparse_moe.gate.gate.weight.grad.abs().sum() > 0 for layer in model.model.layers
    )
    assert [c.tolist() for c in out.expert_counts] == [
        torch.bincount(m.indices.reshape(-1), minlength=4).tolist() for m in out.router
    ]


def test_rope_table_first_built_under_inference_mode_serves_training():
    model = tiny_model("full_tied")
    ids = torch.randint(0, VOCAB, (1, 6))
    with torch.inference_mode():
        model(ids)
    model.train()
    out = model(ids, labels=ids)
    model.total_loss(out).backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad is not None
