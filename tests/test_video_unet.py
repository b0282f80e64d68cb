"""VideoUNet: image model untouched, diffusers parity, per-frame timesteps and embeddings, errors."""

import pytest
import torch
from diffusers import UNetMotionModel

from tests.conftest import fold
from vidldm.errors import ShapeError
from vidldm.models import VideoUNet, to_diffusers
from vidldm.models.motion_formats import load_motion_adapter
from vidldm.models.tiny import tiny_motion_adapter, tiny_unet


def clip(b=2, f=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, f, 16, 16, generator=g), torch.randn(b, 7, 32, generator=g)


@torch.no_grad()
def test_fresh_adapter_leaves_image_model_unchanged(unet, zero_adapter):
    x, ctx = clip()
    video = VideoUNet(unet, zero_adapter)(x, 500, ctx)
    image = unet(fold(x), 500, ctx.repeat_interleave(6, 0)).sample
    assert (fold(video) - image).abs().max() <= 1e-5


@torch.no_grad()
def test_temporal_off_is_the_image_model_frame_by_frame(unet, random_adapter):
    x, ctx = clip()
    model = VideoUNet(unet, random_adapter)
    image = unet(fold(x), 500, ctx.repeat_interleave(6, 0)).sample
    assert (fold(model(x, 500, ctx, temporal=False)) - image).abs().max() <= 1e-5
    assert (fold(model(x, 500, ctx)) - image).abs().max() > 1e-3  # the random adapter does act when on


@torch.no_grad()
def test_unet_state_dict_keys_unchanged(unet, zero_adapter):
    keys = set(tiny_unet().state_dict())
    VideoUNet(unet, zero_adapter)
    assert set(unet.state_dict()) == keys


@torch.no_grad()
def test_parity_with_diffusers_unet_motion_model(unet):
    adapter = tiny_motion_adapter(unet, randomize=True, norm_mode="per_clip")
    x, ctx = clip()
    ours = VideoUNet(unet, adapter)(x, 321, ctx)
    theirs = UNetMotionModel.from_unet2d(unet, to_diffusers(adapter)).eval()
    # diffusers' UNetMotionModel takes the text embeddings already repeated per frame.
    ref = theirs(x, 321, ctx.repeat_interleave(6, 0)).sample
    assert ours.abs().mean() > 0.01  # a real, non-trivial output
    assert (ours - ref).abs().max() <= 1e-4
    plain = VideoUNet(unet, tiny_motion_adapter(unet))(x, 321, ctx)
    assert (ours - plain).abs().max() > 1e-2  # and the temporal layers matter


@torch.no_grad()
def test_equal_per_frame_timesteps_match_single_timestep(unet, random_adapter):
    model = VideoUNet(unet, random_adapter)
    x, ctx = clip()
    single = model(x, 250, ctx)
    torch.testing.assert_close(model(x, torch.full((2, 6), 250), ctx), single, atol=1e-6, rtol=0)
    torch.testing.assert_close(model(x, torch.tensor([250, 250]), ctx), single, atol=1e-6, rtol=0)
    per_frame_ctx = ctx[:, None].expand(2, 6, 7, 32)
    torch.testing.assert_close(model(x, 250, per_frame_ctx), single, atol=1e-6, rtol=0)


@torch.no_grad()
def test_each_frame_uses_its_own_timestep_and_prompt(unet, zero_adapter):
    model = VideoUNet(unet, zero_adapter)
    x, ctx = clip(b=1, f=3)
    t = torch.tensor([[0, 400, 999]])
    frame_ctx = torch.randn(1, 3, 7, 32)
    out = model(x, t, frame_ctx)
    for k in range(3):
        alone = unet(x[:, :, k], t[0, k], frame_ctx[:, k]).sample
        assert (out[:, :, k] - alone).abs().max() <= 1e-5


@torch.no_grad()
def test_frames_talk_only_through_temporal_layers(unet, zero_adapter, random_adapter):
    x, ctx = clip()
    x2 = x.clone()
    x2[:, :, 4] += 1.0
    for adapter, should_change in ((random_adapter, True), (zero_adapter, False)):
        model = VideoUNet(unet, adapter)
        a, b = model(x, 100, ctx), model(x2, 100, ctx)
        other_frames_changed = (a[:, :, :4] - b[:, :, :4]).abs().max() > 1e-5
        assert bool(other_frames_changed) is should_change
        assert (a[:, :, 4] - b[:, :, 4]).abs().max() > 1e-5


def test_gradient_checkpointing_gives_same_grads(unet, random_adapter):
    model = VideoUNet(unet, random_adapter)
    x, ctx = clip(b=1, f=4)

    def grads(checkpointing):
        model.enable_gradient_checkpointing(checkpointing)
        model.zero_grad()
        model(x, 10, ctx).square().mean().backward()
        return [p.grad.clone() for p in random_adapter.parameters()]

    plain, ckpt = grads(False), grads(True)
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in plain)
    model.zero_grad()
    model.enable_gradient_checkpointing(False)


def test_odd_latent_sizes(unet, zero_adapter):
    x = torch.randn(1, 4, 2, 13, 10)
    with torch.no_grad():
        out = VideoUNet(unet, zero_adapter)(x, 1, torch.randn(1, 7, 32))
    assert out.shape == x.shape


def test_bad_inputs_have_clear_errors(unet, zero_adapter):
    model = VideoUNet(unet, zero_adapter)
    ctx = torch.randn(1, 7, 32)
    with pytest.raises(ShapeError, match=r"\(B, C, F, H, W\)"):
        model(torch.randn(1, 4, 16, 16), 1, ctx)
    with pytest.raises(ShapeError, match="3 channels but the UNet takes 4"):
        model(torch.randn(1, 3, 2, 16, 16), 1, ctx)
    with pytest.raises(ShapeError, match="context windows"):
        model(torch.randn(1, 4, 17, 8, 8), 1, ctx)
    with pytest.raises(ShapeError, match="timestep"):
        model(torch.randn(1, 4, 2, 8, 8), torch.zeros(1, 3), ctx)
    with pytest.raises(ShapeError, match="encoder_hidden_states"):
        model(torch.randn(1, 4, 2, 8, 8), 1, torch.randn(2, 7, 32))


def test_adapter_for_another_unet_is_rejected(unet):
    other = tiny_unet(block_out_channels=(32, 96))
    with pytest.raises(ShapeError, match="down_blocks.1 has 64 channels in the UNet but 96"):
        VideoUNet(unet, tiny_motion_adapter(other))
    fewer = tiny_unet(layers_per_block=1)
    with pytest.raises(ShapeError, match="down_blocks.0 has 2 layers in the UNet but 1 motion modules"):
        VideoUNet(unet, tiny_motion_adapter(fewer))


@torch.no_grad()
def test_sdxl_style_added_conditions_are_shared_by_frames():
    """SDXL-shaped UNets (text_time added embeddings) work; the conditions apply to every frame."""
    unet = tiny_unet(addition_embed_type="text_time", addition_time_embed_dim=8,
                     projection_class_embeddings_input_dim=16 + 6 * 8)
    model = VideoUNet(unet, tiny_motion_adapter(unet))
    x, ctx = clip(b=2, f=3)
    cond = {"text_embeds": torch.randn(2, 16), "time_ids": torch.randn(2, 6)}
    out = model(x, 10, ctx, added_cond_kwargs=cond)
    per_frame = {k: v.repeat_interleave(3, 0) for k, v in cond.items()}
    image = unet(fold(x), 10, ctx.repeat_interleave(3, 0), added_cond_kwargs=per_frame).sample
    assert (fold(out) - image).abs().max() <= 1e-5


@torch.no_grad()
def test_text_attending_adapter_starts_as_the_image_model_and_then_reads_the_prompt(unet):
    fresh = tiny_motion_adapter(unet, cross_attention_dim=32)
    x, ctx = clip()
    image = unet(fold(x), 500, ctx.repeat_interleave(6, 0)).sample
    assert (fold(VideoUNet(unet, fresh)(x, 500, ctx)) - image).abs().max() <= 1e-5  # zero-init holds

    with_text = tiny_motion_adapter(unet, randomize=True, cross_attention_dim=32)
    plain = tiny_motion_adapter(unet)
    plain.load_state_dict({k: v for k, v in with_text.state_dict().items() if ".text_" not in k})
    other = ctx.clone()
    other[:, 3:] += 1.0  # another prompt
    a, b = VideoUNet(unet, with_text), VideoUNet(unet, plain)
    # The temporal layers' own reading of the prompt: the change a new prompt makes beyond what the
    # spatial layers (shared by both models) pass on.
    own = (a(x, 500, ctx) - a(x, 500, other)) - (b(x, 500, ctx) - b(x, 500, other))
    assert own.abs().max() > 1e-3
    for m in with_text.modules():  # silence the text attention: the plain adapter again
        if hasattr(m, "text_attention") and m.text_attention is not None:
            m.text_attention.to_out[0].weight.zero_()
            m.text_attention.to_out[0].bias.zero_()
    torch.testing.assert_close(a(x, 500, other), b(x, 500, other), atol=1e-5, rtol=0)


def test_text_attending_adapter_checks_its_text_width_and_export_formats(unet, tmp_path):
    from vidldm.errors import CheckpointError
    from vidldm.models.motion_formats import save_animatediff

    with pytest.raises(ShapeError, match="read 48-d text embeddings but the UNet's text encoder gives 32-d"):
        VideoUNet(unet, tiny_motion_adapter(unet, cross_attention_dim=48))
    adapter = tiny_motion_adapter(unet, cross_attention_dim=32)
    with pytest.raises(CheckpointError, match="save_pretrained"):
        save_animatediff(adapter, tmp_path / "mm.safetensors")
    with pytest.raises(CheckpointError, match="no text cross-attention"):
        to_diffusers(adapter)
    adapter.save_pretrained(tmp_path / "adapter")

    again = load_motion_adapter(str(tmp_path / "adapter"))
    assert again.config.cross_attention_dim == 32
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in adapter.state_dict().items())


@torch.no_grad()
def test_adapter_grows_spatiotemporal_layers_as_identity_and_saves_them(unet, tmp_path):
    from vidldm.errors import CheckpointError
    from vidldm.models.motion_formats import save_animatediff

    adapter = tiny_motion_adapter(unet, randomize=True, cross_attention_dim=32)
    grown = adapter.with_spatiotemporal([1])
    levels = {n.rsplit(".motion_modules", 1)[0] for n, m in grown.named_modules() if n.endswith("spatiotemporal") and m is not None}
    assert levels == {"down_blocks.1", "mid_block", "up_blocks.0"}  # the coarsest of the tiny UNet's two levels
    x, ctx = clip()
    torch.testing.assert_close(VideoUNet(unet, grown)(x, 500, ctx), VideoUNet(unet, adapter)(x, 500, ctx), atol=1e-5, rtol=0)
    grown.save_pretrained(tmp_path / "adapter")
    again = load_motion_adapter(str(tmp_path / "adapter"))
    assert again.config.spatiotemporal_levels == [1]
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in grown.state_dict().items())
    with pytest.raises(CheckpointError, match="save_pretrained"):
        save_animatediff(grown, tmp_path / "mm.safetensors")
    with pytest.raises(ValueError, match="spatiotemporal_levels must be UNet levels"):
        adapter.with_spatiotemporal([5])
