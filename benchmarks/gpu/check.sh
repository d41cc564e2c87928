#!/usr/bin/env bash
# One-shot GPU check of multi-process training and speed (see benchmarks/gpu/README.md). Run from the repository root:
#
#     bash benchmarks/gpu/check.sh            # the real thing, on a CUDA machine (~4 min on an H200)
#     bash benchmarks/gpu/check.sh --tiny     # small shapes and steps: every non-CUDA path, on a CPU
#
# Environment: OUT (results, default ./gpu_out), PY (default python3), BUDGET (seconds for the whole
# script, default 330), TINY=1 (same as --tiny), WORK (scratch, default a new /tmp directory),
# WHEELS (pydantic's wheels, installed into WORK when pydantic is missing; default benchmarks/gpu/wheels).
# Every step runs under `timeout`, cut to what is left of BUDGET; a failing step does not stop the others.
set -u

TINY=${TINY:-0}
for arg in "$@"; do
    case "$arg" in
        --tiny) TINY=1 ;;
        *) echo "unknown argument: $arg (only --tiny)"; exit 2 ;;
    esac
done

PY=${PY:-python3}
OUT=${OUT:-./gpu_out}
BUDGET=${BUDGET:-330}
WHEELS=${WHEELS:-benchmarks/gpu/wheels}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$WORK"
LOG="$OUT/check.log"
: > "$LOG"

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
export TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1

exec 3>&1 4>&2
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

SECONDS=0
if [ "$TINY" = 1 ]; then
    TEXT_MB=0.3; PROBE=1024; PROBE_REPS=3
    GPT_SHAPE="n_layer: 2, n_head: 2, n_embd: 64, block_size: 64"; BATCH=4; VOCAB=512; STEPS=30; LOG_EVERY=5
    DIST_STEPS=12; HOT_STEPS=20; HOT_ROUNDS=1; TS_STEPS=1; TS_ARCH="gpt"; GEN_REPS=1
else
    TEXT_MB=5; PROBE=8192; PROBE_REPS=10
    GPT_SHAPE="n_layer: 6, n_head: 6, n_embd: 384, block_size: 256"; BATCH=16; VOCAB=8192; STEPS=300; LOG_EVERY=25
    DIST_STEPS=60; HOT_STEPS=200; HOT_ROUNDS=2; TS_STEPS=20; TS_ARCH="gpt bert"; GEN_REPS=3
fi

# step LABEL CAP_SECONDS COMMAND...: run COMMAND under timeout (CAP, or what is left of BUDGET).
step() {
    local label=$1 cap=$2; shift 2
    local left=$(( BUDGET - SECONDS - 5 ))
    local limit=$(( cap < left ? cap : left ))
    if (( limit < 10 )); then
        echo "--- SKIPPED $label: ${left}s of the ${BUDGET}s budget left"
        return 99
    fi
    echo "--- $label (timeout ${limit}s) [t=${SECONDS}s]"
    local start=$SECONDS
    timeout -k 5 "$limit" "$@"
    local rc=$?
    local note=""
    if (( rc == 124 || rc == 137 )); then note=" TIMED OUT"; fi
    echo "--- $label: rc=$rc$note, $(( SECONDS - start ))s [t=${SECONDS}s]"
    return $rc
}

# part TITLE: close the previous part (its elapsed seconds) and open the next ("" only closes).
PART_NAME="" PART_START=0
part() {
    if [ -n "$PART_NAME" ]; then echo "===== end of ${PART_NAME%%:*}: $(( SECONDS - PART_START ))s"; fi
    PART_NAME=$1 PART_START=$SECONDS
    if [ -n "$PART_NAME" ]; then printf '\n===== %s [t=%ss of %ss]\n' "$PART_NAME" "$SECONDS" "$BUDGET"; fi
    return 0
}

echo "benchmarks/gpu/check.sh: tiny=$TINY, budget ${BUDGET}s, PY=$PY, OUT=$OUT, WORK=$WORK, $(date -u +%FT%TZ)"
echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) changed file(s); $(nproc) CPU cores"

# ---------------------------------------------------------------------------------------------------------
part "PART 0: dependencies (the package needs pydantic, which the GPU image lacks: wheels from $WHEELS)"
if "$PY" -c 'import pydantic' 2>/dev/null; then
    echo "pydantic $("$PY" -c 'import pydantic; print(pydantic.VERSION)') is installed"
elif ls "$WHEELS"/pydantic-*.whl >/dev/null 2>&1; then
    SITE="$WORK/site"
    wheels=()
    for name in pydantic pydantic_core annotated_types typing_inspection; do
        wheels+=("$WHEELS/$name"-*.whl)
    done
    # typing_extensions only when the installed one is older than pydantic needs (it would shadow it).
    if ! "$PY" -c 'import importlib.metadata as m, sys; v = tuple(int(x) for x in m.version("typing_extensions").split(".")[:2]); sys.exit(v < (4, 16))' 2>/dev/null; then
        wheels+=("$WHEELS"/typing_extensions-*.whl)
    fi
    step "pip install --target $SITE ${wheels[*]##*/}" 60 "$PY" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --target "$SITE" "${wheels[@]}"
    export PYTHONPATH="$SITE:$PYTHONPATH"
    "$PY" -c 'import pydantic; print("pydantic", pydantic.VERSION, "from", pydantic.__file__)' \
        || echo "ERROR: pydantic still does not import: every part that imports model_foundry will fail"
else
    echo "ERROR: pydantic is not installed and $WHEELS has no wheels: every part that imports model_foundry will fail."
    echo "       Download them (see benchmarks/gpu/README.md) and carry benchmarks/gpu/wheels."
fi

# ---------------------------------------------------------------------------------------------------------
part "PART 1: facts"
if command -v nvidia-smi >/dev/null 2>&1; then
    step "nvidia-smi" 20 nvidia-smi -L
    step "nvidia-smi query" 20 nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version \
        --format=csv
else
    echo "nvidia-smi not found: no NVIDIA GPU here; the CUDA-only checks will say so and fall back to the CPU"
fi
step "torch facts + bf16 matmul probe ${PROBE}^3 x ${PROBE_REPS}" 60 \
    "$PY" benchmarks/gpu/helpers.py facts --probe "$PROBE" --reps "$PROBE_REPS"
HAS_CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ "$HAS_CUDA" = 1 ]; then DEV=cuda; else DEV=cpu; echo "NOTE: no CUDA device: every part below runs on the CPU"; fi

# ---------------------------------------------------------------------------------------------------------
part "PART 2: foundry train, benchmark GPT, bf16, eager vs training.compile"
TEXT="$WORK/stand_in.txt"
step "stand-in text (${TEXT_MB} MB)" 60 "$PY" benchmarks/gpu/helpers.py text "$TEXT" --mb "$TEXT_MB"
CFG="$WORK/gpt_benchmark.yaml"
cat > "$CFG" <<EOF
experiment: {name: gpt_benchmark, kind: pretraining, seed: 1337, output_dir: $WORK/experiments}
tokenizer: {type: bpe, vocab_size: $VOCAB}
data: {train: {path: $TEXT}, val_fraction: 0.05}
model: {architecture: gpt, $GPT_SHAPE, dropout: 0.0}
training: {max_steps: $STEPS, batch_size: $BATCH, learning_rate: 6.0e-4, warmup_steps: $(( STEPS / 10 )),
           log_interval: $LOG_EVERY, eval_interval: $STEPS, eval_iters: 5, precision: bf16, device: auto}
EOF
cat "$CFG"
EAGER="$WORK/runs/eager"
COMPILED="$WORK/runs/compiled"
step "train eager (bf16)" 150 "$PY" -m model_foundry train "$CFG" --out "$EAGER"
TOKENIZER_SET=()
if [ -f "$EAGER/tokenizer/tokenizer.json" ]; then TOKENIZER_SET=(--set "tokenizer.path=$EAGER/tokenizer"); fi
step "train compiled (bf16, training.compile=true)" 180 "$PY" -m model_foundry train "$CFG" --out "$COMPILED" \
    --set training.compile=true ${TOKENIZER_SET[@]+"${TOKENIZER_SET[@]}"}
echo "--- speed summary (reads the two runs' metrics/train.csv; not cut by the budget)"
timeout -k 2 20 "$PY" benchmarks/gpu/helpers.py summary "eager=$EAGER" "compiled=$COMPILED" \
    --csv "$OUT/train_speed.csv" --json "$OUT/train_speed.json" | tee "$WORK/summary_part2.txt"

# ---------------------------------------------------------------------------------------------------------
part "PART 3: DDP and FSDP2 code paths (a process group of one: NCCL on CUDA, gloo on the CPU)"
DIST="$WORK/dist"
step "distributed_check (torchrun, 1 worker): gpt fp32+bf16, bert, classifier x {single, ddp, fsdp}" 150 \
    "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 benchmarks/gpu/distributed_check.py \
    --work "$DIST" --steps "$DIST_STEPS" --csv "$OUT/distributed.csv"
if [ -d "$DIST/gpt_fp32_fsdp/checkpoints/last" ]; then
    step "CLI: eval of the fsdp run's checkpoint in one process" 60 \
        "$PY" -m model_foundry eval "$DIST/gpt_fp32_fsdp" --checkpoint last
fi
if [ -f "$DIST/configs/gpt_fp32.yaml" ]; then
    echo "NOTE: 'foundry train --nproc 1' runs one worker that the package treats as a single process (WORLD_SIZE=1:"
    echo "      no process group, no DDP/FSDP); it checks the launcher only. The checks above are the DDP/FSDP ones."
    step "CLI: foundry train --nproc 1 (the package's own torchrun launcher), gpt fp32" 60 \
        "$PY" -m model_foundry train "$DIST/configs/gpt_fp32.yaml" --nproc 1 --out "$DIST/gpt_fp32_nproc1"
    step "compare --nproc 1 with the plain run" 30 \
        "$PY" benchmarks/gpu/distributed_check.py compare "$DIST/gpt_fp32_single" "$DIST/gpt_fp32_nproc1"
fi
if [ -s "$OUT/distributed.csv" ]; then cp "$OUT/distributed.csv" "$WORK/summary_part3.csv"; fi

# ---------------------------------------------------------------------------------------------------------
part "PART 4: benchmarks/hot_loop/bench.py and benchmarks/train_step_vs_transformers.py on $DEV"
step "hot_loop bench --device $DEV --steps $HOT_STEPS --rounds $HOT_ROUNDS" 120 \
    "$PY" benchmarks/hot_loop/bench.py --device "$DEV" --steps "$HOT_STEPS" --rounds "$HOT_ROUNDS" \
    | tee "$WORK/summary_part4.txt"
for precision in fp32 bf16; do
    # shellcheck disable=SC2086
    step "train_step_vs_transformers --device $DEV --precision $precision" 90 \
        "$PY" benchmarks/train_step_vs_transformers.py --device "$DEV" --precision "$precision" \
        --steps "$TS_STEPS" --arch $TS_ARCH | tee -a "$WORK/summary_part4.txt"
    if [ "$TINY" = 1 ]; then break; fi
done

# ---------------------------------------------------------------------------------------------------------
part "PART 5: generation, ours vs transformers (export --format hf), greedy, batch 1, KV cache"
GEN_RUN=""
for candidate in "$EAGER" "$COMPILED"; do
    if [ -f "$candidate/checkpoints/last/model.safetensors" ]; then GEN_RUN=$candidate; break; fi
done
if [ -n "$GEN_RUN" ]; then
    step "generation_speed $GEN_RUN" 90 "$PY" benchmarks/gpu/generation_speed.py "$GEN_RUN" --new-tokens 256 \
        --prompt-tokens 16 --reps "$GEN_REPS" --json "$OUT/generation.json" | tee "$WORK/summary_part5.txt"
else
    echo "SKIPPED: no trained GPT from part 2 to export"
fi

# ---------------------------------------------------------------------------------------------------------
part "PART 6 (extra, only with time left): DDP and FSDP2 under training.compile"
if (( BUDGET - SECONDS > 120 )); then
    step "distributed_check gpt_fp32_compile, gpt_bf16_compile" $(( BUDGET - SECONDS - 20 )) \
        "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 benchmarks/gpu/distributed_check.py \
        --work "$WORK/dist_compile" --steps "$DIST_STEPS" --cases gpt_fp32_compile,gpt_bf16_compile --load-check none \
        --csv "$WORK/dist_compile.csv"
    if [ -s "$WORK/dist_compile.csv" ]; then tail -n +2 "$WORK/dist_compile.csv" >> "$OUT/distributed.csv"; fi
else
    echo "SKIPPED: $(( BUDGET - SECONDS ))s left"
fi

# ---------------------------------------------------------------------------------------------------------
part "SUMMARY"
for f in "$WORK"/summary_part2.txt "$WORK"/summary_part3.csv "$WORK"/summary_part4.txt "$WORK"/summary_part5.txt; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; grep -v '^\[transformers\]' "$f"; }
done
part ""
echo "total ${SECONDS}s of the ${BUDGET}s budget; results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"

exec 1>&3 2>&4 3>&- 4>&-
wait "$TEE_PID" 2>/dev/null
exit 0
