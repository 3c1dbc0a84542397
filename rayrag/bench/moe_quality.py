"""Bench `moe-quality`: the seed's claim, measured —
does top-2 of 8 experts beat dense at equal compute?

`rayrag bench moe-quality [--quick] --json`. Three `MoETransformer`s, trained at the same time,
one Ray task (process) each, on the same corpus, token budget, batches (same order), optimizer
and schedule:

    moe           8 SwiGLU experts of width f per layer, top-2 (Mixtral's routing)
    dense_active  a dense SwiGLU FFN of width k * f = 2f: the same matmul FLOPs per token as moe
    dense_total   a dense SwiGLU FFN of width E * f = 8f: the same parameter count as moe

A dense FFN is built as a 1-expert, top-1 MoE layer (n_experts=1, experts_per_token=1): its
router is a (1, d) gate whose softmax is always 1, so the layer is exactly `w2(silu(w1 x) *
w3 x)` (tests/generator prove 1 expert == dense). Its load-balancing loss is the constant 1
and its z-loss only shrinks the unused gate, so `total_loss` trains it as a plain dense model;
its capacity (1.25 * T) never drops a token. The embeddings (tied to the full-softmax head),
attention and norms of all three start from the same tensors (copied from the moe model);
only the FFNs differ. The reported losses are the plain next-token NLL, never the aux terms.

Corpus: the demo corpus (generated in-process, deterministic) plus, in the full run, the
HotpotQA sample's ~1000 Wikipedia paragraphs ($RAYRAG_DATA_DIR or ../shared/data), so the
model sees real prose and not only templates. Documents are split 90/10 into train and
validation by a seeded shuffle; the byte-level BPE is trained on the train split only. Each
split is one stream (documents joined by <eos>) cut into windows of `seq_len` tokens;
validation loss is the mean token NLL over the first `val_sequences` validation windows, in
eval mode (dropless MoE), at every `eval_every` steps — the same steps for all three.

Training FLOPs per token (PaLM, Chowdhery et al. 2022, app. B): 6 * N_active + 12 * L * d * S.
N_active counts the weights of every matmul one token passes through: per layer the q, k, v,
o projections, the router gate (d * E) and k experts of 3 * d * f, plus the head's V * d
(tied, so the embedding table is counted once, as the head). 12 * L * d * S is QK^T and AV
forward + backward over the whole window (no causal discount). Not counted: the embedding
lookup, norms, RoPE, softmax, SwiGLU elementwise ops and the MoE's sort/gather/combine.
`ratios.moe_vs_dense_active_flops` is therefore 1 + (E - 1) * d * L * 6 / F: about 1.

Sizes (full), measured on 2 shared cores, 1 torch thread: d_model 128, 2 layers, 4 heads
(2 KV), vocab 2048, expert f = 128 (dense_active 256, dense_total 1024), windows of 128
tokens, batch 16, 480 steps = 983k tokens (4.7 epochs of the 208k-token train split),
evaluated every 80 steps on 64 windows (8k tokens). The driver tokenizes, fixes the batch
order and builds the initial tensors once; each variant then trains in its own Ray task with
one torch thread (`train_variant`), so the three run concurrently on separate cores and machine
noise falls on all alike. Nothing in training draws random numbers, so each process computes
exactly what one process training the three in turn computes (tests/bench prove it at the quick
size); tokens/s is informational only. Ray gets $RAYRAG_BENCH_THREADS CPUs, else every core
this process may use, and dense_total, the longest, goes first: on 2 cores the wall time is
max(dense_total, moe + dense_active), not the sum. Two torch threads on these contended cores ran a
step slower and noisier than one (measured: docs/DECISIONS.md), hence one thread per process. The
head is the tied full softmax for all three: at V = 2048 the adaptive head saves little, and a head
shared as-is keeps the comparison about the FFNs.

Why 480 steps: the MoE starts behind. Each expert sees a quarter of the token-slots, so early
on the MoE learns slower than a dense FFN of its active width, and a shorter budget ends
before it catches up. The validation curves, the runs' timings and how far runs agree are in
docs/DECISIONS.md.

Ratios: `moe_vs_dense_active_val_loss` = val(moe) / val(dense_active) (goal < 1),
`moe_vs_dense_total_val_loss` = val(moe) / val(dense_total) (dense_total is the ceiling: the
same parameters used densely), `moe_vs_dense_active_flops` (goal ~ 1). Quick mode (CI) is a
toy (demo corpus only, d_model 32, 12 steps): its ratios say nothing about the claim.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from rayrag.config import GeneratorConfig, TrainConfig
from rayrag.data.demo_corpus import generate_demo_corpus
from rayrag.generator.model import MoETransformer
from rayrag.generator.moe import routing_stats
from rayrag.generator.tokenizer import train_tokenizer

N_EXPERTS, TOP_K = 8, 2
# name -> (n_experts, experts_per_token, FFN width as a multiple of the expert width f)
VARIANTS = {
    "moe": (N_EXPERTS, TOP_K, 1),
    "dense_active": (1, 1, TOP_K),
    "dense_total": (1, 1, N_EXPERTS),
}
# Most expensive first (train seconds alone on a core, full size: docs/DECISIONS.md): on 2 cores
# the wall time is then max(dense_total, moe + dense_active), not the sum.
SUBMIT_ORDER = ("dense_total", "moe", "dense_active")
FULL = {
    "vocab_size": 2048,
    "d_model": 128,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "expert_ffn": 128,
    "seq_len": 128,
    "batch_size": 16,
    "steps": 480,
    "eval_every": 80,
    "val_sequences": 64,
    "hotpotqa": True,
}
QUICK = {
    "vocab_size": 512,
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 2,
    "n_kv_heads": 1,
    "expert_ffn": 32,
    "seq_len": 32,
    "batch_size": 8,
    "steps": 12,
    "eval_every": 6,
    "val_sequences": 8,
    "hotpotqa": False,
}
VAL_FRACTION = 0.1
SEED = 0
HOTPOT_CORPUS = Path("hotpotqa_sample") / "hotpotqa_train_corpus.json"


def _log(message: str) -> None:
    print(f"[bench moe-quality] {message}", file=sys.stderr, flush=True)


def data_dir() -> Path:
    """$RAYRAG_DATA_DIR, else the shared data folder next to the checkout (../shared/data)."""
    return Path(
        os.environ.get("RAYRAG_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data")
    )


def load_documents(hotpotqa: bool) -> tuple[list[str], list[str]]:
    """(document texts, sources used): the demo corpus,
    plus HotpotQA paragraphs if asked and present."""
    with tempfile.TemporaryDirectory() as tmp:
        demo = generate_demo_corpus(tmp, seed=SEED)
        rows = [
            json.loads(line)
            for line in demo.corpus_path.read_text(encoding="utf-8").splitlines()
            if line
        ]
    texts, sources = [f"{row['title']}\n{row['text']}" for row in rows], ["demo"]
    path = data_dir() / HOTPOT_CORPUS
    if hotpotqa and path.is_file():
        paragraphs = json.loads(path.read_text(encoding="utf-8"))  # {title: [sentence, ...]}
        texts += [f"{title}\n{''.join(sentences)}" for title, sentences in paragraphs.items()]
        sources.append("hotpotqa_sample")
    elif hotpotqa:
        _log(f"{path} not found: demo corpus only")
    return texts, sources


def split_documents(
    texts: list[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Held-out validation by whole document (no window straddles the split)."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * len(texts)))
    return [texts[i] for i in order[n_val:]], [texts[i] for i in order[:n_val]]


def pack_windows(token_lists: list[list[int]], eos_id: int, seq_len: int) -> torch.Tensor:
    """Documents joined by <eos> into one stream, cut into (N, seq_len) windows;
    the tail is dropped."""
    stream = [t for ids in token_lists for t in (*ids, eos_id)]
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)  # (N, S)


def model_config(plan: dict[str, Any], variant: str, vocab_size: int) -> GeneratorConfig:
    n_experts, top_k, width = VARIANTS[variant]
    return GeneratorConfig(
        vocab_size=vocab_size,
        d_model=plan["d_model"],
        n_layers=plan["n_layers"],
        n_heads=plan["n_heads"],
        n_kv_heads=plan["n_kv_heads"],
        ffn_dim=width * plan["expert_ffn"],
        n_experts=n_experts,
        experts_per_token=top_k,
        max_seq_len=plan["seq_len"],
        adaptive_softmax_cutoffs=(),
        tie_embeddings=True,
    )


def parameter_counts(model: MoETransformer) -> dict[str, int]:
    """Total parameters (the tied embedding/head once) and those one token uses (k of E experts)."""
    c = model.config
    total = sum(p.numel() for p in model.parameters())
    idle_experts = (c.n_experts - c.experts_per_token) * 3 * c.d_model * c.ffn_dim * c.n_layers
    return {"total": total, "active": total - idle_experts}


def train_flops_per_token(config: GeneratorConfig, seq_len: int) -> dict[str, int]:
    """6 * matmul weights a token passes through + 12 * L * d * S for attention (see module doc)."""
    d, head_dim = config.d_model, config.d_model // config.n_heads
    # q, o; k, v
    attention = d * config.n_heads * head_dim * 2 + d * config.n_kv_heads * head_dim * 2
    # router + k experts
    ffn = config.d_model * config.n_experts + config.experts_per_token * 3 * d * config.ffn_dim
    matmul_params = config.n_layers * (attention + ffn) + config.vocab_size * d  # + head
    attention_scores = 12 * config.n_layers * d * seq_len
    return {
        "matmul_params": matmul_params,
        "attention_term": attention_scores,
        "total": 6 * matmul_params + attention_scores,
    }


def build_models(plan: dict[str, Any], vocab_size: int, seed: int) -> dict[str, MoETransformer]:
    """The three variants; all but the FFNs start from the moe model's tensors."""
    models = {}
    for name in VARIANTS:
        torch.manual_seed(seed)
        models[name] = MoETransformer(model_config(plan, name, vocab_size))
    shared = {k: v for k, v in models["moe"].state_dict().items() if ".block_sparse_moe." not in k}
    for name, model in models.items():
        missing, unexpected = model.load_state_dict(shared, strict=False)
        assert not unexpected and all(".block_sparse_moe." in k for k in missing), (
            name,
            missing,
            unexpected,
        )
    return models


def make_optimizer(model: MoETransformer, steps: int, train: TrainConfig):
    """AdamW with the trainer's defaults; decay on matrices but not the
    (tied) embedding or norms."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed_tokens" not in n]
    keep = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed_tokens" not in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": train.weight_decay},
            {"params": keep, "weight_decay": 0.0},
        ],
        lr=train.lr,
        betas=train.betas,
    )
    warmup = max(1, steps // 10)

    def lr_scale(step: int) -> float:  # linear warmup, cosine down to min_lr_ratio
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return train.min_lr_ratio + (1 - train.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_scale)


@torch.no_grad()
def evaluate(
    model: MoETransformer, windows: torch.Tensor, batch_size: int
) -> tuple[float, list[torch.Tensor]]:
    """Mean token NLL over `windows` (eval: dropless) and each layer's routed-slot counts (E,)."""
    model.eval()
    nll_sum, targets, counts = 0.0, 0, None
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size]  # (B, S)
        out = model(batch, labels=batch, compute_logits=False)
        n = batch.shape[0] * (batch.shape[1] - 1)
        nll_sum, targets = nll_sum + out.loss.item() * n, targets + n
        slots = [
            s.token_share * s.tokens * model.config.experts_per_token for s in out.routing
        ]  # (E,) each
        counts = slots if counts is None else [c + s for c, s in zip(counts, slots, strict=True)]
    model.train()
    return nll_sum / targets, counts


def routing_summary(
    counts: list[torch.Tensor], tokens: int, train_drop_rates: list[float]
) -> dict[str, Any]:
    layers = []
    for layer_counts, drop in zip(counts, train_drop_rates, strict=True):
        stats = routing_stats(layer_counts.round().long(), 0, tokens).to_dict()
        layers.append(
            {
                "entropy": round(stats["entropy"], 4),
                "max_violation": round(stats["max_violation"], 4),
                "token_share": stats["token_share"],
                "train_drop_rate_last_step": round(drop, 4),
            }
        )
    return {
        "measured_on": "validation windows, eval mode (dropless)",
        "entropy_mean": round(sum(layer["entropy"] for layer in layers) / len(layers), 4),
        "max_violation_max": round(max(layer["max_violation"] for layer in layers), 4),
        "layers": layers,
    }


def train_variant(
    name: str,
    plan: dict[str, Any],
    vocab_size: int,
    initial_state: dict[str, torch.Tensor],
    train_windows: torch.Tensor,
    val_windows: torch.Tensor,
    order: torch.Tensor,
) -> dict[str, Any]:
    """Train one variant from `initial_state` on the batches `order` picks;
    its val curve and timings.

    Ray-free: `bench` calls it in a Ray task per variant, the tests call it directly. The random
    init is overwritten by `initial_state` and training draws no random numbers (no dropout, no
    router jitter), so at one thread it is a pure function of its inputs."""
    steps, batch_size = plan["steps"], plan["batch_size"]
    train_config = TrainConfig()
    model = MoETransformer(model_config(plan, name, vocab_size))
    model.load_state_dict(initial_state)  # strict: every tensor comes from the driver
    optimizer, schedule = make_optimizer(model, steps, train_config)
    seconds, curve, train_loss, drop_rates, val_counts = 0.0, [], 0.0, [], []
    for step in range(steps):
        batch = train_windows[order[step]]  # (B, S)
        started = time.perf_counter()
        out = model(batch, labels=batch, compute_logits=False)
        optimizer.zero_grad(set_to_none=True)
        model.total_loss(out).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
        optimizer.step()
        schedule.step()
        seconds += time.perf_counter() - started
        train_loss, drop_rates = out.loss.item(), [s.drop_rate for s in out.routing]
        if (step + 1) % plan["eval_every"] == 0 or step + 1 == steps:
            loss, val_counts = evaluate(model, val_windows, batch_size)
            curve.append([step + 1, round(loss, 4)])
            _log(f"{name} step {step + 1}/{steps}: val NLL {loss:.4f} | train s {seconds:.0f}")
    return {
        "val_curve": curve,
        "train_loss_last_step": train_loss,
        "train_seconds": seconds,
        "train_drop_rates": drop_rates,
        "val_expert_counts": val_counts,
    }


def _train_in_worker(*args: Any) -> dict[str, Any]:
    torch.set_num_threads(1)  # one core per variant: see the module doc
    return train_variant(*args)


def cores() -> int:
    """Cores for the variants' processes: $RAYRAG_BENCH_THREADS,
    else the cores this process may use.

    Unlike `bench_threads` the busy cores are not subtracted: one-thread processes do not spin-wait
    on each other, so a shared core only slows them, all alike."""
    if os.environ.get("RAYRAG_BENCH_THREADS"):
        return max(1, int(os.environ["RAYRAG_BENCH_THREADS"]))
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def train_on_ray(jobs: dict[str, tuple], num_cpus: int) -> tuple[dict[str, dict[str, Any]], int]:
    """Each job in its own Ray task (one CPU, one torch thread); the results and the cluster's CPUs.

    Reuses a running Ray; one started here is shut down here."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        # log_to_driver: the workers' per-eval lines are the only sign of life for minutes.
        # worker_niceness 0: the workers run at the driver's priority (Ray's default adds 15,
        # which starves them behind any other job on a shared machine).
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=True,
            configure_logging=False,
            _system_config={"worker_niceness": 0},
        )
    try:
        task = ray.remote(num_cpus=1)(_train_in_worker)
        refs = {
            task.remote(*args): name for name, args in jobs.items()
        }  # submitted in `jobs` order
        results, pending = {}, list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            name = refs[done[0]]
            results[name] = ray.get(done[0])
            _log(
                f"{name} done: val NLL {results[name]['val_curve'][-1][1]:.4f}, "
                f"train s {results[name]['train_seconds']:.0f}"
            )
        return results, int(ray.cluster_resources()["CPU"])
    finally:
        if started_here:
            ray.shutdown()


def bench(plan: dict[str, Any], seed: int = SEED, parallel: bool = True) -> dict[str, Any]:
    texts, sources = load_documents(plan["hotpotqa"])
    train_texts, val_texts = split_documents(texts, VAL_FRACTION, seed)
    tokenizer = train_tokenizer(train_texts, plan["vocab_size"])
    vocab_size = tokenizer.vocab_size
    train_windows = pack_windows(
        tokenizer.encode_batch(train_texts), tokenizer.eos_id, plan["seq_len"]
    )
    val_windows = pack_windows(tokenizer.encode_batch(val_texts), tokenizer.eos_id, plan["seq_len"])
    val_windows = val_windows[: plan["val_sequences"]]  # (N_val, S)
    steps, batch_size, seq_len = plan["steps"], plan["batch_size"], plan["seq_len"]
    _log(
        f"{len(train_texts)} train / {len(val_texts)} val documents ({'+'.join(sources)}); vocab "
        f"{vocab_size}; {train_windows.shape[0]} train windows, {val_windows.shape[0]} val windows "
        f"of {seq_len}"
    )

    # One batch order for all three: epochs of a seeded permutation of the train windows.
    generator = torch.Generator().manual_seed(seed)
    per_epoch = train_windows.shape[0] // batch_size
    order = torch.cat(
        [
            torch.randperm(train_windows.shape[0], generator=generator)[: per_epoch * batch_size]
            for _ in range(math.ceil(steps / per_epoch))
        ]
    ).view(-1, batch_size)[:steps]  # (steps, B)

    train_config = TrainConfig()
    models = build_models(plan, vocab_size, seed)
    jobs = {
        name: (name, plan, vocab_size, models[name].state_dict(), train_windows, val_windows, order)
        for name in SUBMIT_ORDER
    }
    if parallel:
        results, num_cpus = train_on_ray(jobs, cores())
    else:  # in-process, one after another: the tests' reference for the Ray run
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            results, num_cpus = {name: train_variant(*args) for name, args in jobs.items()}, 1
        finally:
            torch.set_num_threads(threads)

    tokens_per_step = batch_size * seq_len
    report = {}
    for name, model in models.items():
        flops, trained = train_flops_per_token(model.config, seq_len), results[name]
        report[name] = {
            "n_experts": model.config.n_experts,
            "experts_per_token": model.config.experts_per_token,
            "ffn_dim": model.config.ffn_dim,
            "params": parameter_counts(model),
            "train_flops_per_token": flops,
            "val_loss": trained["val_curve"][-1][1],
            "val_curve": trained["val_curve"],
            "train_loss_last_step": round(trained["train_loss_last_step"], 4),
            "train_tokens_per_s": round(steps * tokens_per_step / trained["train_seconds"], 1),
            "train_seconds": round(trained["train_seconds"], 1),
        }
    val_tokens = val_windows.numel()
    return {
        "plan": {
            **plan,
            "n_experts": N_EXPERTS,
            "top_k": TOP_K,
            "val_fraction": VAL_FRACTION,
            "seed": seed,
        },
        "parallel": {
            "processes": len(jobs) if parallel else 1,
            "num_cpus": num_cpus,
            "ray": parallel,
            "submitted": list(jobs),
        },
        "head": (
            "full softmax tied to the input embedding "
            "(adaptive_softmax_cutoffs=()), same for all three"
        ),
        "optimizer": {
            "name": "AdamW",
            "lr": train_config.lr,
            "betas": list(train_config.betas),
            "weight_decay": train_config.weight_decay,
            "grad_clip": train_config.grad_clip,
            "warmup_steps": max(1, steps // 10),
            "schedule": f"cosine to {train_config.min_lr_ratio} * lr",
        },
        "corpus": {
            "sources": sources,
            "documents": {"train": len(train_texts), "val": len(val_texts)},
            "vocab_size": vocab_size,
            "train_tokens": train_windows.numel(),
            "val_tokens": val_tokens,
        },
        "train_tokens_seen": steps * tokens_per_step,
        "epochs": round(steps * tokens_per_step / train_windows.numel(), 2),
        "flops_formula": "6 * matmul_params (attn q/k/v/o + router d*E + k experts 3*d*f, per "
        "layer; + tied head V*d) + 12 * n_layers * d_model * seq_len",
        "models": report,
        "routing": routing_summary(
            results["moe"]["val_expert_counts"], val_tokens, results["moe"]["train_drop_rates"]
        ),
        "ratios": {
            "moe_vs_dense_active_val_loss": round(
                report["moe"]["val_loss"] / report["dense_active"]["val_loss"], 4
            ),
            "moe_vs_dense_total_val_loss": round(
                report["moe"]["val_loss"] / report["dense_total"]["val_loss"], 4
            ),
            "moe_vs_dense_active_flops": round(
                report["moe"]["train_flops_per_token"]["total"]
                / report["dense_active"]["train_flops_per_token"]["total"],
                4,
            ),
        },
    }


def run(quick: bool = False, parallel: bool = True) -> dict[str, Any]:
    """The bench at its full (or quick) size;
    `parallel=False` trains in this process, one after another."""
    plan = QUICK if quick else FULL
    _log(f"1 torch thread per variant; {plan}")
    started = time.perf_counter()
    result = bench(plan, parallel=parallel)
    return {
        "bench": "moe-quality",
        "quick": quick,
        "torch_threads": 1,
        **result,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
