#!/usr/bin/env bash
# Reproduce the shipped "shapes" model from nothing: data -> VAE -> latent cache -> image UNet ->
# motion adapter (ten temporal stages) -> temporal decoder -> keyframe encoder -> fp16 export into
# vidldm/weights/shapes.
# Run from the repository root. Each stage is a plain `vidldm train` recipe in configs/shapes/.
#
# CPU (2 cores): about 8 hours, measured stage by stage in docs/shapes-model.md.
# GPU: EXTRA="--set train.mixed_precision=bf16" bash scripts/train_shapes.sh (the same recipes;
# raise train.batch_size with --set as memory allows, and lower max_steps to match).
# QUICK=1: a CPU run that fits in a working session (from nothing: about 1 h 45 min, measured): the same
# recipes with fewer steps (the number after each stage below), the first three temporal stages only, and no
# export: the package keeps its weights, and `vidldm eval shapes --model runs/shapes/temporal_refine/pipeline`
# measures the result (docs/shapes-model.md has its numbers; the pipeline carries the sampling defaults).
# RESUME=1: continue a run that stopped (a closed session, a time limit): stages this script finished with
# the same QUICK, SMOKE and EXTRA are kept, a stage stopped part-way continues from its last checkpoint
# (`vidldm train --resume latest`, exactly where it stopped), and the rest run as usual.
# SMOKE=1: the whole chain in minutes, to check it before a long run (a GPU lease): 64 clips in
# data/shapes-smoke, every stage 2 steps, all of it in runs/shapes-smoke (the export too, not the package),
# so a long run's folders are never touched; the model it makes is noise.
set -euo pipefail
EXTRA=${EXTRA:-}
QUICK=${QUICK:-0}
RESUME=${RESUME:-0}
SMOKE=${SMOKE:-0}
if [ "$QUICK" = 1 ] && [ "$SMOKE" = 1 ]; then
    echo "train_shapes.sh: QUICK=1 and SMOKE=1 are two different runs; give one" >&2
    exit 1
fi
CLIPS=3000 DATA=data/shapes RUNS=runs/shapes DEST=vidldm/weights/shapes
if [ "$SMOKE" = 1 ]; then CLIPS=64 DATA=data/shapes-smoke RUNS=runs/shapes-smoke DEST=runs/shapes-smoke/export; fi
N=${N:-$CLIPS}
MODE="QUICK=$QUICK SMOKE=$SMOKE EXTRA=$EXTRA"
LAST=

# Each step records in FOLDER/.train_shapes what it is doing ("started ..." then "finished ..."), with
# QUICK, SMOKE and EXTRA, so RESUME=1 neither keeps nor continues a stage made for another mode.
mark() { echo "$1 $MODE $2" >"$3/.train_shapes"; }

# state FOLDER WHAT: with RESUME=1, "finished" or "started" where FOLDER holds WHAT made with these
# settings, else "new"; a folder made with other settings stops the script.
state() {
    local marker=$1/.train_shapes line
    if [ "$RESUME" != 1 ] || [ ! -f "$marker" ]; then echo new; return; fi
    line=$(cat "$marker")
    case "$line" in
        "finished $MODE $2") echo finished ;;
        "started $MODE $2") echo started ;;
        *) echo "train_shapes.sh: $1 was made by another run ($line); remove it or rerun with its settings" >&2
           exit 1 ;;
    esac
}

# stage NAME QUICK_STEPS [FLAGS...]: train configs/shapes/NAME.yaml (into runs/shapes/NAME) with FLAGS; a quick run
# caps it at QUICK_STEPS steps, or skips it where that is 0; a smoke run caps every stage at 2 steps and
# points it at runs/shapes-smoke (its output, the cache, and the stage before it: the recipes form one chain).
stage() {
    local name=$1 quick_steps=$2 cap=() more=() now given=("${@:3}")
    local out=$RUNS/$name
    if [ "$QUICK" = 1 ]; then
        [ "$quick_steps" = 0 ] && return 0
        cap=(--set "train.max_steps=$quick_steps")
    fi
    if [ "$SMOKE" = 1 ]; then
        cap=(--set "data.root=$DATA" --set "output_dir=$out" --set train.max_steps=2 --set train.warmup_steps=0)
        if [ -n "$LAST" ]; then
            cap+=(--set "model.pretrained=$LAST/pipeline")
            # The decoder stage learns from the videos' pixels; the others read the latent cache.
            [ "$name" = decoder_temporal ] || cap+=(--set "data.latent_cache=$RUNS/cache")
        fi
    fi
    now=$(state "$out" "${cap[*]}")
    LAST=$out
    if [ "$now" = finished ]; then echo "RESUME=1: keeping $out"; return 0; fi
    if [ "$now" = started ] && compgen -G "$out/checkpoints/step-*/state.json" >/dev/null; then
        more=(--resume latest)
    else  # a fresh start: an earlier run's checkpoints there must not be what a later RESUME=1 continues
        rm -rf "$out/checkpoints"
    fi
    mkdir -p "$out" && mark started "${cap[*]}" "$out"
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    vidldm train "configs/shapes/$name.yaml" "${given[@]}" "${cap[@]}" "${more[@]}" $EXTRA
    mark finished "${cap[*]}" "$out"
}

[ -d $DATA ] || vidldm make-shapes $DATA --n "$N" --seed 0
stage vae 1500
# Encode every clip and caption once: the image and temporal stages read latents, not videos.
cache=$(state $RUNS/cache cache)
if [ "$cache" != finished ]; then
    vidldm cache configs/shapes/vae.yaml $RUNS/cache --overwrite --set "data.root=$DATA" \
        --set model.pretrained=$RUNS/vae/pipeline --set data.num_frames=16 --set data.stride=1
    mark finished cache $RUNS/cache
fi
stage image 3000
stage image_refine 1500
# (configs/shapes/vae_decoder.yaml sharpens the decoder with the encoder frozen; the shipped weights keep the
# stage-1 VAE, whose round trip the evaluation's ceiling row measures.)
stage temporal 800
# Direction words: spatio-temporal attention, one known frame at most, then the noisier timesteps.
stage temporal_motion 1200
stage temporal_refine 1500
# Four more cosine cycles from the EMA at lower rates: direction words were still improving.
stage temporal_more 0
stage temporal_polish 0
stage temporal_polish2 0
stage temporal_polish3 0
# Squares' corners: the loss weighted toward the object, then the cleaner timesteps drawn more often.
stage temporal_object 0
stage temporal_object2 0
# Keyframes anywhere (in-betweening, frame-rate upsampling) and a loss against flicker (stage 3j, shipped 2026-12-06;
# its recipe starts from the shipped weights, here from this run's).
stage temporal_smooth 0 --set "model.pretrained=$LAST/pipeline"
# Temporal decoder layers that undo the frame-to-frame jitter sampling leaves in the latents (stage 1c; the VAE,
# UNet and adapter stay as they are), measured in docs/shapes-model.md ("Smoothness").
stage decoder_temporal 0 --set "model.pretrained=$LAST/pipeline"
# The keyframe encoder, for the frozen model (its recipes start from the shipped model; here from this run's).
stage keyframe 0 --set "model.pretrained=$LAST/pipeline"
# Its second cycle, the keyframes' frames weighted 4x (ends within 3 px of the keyframes in 94% of clips, from 86%).
stage keyframe_ends 0 --set "model.pretrained=$LAST/pipeline" --set "model.sparsectrl=$LAST/sparsectrl"
if [ "$QUICK" = 1 ]; then
    echo "quick run done: the model is $LAST/pipeline (vidldm generate \"a red circle moving right on a black background\" --model $LAST/pipeline)"
else
    python scripts/export_shapes.py "$LAST/pipeline" "$DEST"  # with the keyframe encoder in pipeline/sparsectrl
    if [ "$SMOKE" = 1 ]; then
        echo "smoke run done: every stage ran and exported into $DEST (vidldm generate \"a red circle\" --model $DEST)"
    fi
fi
