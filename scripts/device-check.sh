#!/usr/bin/env bash
# The CUDA device check (issue 18). Publishes the bench self-contained for linux-x64, moves the CPU libtorch natives
# out of it, points TorchSharp at an installed libtorch (PyTorch's torch/lib, found through python3; on a machine
# without PyTorch, the CPU natives moved aside), checks that it loads, and runs `Pipelines.Bench device`: logits parity
# with the CPU on a random GPT-2-shaped checkpoint, fused EAP scores parity, EAP and EAP-IG time over their bare passes,
# and decode tokens/s, all on the GPU when one answers (else on the CPU against itself, so the path runs anywhere).
#
#   scripts/device-check.sh            publish, then run here
#   scripts/device-check.sh publish    publish only: .device-check/app.tar.xz is what a GPU machine needs (no .NET there)
#   scripts/device-check.sh run        run from .device-check/ (unpacks app.tar.xz when app/ is missing)
#   TORCH_LIB=DIR scripts/device-check.sh run     use the libtorch in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${DEVICE_CHECK_DIR:-.device-check}
mode=${1:-all}

publish() {
  rm -rf "$dir"
  mkdir -p "$dir/libtorch-cpu"
  echo "publishing bench/Pipelines.Bench self-contained for linux-x64 ..."
  dotnet publish bench/Pipelines.Bench -c Release -r linux-x64 --self-contained true -o "$dir/app" -nologo -v quiet
  # libtorch's own natives leave the program: the device's PyTorch provides them. TorchSharp's glue
  # (libLibTorchSharp.so) stays: it is what must load against that libtorch.
  shopt -s nullglob
  for f in "$dir"/app/libtorch*.so "$dir"/app/libc10*.so "$dir"/app/libgomp*.so* "$dir"/app/libshm.so \
           "$dir"/app/libbackend_with_compiler.so "$dir"/app/libjitbackend_test.so "$dir"/app/libnnapi_backend.so \
           "$dir"/app/libaoti_custom_ops.so; do
    mv "$f" "$dir/libtorch-cpu/"
  done
  # Not used by the check (sentence embeddings, ONNX Runtime, plotting): left out, and out of the dependency
  # manifest, so the archive fits the device machine's 64 MiB.
  rm -f "$dir"/app/libonnxruntime*.so "$dir"/app/onnxruntime.dll "$dir"/app/SentenceTransformers*.dll "$dir"/app/Microsoft.ML.OnnxRuntime.dll \
        "$dir"/app/libSkiaSharp.so "$dir"/app/libHarfBuzzSharp.so "$dir"/app/libLdaNative.so* "$dir"/app/*.pdb
  python3 - "$dir/app/Pipelines.Bench.deps.json" <<'PY'
import json, os, sys
path = sys.argv[1]
deps = json.load(open(path))
folder = os.path.dirname(path)
for target in deps["targets"].values():
    for lib in target.values():
        for kind in ("runtime", "native"):
            if kind in lib:
                lib[kind] = {f: v for f, v in lib[kind].items() if os.path.exists(os.path.join(folder, os.path.basename(f)))}
json.dump(deps, open(path, "w"), indent=2)
PY
  tar -C "$dir" -cJf "$dir/app.tar.xz" app
  echo "published: $dir/app ($(du -sh "$dir/app" | cut -f1)), archive $dir/app.tar.xz ($(du -h "$dir/app.tar.xz" | cut -f1)); CPU natives in $dir/libtorch-cpu"
}

run() {
  if [ ! -x "$dir/app/Pipelines.Bench" ]; then
    tar -C "$dir" -xJf "$dir/app.tar.xz"
  fi
  local lib=${TORCH_LIB:-}
  local version="unknown"
  if [ -z "$lib" ] && command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null; then
    lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    version=$(python3 -c 'import torch; print(torch.__version__)')
  fi
  if [ -z "$lib" ]; then
    lib="$dir/libtorch-cpu"
    version="TorchSharp's own CPU natives"
  fi
  if [ ! -e "$lib/libtorch.so" ]; then
    echo "device-check: no libtorch.so in $lib (set TORCH_LIB to PyTorch's torch/lib)" >&2
    exit 2
  fi
  lib=$(cd "$lib" && pwd)
  echo "libtorch: $lib (PyTorch $version; this TorchSharp was built against libtorch 2.10.0)"
  LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$dir/app/Pipelines.Bench" device "${@}"
}

case "$mode" in
  publish) publish ;;
  run) shift; run "$@" ;;
  all) publish; run ;;
  *) echo "usage: scripts/device-check.sh [publish|run|all]" >&2; exit 2 ;;
esac
