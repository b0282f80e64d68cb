"""Fast paths: each gives the plain path's latents after 25 steps (cosine >= 0.999), keeps checkpoint
keys, and can be switched off again; classifier-free guidance is one batched UNet call."""

import shutil

import pytest
import torch

from tests.conftest import seeded
from vidldm.bench.timing import cosine
from vidldm.loading import tiny_pipeline
from vidldm.models import VideoUNet, fast
from vidldm.models.motion import MotionModule
from vidldm.models.temporal import TemporalAttention

CALL = dict(num_frames=4, height=16, width=16, num_inference_steps=25, guidance_scale=7.5, output_type="latent")


@pytest.fixture(scope="module")
def fast_pipe():  # its own: channels-last and fused projections leave new tensors behind, the same numbers
    p = tiny_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def plain(fast_pipe):
    """Latents after 25 steps on the plain fp32 path: what every fast path is held to."""
    return latents(fast_pipe)


def latents(pipe):
    return pipe("a red circle moving right", generator=seeded(), **CALL).frames


@pytest.fixture
def fresh(fast_pipe):
    """The module's pipeline, put back on the plain path whatever the test switched on."""
    yield fast_pipe
    fast_pipe.disable_fast_paths()


def test_fused_qkv_matches_plain_and_keeps_keys(fresh, plain):
    unet_keys, adapter_keys = set(fresh.unet.state_dict()), set(fresh.motion_adapter.state_dict())
    fresh.fuse_qkv_projections()
    processors = {type(p).__name__ for p in fresh.unet.attn_processors.values()}
    assert processors == {"FusedAttnProcessor"}
    temporal = [m for m in fresh.motion_adapter.modules() if isinstance(m, TemporalAttention)]
    assert temporal and all(m.qkv_weight is not None for m in temporal)
    out = latents(fresh)
    assert out.abs().mean() > 0.1  # a real result, not an empty one
    assert cosine(out, plain) >= 0.999
    torch.testing.assert_close(out, plain, atol=1e-3, rtol=1e-4)
    assert set(fresh.unet.state_dict()) == unet_keys and set(fresh.motion_adapter.state_dict()) == adapter_keys
    fresh.unfuse_qkv_projections()
    assert {type(p).__name__ for p in fresh.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert all(m.qkv_weight is None for m in temporal)


def test_channels_last_matches_plain(fresh, plain):
    fresh.enable_fast_paths(fuse_qkv=False, channels_last=True)
    assert fast.is_channels_last(fresh.unet) and fast.is_channels_last(fresh.vae)
    assert cosine(latents(fresh), plain) >= 0.999
    fresh.disable_fast_paths()
    assert not fast.is_channels_last(fresh.unet)


def test_all_eager_fast_paths_together_match_plain(fresh, plain):
    fresh.enable_fast_paths()  # fused projections + channels-last
    assert cosine(latents(fresh), plain) >= 0.999
    fresh.disable_fast_paths()
    torch.testing.assert_close(latents(fresh), plain, atol=0, rtol=0)  # fully back on the plain path


def test_regional_compile_of_the_motion_modules_matches_plain(fresh, plain):
    # The "eager" backend runs what dynamo captured without generating code: it checks that the
    # regions trace and give the same numbers, in seconds rather than the minutes C++ codegen takes.
    count = fast.compile_regions(fresh.motion_adapter, backend="eager")
    assert count == sum(1 for _ in fresh.motion_adapter.modules() if type(_).__name__ == "MotionModule")
    try:
        assert cosine(latents(fresh), plain) >= 0.999
    finally:
        assert fast.uncompile_regions(fresh.motion_adapter) == count
        torch._dynamo.reset()


def test_compile_regions_picks_the_outermost_blocks():
    compiled = []

    class Spy(torch.nn.Module):
        def compile(self, **kwargs):
            compiled.append(kwargs)

    root = torch.nn.Module()
    root.MotionModule = type("MotionModule", (Spy,), {})()
    root.MotionModule.inner = type("Attention", (Spy,), {})()  # inside a region: not compiled again
    root.other = torch.nn.Sequential(type("ResnetBlock2D", (Spy,), {})())
    assert fast.compile_regions(root, mode="max-autotune") == 2
    assert compiled == [{"mode": "max-autotune"}] * 2
    assert torch._dynamo.config.recompile_limit >= fast.RECOMPILE_LIMIT


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on CPU needs a C++ compiler")
def test_inductor_compiled_motion_module_matches_eager():
    torch.manual_seed(0)
    module = MotionModule(32, heads=4, num_layers=1, max_seq_length=8, norm_num_groups=32, norm_mode="per_frame",
                          temporal_conv=False).eval()
    module.temporal_transformer.proj_out.reset_parameters()  # not the zero init: the output must depend on it
    x = torch.randn(4, 32, 2, 2)
    try:
        with torch.no_grad():
            expected = module(x, 4)
            assert fast.compile_regions(module, dynamic=False) == 1
            got = module(x, 4)
    finally:
        torch._dynamo.reset()
    assert cosine(got, expected) >= 0.999


def test_fused_projections_step_aside_for_training(fast_pipe):
    """With gradients on, the real to_q/to_k/to_v run, so training never sees a stale fused copy."""
    model = VideoUNet(fast_pipe.unet, fast_pipe.motion_adapter)
    fast_pipe.fuse_qkv_projections()
    try:
        x, ctx = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 5, 32)
        model(x, 10, ctx).square().mean().backward()
        temporal = next(m for m in fast_pipe.motion_adapter.modules() if isinstance(m, TemporalAttention))
        spatial = fast_pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
        assert temporal.to_q.weight.grad is not None and spatial.to_q.weight.grad is not None
    finally:
        fast_pipe.unfuse_qkv_projections()
        fast_pipe.unet.zero_grad(set_to_none=True)
        fast_pipe.motion_adapter.zero_grad(set_to_none=True)


def test_guidance_is_one_batched_unet_call_per_step(fast_pipe, monkeypatch):
    batches = []
    forward = VideoUNet.forward

    def spy(self, sample, *args, **kwargs):
        batches.append(sample.shape[0])
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(VideoUNet, "forward", spy)
    fast_pipe(["a", "b"], **{**CALL, "num_inference_steps": 3, "generator": [seeded(0), seeded(1)]})
    assert batches == [4, 4, 4]  # cond + uncond for two prompts, once per step


def test_enable_fast_paths_rejects_compile_options_without_compile(fast_pipe):
    with pytest.raises(ValueError, match="compile=True"):
        fast_pipe.enable_fast_paths(fuse_qkv=False, channels_last=False, compile_options={"mode": "default"})
