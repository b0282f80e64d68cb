"""Scheduler names: vidldm's, A1111/ComfyUI's (Karras variants) and diffusers class names each make a clip."""

import numpy as np
import pytest
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

from tests.conftest import seeded
from vidldm.cli import main
from vidldm.errors import VidldmError
from vidldm.schedulers import CLASS_NAMES, SCHEDULERS, check_scheduler_name, make_scheduler

SMALL = dict(height=16, width=16, num_frames=2, num_inference_steps=3, output_type="np")
A1111 = ["dpmpp_2m", "dpmpp_2m_karras", "dpmpp_sde", "dpmpp_sde_karras", "euler", "euler_karras", "euler_a", "ddim",
         "lcm", "unipc", "heun", "lms", "lms_karras", "dpm2", "dpm2_karras"]
_RUNNABLE = [n for n in CLASS_NAMES if n != "DPMSolverSDEScheduler"]  # needs torchsde, not a vidldm dependency


def clip(pipe, name):
    return pipe("a red circle", scheduler=name, generator=seeded(), **SMALL).frames


@pytest.mark.parametrize("name", [*SCHEDULERS, *_RUNNABLE])
def test_every_name_makes_a_clip(pipe, name):
    before = pipe.scheduler
    frames = clip(pipe, name)
    assert frames.shape == (1, 2, 16, 16, 3) and np.isfinite(frames).all()
    assert pipe.scheduler is before


def test_the_a1111_names_of_the_issue_are_all_there():
    assert [check_scheduler_name(n) for n in A1111] == A1111


@pytest.mark.parametrize("plain", ["euler", "dpmpp_2m", "dpmpp_sde", "lms", "dpm2", "heun", "dpm2_a"])
def test_karras_variants_use_karras_sigmas_and_differ(pipe, plain):
    config = pipe.scheduler.config
    karras = make_scheduler(f"{plain}_karras", config)
    assert karras.config.use_karras_sigmas and not make_scheduler(plain, config).config.use_karras_sigmas
    assert type(karras) is type(make_scheduler(plain, config))
    assert not np.allclose(clip(pipe, plain), clip(pipe, f"{plain}_karras"))


def test_names_are_case_insensitive_and_class_names_work(pipe):
    config = pipe.scheduler.config
    made = make_scheduler("DPMSolverMultistepScheduler", config)
    assert type(made) is DPMSolverMultistepScheduler and made.config.beta_end == config.beta_end
    assert type(make_scheduler("EULER_Karras", config)) is EulerDiscreteScheduler
    assert np.array_equal(clip(pipe, "Dpmpp_2M_Karras"), clip(pipe, "dpmpp_2m_karras"))


def test_class_name_equals_the_diffusers_scheduler_it_names(pipe):
    """`--scheduler DPMSolverMultistepScheduler` is diffusers' class built from the model's config, nothing added."""
    ours = make_scheduler("dpmsolvermultistepscheduler", pipe.scheduler.config)
    theirs = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    assert dict(ours.config) == dict(theirs.config)


def test_old_names_keep_their_meaning(pipe):
    assert make_scheduler("dpm++", pipe.scheduler.config).config.algorithm_type == "dpmsolver++"
    assert not make_scheduler("dpm++", pipe.scheduler.config).config.use_karras_sigmas


@pytest.mark.parametrize("name, hint", [("dpmpp_2m_karas", "did you mean dpmpp_2m_karras"),
                                        ("zzz", "choose one of: ddim, euler")])
def test_unknown_name_is_one_line_with_choices(name, hint):
    with pytest.raises(VidldmError, match=hint) as err:
        check_scheduler_name(name)
    assert "\n" not in str(err.value)


def test_cli_lists_and_rejects(capsys):
    assert main(["info", "--schedulers"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in [*A1111, *CLASS_NAMES])
    assert main(["generate", "x", "--model", "tiny", "--scheduler", "euler_karas", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "euler_karras" in err and len(err.splitlines()) == 1
