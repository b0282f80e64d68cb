#!/usr/bin/env bash
# Reproduce the shipped "shapes" model from nothing: data -> VAE -> latent cache -> image UNet ->
# motion adapter -> fp16 export into vidldm/weights/shapes. Run from the repository root.
# CPU: about an hour on 2 cores. GPU: add --set train.mixed_precision=bf16 (and raise batch sizes).
set -euo pipefail
N=${N:-3000}
[ -d data/shapes ] || vidldm make-shapes data/shapes --n "$N" --seed 0
vidldm train configs/shapes/vae.yaml
vidldm cache configs/shapes/vae.yaml runs/shapes/cache --overwrite \
    --set model.pretrained=runs/shapes/vae/pipeline --set data.num_frames=16 --set data.stride=1
# The decoder keeps training with the encoder frozen (latents unchanged) while the image stage runs.
# One thread each: two OpenMP jobs sharing 2 cores with 2 threads each run many times slower.
OMP_NUM_THREADS=1 vidldm train configs/shapes/vae_decoder.yaml &
decoder=$!
OMP_NUM_THREADS=1 vidldm train configs/shapes/image.yaml
vidldm train configs/shapes/temporal.yaml
wait "$decoder"
python scripts/export_shapes.py runs/shapes/temporal/pipeline vidldm/weights/shapes --vae runs/shapes/vae_decoder/vae
