#!/usr/bin/env bash
# The whole test suite from nothing: environment, services, then pytest. Extra arguments go to
# pytest (e.g. scripts/test.sh -k spaces). Exit code 5 (no tests collected) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
scripts/services.sh || exit 1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest "$@"
code=$?
if [ "$code" = 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$code"
