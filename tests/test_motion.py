"""MotionAdapter: layouts derived from UNet configs, AnimateDiff checkpoints, diffusers conversion."""

import os

import pytest
import torch
from diffusers import MotionAdapter as DiffusersMotionAdapter
from safetensors.torch import save_file

from vidldm.errors import CheckpointError
from vidldm.models import MotionAdapter, from_diffusers, load_motion_adapter, save_animatediff, to_diffusers
from vidldm.models.motion_formats import read_state_dict
from vidldm.models.temporal import sinusoidal_positions

SD15 = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, mid_block_type="UNetMidBlock2DCrossAttn")


def animatediff_checkpoint(channels=(32, 64), per_block=2, mid=True, pe_len=32, seed=0):
    """A state dict in the original AnimateDiff key layout, written out by hand from the key scheme."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def module(prefix, c):
        t = f"{prefix}.temporal_transformer"
        sd[f"{t}.norm.weight"], sd[f"{t}.norm.bias"] = torch.randn(c, generator=g), torch.randn(c, generator=g)
        for name in ("proj_in", "proj_out"):
            sd[f"{t}.{name}.weight"], sd[f"{t}.{name}.bias"] = torch.randn(c, c, generator=g), torch.randn(c, generator=g)
        b = f"{t}.transformer_blocks.0"
        for a in (0, 1):
            for p in ("to_q", "to_k", "to_v"):
                sd[f"{b}.attention_blocks.{a}.{p}.weight"] = torch.randn(c, c, generator=g)
            sd[f"{b}.attention_blocks.{a}.to_out.0.weight"] = torch.randn(c, c, generator=g)
            sd[f"{b}.attention_blocks.{a}.to_out.0.bias"] = torch.randn(c, generator=g)
            sd[f"{b}.attention_blocks.{a}.pos_encoder.pe"] = sinusoidal_positions(pe_len, c)
            sd[f"{b}.norms.{a}.weight"], sd[f"{b}.norms.{a}.bias"] = torch.randn(c, generator=g), torch.randn(c, generator=g)
        sd[f"{b}.ff.net.0.proj.weight"] = torch.randn(8 * c, c, generator=g)
        sd[f"{b}.ff.net.0.proj.bias"] = torch.randn(8 * c, generator=g)
        sd[f"{b}.ff.net.2.weight"] = torch.randn(c, 4 * c, generator=g)
        sd[f"{b}.ff.net.2.bias"] = torch.randn(c, generator=g)
        sd[f"{b}.ff_norm.weight"], sd[f"{b}.ff_norm.bias"] = torch.randn(c, generator=g), torch.randn(c, generator=g)

    for i, c in enumerate(channels):
        for j in range(per_block):
            module(f"down_blocks.{i}.motion_modules.{j}", c)
    for i, c in enumerate(reversed(channels)):
        for j in range(per_block + 1):
            module(f"up_blocks.{i}.motion_modules.{j}", c)
    if mid:
        module("mid_block.motion_modules.0", channels[-1])
    return sd


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_layout_from_sd15_config_matches_diffusers_size():
    with torch.device("meta"):
        ours = MotionAdapter.from_unet_config(SD15)
        theirs = DiffusersMotionAdapter(block_out_channels=SD15["block_out_channels"], motion_layers_per_block=2)
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in theirs.parameters())
    assert 450e6 < n_ours < 456e6  # AnimateDiff v2 for SD 1.5: ~453M parameters
    assert len(ours.down_blocks[0].motion_modules) == 2 and len(ours.up_blocks[0].motion_modules) == 3


def test_layout_from_sdxl_config():
    sdxl = dict(block_out_channels=(320, 640, 1280), layers_per_block=2, mid_block_type="UNetMidBlock2DCrossAttn")
    with torch.device("meta"):
        adapter = MotionAdapter.from_unet_config(sdxl, use_mid_block=False)
    assert [m.motion_modules[0].channels for m in adapter.up_blocks] == [1280, 640, 320]
    assert adapter.mid_block is None


@pytest.mark.parametrize(
    "version, mid, pe_len, suffix",
    [("v1", False, 24, ".ckpt"), ("v2", True, 32, ".ckpt"), ("v2", True, 32, ".safetensors")],
)
def test_animatediff_checkpoint_loads_and_round_trips(tmp_path, version, mid, pe_len, suffix):
    sd = animatediff_checkpoint(mid=mid, pe_len=pe_len)
    path = tmp_path / f"mm_{version}{suffix}"
    if suffix == ".ckpt":
        torch.save({"state_dict": sd}, path)  # some releases wrap the tensors
    else:
        save_file(sd, str(path))

    adapter = load_motion_adapter(path)
    assert adapter.config.max_seq_length == pe_len
    assert adapter.config.use_mid_block is mid
    assert adapter.config.norm_mode == "per_frame"  # the original AnimateDiff semantics
    assert_same_tensors(adapter.state_dict(), sd)  # nothing missing, nothing unexpected, same values

    adapter.save_pretrained(tmp_path / "ours")
    assert_same_tensors(MotionAdapter.from_pretrained(tmp_path / "ours").state_dict(), sd)

    theirs = to_diffusers(adapter)
    theirs.save_pretrained(tmp_path / "diffusers")
    assert_same_tensors(load_motion_adapter(tmp_path / "diffusers").state_dict(), sd)
    assert_same_tensors(from_diffusers(theirs).state_dict(), sd)

    save_animatediff(adapter, tmp_path / "again.safetensors")
    assert_same_tensors(read_state_dict(tmp_path / "again.safetensors"), sd)


def test_checkpoint_without_position_tables_loads(tmp_path):
    sd = {k: v for k, v in animatediff_checkpoint().items() if not k.endswith("pos_encoder.pe")}
    torch.save(sd, tmp_path / "mm.ckpt")
    adapter = load_motion_adapter(tmp_path / "mm.ckpt")
    assert adapter.config.max_seq_length == 32


def test_unsafe_pickle_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"state_dict": {"x": Payload()}}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="arbitrary code"):
        load_motion_adapter(tmp_path / "evil.ckpt")


@pytest.mark.parametrize("name, content", [("junk.ckpt", os.urandom(512)), ("junk.safetensors", b"not safetensors")])
def test_corrupt_checkpoint(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_motion_adapter(tmp_path / name)


def test_unknown_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_motion_adapter(tmp_path / "nope.ckpt")
    (tmp_path / "weights.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        load_motion_adapter(tmp_path / "weights.onnx")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "unet.ckpt")
    with pytest.raises(CheckpointError, match="no motion-module weights"):
        load_motion_adapter(tmp_path / "unet.ckpt")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        load_motion_adapter(tmp_path / "empty_folder")


def test_adapter_folder_missing_weights_is_one_clear_error(tmp_path):
    """diffusers would leave absent weights as meta tensors that fail at the first forward pass."""
    from safetensors.torch import load_file

    from vidldm.loading import tiny_pipeline

    tiny_pipeline().motion_adapter.save_pretrained(tmp_path / "adapter")
    weights = tmp_path / "adapter" / "diffusion_pytorch_model.safetensors"
    sd = load_file(weights)
    dropped = sorted(sd)[0]
    save_file({k: v for k, v in sd.items() if k != dropped}, weights)
    with pytest.raises(CheckpointError, match=f"lacks 1 weights .*first: {dropped}"):
        load_motion_adapter(tmp_path / "adapter")
    with pytest.raises(CheckpointError, match="lacks 1 weights"):
        MotionAdapter.from_pretrained(tmp_path / "adapter")
