"""CPU offload (by model phase, and layer by layer) moves every model before it runs, the UNet and the adapter
included, and changes no output.

There is no GPU here, so "storage" is made real another way: between its phases a model's weights are set
aside and the model is put on the meta device (no data). A model that ran without being loaded first would
fail on meta tensors, and one loaded from the wrong copy would change the output, which must stay bitwise equal.
"""

from itertools import chain

import numpy as np
import pytest
import torch

from tests.conftest import seeded
from vidldm.loading import tiny_pipeline
from vidldm.offload import ModelOffload

ARGS = dict(num_frames=4, height=16, width=16, num_inference_steps=2, output_type="np")
STILL = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)


class MetaStorage(ModelOffload):
    """Offload whose storage empties the model: weights kept aside, the module on "meta"."""

    def __init__(self, groups, device):
        self.kept = {}
        super().__init__(groups, device, storage="meta")

    def move(self, model, target):
        tensors = lambda: chain(model.named_parameters(), model.named_buffers())  # noqa: E731
        if str(target) == "meta":
            if id(model) not in self.kept:
                self.kept[id(model)] = {name: t.detach().clone() for name, t in tensors()}
                model.to("meta")
        elif id(model) in self.kept:
            saved = self.kept.pop(id(model))
            model.to_empty(device=target)
            with torch.no_grad():
                for name, t in tensors():
                    t.copy_(saved[name])


def record_runs(pipe, runs):
    """Forward pre-hooks on a layer of each model, recording the device of its weights when it runs."""
    layers = {"text_encoder": pipe.text_encoder, "unet": pipe.unet.conv_in, "vae_encoder": pipe.vae.encoder,
              "motion_adapter": pipe.motion_adapter.down_blocks[0].motion_modules[0], "vae_decoder": pipe.vae.decoder}
    for name, layer in layers.items():
        layer.register_forward_pre_hook(lambda m, args, name=name: runs.append((name, next(m.parameters()).device.type)))


@pytest.fixture(scope="module")
def plain():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe("a red circle", image=STILL, generator=seeded(1), **ARGS).frames


def test_model_offload_moves_each_model_before_it_runs(plain):
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_model_cpu_offload(device="cpu")
    pipe.model_offload = MetaStorage(pipe.offload_groups(), "cpu")
    assert pipe.unet.device.type == "meta" and pipe.motion_adapter.device.type == "meta"  # stored between calls
    runs = []
    record_runs(pipe, runs)
    frames = pipe("a red circle", image=STILL, generator=seeded(1), **ARGS).frames
    assert np.array_equal(frames, plain)  # bitwise
    assert {name for name, _ in runs} == {"text_encoder", "unet", "motion_adapter", "vae_encoder", "vae_decoder"}
    assert {device for _, device in runs} == {"cpu"}  # never ran while stored
    assert [m for m in pipe.model_offload.moves if m[1] == "device"] == [("text", "device"), ("vae", "device"),
                                                                          ("denoise", "device"), ("vae", "device")]
    assert all(next(m.parameters()).device.type == "meta" for m in (pipe.unet, pipe.motion_adapter, pipe.vae))  # after


def test_only_one_phase_is_loaded_at_a_time():
    models = [torch.nn.Linear(2, 2) for _ in range(3)]
    offload = MetaStorage({"text": [models[0]], "denoise": [models[1]], "vae": [models[2], None]}, "cpu")
    for phase, index in (("text", 0), ("denoise", 1), ("vae", 2)):
        offload.load(phase)
        assert [m.weight.device.type for m in models] == ["cpu" if i == index else "meta" for i in range(3)]


COMPONENTS = ("text_encoder", "unet", "motion_adapter", "vae")


def record_layers(pipe) -> dict[str, list[tuple[str, set[str]]]]:
    """For every layer that holds weights: where its weights are just before its offload hook runs (a forward
    pre-hook), while the layer computes (accelerate keeps the layer's own forward as `_old_forward` and calls it
    between loading and dropping the weights), and just after. Keys: `component.layer`."""
    seen: dict[str, list[tuple[str, set[str]]]] = {}
    for component in COMPONENTS:
        for name, layer in getattr(pipe, component).named_modules():
            if next(layer.parameters(recurse=False), None) is None:
                continue
            key = f"{component}.{name}"

            def where(layer=layer):
                return {p.device.type for p in layer.parameters(recurse=False)}

            def note(stage, key=key, where=where):
                seen.setdefault(key, []).append((stage, where()))

            def computing(*args, _forward=layer._old_forward, note=note, **kwargs):
                note("during")
                return _forward(*args, **kwargs)

            layer._old_forward = computing
            layer.register_forward_pre_hook(lambda m, args, note=note: note("before"))
            layer.register_forward_hook(lambda m, args, out, note=note: note("after"))
    return seen


def test_sequential_offload_runs_every_layer_from_storage(plain):
    """Every layer holding weights (text encoder, UNet, motion adapter, VAE) sits empty ("meta") until its accelerate
    hook moves its weights in, computes with them on the execution device, and is emptied again after; the frames
    are bitwise those of the plain path."""
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_sequential_cpu_offload(device="cpu")
    assert all(p.device.type == "meta" for c in COMPONENTS for p in getattr(pipe, c).parameters())  # stored
    assert pipe._execution_device == torch.device("cpu")
    seen = record_layers(pipe)
    frames = pipe("a red circle", image=STILL, generator=seeded(1), **ARGS).frames
    assert np.array_equal(frames, plain)  # bitwise
    weighted = {f"{c}.{n}" for c in COMPONENTS for n, m in getattr(pipe, c).named_modules()
                if next(m.parameters(recurse=False), None) is not None}
    # every weighted layer ran (the text encoder's projection-free CLIP has none idle), and ran from storage
    assert weighted - set(seen) == set()
    for key, stages in seen.items():
        assert {stage for stage, _ in stages} == {"before", "during", "after"}, key
        assert all(devices == ({"cpu"} if stage == "during" else {"meta"}) for stage, devices in stages), key
    assert {key.split(".")[0] for key in seen} == set(COMPONENTS)
    assert all(p.device.type == "meta" for c in COMPONENTS for p in getattr(pipe, c).parameters())  # after
    pipe.remove_all_hooks()  # and the weights come back where they were
    assert np.array_equal(pipe("a red circle", image=STILL, generator=seeded(1), **ARGS).frames, plain)


def test_sequential_offload_without_a_gpu_says_so():
    from vidldm.errors import VidldmError

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(VidldmError, match="moves weights to a GPU and none is available"):
        tiny_pipeline().enable_sequential_cpu_offload()


def test_model_offload_without_a_gpu_says_so():
    from vidldm.errors import VidldmError

    pipe = tiny_pipeline()
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(VidldmError, match="moves models to a GPU and none is available"):
        pipe.enable_model_cpu_offload()


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_flag_on_a_cpu_is_a_no_op_said_in_one_line(tmp_path, capsys, mode):
    from vidldm.cli import main

    out = tmp_path / "clip.gif"
    assert main(["generate", "x", "--model", "tiny", "--steps", "1", "--height", "16", "--width", "16", "--frames", "2",
                 "-q", "--device", "cpu", "--offload", mode, "--vae-tiling", "-o", str(out)]) == 0
    assert f"--offload {mode} has no effect on cpu" in capsys.readouterr().err
    assert out.exists()


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_the_offload_flag_sets_up_what_makes_the_same_frames(plain, mode):
    """What `--offload` applies on a GPU (`cli.memory_options`), applied here with the CPU as the device: the pipeline's
    weights leave the models between runs, and the frames are bitwise the plain path's."""
    from argparse import Namespace

    from vidldm.cli import memory_options

    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    memory_options(Namespace(offload=mode), "cuda")(pipe, "cpu")
    if mode == "sequential":
        assert pipe.unet.conv_in.weight.device.type == "meta"
    else:
        assert pipe.model_offload is not None
    assert np.array_equal(pipe("a red circle", image=STILL, generator=seeded(1), **ARGS).frames, plain)
