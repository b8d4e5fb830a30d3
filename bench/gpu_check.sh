#!/usr/bin/env bash
# The GPU paths, checked on a machine with one CUDA GPU (CI has none):
#   1. the quick experiment through Snakemake on the GPU in bf16 (config/overlays/gpu.yaml), every online
#      algorithm and DPO, then per-stage wall time and peak memory -> bench/results/quick-gpu.json;
#   2. the in-process stage tests and the real-model tests (every family, every data format, the DAG per family)
#      with device cuda and bf16, and the vllm rollout backend against vLLM itself (tests/test_vllm_gpu.py,
#      skipped unless rewardlab[vllm] is installed).
# Usage: bash bench/gpu_check.sh [OUT_DIR]   (needs rewardlab importable, pytest and snakemake)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results}
mkdir -p "$out"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'bf16', torch.cuda.is_bf16_supported())"

cat > /tmp/quick-gpu.yaml <<'YAML'
name: quick-gpu
policy:
  algorithms: [ppo, reinforce, rloo, grpo, reinforce_pp, remax, dpo]
YAML
start=$(date +%s)
if ! $PY -m snakemake --cores all --configfile config/experiments/quick.yaml config/overlays/gpu.yaml \
    /tmp/quick-gpu.yaml > "$out/quick-gpu-snakemake.log" 2>&1; then
  tail -40 "$out/quick-gpu-snakemake.log"
  find results/quick-gpu/logs -name '*.log' -newer /tmp/quick-gpu.yaml -exec tail -n 15 {} +
  exit 1
fi
echo "quick-gpu DAG wall time: $(( $(date +%s) - start )) s"
$PY bench/stage_profile.py results/quick-gpu --out "$out/quick-gpu.json" \
  --label "quick + gpu.yaml (bf16), 7 policies, $(nvidia-smi --query-gpu=name --format=csv,noheader)"
cat results/quick-gpu/eval/summary.md | head -40

REWARDLAB_TEST_DEVICE=cuda REWARDLAB_TEST_PRECISION=bf16 $PY -m pytest -q -p no:cacheprovider \
  tests/test_stages.py tests/test_real_data.py tests/test_resume.py tests/test_algorithms.py tests/test_vllm_gpu.py \
  2>&1 | tail -25
