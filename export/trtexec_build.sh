#!/usr/bin/env bash
# Build a TensorRT engine for a fusion_node model directory with trtexec, for machines (Jetson)
# that have TensorRT but not this package's Python dependencies. Needs bash, python3 (standard
# library only) and trtexec. Writes ENGINE and its cache-key sidecar (ENGINE with .json), the
# same key `fusion export trt` writes, so the node's TensorRT backend checks and reuses it.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: export/trtexec_build.sh MODEL_DIR [options] [-- extra trtexec args]
  --precision fp32|fp16|int8   (default fp16; LayerNorm/Softmax layers stay fp32)
  --out ENGINE                 (default <cache>/<model dir name>.<precision>.engine, <cache> being
                               $ROS_HOME/fusion_node/engines or ~/.cache/fusion_node/engines)
  --batch MIN,OPT,MAX          batch range; the ONNX must have been exported with --dynamic-batch
  --workspace-mb N             builder workspace limit (default 1024)
  --timing-cache FILE          persistent timing cache (default <cache>/timing.cache)
  --calib CACHE                int8 calibration cache (from `fusion export trt --precision int8`)
  --no-tf32                    disable TF32
env: TRTEXEC (default: trtexec on PATH, else /usr/src/tensorrt/bin/trtexec), PYTHON (default python3)
USAGE
}

die() { echo "error: $*" >&2; exit 2; }

[[ $# -ge 1 && $1 != -h && $1 != --help ]] || { usage; [[ $# -ge 1 ]] && exit 0 || exit 2; }
MODEL_DIR=$1; shift
# The per-user engine cache the node looks in (fusion_node.backends.base.engine_cache_dir).
if [[ -n ${ROS_HOME:-} ]]; then CACHE=$ROS_HOME/fusion_node/engines; else CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/fusion_node/engines; fi
PRECISION=fp16 OUT="" BATCH="" WORKSPACE=1024 TIMING=$CACHE/timing.cache CALIB="" TF32=1
EXTRA=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --precision) PRECISION=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --batch) BATCH=${2:?}; shift 2 ;;
    --workspace-mb) WORKSPACE=${2:?}; shift 2 ;;
    --timing-cache) TIMING=${2:?}; shift 2 ;;
    --calib) CALIB=${2:?}; shift 2 ;;
    --no-tf32) TF32=0; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PKG=$HERE/../fusion_node/export
PY=${PYTHON:-python3}
TRTEXEC=${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}
ONNX=$MODEL_DIR/model.onnx
CONFIG=$MODEL_DIR/config.json

case $PRECISION in fp32|fp16|int8) ;; *) die "--precision must be fp32, fp16 or int8" ;; esac
[[ -f $ONNX ]] || die "$ONNX not found (run \`fusion export onnx --model-dir $MODEL_DIR\`)"
[[ -f $CONFIG ]] || die "$CONFIG not found"
[[ -x $TRTEXEC ]] || die "trtexec not found (set TRTEXEC=/path/to/trtexec)"
[[ $PRECISION != int8 || -f $CALIB ]] || die "--precision int8 needs --calib CACHE"
if [[ -z $OUT ]]; then
  OUT=$CACHE/$(basename "$(cd "$MODEL_DIR" && pwd)").$PRECISION.engine
fi
mkdir -p "$(dirname "$OUT")" "$(dirname "$TIMING")"

# Input shapes from the model spec, per batch size: "name:1x3x64x64" lines.
shapes_for() {
  "$PY" - "$CONFIG" "$1" <<'PYEOF'
import json, sys
spec, b = json.load(open(sys.argv[1])), sys.argv[2]
h, w = spec.get("image_size", [64, 64])
dims = {"image": [b, 3, h, w], "audio": [b, spec.get("audio_samples", 8000)],
        "joints": [b, 2 * len(spec.get("joint_names", ["joint1", "joint2", "joint3"]))],
        "text": [b, spec.get("text_dim", 384)], "present": [b, 4]}
for name, d in dims.items():
    print(name + ":" + "x".join(str(v) for v in d))
PYEOF
}

ARGS=(--onnx="$ONNX" --saveEngine="$OUT.tmp" --memPoolSize=workspace:"${WORKSPACE}M" --timingCacheFile="$TIMING")
[[ $TF32 == 1 ]] || ARGS+=(--noTF32)
KEY_SHAPES=()
if [[ -n $BATCH ]]; then
  IFS=, read -r BMIN BOPT BMAX <<<"$BATCH"
  [[ -n ${BMAX:-} ]] || die "--batch expects MIN,OPT,MAX"
  join() { paste -sd, -; }
  ARGS+=(--minShapes="$(shapes_for "$BMIN" | join)" --optShapes="$(shapes_for "$BOPT" | join)" \
         --maxShapes="$(shapes_for "$BMAX" | join)")
  mapfile -t LO < <(shapes_for "$BMIN"); mapfile -t MID < <(shapes_for "$BOPT"); mapfile -t HI < <(shapes_for "$BMAX")
  for i in "${!LO[@]}"; do KEY_SHAPES+=(--shape "${LO[$i]}:${MID[$i]#*:}:${HI[$i]#*:}"); done
else
  while IFS=: read -r name dims; do KEY_SHAPES+=(--shape "$name:$dims:$dims:$dims"); done < <(shapes_for 1)
fi
if [[ $PRECISION != fp32 ]]; then
  ARGS+=(--fp16)
  [[ $PRECISION == int8 ]] && ARGS+=(--int8 --calib="$CALIB")
  # LayerNorm's variance and softmax's sum overflow fp16: keep those layers in fp32.
  PINNED=$("$PY" "$PKG/onnx_scan.py" "$ONNX" LayerNormalization Softmax | sed 's/$/:fp32/' | paste -sd, -)
  [[ -z $PINNED ]] || ARGS+=(--layerPrecisions="$PINNED" --precisionConstraints=obey)
fi

LOG=$(mktemp)
trap 'rm -f "$LOG" "$OUT.tmp"' EXIT
echo "trtexec ${ARGS[*]} ${EXTRA[*]:-}" >&2
if ! "$TRTEXEC" "${ARGS[@]}" "${EXTRA[@]}" 2>&1 | tee "$LOG" >&2 || [[ ! -s $OUT.tmp ]]; then
  die "trtexec failed; see its output above"
fi
mv "$OUT.tmp" "$OUT"
"$PY" "$PKG/cache_key.py" --onnx "$ONNX" --engine "$OUT" --precision "$PRECISION" --trtexec-log "$LOG" "${KEY_SHAPES[@]}"
echo "$OUT"
