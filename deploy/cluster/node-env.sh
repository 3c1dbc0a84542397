# The environment of every node of the `ray up cluster.yaml` cluster, sourced from ~/.bashrc
# (cluster.yaml's setup_commands add the line). Ray's launcher runs setup, `ray start`,
# `ray exec` and `ray submit` in login shells, so the raylet and every Ray worker it forks
# inherit this: the venv `make venv` built, the Makefile's exports, the secrets and the
# MLflow address. Secrets therefore reach a Serve replica or an ingest task on any node
# without being written into a config, the serve config or MLflow.
# shellcheck shell=bash

RAYRAG_HOME="${RAYRAG_HOME:-$HOME/rayrag}"
case ":$PATH:" in
  *":$RAYRAG_HOME/.venv/bin:"*) ;;
  *) export PATH="$RAYRAG_HOME/.venv/bin:$PATH" ;;
esac

# The Makefile's exports (tests/test_cluster_config.py keeps the two equal): no telemetry,
# the embedder from the installed package rather than the Hub, quiet tokenizers.
export MLFLOW_DISABLE_TELEMETRY=true
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export RAY_USAGE_STATS_ENABLED=0
export TOKENIZERS_PARALLELISM=false

# Secrets and site settings (deploy/cluster/cluster.env.example lists them), shipped by
# file_mounts from the launching machine's ~/.rayrag/cluster.env.
if [ -f "$HOME/.rayrag/cluster.env" ]; then
  set -a
  # shellcheck disable=SC1091
  . "$HOME/.rayrag/cluster.env"
  set +a
fi

# Tracking goes to the one MLflow server (on the head unless cluster.env names another), never
# to a per-node sqlite file: runs and registered models must be visible from every node.
RAYRAG_HEAD_IP="$(cat "$HOME/.rayrag/head_ip" 2>/dev/null || echo 127.0.0.1)"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-http://$RAYRAG_HEAD_IP:5000}"

# What `serve deploy rayrag/configs/serve_config.yaml` serves (its args name only the config): the
# bundle on the shared disk, the generator version the registry calls champion.
export RAYRAG_BUNDLE="${RAYRAG_BUNDLE:-/mnt/rayrag/bundle}"
export RAYRAG_MODEL="${RAYRAG_MODEL:-models:/rayrag-generator@champion}"
