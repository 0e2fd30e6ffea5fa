#!/usr/bin/env bash
# Issue 17 on a CUDA machine, in one command: the GPU test tier, then the learner's throughput
# and MFU on a 507M Qwen2 (random weights, bf16, ZeRO-1, one rank) against a raw torch loop.
# Needs torch with CUDA, transformers, DeepSpeed and pydantic; not Ray or vLLM.
#
#     bash experiments/gpu_check.sh runs/gpu_check     # writes env.txt, gpu_tier.log, bench_learner_gpu.json
set -uo pipefail
out=${1:-runs/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# one rank on one host: NCCL bootstraps over loopback (a VM may have no other interface)
export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-lo}
py=${PYTHON:-python3}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c 'import sys, torch, transformers, deepspeed, pydantic
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| transformers", transformers.__version__, "| deepspeed", deepspeed.__version__, "| pydantic", pydantic.VERSION)'
} 2>&1 | tee "$out/env.txt"

status=0
timeout 300 "$py" -m pytest -m gpu -v -p no:cacheprovider --timeout=120 --basetemp=/tmp/gpu-tier-pt tests/test_gpu.py \
  2>&1 | tee "$out/gpu_tier.log" || status=1

timeout 240 "$py" -m experiments.bench_learner --config experiments/configs/gpu/rl_1node_8gpu.yaml \
  --set learner.num_ranks=1 --set learner.deepspeed.zero_stage=1 \
  --synthetic 32x8 --build-policy qwen2-0.5b --out "$out/bench_learner_gpu.json" \
  2>&1 | grep -v "Loading weights" | tee "$out/bench.log" || status=1
exit $status
