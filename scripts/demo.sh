#!/usr/bin/env bash
# The main job from nothing: environment, then the demo search on the packaged MiniLM.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESSROOM_EXTRAS=${PRESSROOM_EXTRAS:-dev} scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/pressroom validate examples/minilm-sparsity.yaml "$@"
