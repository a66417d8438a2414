#!/usr/bin/env bash
# The GPU check: one command on the GPU machine, at most 5 minutes, everything written under OUTDIR.
#
#   bash bench/gpu/check.sh [OUTDIR]          # on the GPU machine (OUTDIR default: $OUT, else bench/results/tmp/gpu)
#   bash bench/gpu/check.sh --install-qlora   # on the warm GPU machine, a call of its own: bitsandbytes from .whl-qlora/
#   bash bench/gpu/check.sh --dry-run [--no-side-env] [--only PART]   # on a CPU: every import, recipe and
#                                   # command line resolves, and ayar trains under transformers 5.17 in a side
#                                   # environment (downloaded once into ~/.cache/ayar; --no-side-env skips it)
# EXTRA_TRAIN_ARGS (words) are appended to the training bench's arguments, e.g. "--methods lora full".
#
# Each part runs with a time limit and records ok, failed or "not run: <reason>" in OUTDIR/parts.tsv; a failing
# part never stops the next one. The report (gpu_check.md, gpu_check.json) is written at the end, and the exit
# status is 1 when any part failed. docs/gpu.md says what each part checks.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HELPER=bench/gpu/gpu_check.py
TRAVEL="$ROOT/.whl"
CONFIG_DIR="$TRAVEL/smollm2"
MODE=gpu
SIDE_ENV=1
OUTDIR=""
ONLY=""
while (( $# )); do
  case "$1" in
    --dry-run) MODE=dry ;;
    --side-env) SIDE_ENV=1 ;;
    --no-side-env) SIDE_ENV=0 ;;
    --install-qlora) MODE=qlora ;;
    --only) ONLY="$2"; shift ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) OUTDIR="$1" ;;
  esac
  shift
done
if [[ $MODE == gpu ]]; then
  PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
  OUTDIR="${OUTDIR:-${OUT:-$ROOT/bench/results/tmp/gpu}}"
else
  PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
  OUTDIR="${OUTDIR:-$(mktemp -d -t gpu-dry-run-XXXX)}"
fi
mkdir -p "$OUTDIR/logs"
: > "$OUTDIR/parts.tsv"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false AYAR_NO_PROGRESS=1 PYTHONUNBUFFERED=1
FAILED=0
DEADLINE=$(( $(date +%s) + 290 ))  # the whole check in 5 minutes, so a rerun fits the machine's 10-minute calls

# part NAME SECONDS COMMAND...: run it with a limit, its output in logs/NAME.log, its status in parts.tsv
part() {
  local name="$1" limit="$2" start status rc
  shift 2
  [[ -z $ONLY || $ONLY == "$name" ]] || return 0
  start=$(date +%s)
  if [[ $MODE == gpu ]] && (( DEADLINE - start - 5 < limit )); then
    limit=$(( DEADLINE - start - 5 ))
    if (( limit < 5 )); then
      printf '%s\tfailed: not run, the check'"'"'s 5 minutes are spent\t0\t\n' "$name" >> "$OUTDIR/parts.tsv"
      return
    fi
  fi
  timeout --kill-after=10 "$limit" "$@" > "$OUTDIR/logs/$name.log" 2>&1
  rc=$?
  if (( rc == 0 )); then
    status=ok
  elif (( rc == 124 || rc == 137 )); then
    status="failed: over its ${limit} s limit"
  else
    status="failed: exit $rc"
  fi
  local detail
  detail=$(grep -v '^\s*$' "$OUTDIR/logs/$name.log" | tail -1 | tr '\t|' '  ' | cut -c1-200)
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - start ))" "$detail" >> "$OUTDIR/parts.tsv"
  echo "[$name] $status (logs/$name.log)"
}

not_run() {  # not_run NAME REASON
  [[ -z $ONLY || $ONLY == "$1" ]] || return 0
  printf '%s\tnot run: %s\t0\t\n' "$1" "$2" >> "$OUTDIR/parts.tsv"
  echo "[$1] not run: $2"
}

gpu_test_files() {  # every test file with a GPU-marked test, the QLoRA ones apart (they need bitsandbytes)
  grep -rl --include='test_*.py' 'mark\.gpu' tests | sort | grep -v test_qlora_method.py
}

# The training bench's configuration: SmolLM2's shape, LoRA, every peer at its GPU-best setting (bf16 autocast,
# SDPA; TRL's packing is padding-free), against ayar's defaults.
TRAIN_ARGS=(--device cuda --from-config "$CONFIG_DIR" --models from-config --methods lora
            --systems baseline-bf16 baseline-bf16-group trl-bf16 trl-bf16-nopack ayar-default
            --records 256 --max-length 512 --batch-size 16 --results-dir "$OUTDIR" --out train_bench_gpu
            ${EXTRA_TRAIN_ARGS:-})
SERVE_ARGS=(--clients 8 --seconds 10 --max-tokens 16 --json "$OUTDIR/serve_bench.json")

side_env() {  # ayar under the GPU machine's transformers (5.17 with its huggingface-hub 1.x): imports, one run
  local dir="${AYAR_SIDE_ENV:-$HOME/.cache/ayar/side-env-transformers-5.17}"
  if [[ ! -f "$dir/.complete" ]]; then
    rm -rf "$dir"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir" \
      "transformers==5.17.0" "huggingface-hub>=1.5,<2" && touch "$dir/.complete" || return 1
  fi
  PYTHONPATH="$dir" "$PYTHON" "$HELPER" imports || return 1
  # importing is not training: one short run of ayar's engine (a CPU out-of-memory retry test) under it
  PYTHONPATH="$dir" "$PYTHON" -m pytest -q -x tests/unit/train/test_faults.py -k accelerator_out_of_memory
}
export -f side_env
export PYTHON HELPER

dry_run() {
  if [[ ! -f "$CONFIG_DIR/config.json" ]]; then
    not_run travel-folder ".whl/ is absent (bench/gpu/prepare.sh not run here): its wheels and SmolLM2 folder unchecked"
    CONFIG_DIR="$(mktemp -d)"
    echo '{}' > "$CONFIG_DIR/config.json"
    TRAIN_ARGS=("${TRAIN_ARGS[@]/$TRAVEL\/smollm2/$CONFIG_DIR}")
  fi
  # the parts are independent and mostly import time: side by side they take half as long on two cores
  # imports, then the GPU tests' recipes through ayar's validation, in one process (one torch import fewer)
  part imports-recipes 120 "$PYTHON" "$HELPER" imports --closure --recipes --wheels "$TRAVEL" &
  mapfile -t files < <(gpu_test_files)
  part gpu-tests-collect 120 "$PYTHON" -m pytest --collect-only -q -m gpu "${files[@]}" \
    tests/unit/methods/test_qlora_method.py &
  part train-bench-args 60 "$PYTHON" "$HELPER" parse-only bench/train_bench.py "${TRAIN_ARGS[@]}" &
  part serve-bench-args 60 "$PYTHON" "$HELPER" parse-only bench/serve_bench.py "${SERVE_ARGS[@]}" &
  if (( SIDE_ENV )); then
    part transformers-5.17 300 bash -c side_env &
  else
    not_run transformers-5.17 "--no-side-env given: ayar under transformers 5.17 unchecked"
  fi
  wait
}

gpu_run() {
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
      || echo "no nvidia-smi"; } > "$OUTDIR/device.txt"
  # ayar itself without its CPU pins; built with the setuptools there (torch needs it) or from .whl/
  part install 60 bash -c "'$PYTHON' '$HELPER' install '$TRAVEL' && '$PYTHON' -m pip install --quiet \
    --disable-pip-version-check --no-index --no-deps --no-build-isolation -e ."
  part cuda 30 "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())"
  part imports 60 "$PYTHON" "$HELPER" imports
  mapfile -t files < <(gpu_test_files)
  part gpu-tests 80 "$PYTHON" -m pytest -q -m gpu --junitxml="$OUTDIR/gpu_tests.xml" "${files[@]}"
  if "$PYTHON" -c "import bitsandbytes" > /dev/null 2>&1; then
    part qlora-tests 45 "$PYTHON" -m pytest -q -m gpu --junitxml="$OUTDIR/qlora_tests.xml" \
      tests/unit/methods/test_qlora_method.py
  else
    not_run qlora-tests "bitsandbytes is not installed: $(cat "$TRAVEL/separate_call.txt" "$TRAVEL/not_included.txt" \
      2>/dev/null | grep -m1 bitsandbytes || echo 'run bench/gpu/prepare.sh') (docs/gpu.md: --install-qlora)"
  fi
  not_run vllm "$(grep -m1 vllm "$TRAVEL/not_included.txt" 2>/dev/null || echo 'vllm is not installed')"
  not_run fsdp-deepspeed "one GPU: FSDP and DeepSpeed shard over several"
  if [[ -f "$CONFIG_DIR/config.json" ]]; then
    part train-bench 130 "$PYTHON" bench/train_bench.py "${TRAIN_ARGS[@]}"
  else
    not_run train-bench "no $CONFIG_DIR (run bench/gpu/prepare.sh before the call)"
  fi
  # ayar serve places the model where load_model leaves it: the figures say which device served
  part serve-bench 45 "$PYTHON" bench/serve_bench.py "${SERVE_ARGS[@]}"
}

install_qlora() {
  part install-qlora 120 bash -c "ls '$ROOT'/.whl-qlora/*.whl && '$PYTHON' -m pip install --no-index --no-deps \
    --disable-pip-version-check '$ROOT'/.whl-qlora/*.whl && '$PYTHON' -c 'import bitsandbytes; print(bitsandbytes.__version__)'"
}

case $MODE in
  dry) dry_run ;;
  qlora) install_qlora ;;
  gpu) gpu_run ;;
esac
grep -q $'\tfailed' "$OUTDIR/parts.tsv" && FAILED=1
"$PYTHON" "$HELPER" report "$OUTDIR" > "$OUTDIR/logs/report.log" 2>&1 || { echo "report failed"; FAILED=1; }
echo "report: $OUTDIR/gpu_check.md"
exit $FAILED
