#!/usr/bin/env bash
# The shared MLflow tracking server of a rayrag cluster (DESIGN.md §6): runs and the model and
# prompt registries in PostgreSQL, artifacts in object storage, proxied by the server
# (--serve-artifacts) so Ray workers need neither database drivers nor bucket credentials,
# only MLFLOW_TRACKING_URI=http://<this host>:5000.
#
#   MLFLOW_BACKEND_STORE_URI=postgresql+psycopg2://USER:PASSWORD@HOST:5432/mlflow \
#   MLFLOW_ARTIFACTS_DESTINATION=s3://BUCKET/artifacts  deploy/mlflow/mlflow-server.sh
#
# Run by cluster.yaml's head_start_ray_commands and by deploy/mlflow/mlflow.yaml. Needs
# mlflow (rayrag's venv has it), psycopg2-binary and boto3 (for s3://).
# Optional: MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000), MLFLOW_WORKERS (4), MLFLOW_ALLOWED_HOSTS.
set -euo pipefail

fail() { echo "mlflow-server.sh: $*" >&2; exit 2; }

[ -n "${MLFLOW_BACKEND_STORE_URI:-}" ] ||
  fail "set MLFLOW_BACKEND_STORE_URI to the shared database, e.g. postgresql+psycopg2://USER:PASSWORD@HOST:5432/mlflow"
[ -n "${MLFLOW_ARTIFACTS_DESTINATION:-}" ] ||
  fail "set MLFLOW_ARTIFACTS_DESTINATION to the artifact store, e.g. s3://BUCKET/artifacts"

# A file store or sqlite on one machine is exactly what a cluster must not track into: each
# node would write its own. (The URI may hold a password, so only its scheme is echoed.)
case "$MLFLOW_BACKEND_STORE_URI" in
  postgresql://* | postgresql+*://* | mysql://* | mysql+*://*) ;;
  *) fail "MLFLOW_BACKEND_STORE_URI must be a shared database (postgresql+psycopg2://...), got scheme '${MLFLOW_BACKEND_STORE_URI%%:*}'" ;;
esac
case "$MLFLOW_ARTIFACTS_DESTINATION" in
  file:* | /* | ./* | ../*) fail "MLFLOW_ARTIFACTS_DESTINATION must be object storage (s3://, gs://, wasbs://), got '$MLFLOW_ARTIFACTS_DESTINATION'" ;;
  *://*) ;;
  *) fail "MLFLOW_ARTIFACTS_DESTINATION must be object storage (s3://, gs://, wasbs://), got '$MLFLOW_ARTIFACTS_DESTINATION'" ;;
esac

# MLflow 3 rejects requests whose Host header it does not know (DNS-rebinding protection). Its
# default admits localhost and private IPs, which covers Ray workers reaching the head by IP;
# in Kubernetes clients use the Service name, so that is admitted too.
DEFAULT_ALLOWED_HOSTS="localhost,localhost:*,127.0.0.1,127.0.0.1:*,10.*,172.1[6-9].*,172.2[0-9].*,172.3[0-1].*,192.168.*,mlflow,mlflow:*,mlflow.*"

exec mlflow server \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --serve-artifacts \
  --host "${MLFLOW_HOST:-0.0.0.0}" \
  --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-4}" \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-$DEFAULT_ALLOWED_HOSTS}"
