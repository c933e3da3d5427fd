#!/usr/bin/env bash
# GPU check: one prepared script for a session lent an H100/H200, run in ONE call of <= 8 minutes.
#
# What it measures
#   (a) train step at the paper config (configs/paper.yaml: CLIP ViT-B/16 at 224 px, T-Food widths,
#       psi 1 / psi' 4 layers, hard negatives), batch 128, bf16 autocast, eager and torch.compile'd:
#       MALM, the baseline (L_itc only, no mask) and a plain timm ViT-B/16 (fused AdamW); ms/step,
#       img/s and peak GPU memory per runner (benchmarks/bench_train_step.py).
#   (b) a short real training run of MALM (`malm train`, params.yaml + configs/paper.yaml) on
#       synthetic data rendered at 256 px (224 px crops): 2 epochs, the first with the image encoder
#       frozen (as the paper's first 20) and the second unfrozen; prints the history (samples/s per
#       epoch, losses, val R@1).
# Targets (printed with PASS/FAIL by the bench)
#   MALM img/s / plain ViT-B/16 img/s >= 0.6      MALM step time / baseline step time <= 1.3
# How to run
#   GPU:      bash benchmarks/gpu_check.sh            (with $OUT set, results are written there:
#             train_step.json, train_history.json, train_config.yaml, gpu_check.log)
#   CPU dry:  DRY=1 bash benchmarks/gpu_check.sh      (same steps, tiny sizes: small model config,
#             few steps, smoke-sized data, 1 epoch; checks the script and the package paths first)
# Knobs (env): BUDGET (s, default 470 GPU / 900 DRY), WORK (scratch folder), BENCH_STEPS, N_TRAIN,
#   FREEZE (train.freeze_image_epochs of the run, default 1 on GPU), COMPILE (off|on|both, default
#   both), COMPILE_BACKEND (default inductor on GPU, aot_eager for DRY), RECOMPILE_LIMIT (dynamo
#   recompiles per code object before a frame falls back to eager, default 4: bounds compile time
#   when the model recompiles every step), NUM_CLASSES (default 10).
# Each part runs under `timeout` sized from what is left of BUDGET; a part that fails or times out
# is reported and the script goes on; the exit status is non-zero if any part failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
if [[ -x .venv/bin/python ]]; then PY=$REPO/.venv/bin/python; else PY=python; fi
DRY=${DRY:-0}
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DVC_NO_ANALYTICS=1
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}   # sparse progress bars in a captured log
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/malm_gpu_check.XXXXXX")}
mkdir -p "$WORK"
RES=${OUT:-$WORK}
mkdir -p "$RES"
LOG=$RES/gpu_check.log
exec > >(tee -a "$LOG") 2>&1

if [[ $DRY == 1 ]]; then
  BUDGET=${BUDGET:-900}
  DEVICE=cpu
  # aot_eager: dynamo + AOTAutograd trace forward and backward as inductor would, without
  # generating kernels (a CPU inductor compile of MALM takes > 6 min on 2 cores)
  BENCH_ARGS=(--config small --batch 8 --steps "${BENCH_STEPS:-2}" --warmup 2 --device cpu
              --compile "${COMPILE:-both}" --compile-backend "${COMPILE_BACKEND:-aot_eager}"
              --recompile-limit "${RECOMPILE_LIMIT:-4}" --threads "$(nproc)")
  SYNTH_ARGS=("synth.n_train=${N_TRAIN:-256}" synth.n_val=128 synth.n_test=160 synth.image_size=40 synth.workers=2)
  TRAIN_CFGS=(--config params.yaml --config configs/paper.yaml --config configs/smoke.yaml)
  TRAIN_OVR=(data.cache_image_size=36 "data.max_pairs={train: 256, val: 128}" train.epochs=1
             train.batch_size=32 data.num_workers=2 train.device=cpu "train.freeze_image_epochs=${FREEZE:-0}"
             train.val_pairs=100)
  TRAIN_RESERVE=360   # seconds kept for part (b)
else
  BUDGET=${BUDGET:-470}
  DEVICE=cuda
  BENCH_ARGS=(--config paper --batch 128 --bf16 --steps "${BENCH_STEPS:-8}" --warmup 3 --device cuda
              --compile "${COMPILE:-both}" --compile-backend "${COMPILE_BACKEND:-inductor}"
              --recompile-limit "${RECOMPILE_LIMIT:-4}")
  SYNTH_ARGS=("synth.n_train=${N_TRAIN:-2560}" synth.n_val=512 synth.n_test=128 synth.image_size=256 "synth.workers=$(nproc)")
  TRAIN_CFGS=(--config params.yaml --config configs/paper.yaml)
  TRAIN_OVR=(data.cache_image_size=256 "data.max_pairs={train: 2560, val: 512}" train.epochs=2
             train.batch_size=128 data.num_workers=8 train.device=cuda "train.freeze_image_epochs=${FREEZE:-1}"
             train.val_pairs=512)
  TRAIN_RESERVE=165
fi
# both modes: the synthetic root and cache made here, random init (no CLIP weights on the machine).
# data.num_classes: classes are the K most frequent title words; the synthetic titles have fewer
# than the default 1047 distinct class words, so every pair gets a class, none is background, and
# the paper's triplet_classif sampler (half of each batch from background) cannot fill a batch.
# K=10 leaves about half the synthetic pairs as background.
DATA=$WORK/synth
CACHE=$WORK/cache
RUN=$WORK/run_malm
TRAIN_OVR+=(data.synthetic=true "data.root=$DATA" "data.cache_dir=$CACHE" model.image.allow_random_init=true
            model.image.pretrained=null "data.num_classes=${NUM_CLASSES:-10}")

FAILED=()
left() { echo $(( BUDGET - SECONDS )); }
# part NAME SECONDS CMD...: run CMD under timeout (capped by the budget left), record a failure
part() {
  local name=$1 limit=$2; shift 2
  local avail=$(( $(left) - 5 ))
  (( limit > avail )) && limit=$avail
  if (( limit < 10 )); then
    echo "!! $name: skipped, budget spent ($(left) s left)"; FAILED+=("$name(skipped)"); return 0
  fi
  echo; echo "=== $name (timeout ${limit}s, $(left)s of budget left) ==="
  local t0=$SECONDS rc=0
  timeout -k 5 "$limit" "$@" || rc=$?
  if (( rc == 124 || rc == 137 )); then
    echo "!! $name: TIMED OUT after $(( SECONDS - t0 ))s"; FAILED+=("$name(timeout)")
  elif (( rc != 0 )); then
    echo "!! $name: FAILED rc=$rc after $(( SECONDS - t0 ))s"; FAILED+=("$name(rc=$rc)")
  else
    echo "--- $name: ok in $(( SECONDS - t0 ))s"
  fi
}

echo "=== gpu_check $(date -u +%FT%TZ) DRY=$DRY device=$DEVICE budget=${BUDGET}s work=$WORK results=$RES"
echo "host $(hostname)  cpus $(nproc)  git $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
     "($(git status --porcelain 2>/dev/null | wc -l) changed files)"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm,power.limit \
             --format=csv || true
else
  echo "nvidia-smi: not found"
fi
"$PY" - <<'EOF'
import platform, torch, timm
print(f"python {platform.python_version()}  torch {torch.__version__}  timm {timm.__version__}  "
      f"cuda {torch.version.cuda}  cudnn {torch.backends.cudnn.version()}  "
      f"cuda available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu0 {p.name}  {p.total_memory / 2**30:.0f} GiB  sm {p.major}.{p.minor}  bf16 {torch.cuda.is_bf16_supported()}")
EOF
if [[ $DEVICE == cuda ]] && ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
  echo "!! no CUDA device: run with DRY=1 on a CPU machine"; exit 2
fi

# (a) train-step bench ------------------------------------------------------------------------
BENCH_LIMIT=$(( $(left) - TRAIN_RESERVE ))
part "bench_train_step" "$BENCH_LIMIT" "$PY" benchmarks/bench_train_step.py "${BENCH_ARGS[@]}" \
     --json "$RES/train_step.json"

# (b) short real training run -----------------------------------------------------------------
part "synth_data" 120 "$PY" -m malm.cli data synth --out "$DATA" --quiet "${SYNTH_ARGS[@]}"
if [[ -f $DATA/.synth_complete ]]; then
  rm -rf "$RUN"
  part "train_malm" 600 "$PY" -m malm.cli train --run-dir "$RUN" --variant malm "${TRAIN_CFGS[@]}" \
       "${TRAIN_OVR[@]}"
else
  echo "!! no synthetic data: training skipped"; FAILED+=("train_malm(skipped)")
fi
for f in history.json config.yaml metrics.json; do
  [[ -f $RUN/$f && $RES != "$RUN" ]] && cp "$RUN/$f" "$RES/train_${f}"
done

# summary (last in the log: the part a truncated output keeps) --------------------------------
echo; echo "=== SUMMARY (DRY=$DRY, $SECONDS s) ==="
"$PY" - "$RES/train_step.json" "$RUN/history.json" "$RUN/config.yaml" <<'EOF' || true
import json, sys
from pathlib import Path

bench, hist, cfgp = map(Path, sys.argv[1:4])
if bench.is_file():
    b = json.loads(bench.read_text())
    env = b.get("env", {})
    print(f"train step: config={b['args']['config']} batch={b['args']['batch']} bf16={b['args']['bf16']} "
          f"on {env.get('gpu', env.get('device'))}")
    for mode, ph in b["phases"].items():
        print(f"  [{mode}]")
        for name, r in ph["runners"].items():
            if not r.get("ok"):
                print(f"    {name:<10} FAILED {r.get('error')}")
                continue
            mem = f"  peak {r['peak_mem_MiB']:8.0f} MiB" if r.get("peak_mem_MiB") is not None else ""
            rc = r.get("compiles_in_timed_steps") or 0
            first = f"  1st step {r['first_step_s']:.1f}s" if r.get("first_step_s") is not None else ""
            print(f"    {name:<10} {r['step_ms_median']:9.1f} ms/step  {r['images_per_s']:8.1f} img/s{mem}{first}"
                  + (f"  !! {rc} recompiles in timed steps" if rc else ""))
        for key in ("malm_over_vit_images_per_s", "malm_over_baseline_step_time"):
            q = ph["ratios"][key]
            v = "-" if q["value"] is None else f"{q['value']:.3f}"
            verdict = {True: "PASS", False: "FAIL", None: "n/a"}[q["pass"]]
            print(f"    {key:<30} {v:>7} (target {q['target']}) {verdict}")
    gb = b["phases"].get("compiled", {}).get("dynamo", {}).get("graph_breaks")
    if gb:
        print(f"  torch.compile graph breaks: {sum(gb.values())} ({len(gb)} reasons; see the JSON)")
    if b.get("compile_speedup"):
        print("  compiled/eager img/s: " + "  ".join(
            f"{k} {'-' if v is None else f'{v:.2f}x'}" for k, v in b["compile_speedup"].items()))
else:
    print(f"train step: no {bench}")
if hist.is_file():
    rows = json.loads(hist.read_text())
    print(f"training history ({hist}):")
    keys = ["train/samples_per_s", "train/seconds", "train/loss", "train/itc_loss", "train/gc_loss",
            "train/lc_loss", "train/dist_loss", "val/img2rec_R@1", "val/rec2img_R@1", "val/img2rec_medR"]
    keys = [k for k in keys if any(k in r for r in rows)]
    print("  epoch " + " ".join(f"{k.split('/')[-1]:>14}" for k in keys))
    for r in rows:
        print(f"  {r['epoch']:>5} " + " ".join(
            f"{r[k]:>14.4g}" if isinstance(r.get(k), (int, float)) else f"{'-':>14}" for k in keys))
    other = sorted({k for r in rows for k in r} - set(keys) - {"epoch"})
    print("  other keys: " + ", ".join(other))
else:
    print(f"training: no {hist}")
EOF
if (( ${#FAILED[@]} )); then
  echo "FAILED parts: ${FAILED[*]}"; echo "log: $LOG"; exit 1
fi
echo "all parts ok; log: $LOG"
