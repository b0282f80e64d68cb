#!/usr/bin/env bash
# Make the clips in samples/ with the shipped shapes model, and list each exact command in
# samples/README.md. Run from the repository root after installing vidldm (CPU is fine).
set -euo pipefail
mkdir -p samples
commands=(
  'vidldm generate "a red circle moving right on a black background" --seed 1 -o samples/red-circle-right.gif'
  'vidldm generate "a blue square growing on a white background" --seed 2 -o samples/blue-square-growing.gif'
  'vidldm generate "a yellow triangle moving up on a gray background" --seed 3 -o samples/yellow-triangle-up.gif'
  'vidldm generate "a purple circle shrinking on a black background" --seed 4 -o samples/purple-circle-shrinking.gif'
  'vidldm generate "a cyan square moving left on a gray background" --seed 5 -o samples/cyan-square-left.gif'
  'vidldm animate samples/still.png "a green triangle moving down on a white background" --seed 6 -o samples/animated-still.gif'
)
# The still for the animation: frame 0 of a procedural clip the model never saw (evaluation seed).
python - <<'PY'
import numpy as np
from PIL import Image
from vidldm.data.shapes import random_spec, render_frame
spec = random_spec(np.random.default_rng(2026), shape="triangle", colour="green", background="white", motion="moving down")
Image.fromarray(render_frame(spec, 0)).save("samples/still.png")
PY
{
  echo "# Samples from the shipped shapes model"
  echo
  echo "Made by \`scripts/make_samples.sh\` on a CPU; each clip comes from exactly the command under it"
  # The defaults as the model's own sampling.json gives them, so this line stays true when they change.
  python - <<'PY'
from vidldm.builtin_names import SHAPES_WEIGHTS
from vidldm.sampling_settings import SAMPLING_DEFAULTS, read_sampling_file
s = {**SAMPLING_DEFAULTS, **read_sampling_file(SHAPES_WEIGHTS / "sampling.json")[0]}  # as the pipeline resolves them
free_init = {1: "no FreeInit", 2: "FreeInit twice"}.get(s["free_init"], f"FreeInit {s['free_init']} times")
smoothing = s["temporal_smoothing"]
print(f"(64x64, 16 frames, 8 fps, the model's defaults: {s['num_inference_steps']} steps, guidance {s['guidance_scale']:g}, "
      f"temporal layers for {s['temporal_end']:.0%} of the steps, {free_init}, its temporal decoder"
      + (f", latents smoothed over time with weight {smoothing:g})." if smoothing else ")."))
PY
  echo "\`still.png\` is frame 0 of a procedural clip, made by the script. Not picked: the seeds are 1-6 in order."
  echo "Each \`.png\` beside a clip is its contact sheet: the 16 frames left to right, so the motion reads without"
  echo "playing the gif. How often the model gets colour, shape and motion right over 210 evaluation prompts is in"
  echo "docs/evaluation.md; one of these may miss."
  echo
} > samples/README.md
for cmd in "${commands[@]}"; do
  echo "+ $cmd"
  eval "$cmd -q --overwrite"  # remaking the samples is this script's job
  out=$(echo "$cmd" | sed -E 's/.* -o ([^ ]+).*/\1/')
  # A contact sheet beside each clip (all frames in one row), so the motion reads without playing the gif.
  sheet="${out%.*}.png"
  python -c "import sys; from vidldm.io import read_video, write_grid; write_grid(read_video(sys.argv[1])[0], sys.argv[2], cols=16)" "$out" "$sheet"
  printf '![%s](%s)\n\n![frames of %s](%s)\n\n```\n%s\n```\n\n' "$(basename "$out")" "$(basename "$out")" \
    "$(basename "$out")" "$(basename "$sheet")" "$cmd" >> samples/README.md
done
