"""Memory is estimated before work: impossible sizes are refused in one line, at once; normal sizes pass."""

import time
from pathlib import Path

import pytest

from vidldm import memory
from vidldm.errors import VidldmError
from vidldm.memory import ModelSizes, available_bytes, check_fits, estimate_peak_bytes, working_bytes


@pytest.fixture(scope="module")
def sizes(pipe):
    return ModelSizes.from_pipeline(pipe)


def test_check_fits_refuses_an_absurd_size_on_the_tiny_pipeline_instantly(pipe):
    start = time.perf_counter()
    with pytest.raises(VidldmError) as err:
        check_fits(pipe, 16, 100000, 100000)
    assert time.perf_counter() - start < 0.5  # arithmetic on configs: nothing allocated, nothing run
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("a clip of 16 frames at 100000x100000 needs about ")
    assert "GiB; this machine has " in message and message.endswith("free. Lower --height/--width or --frames")


@pytest.mark.parametrize("frames, height, width", [(16, 32, 32), (16, 64, 64), (4, 16, 16), (64, 32, 32)])
def test_check_fits_accepts_the_sizes_people_use(pipe, frames, height, width):
    needed = check_fits(pipe, frames, height, width)
    assert 0 < needed < available_bytes()


def test_a_hundred_thousand_frames_are_refused_and_the_message_says_lower_frames(pipe, monkeypatch):
    # The decoded clip alone is 100000 x 64 x 64 x 3 floats (4.6 GiB), kept in a few copies: more than a
    # 16 GiB machine has, whatever the context windows do for the UNet.
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 16 * 2**30)
    with pytest.raises(VidldmError, match=r"a clip of 100000 frames at 64x64 needs about .*Lower --frames \(or make "
                                          r"the clip in parts with vidldm extend\), or --height/--width"):
        check_fits(pipe, 100000, 64, 64)


def test_the_message_names_sizes_and_the_free_memory(pipe, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 3 * 2**30)
    with pytest.raises(VidldmError) as err:
        check_fits(pipe, 16, 4096, 2048, batch=2)
    assert str(err.value).startswith("2 clips of 16 frames at 2048x4096 needs about ")
    assert "; this machine has 3.0 GiB free. " in str(err.value)


def test_the_estimate_grows_with_the_clip_and_the_window_bounds_the_unet(sizes):
    base = estimate_peak_bytes(sizes, 16, 64, 64)
    assert estimate_peak_bytes(sizes, 16, 128, 128) > 3 * (base - sizes.param_bytes)
    assert estimate_peak_bytes(sizes, 16, 64, 64, batch=2) > base
    assert estimate_peak_bytes(sizes, 16, 64, 64, guidance=1.0) < base  # no CFG: half the UNet's batch
    assert estimate_peak_bytes(sizes, 16, 64, 64, guidance=7.5) == base
    # beyond the adapter's 16 frames the UNet sees one window at a time: 64 frames cost far less than 4x
    assert working_bytes(sizes, 64, 64, 64) < 1.5 * working_bytes(sizes, 16, 64, 64)
    assert working_bytes(sizes, 64, 64, 64, context_frames=64) > 3 * working_bytes(sizes, 16, 64, 64)


def test_materialised_attention_maps_count_where_the_kernel_keeps_them(sizes):
    assert memory.fused_attention("cpu") and not memory.fused_attention("mps")
    fused = working_bytes(sizes, 16, 256, 256, device="cpu")
    maps = working_bytes(sizes, 16, 256, 256, device="mps")
    # tokens^2 maps: 128x128 latent tokens at the tiny UNet's first level, 8 heads, 32 frames, twice
    assert maps - fused >= memory.ALLOCATOR_SLACK * 2 * 32 * 8 * (128 * 128) ** 2 * 4 * 0.99


def test_configs_alone_give_the_same_estimate_as_the_loaded_pipeline(pipe, sizes):
    configs = {"unet": dict(pipe.unet.config), "vae": dict(pipe.vae.config),
               "motion_adapter": dict(pipe.motion_adapter.config), "param_bytes": sizes.param_bytes}
    assert estimate_peak_bytes(configs, 16, 32, 32) == estimate_peak_bytes(pipe, 16, 32, 32)
    assert sizes.param_bytes == sum(p.numel() * p.element_size() for m in (pipe.unet, pipe.vae, pipe.text_encoder,
                                    pipe.motion_adapter) for p in (*m.parameters(), *m.buffers()))
    assert sizes.spatial_heads == (8, 8)  # level 1: the cross-attention mid block and sizes.vae_scale == 2 and sizes.frames_trained == 16


def test_loaded_false_counts_the_parameters_too(pipe, sizes, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 2**40)
    assert check_fits(pipe, 16, 32, 32, loaded=False) - check_fits(pipe, 16, 32, 32) == sizes.param_bytes


def test_available_bytes_is_the_kernels_available_memory():
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total = int(meminfo["MemTotal"].split()[0]) * 1024
    assert 0 < available_bytes() <= total


@pytest.mark.parametrize("bad", [0, -1, 2.5, None])
def test_check_fits_refuses_sizes_that_are_not_counts(pipe, bad):
    with pytest.raises(VidldmError, match="must be a whole number of at least 1"):
        check_fits(pipe, bad, 32, 32)


def test_format_bytes():
    assert memory.format_bytes(812 * 2**30) == "812 GiB"
    assert memory.format_bytes(3 * 2**30) == "3.0 GiB"
    assert memory.format_bytes(300 * 2**20) == "300 MiB"
    assert memory.format_bytes(2**46) == "65,536 GiB"


@pytest.mark.parametrize("has_decoder, flag, chunk", [(False, None, 8), (True, None, None), (True, False, 8),
                                                      (False, None, 3)])
def test_the_cli_check_counts_a_temporal_decoders_whole_clip_decode(monkeypatch, has_decoder, flag, chunk):
    """A temporal decoder decodes the whole clip at once (VideoVAE.decode): the check before sampling must count
    that, not `--decode-chunk`'s frames, unless `--no-temporal-decoder` decodes in chunks."""
    import argparse
    import types

    from vidldm.clip_run import check_memory

    seen = {}
    monkeypatch.setattr(memory, "check_fits", lambda pipe, *a, **kw: seen.update(kw))
    pipe = types.SimpleNamespace(temporal_decoder=object() if has_decoder else None, default_num_frames=16,
                                 unet=types.SimpleNamespace(config=types.SimpleNamespace(sample_size=8)), vae_scale_factor=8)
    given = 3 if chunk == 3 else None
    args = argparse.Namespace(command="generate", frames=16, height=None, width=None, guidance=6.0, context_frames=None,
                              decode_chunk=given, temporal_decoder=flag)
    check_memory(pipe, args, "cpu")
    assert seen["decode_chunk"] == chunk
