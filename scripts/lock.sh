#!/usr/bin/env bash
# Recompile the two lock files from pyproject.toml (run after changing a dependency there).
#   requirements.lock      CPU + dev: what README command 1 and .ci/run install
#   requirements-gpu.lock  + the vllm extra, for Linux x86_64 GPU machines (CUDA torch from the registry)
# Both target CPython 3.11. Needs uv (`pip install uv`) and the package registry.
#
# The CPU lock resolves torch against the CPU wheel (`--find-links DIR`, default /opt/wheels, where
# these machines keep torch-2.13.0+cpu), so it lists no CUDA packages; torch's local label is then
# dropped (`torch==2.13.0`) so the CPU build here and the CUDA build on a GPU machine both satisfy it.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${TORCH_CPU_WHEELS:-/opt/wheels}
common=(--python-version 3.11 --no-emit-index-url --no-emit-find-links --quiet)
rm -f requirements.lock requirements-gpu.lock  # uv would prefer the old pins (torch==2.13.0: the CUDA build)

uv pip compile pyproject.toml --extra dev "${common[@]}" --find-links "$wheels" -o requirements.lock \
    --custom-compile-command "bash scripts/lock.sh, which runs: uv pip compile pyproject.toml --extra dev \
${common[*]} --find-links <torch CPU wheel dir> -o requirements.lock; then drops torch's +cpu label"
sed -i -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/' requirements.lock

uv pip compile pyproject.toml --extra dev --extra vllm "${common[@]}" \
    --python-platform x86_64-manylinux_2_28 -o requirements-gpu.lock \
    --custom-compile-command "bash scripts/lock.sh, which runs: uv pip compile pyproject.toml --extra dev \
--extra vllm ${common[*]} --python-platform x86_64-manylinux_2_28 -o requirements-gpu.lock"

if grep -nE "^[^#].*(file:|\+cpu)|^-e " requirements.lock requirements-gpu.lock; then
    echo "lock.sh: a lock names a local path or a local version (above)" >&2; exit 1
fi
if grep -nE "^(nvidia|cuda|triton)" requirements.lock; then
    echo "lock.sh: the CPU lock pulled CUDA packages (above): torch did not resolve to the CPU wheel" >&2; exit 1
fi
echo "lock.sh: wrote requirements.lock ($(grep -cE '^[a-z].*==' requirements.lock) pins)" \
     "and requirements-gpu.lock ($(grep -cE '^[a-z].*==' requirements-gpu.lock) pins)"
