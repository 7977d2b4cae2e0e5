#!/bin/bash
# The GPU stages of `make prior-gpu` (which runs this with OUT=runs), and the whole of a device call for a
# machine without the data: about 7 minutes on an H200. It reads what `make prior-gpu-carry` wrote to runs/gpu (under the 64 MiB a device call carries) and trains,
# side by side on one GPU, tiny64-gpu's transformer on tiny64's token maps and its decoder on 10,000 training
# images. Results land in $OUT/tiny64-gpu and $OUT/tiny64-gpu-decoder; copy both into runs/ and run
# `make prior-gpu-export` on the CPU. DEV, PY, TR_STEPS, DEC_STEPS, HOLDOUT and EVAL_EVERY may be overridden
# (a dry run on the CPU: DEV=cpu TR_STEPS=4 DEC_STEPS=3 HOLDOUT=100 EVAL_EVERY=2).
set -u
export PYTHONUNBUFFERED=1
PY=${PY:-python3}; DEV=${DEV:-cuda}; CARRY=${CARRY:-runs/gpu}; OUT=${OUT:-runs/gpu-out}
TR="$OUT/tiny64-gpu"; DEC="$OUT/tiny64-gpu-decoder"  # = GPU_RUN, GPU_DECODER_RUN with OUT=runs
WORK=$(mktemp -d)
mkdir -p "$TR" "$DEC" "$WORK/tr" "$WORK/dec"
# both runs start from the shipped tokenizer (fp16, as tiny64 ships it): the transformer needs its codebook
cp "$CARRY/dec/tokenizer_ckpt.pt" "$WORK/tr/"; cp "$CARRY/dec/tokenizer_ckpt.pt" "$WORK/dec/"
cp "$CARRY/tokens_train.npz" "$WORK/tr/"
nvidia-smi -L 2>/dev/null
( VARLIB_DATA_DIR="$CARRY/data" $PY -m varlib.training tokenize --out "$WORK/dec" --shards 0 --device "$DEV" \
  && VARLIB_DATA_DIR="$CARRY/data" $PY -m varlib.training decoder --out "$WORK/dec" --shards 0 --device "$DEV" \
       --batch 128 --lr 3e-4 --steps "${DEC_STEPS:-4460}" \
  && $PY -m varlib.training pack --out "$WORK/dec" --dest "$DEC" ) > "$DEC/decoder.log" 2>&1 &
$PY -m varlib.training transformer --config tiny64-gpu --out "$WORK/tr" --device "$DEV" --batch 256 \
  --steps "${TR_STEPS:-4500}" --holdout "${HOLDOUT:-1000}" --eval-every "${EVAL_EVERY:-500}" --ckpt-every 100000 \
  > "$TR/transformer.log" 2>&1
echo "transformer exit status $?"
wait $!; echo "decoder exit status $?"
cp "$WORK/tr/transformer_best.pt" "$WORK/tr/transformer_log.csv" "$WORK/tr/transformer_eval.csv" "$TR/"
cp "$WORK/dec/decoder_log.csv" "$DEC/"
rm -f "$DEC/tokens_train.npz" "$DEC/tokenizer_ckpt.pt"  # the carried ones: at most 8 files come back
ls -l "$TR" "$DEC"
