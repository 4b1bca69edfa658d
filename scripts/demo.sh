#!/usr/bin/env bash
# The main job from nothing: environment, then the demo search (EvoPress on the packaged
# all-MiniLM-L6-v2 at 60 % average sparsity, a few minutes on 2 cores). Re-running resumes the
# same study; extra arguments go to `pressroom search` (e.g. --study another-name).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/pressroom search examples/minilm-sparsity.yaml "$@"
