"""rayrag: governed retrieval-augmented generation on Ray.

Ingest (Ray Data) → hybrid retrieval (FAISS + NetworkX) → MoE generation → guard, with
Ray Tune sweeps and MLflow governance. See the README for the picture of the whole.
"""

__version__ = "0.1.0"
