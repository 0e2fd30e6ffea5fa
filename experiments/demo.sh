#!/usr/bin/env bash
# The main job on the embedded default (called by `make demo`, with .venv/bin first on PATH):
#   1. the task data and the tiny model (experiments/prepare.py), then long-CoT SFT warm start of
#      the tiny model on the arithmetic task (both skipped if SFT is done)
#   2. a local Ray head on 127.0.0.1 (if none is running)
#   3. `ray job submit ... -- python rl/train.py` (online policy mirror descent)
#   4. held-out pass@1 before and after RL
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PREP_CONFIG="${PREP_CONFIG:-experiments/configs/prep_demo.yaml}"
SFT_CONFIG="${SFT_CONFIG:-experiments/configs/sft_demo.yaml}"
RL_CONFIG="${RL_CONFIG:-experiments/configs/rl_demo.yaml}"
SFT_RUN="${SFT_RUN:-demo}"
RL_RUN="${RL_RUN:-demo-rl}"
export PYTHONUNBUFFERED=1
DEMO_START=$(date +%s)

echo "== 1/3 SFT warm start ($SFT_CONFIG)"
if [ -f "runs/$SFT_RUN/sft_eval.json" ] && [ -d "runs/$SFT_RUN/checkpoint" ]; then
  echo "runs/$SFT_RUN/checkpoint exists; skipping SFT (delete it to retrain)"
else
  python -m experiments.prepare --config "$PREP_CONFIG"  # SFT starts from a checkpoint and data files
  # Earlier stages, in order, each starting from the one before's checkpoint (their configs say
  # so): the long-CoT demo's short-trace stage; the image demo's language warm start and vision
  # alignment.
  for STAGE in ${SFT_STAGES:-}; do
    echo "-- stage $STAGE"
    python -m cot_sft.train --config "$STAGE" --no-eval
  done
  if [ -n "${READ_CHECK:-}" ]; then  # "RUN_DIR EVAL_FILE": can the aligned VLM read? (T = 0)
    read -r RUN_DIR READ_EVAL <<<"$READ_CHECK"
    python -m experiments.read_accuracy --checkpoint "$RUN_DIR/checkpoint" --data "$READ_EVAL" \
      --out "$RUN_DIR/read_accuracy.json" --summary
  fi
  python -m cot_sft.train --config "$SFT_CONFIG" --set run_name="$SFT_RUN"
fi

echo "== 2/3 Ray head on 127.0.0.1"
# Token authentication, always: Ray 2.60 turns it on by itself for a head started while
# ~/.ray/auth_token exists, and then every client (ray status, ray job submit) must send it.
export RAY_AUTH_MODE=token
if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -f "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
  ray get-auth-token --generate >/dev/null
fi
# All of the head's servers on 127.0.0.1: Ray 2.60 on Linux otherwise turns --node-ip-address
# 127.0.0.1 into the machine's address and listens there (rl/ray_loopback.py).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
STARTED_RAY=0
# (`ray status` retries for ~30 s when nothing listens, so probe the port first)
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null || ! ray status --address 127.0.0.1:6379 >/dev/null 2>&1; then
  # A head of our own, in a session of its own: the cleanup ends exactly it (its process group),
  # where `ray stop --force` would end every Ray process of the user, another job's too.
  mkdir -p runs
  setsid ray start --head --block --node-ip-address 127.0.0.1 --port 6379 --num-cpus "${RAY_NUM_CPUS:-2}" \
    --dashboard-host 127.0.0.1 --dashboard-port 8265 --disable-usage-stats >runs/ray_head.log 2>&1 &
  RAY_PID=$!
  STARTED_RAY=1
  for _ in $(seq 180); do  # the job server answers last
    if (exec 3<>/dev/tcp/127.0.0.1/8265) 2>/dev/null; then break; fi
    kill -0 "$RAY_PID" 2>/dev/null || { echo "ray start failed: see runs/ray_head.log"; exit 1; }
    sleep 1
  done
fi
cleanup() {
  if [ "$STARTED_RAY" = 1 ]; then
    kill -TERM -- "-$RAY_PID" 2>/dev/null || true  # ray start --block stops its raylet, GCS and workers
    for _ in $(seq 60); do kill -0 "$RAY_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$RAY_PID" 2>/dev/null || true
    # what `ray stop` also removes: else a later ray.init() dials this dead head
    if [ "$(cat /tmp/ray/ray_current_cluster 2>/dev/null)" = "127.0.0.1:6379" ]; then rm -f /tmp/ray/ray_current_cluster; fi
    # Nothing this demo started may outlive it (issue 16): count what is left, by start time.
    python -m experiments.strays --since "$DEMO_START" --wait-s 30 || echo "stray processes above: kill them by pid"
  fi
}
trap cleanup EXIT

echo "== 3/3 RL: ray job submit rl/train.py ($RL_CONFIG)"
# A finished RL run is reported, not redone; an interrupted one continues from its latest
# checkpoint (rl/train.py refuses to start over in a used run directory).
if [ -f "runs/$RL_RUN/summary.json" ]; then
  echo "runs/$RL_RUN is complete; skipping RL (delete it, or make clean-runs, to rerun)"
else
  RESUME=()
  if [ -d "runs/$RL_RUN" ]; then echo "runs/$RL_RUN was interrupted: resuming it"; RESUME=(--resume); fi
  # The job runs in an uploaded copy of this directory, so outputs and inputs are resolved
  # against --base-dir (this checkout) rather than the copy.
  ray job submit --address http://127.0.0.1:8265 --working-dir . \
    --runtime-env-json '{"excludes": [".venv", "runs", "data", "checkpoints", ".git", "*.egg-info"]}' \
    -- python rl/train.py --config "$RL_CONFIG" --base-dir "$ROOT" \
       --set run_name="$RL_RUN" --set policy="runs/$SFT_RUN/checkpoint" "${RESUME[@]}" "$@"
fi

python - "$SFT_RUN" "$RL_RUN" <<'PY'
import json, sys
sft = json.load(open(f"runs/{sys.argv[1]}/sft_eval.json"))
rl = json.load(open(f"runs/{sys.argv[2]}/summary.json"))
after = rl["final_eval_pass_at_1"]  # None when the RL config has no data.eval_file
after = "not evaluated (no data.eval_file)" if after is None else f"{after:.3f}"
print(f"\nheld-out pass@1 (T=1.0, n={sft['n']}):  SFT {sft['pass_at_1']:.3f}  ->  "
      f"after RL {after}  ({rl['iterations']} iterations, {rl['wall_s']/60:.1f} min)")
def correct_len(ev):  # mean tokens of correct held-out responses (rl.length_stats), if recorded
    m = ((ev or {}).get("lengths") or {}).get("correct_len_mean")
    return f"{m:.0f}" if isinstance(m, (int, float)) and m == m else None
before, after = correct_len(sft), correct_len(rl.get("final_eval"))
if before or after:
    print(f"mean correct-response length (tokens):  SFT {before}  ->  after RL {after}")
print(f"dashboard: python -m experiments.dashboard runs/{sys.argv[2]}")
PY
