"""The benchmark package: both pipelines really get the same weights, the tiny-cpu setting runs end to
end into well-formed JSON, the long and train cases report what they should, the CLI checks options."""

import json
import sys
from pathlib import Path

import pytest
import torch

from vidldm.bench import defaults, format_table, run
from vidldm.bench.components import (
    build_components,
    diffusers_pipeline,
    initial_latents,
    prompt_embeddings,
    vidldm_pipeline,
)
from vidldm.bench.timing import PeakMemory, cosine, count_flops
from vidldm.models.temporal import TemporalTransformer

SMALL = dict(frames=2, steps=2, height=16, width=16, repeats=1, unet_calls=1)


@pytest.fixture(scope="module")
def components():
    return build_components("tiny", seed=0)


@torch.no_grad()
def test_both_pipelines_get_the_same_weights(components):
    c = components
    cond, uncond = prompt_embeddings(c)
    start = initial_latents(c, 4, 16, 16, seed=0)
    call = dict(prompt_embeds=cond, negative_prompt_embeds=uncond, num_frames=4, height=16, width=16,
                num_inference_steps=3, guidance_scale=7.5, latents=start, output_type="latent")
    ours = vidldm_pipeline(c, "cpu", torch.float32)(**call).frames
    theirs = diffusers_pipeline(c, "cpu", torch.float32)(**call).frames
    assert ours.shape == theirs.shape == (1, 4, 4, 8, 8)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    # and the temporal layers are live: without them the result is different
    frozen = vidldm_pipeline(c, "cpu", torch.float32)
    for m in frozen.motion_adapter.modules():
        if isinstance(m, TemporalTransformer):
            torch.nn.init.zeros_(m.proj_out.weight)
            torch.nn.init.zeros_(m.proj_out.bias)
    assert cosine(frozen(**call).frames, ours) < 0.9999


def test_components_are_seeded(components):
    again = build_components("tiny", seed=0)
    for a, b in zip(components.motion_adapter.state_dict().values(), again.motion_adapter.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown benchmark model"):
        build_components("sdxl")


def test_tiny_cpu_setting_end_to_end_gives_wellformed_json():
    report = json.loads(json.dumps(run(["tiny-cpu"], threads=1, **SMALL)))  # JSON round trip: serialisable
    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"] == torch.__version__
    result = report["settings"]["tiny-cpu"]
    cases = {(r["side"], r["variant"]): r for r in result["cases"]}
    assert set(cases) == {("diffusers", "eager"), ("vidldm", "plain"), ("vidldm", "fast")}
    for r in cases.values():
        assert r["dtype"] == "fp32" and r["s_per_clip"] > 0 and r["unet_s_per_step"] > 0 and r["decode_s"] > 0
        assert len(r["clip_seconds"]) == 1 and r["warmup_s"] > 0
        assert r["cosine_vs_fp32"] >= 0.999
        assert r["speedup_vs_diffusers_eager"] > 0 and r["clip_tflops_per_s"] > 0
    assert cases[("diffusers", "eager")]["speedup_vs_diffusers_eager"] == 1.0
    assert result["agreement"]["fp32"]["cosine"] >= 0.9999
    flops = result["flops"]
    assert flops["vidldm_unet_call"] > 0 and flops["vidldm_decode"] > 0
    # the same network on both sides; vidldm embeds the timestep per frame (per-frame timesteps), a rounding error
    assert abs(flops["vidldm_unet_call"] - flops["diffusers_unet_call"]) < 0.01 * flops["diffusers_unet_call"]
    assert flops["clip"] == 2 * flops["vidldm_unet_call"] + flops["vidldm_decode"]
    table = format_table(report)
    assert "tiny-cpu" in table and "diffusers" in table and "fast" in table


def test_long_and_train_cases_report_memory_and_speed():
    from vidldm.bench.cases import long_case, train_case

    o = defaults("long", device="cpu", model="tiny", frames=4, long_frames=8, context_frames=4, context_overlap=1,
                 steps=1, height=16, width=16)
    short = long_case(o, 4)
    long = long_case(o, 8)
    assert (short["windows"], long["windows"]) == (1, 3)
    assert short["s_per_clip"] > 0 and long["growth_bytes"] is not None
    t = defaults("train", device="cpu", model="tiny", train_frames=2, train_height=16, train_width=16, repeats=1)
    for checkpointing in (False, True):
        r = train_case(t, checkpointing)
        assert r["batch"] == 1 and r["clips_per_s"] > 0 and r["gradient_checkpointing"] is checkpointing


def test_training_case_steps_vidldms_own_temporal_stage(components):
    from vidldm.bench.cases import latent_batch, temporal_stage, train_step
    from vidldm.train.stages import TemporalStage

    o = defaults("train", device="cpu", model="tiny", dtypes="bf16", train_frames=2, train_height=16, train_width=16)
    stage, optimizer = temporal_stage(components, o, checkpointing=True)
    assert isinstance(stage, TemporalStage) and stage.config.train.gradient_checkpointing
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in stage.motion_adapter.parameters()}
    assert trained == {id(p) for p in stage.parameters() if p.requires_grad}
    # frozen parts in the benchmark's dtype, the trained adapter in fp32 (under autocast)
    assert stage.unet.dtype == stage.vae.dtype == torch.bfloat16
    assert {p.dtype for p in stage.motion_adapter.parameters()} == {torch.float32}
    g = torch.Generator().manual_seed(0)
    batch = latent_batch(components, o, prompt_embeddings(components)[0], 2, g)
    assert batch["latents"].shape == (2, 4, 2, 8, 8) and batch["prompt_embeds"].shape[0] == 2
    adapter = [p.detach().clone() for p in stage.motion_adapter.parameters()]
    unet = [p.detach().clone() for p in stage.unet.parameters()]
    loss = train_step(stage, optimizer, batch, g, torch.bfloat16)
    assert torch.isfinite(loss) and loss.ndim == 0
    assert any(not torch.equal(a, p) for a, p in zip(adapter, stage.motion_adapter.parameters()))
    assert all(torch.equal(u, p) for u, p in zip(unet, stage.unet.parameters()))
    assert all(p.grad is None for p in stage.motion_adapter.parameters())  # zeroed for the next step


def test_bench_imports_run_one_way():
    """No circle inside vidldm/bench (run -> isolated -> cases), and vidldm.train never imports the benchmark."""
    import ast

    root = Path(__file__).parents[1] / "vidldm"

    def imports(path: Path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    bench = {p.stem: {m.removeprefix("vidldm.bench.") for m in imports(p) if m.startswith("vidldm.bench.")}
             for p in (root / "bench").glob("*.py") if p.stem != "__init__"}
    assert bench["isolated"] <= {"options", "cases"}
    assert "run" not in set().union(*(deps for name, deps in bench.items() if name != "run"))

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(d == target or (d not in seen and reaches(d, target, seen | {d})) for d in bench.get(start, ()))

    assert not [name for name in bench if reaches(name, name, set())]
    for path in (root / "train").glob("*.py"):
        assert not [m for m in imports(path) if m.startswith("vidldm.bench")], path.name


def test_isolated_case_runs_in_its_own_process():
    from vidldm.bench.isolated import run_isolated

    o = defaults("long", device="cpu", model="tiny", frames=2, steps=1, height=16, width=16)
    r = run_isolated("long", o, frames=2)
    assert r["frames"] == 2 and r["peak_memory_bytes"] > r["growth_bytes"] > 0
    with pytest.raises(ValueError, match="unknown isolated case"):
        run_isolated("sd15", o)


def test_peak_memory_sees_an_allocation_on_cpu():
    with PeakMemory("cpu") as m:
        x = torch.ones(16 * 2**20)  # 64 MiB, touched
        del x
    if m.peak_bytes is None:
        pytest.skip("no /proc on this platform")
    assert m.growth_bytes >= 48 * 2**20


def test_flops_of_a_linear_layer():
    layer = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(10, 64)
    assert count_flops(lambda: layer(x)) == 2 * 10 * 64 * 32


def test_options_are_checked():
    assert defaults("sd15", device="cpu").dtypes == ("fp16", "bf16")
    assert defaults("tiny-cpu", dtypes="fp32,bf16").dtypes == ("fp32", "bf16")
    with pytest.raises(ValueError, match="unknown benchmark setting"):
        defaults("sd21")
    with pytest.raises(ValueError, match="unknown dtype"):
        defaults("tiny-cpu", dtypes="fp8")
    with pytest.raises(ValueError, match="context_overlap"):
        defaults("long", device="cpu", context_frames=4, context_overlap=4)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        defaults("tiny-cpu", steps=0)


def test_script_writes_json_and_rejects_bad_options(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "scripts"))
    sys.modules.pop("benchmark", None)
    import benchmark

    out = tmp_path / "bench.json"
    argv = ["tiny-cpu", "--frames", "2", "--steps", "1", "--height", "16", "--width", "16", "--repeats", "1",
            "--unet-calls", "1", "--no-verify", "--threads", "1", "--json", str(out)]
    assert benchmark.main(argv) == 0
    assert json.loads(out.read_text())["settings"]["tiny-cpu"]["cases"]
    assert "vidldm" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    assert benchmark.main(["tiny-cpu", "--context-overlap", "20", "--json", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: context_overlap") and len(err.splitlines()) == 1
    assert not bad.exists()
