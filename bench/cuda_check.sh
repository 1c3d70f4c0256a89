#!/usr/bin/env bash
# The CUDA paths, which CI (CPU only) never runs: run this on a GPU machine and record the figures in BENCHMARKS.md.
#   bash bench/cuda_check.sh paths [WORK_DIR]   # every stage in bf16, fp16 + GradScaler with resume, torch.compile,
#                                               # the out-of-memory fallback, generation, evaluation
#   bash bench/cuda_check.sh tests [WORK_DIR]   # the test suite with CUDA visible (stages pick it with --device auto)
#   bash bench/cuda_check.sh bench [WORK_DIR]   # bench/bench_model.py on the GPU (MiniGPT vs HF Llama)
# EVAL_DATA (default data/eval) and CORPUS (default ../shared/data/pretrain/tinyshakespeare.txt) point at real data.
set -u
cd "$(dirname "$0")/.."
PART=${1:-paths}
W=${2:-/tmp/cuda_check}
EVAL_DATA=${EVAL_DATA:-data/eval}
mkdir -p "$W/logs"
export PYTHONUNBUFFERED=1 MINIGPT_DATA_DIR="$W/data_cache"
if ! command -v python >/dev/null; then  # images that only have python3
    mkdir -p "$W/bin" && ln -sf "$(command -v python3)" "$W/bin/python" && export PATH="$W/bin:$PATH"
fi

# step NAME CMD...: run CMD with its output in logs/NAME.log; print the exit status, seconds and the last lines
step() {
    local name=$1; shift
    local t=$SECONDS
    "$@" >"$W/logs/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc in $((SECONDS - t)) s"
    grep -v '%|' "$W/logs/$name.log" | tail -n "${TAIL:-4}"
}

# last_metric RUN KEY: the last value of KEY in RUN/metrics.jsonl (median_metric: the median, for noisy speeds)
last_metric() {
    python -c "import json,sys; v=[r[sys.argv[2]] for r in map(json.loads, open(sys.argv[1])) if sys.argv[2] in r]; print(sys.argv[2], v[-1] if v else None)" "$1/metrics.jsonl" "$2"
}
median_metric() {
    python -c "import json,sys,statistics as st; v=[r[sys.argv[2]] for r in map(json.loads, open(sys.argv[1])) if sys.argv[2] in r]; print('median', sys.argv[2], st.median(v) if v else None)" "$1/metrics.jsonl" "$2"
}

nvidia-smi -L
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"

if [ "$PART" = paths ]; then
    C=$W/ckpt
    TAIL=12 step pipeline make pipeline OUT="$C" ARGS="--device cuda"
    TOK=$C/pretrain_tiny/tokenizer.json
    P="python train_pretrain.py --device cuda --tokenizer $TOK --no-plot"
    # torch.compile against eager at the small preset (the tiny one is bound by kernel launches)
    S="--config small --max-steps 150 --eval-interval 150 --eval-iters 5 --batch-size 32 --seq-len 512"
    step eager_small $P $S --out-dir "$W/eager_small"
    median_metric "$W/eager_small" tokens_per_sec
    step compile_small $P $S --compile --out-dir "$W/compile_small"
    median_metric "$W/compile_small" tokens_per_sec
    # DDP over NCCL needs one GPU per rank
    if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
        step ddp_nccl python -m torch.distributed.run --standalone --nproc_per_node 2 train_pretrain.py --device cuda \
            --tokenizer "$TOK" --no-plot --max-steps 100 --eval-interval 50 --out-dir "$W/ddp"
    else
        echo "== ddp_nccl: skipped, one GPU (torchrun with 2 ranks stops with a one-line error naming the GPU count)"
    fi
    # a micro-batch too big for the GPU: it must halve (and double grad-accum) instead of crashing
    TAIL=6 step oom $P --config medium --batch-size 480 --seq-len 512 --max-steps 3 --eval-interval 3 --eval-iters 1 \
        --warmup-steps 1 --out-dir "$W/oom"
    grep "out of memory" "$W/logs/oom.log"
    last_metric "$W/oom" memory_mb
    step generate python generate.py --checkpoint "$C/sft_tiny" --device cuda --template --greedy --max-new-tokens 24 \
        --no-stream --prompt "Where does Mira live?" "7加5等于多少？"
    if [ -d "$EVAL_DATA" ]; then
        TAIL=14 step eval python eval_benchmarks.py --checkpoint "$C/pretrain_tiny" --device cuda --data-dir "$EVAL_DATA" \
            --limit 200 --out "$W/eval.json"
    fi
fi
if [ "$PART" = paths ] || [ "$PART" = fp16 ]; then
    # fp16 autocast needs the GradScaler, and resume must restore its loss scale with the optimizer and the RNG:
    # 400 steps straight against 300, then --resume to 400, with the same cosine schedule (--lr-decay-steps)
    P="python train_pretrain.py --device cuda --no-plot --dtype float16 --eval-interval 100 --lr-decay-steps 400"
    step fp16_straight $P --max-steps 400 --out-dir "$W/fp16_straight"
    step fp16_half $P --max-steps 300 --out-dir "$W/fp16" --tokenizer "$W/fp16_straight/tokenizer.json"
    step fp16_resume $P --max-steps 400 --out-dir "$W/fp16" --resume
    python - "$W/fp16_straight" "$W/fp16" <<'PY'
import json, sys
a, b = ({r["step"]: r["train_loss"] for r in map(json.loads, open(d + "/metrics.jsonl")) if "train_loss" in r} for d in sys.argv[1:])
steps = sorted(s for s in a if s in b)
print(f"fp16 resume: steps {steps[0]}-{steps[-1]}, max |loss straight - loss resumed| = {max(abs(a[s] - b[s]) for s in steps):.2e}")
PY
elif [ "$PART" = tests ]; then
    TAIL=15 step tests python -m pytest tests -q -p no:cacheprovider
elif [ "$PART" = bench ]; then
    TAIL=30 step bench_model python bench/bench_model.py --device cuda --configs small medium --batch 16 --seq-len 1024 \
        --compile
fi
