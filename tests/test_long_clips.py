"""Long clips: context windows (layout, weights, closed loop), FreeNoise and FreeInit, against diffusers' own code.

What equals diffusers exactly: the window layout and the blend weights of its FreeNoise blocks, FreeNoise's
noise rescheduling (same draws from the same generator), and FreeInit's filter and whole outputs.

Where vidldm differs on purpose: diffusers' FreeNoise windows *inside* every motion-module transformer block
(each window's attention is blended before the feed-forward, which then sees the whole clip), while vidldm
windows the whole UNet call and blends the predictions, so the UNet never holds more than a window's frames
(memory set by the window, not the clip). With motion modules that are identity (a fresh, zero-initialised
adapter) both reduce to the same per-frame model on the same rescheduled noise, and there the whole outputs
are equal; with trained motion modules and a clip longer than a window they are different computations.
"""

import numpy as np
import pytest
import torch
from diffusers.models.attention import FreeNoiseTransformerBlock
from diffusers.pipelines.free_init_utils import FreeInitMixin
from diffusers.utils.torch_utils import randn_tensor

from tests.conftest import seeded
from vidldm.cli import main
from vidldm.errors import VidldmError
from vidldm.free_init import FreeInit, low_pass_filter
from vidldm.loading import tiny_pipeline
from vidldm.models.tiny import tiny_motion_adapter
from vidldm.sampling import ContextWindows, context_windows, freenoise_noise, window_weights

SMALL = dict(height=16, width=16, num_inference_steps=3, output_type="np")


def diffusers_windows(num_frames, length, stride):
    """diffusers' FreeNoise windows: `_get_frame_indices`, plus the window aligned to the clip's end that
    `FreeNoiseTransformerBlock.forward` appends when the strides do not reach it."""
    block = FreeNoiseTransformerBlock(dim=8, num_attention_heads=1, attention_head_dim=8, context_length=length,
                                      context_stride=stride)
    windows = block._get_frame_indices(num_frames)
    if windows[-1][1] != num_frames:
        windows.append((num_frames - length, num_frames))
    return [list(range(a, b)) for a, b in windows], block


@pytest.mark.parametrize("num_frames, length, stride", [(24, 16, 4), (25, 16, 4), (64, 16, 12), (20, 8, 3), (17, 16, 15)])
def test_window_layout_is_diffusers(num_frames, length, stride):
    theirs, _ = diffusers_windows(num_frames, length, stride)
    ours = [list(range(num_frames))[w] for w in context_windows(num_frames, length, stride)]
    assert ours == theirs


@pytest.mark.parametrize("scheme", ["flat", "pyramid", "delayed_reverse_sawtooth"])
@pytest.mark.parametrize("length", [4, 5, 8, 15, 16, 24])
def test_blend_weights_are_diffusers(scheme, length):
    _, block = diffusers_windows(length, length, 1)
    theirs = block._get_frame_weights(length, scheme)
    if scheme == "delayed_reverse_sawtooth" and length % 2:
        # diffusers differs here: for odd lengths its code returns length + 1 weights (so its block fails on
        # them); vidldm gives what its docstring shows, e.g. [0.01, 0.01, 3, 2, 1] for 5
        assert len(theirs) == length + 1
        theirs = theirs[1:]
    assert window_weights(length, 0, scheme).tolist() == pytest.approx(theirs, abs=1e-7)


def frames_of(window):
    return window if isinstance(window, list) else list(range(window.start, window.stop))


def test_closed_loop_windows_join_the_ends():
    windows = [frames_of(w) for w in context_windows(24, 16, 4, closed_loop=True)]
    assert sorted({f for w in windows for f in w}) == list(range(24)) and all(len(w) == 16 for w in windows)
    # in some window frame 23 is followed by frame 0: the model sees them as neighbours
    assert any(w[i] == 23 and w[i + 1] == 0 for w in windows for i in range(15))
    assert all(b - a in (1, -23) for w in windows for a, b in zip(w, w[1:]))  # every window is contiguous mod 24
    # open windows never hold the last and the first frame together
    assert not any(0 in w and 23 in w for w in map(frames_of, context_windows(24, 16, 4)))


def test_closed_loop_blends_every_frame_equally_often_from_wrapped_windows():
    """A closed loop has no edge: with flat weights every frame is in the same number of windows."""
    counts = torch.zeros(24)
    for w in context_windows(24, 16, 4, closed_loop=True):
        counts[frames_of(w)] += 1
    assert counts.unique().tolist() == [4.0]


# ----------------------------------------------------------------------------- FreeNoise

@pytest.fixture(scope="module")
def twins():
    """A vidldm pipeline whose adapter diffusers runs exactly (per-clip normalisation, random weights) and its
    diffusers twin; and the same with a fresh (zero-initialised, identity) adapter."""
    base = tiny_pipeline()
    pipes = {}
    for name, randomize in (("random", True), ("identity", False)):
        ours = base.with_parts(motion_adapter=tiny_motion_adapter(base.unet, randomize=randomize, norm_mode="per_clip"))
        ours.set_progress_bar_config(disable=True)
        theirs = ours.to_diffusers()
        theirs.set_progress_bar_config(disable=True)
        pipes[name] = ours, theirs
    return pipes


@pytest.fixture(autouse=True)
def free_noise_off_after_each_test(request):
    """The twins are shared by the module: a test that switches FreeNoise on must not leave it on for the next
    (diffusers' FreeNoise blocks fail on clips shorter than their window, as FreeInit's 8-frame test runs)."""
    yield
    if "twins" in request.fixturenames:
        for pair in request.getfixturevalue("twins").values():
            for pipe in pair:
                if pipe.free_noise_enabled:
                    pipe.disable_free_noise()


@pytest.mark.parametrize("num_frames, length, stride", [(24, 16, 4), (21, 8, 3), (40, 16, 12)])
def test_noise_rescheduling_is_diffusers(twins, num_frames, length, stride):
    _, theirs = twins["random"]
    theirs.enable_free_noise(context_length=length, context_stride=stride, noise_type="shuffle_context")
    expected = theirs.prepare_latents(1, 4, num_frames, 32, 32, torch.float32, "cpu", seeded(3))
    shape = expected.shape
    generator = seeded(3)
    ours = freenoise_noise(randn_tensor(shape, generator=generator), length, stride, "shuffle_context", generator)
    assert torch.equal(ours, expected)
    assert not torch.equal(ours, randn_tensor(shape, generator=seeded(3)))  # it did reschedule


def test_repeat_context_repeats_the_first_window(twins):
    """diffusers differs here: `_prepare_latents_free_noise` compares `context_length` with the string
    "repeat_context" to pick how many frames to draw, which is never true, so it draws all `num_frames` and
    repeating them changes nothing (its repeat_context equals random). vidldm repeats the first window, as
    the option's documentation says."""
    _, theirs = twins["random"]
    theirs.enable_free_noise(context_length=8, context_stride=4, noise_type="repeat_context")
    noise = randn_tensor((1, 4, 20, 16, 16), generator=seeded(1))
    assert torch.equal(theirs.prepare_latents(1, 4, 20, 32, 32, torch.float32, "cpu", seeded(1)), noise)
    ours = freenoise_noise(noise, 8, 4, "repeat_context")
    assert torch.equal(ours[:, :, 8:16], noise[:, :, :8]) and torch.equal(ours[:, :, 16:], noise[:, :, :4])
    assert torch.equal(freenoise_noise(noise, 8, 4, "random"), noise)


def test_free_noise_outputs_equal_diffusers_where_motion_modules_are_identity(twins):
    ours, theirs = twins["identity"]
    for pipe in (ours, theirs):
        pipe.enable_free_noise(context_length=8, context_stride=4, weighting_scheme="pyramid")
    args = dict(num_frames=20, guidance_scale=7.5, **SMALL)
    a = ours("a red circle", generator=seeded(5), **args).frames
    b = theirs("a red circle", generator=seeded(5), **args).frames
    assert a.shape == b.shape == (1, 20, 16, 16, 3)
    assert np.abs(a - b).max() <= 1e-4
    plain = ours("a red circle", generator=seeded(5), free_noise=False, **args).frames
    assert np.abs(a - plain).max() > 1e-3  # the noise rescheduling is what made them equal


def test_free_noise_within_one_window_equals_diffusers(twins):
    """A clip of exactly one window: diffusers' FreeNoise blocks run one window; vidldm runs the clip whole."""
    ours, theirs = twins["random"]
    for pipe in (ours, theirs):
        pipe.enable_free_noise(context_length=16, context_stride=4)
    a = ours("a red circle", num_frames=16, generator=seeded(2), **SMALL).frames
    b = theirs("a red circle", num_frames=16, generator=seeded(2), **SMALL).frames
    assert np.abs(a - b).max() <= 1e-4


def test_free_noise_switch_and_call_arguments(pipe):
    args = dict(prompt="a", num_frames=20, output_type="latent", height=16, width=16, num_inference_steps=1)
    on = pipe(**args, generator=seeded(0)).frames
    off = pipe(**args, free_noise=False, generator=seeded(0)).frames
    random = pipe(**args, noise_type="random", generator=seeded(0)).frames
    assert torch.equal(off, random) and not torch.equal(on, off)
    pipe.disable_free_noise()
    try:
        assert not pipe.free_noise_enabled
        assert torch.equal(pipe(**args, generator=seeded(0)).frames, off)
        assert torch.equal(pipe(**args, free_noise=True, generator=seeded(0)).frames, on)
    finally:
        pipe.__dict__.pop("_free_noise")


# ----------------------------------------------------------------------------- FreeInit

@pytest.mark.parametrize("method", ["butterworth", "gaussian", "ideal"])
def test_free_init_filter_is_diffusers(method):
    theirs = FreeInitMixin()._get_free_init_freq_filter((1, 4, 8, 6, 10), "cpu", method, 4, 0.25, 0.4)
    ours = low_pass_filter((8, 6, 10), method, 4, 0.25, 0.4)
    assert torch.allclose(ours, theirs[0, 0], atol=1e-7, rtol=0)


@pytest.mark.parametrize("options", [dict(num_iters=2), dict(num_iters=3, use_fast_sampling=True, method="gaussian"),
                                     dict(num_iters=2, method="ideal", spatial_stop_frequency=0.4, order=2)])
def test_free_init_outputs_equal_diffusers(twins, options):
    ours, theirs = twins["random"]
    ours.enable_free_init(**options)
    theirs.enable_free_init(**options)
    try:
        a = ours("a red circle", num_frames=8, generator=seeded(4), **SMALL).frames
        b = theirs("a red circle", num_frames=8, generator=seeded(4), **SMALL).frames
    finally:
        ours.disable_free_init()
        theirs.disable_free_init()
    assert np.abs(a - b).max() <= 1e-4
    plain = ours("a red circle", num_frames=8, generator=seeded(4), **SMALL).frames
    assert np.abs(a - plain).max() > 1e-3


def test_free_init_call_arguments_equal_the_switch(pipe):
    args = dict(prompt="a", num_frames=4, output_type="latent", height=16, width=16, num_inference_steps=2)
    by_call = pipe(**args, free_init=2, free_init_method="gaussian", generator=seeded(0)).frames
    pipe.enable_free_init(2, method="gaussian")
    try:
        assert pipe.free_init_enabled
        assert torch.equal(pipe(**args, generator=seeded(0)).frames, by_call)
    finally:
        pipe.disable_free_init()


def test_free_init_options_with_free_init_off_say_how_to_turn_it_on(pipe):
    args = dict(prompt="a", num_frames=4, output_type="latent", height=16, width=16, num_inference_steps=1)
    for iters in (None, 1):  # left out, or 1: one run, which is plain sampling
        with pytest.raises(VidldmError, match=r"^free_init_method set FreeInit up, but it is off: give free_init "
                                              r"\(iterations\) 2 or more too$"):
            pipe(**args, free_init=iters, free_init_method="gaussian")


def test_free_init_runs_the_loop_again(pipe):
    steps = []
    pipe("a", num_frames=4, height=16, width=16, num_inference_steps=4, output_type="latent", free_init=3,
         free_init_fast_sampling=True, generator=seeded(0), callback_on_step_end=lambda p, i, t, kw: steps.append(i))
    assert steps == [0] + [0, 1] + [0, 1, 2, 3]  # coarse to fine: 4/3, 8/3, 4 steps


def test_a_models_own_free_init_runs_unless_the_call_or_the_switch_says_otherwise(pipe):
    """A model tuned with FreeInit carries it in its sampling defaults: a call that leaves free_init out runs it,
    free_init=1 turns it off, enable_free_init's setting wins over it, and video-to-video skips it."""
    args = dict(prompt="a", num_frames=4, output_type="latent", height=16, width=16, num_inference_steps=2)
    plain = pipe(**args, generator=seeded(0)).frames
    twice = pipe(**args, free_init=2, generator=seeded(0)).frames
    thrice = pipe(**args, free_init=3, generator=seeded(0)).frames
    assert not torch.equal(plain, twice)
    own = pipe.with_parts()
    own.set_generation_defaults(free_init=2)
    assert own.sampling_defaults()["free_init"] == 2 and pipe.sampling_defaults()["free_init"] == 1
    assert torch.equal(own(**args, generator=seeded(0)).frames, twice)
    assert torch.equal(own(**args, free_init=1, generator=seeded(0)).frames, plain)
    own.enable_free_init(3)
    assert torch.equal(own(**args, generator=seeded(0)).frames, thrice)
    own.disable_free_init()
    video = np.zeros((4, 16, 16, 3), np.uint8)
    restyled = dict(video=video, num_inference_steps=2, output_type="latent", strength=0.5)
    assert torch.equal(own("a", **restyled, generator=seeded(1)).frames, pipe("a", **restyled, generator=seeded(1)).frames)


def test_the_cli_records_the_models_free_init_and_restyle_skips_it(tmp_path, capsys):
    """The sidecar says how many FreeInit runs made the clip (1: none), so a replay is the same clip even after the
    model's default changes; restyle has no --free-init and ignores the model's."""
    import json

    from vidldm.loading import tiny_pipeline

    model = tiny_pipeline()
    model.set_generation_defaults(free_init=2, num_inference_steps=1)
    model.save_pretrained(tmp_path / "model")
    small = ["--height", "16", "--width", "16", "--frames", "4", "-q"]
    assert main(["generate", "x", "--model", str(tmp_path / "model"), *small, "-o", str(tmp_path / "a.gif")]) == 0
    assert main(["generate", "x", "--model", "tiny", "--steps", "1", *small, "-o", str(tmp_path / "b.gif")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["free_init"] == 2
    assert json.loads((tmp_path / "b.json").read_text())["free_init"] == 1
    assert main(["restyle", str(tmp_path / "a.gif"), "y", "--model", str(tmp_path / "model"), "-q",
                 "-o", str(tmp_path / "c.gif")]) == 0
    assert "free_init" not in json.loads((tmp_path / "c.json").read_text())
    capsys.readouterr()


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, message", [
    (dict(num_frames=8, context_frames=12), "context_frames (12) is longer than the clip"),
    (dict(num_frames=40, context_frames=32), "context_frames must be between 1 and 16"),
    (dict(num_frames=20, context_stride=0), "context_stride must be between 1 and 15"),
    (dict(num_frames=20, context_stride=16), "context_stride must be between 1 and 15"),
    (dict(num_frames=20, context_overlap=0), "context_overlap must be between 1 and 15"),
    (dict(num_frames=20, context_stride=4, context_overlap=4), "disagree"),
    (dict(num_frames=16, closed_loop=True), "closed_loop needs a clip longer than one context window"),
    (dict(num_frames=20, weighting_scheme="bell"), "weighting scheme must be one of"),
    (dict(num_frames=20, noise_type="fresh"), "noise_type must be one of"),
    (dict(num_frames=20, free_noise=False, noise_type="repeat_context"), "free_noise=False turns off"),
    (dict(num_frames=4, free_init=0), "between 1 and 10"),
    (dict(num_frames=4, free_init=100), "between 1 and 10"),
    (dict(num_frames=4, free_init_method="box", free_init=2), "free_init_method must be one of"),
    (dict(num_frames=4, free_init_method="gaussian"), "give free_init"),
])
def test_bad_long_clip_arguments_are_one_line(pipe, kwargs, message):
    with pytest.raises(VidldmError, match="^[^\n]*$") as info:
        pipe("a", height=16, width=16, num_inference_steps=1, output_type="latent", **kwargs)
    assert message in str(info.value)


def test_free_init_refuses_restyle(pipe):
    video = np.zeros((4, 16, 16, 3), np.uint8)
    with pytest.raises(VidldmError, match="FreeInit restarts sampling from noise"):
        pipe("a", video=video, free_init=2, num_inference_steps=1, output_type="latent")


@pytest.mark.parametrize("argv, message", [
    (["--frames", "8", "--context-frames", "12"], "context_frames (12) is longer than the clip"),
    (["--frames", "40", "--context-frames", "32"], "context_frames must be between 1 and 16"),
    (["--frames", "20", "--context-stride", "0"], "--context-stride must be at least 1"),
    (["--frames", "20", "--context-stride", "16"], "context_stride must be between 1 and 15"),
    (["--free-init", "0"], "--free-init must be between 1 and 10"),
    (["--free-init", "100"], "--free-init must be between 1 and 10"),
    (["--offload", "gpu"], "invalid choice: 'gpu'"),
    (["--frames", "16", "--closed-loop"], "closed_loop needs a clip longer"),
])
def test_bad_long_clip_flags_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    before = set(tmp_path.iterdir())
    try:
        code = main(["generate", "x", "--model", "tiny", "--steps", "1", "--height", "16", "--width", "16", "-q",
                     "-o", str(tmp_path / "out.gif"), *argv])
    except SystemExit as e:  # argparse's own errors (an unknown choice) exit from parsing
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("vidldm: error: ") and message in err[0]
    assert set(tmp_path.iterdir()) == before


def test_long_clip_flags_reach_the_pipeline_and_the_sidecar(tmp_path, capsys):
    import json

    out = tmp_path / "loop.gif"
    assert main(["generate", "x", "--model", "tiny", "--steps", "1", "--height", "16", "--width", "16", "-q",
                 "--frames", "20", "--context-frames", "8", "--context-stride", "4", "--closed-loop", "--no-free-noise",
                 "--free-init", "2", "--decode-chunk", "3", "-o", str(out)]) == 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert {k: saved[k] for k in ("context_frames", "context_stride", "closed_loop", "free_noise", "free_init")} == {
        "context_frames": 8, "context_stride": 4, "closed_loop": True, "free_noise": False, "free_init": 2}
    capsys.readouterr()
    again = tmp_path / "again.gif"
    assert main(["replay", str(out.with_suffix(".json")), "-o", str(again), "-q"]) == 0
    assert json.loads(again.with_suffix(".json").read_text())["closed_loop"] is True


def test_context_windows_checks_its_arguments():
    with pytest.raises(ValueError, match="stride"):
        ContextWindows(16, 16)
    with pytest.raises(ValueError, match="stride"):
        context_windows(20, 16, 0)
    assert FreeInit(2).steps(10, 0) == 10 and FreeInit(2, use_fast_sampling=True).steps(10, 0) == 5


def test_closed_loop_brings_the_last_frame_back_to_the_first_on_the_shapes_model():
    """The shipped model, 24 frames in windows of 12: with the windows wrapping around, the last frame is
    closer to the first (measured: mean |last - first| 0.073 -> 0.033 for this seed, 0.053 -> 0.036 for seed 0;
    a frame-to-frame step is about 0.03)."""
    from vidldm.loading import load_pipeline

    pipe = load_pipeline("shapes", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    gap = {}
    for loop in (False, True):
        f = pipe("a red circle moving right on a black background", num_frames=24, context_frames=12, context_stride=6,
                 closed_loop=loop, num_inference_steps=8, output_type="np", generator=seeded(1)).frames[0]
        gap[loop] = np.abs(f[-1] - f[0]).mean()
    assert gap[True] < 0.75 * gap[False]
