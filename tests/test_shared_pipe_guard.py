"""The conftest guard that fails a test leaving the session's `pipe` changed: it must see real changes and
nothing else."""

import torch
from diffusers import EulerDiscreteScheduler

from tests.conftest import _changed, _fingerprint
from vidldm.loading import tiny_pipeline


def test_the_fingerprint_sees_what_a_test_could_leave_behind():
    p = tiny_pipeline()
    p.set_progress_bar_config(disable=True)
    before = _fingerprint(p)
    p("a", num_frames=2, height=16, width=16, num_inference_steps=1, output_type="latent")
    assert _changed(before, _fingerprint(p)) == []  # a call changes nothing it keeps
    changes = [lambda: p.unet.conv_in.weight.add_(0.0),  # a write in place, even of the same values
               lambda: p.enable_free_init(2),
               lambda: setattr(p, "scheduler", EulerDiscreteScheduler.from_config(p.scheduler.config)),
               lambda: p.unet.register_forward_hook(lambda *a: None)]
    for change in changes:
        with torch.no_grad():
            change()
        after = _fingerprint(p)
        assert _changed(before, after) != []
        before = after
