"""`train.reference_mix` and `data.reference_cache`: the temporal stage pulls its prediction on a clip's caption
toward the starting adapter's prediction on another caption of the same clip (new words learn what the known ones
draw), the teacher never trains and is never saved, and mismatched caches or settings are refused."""

import os

import numpy as np
import pytest
import torch

from tests.test_train import moving_square
from tests.test_train import recipe as train_recipe
from vidldm.cli import main
from vidldm.data import LatentCacheDataset
from vidldm.errors import VidldmError
from vidldm.io import write_video
from vidldm.train.config import load_config
from vidldm.train.trainer import Trainer


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Two caches of the same four clips, one with captions in new words and one with the words the model knows,
    and a third of three clips only."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(4):
        write_video(moving_square(6, seed=i), root / f"clip{i}.mp4", fps=8)
    (root / "new.csv").write_text("path,caption\n" + "".join(f"clip{i}.mp4,a box gliding eastward {i}\n" for i in range(4)))
    (root / "known.csv").write_text("path,caption\n" + "".join(f"clip{i}.mp4,a square moving right {i}\n" for i in range(4)))
    (root / "three.csv").write_text("path,caption\n" + "".join(f"clip{i}.mp4,a square moving right {i}\n" for i in range(3)))
    out = {}
    for name in ("new", "known", "three"):
        path = recipe(tmp_path_factory.mktemp(name), root, data={"captions": str(root / f"{name}.csv")})
        out[name] = tmp_path_factory.mktemp("caches") / name
        assert main(["cache", str(path), str(out[name]), "--device", "cpu"]) == 0
    out["root"] = root
    return out


def recipe(tmp_path, root, train=None, **sections):
    """test_train's recipe, with no weight decay (a zero loss moves nothing) and no caption dropout."""
    train = {"max_steps": 2, "warmup_steps": 0, "weight_decay": 0.0, "caption_dropout": 0.0, **(train or {})}
    return train_recipe(tmp_path, root, train=train, checkpoint={"every": 100, "keep": 1}, **sections)


def adapter_weights(trainer, part="motion_adapter"):
    module = trainer.stage.motion_adapter if part == "motion_adapter" else trainer.stage.reference_unet.motion_adapter
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_reference_cache_pairs_each_clip_with_its_other_caption(caches):
    data = LatentCacheDataset(caches["new"], reference=caches["known"])
    known = LatentCacheDataset(caches["known"])
    for i in range(4):
        item = data[i]
        assert item["caption"] == f"a box gliding eastward {i}" and item["reference_caption"] == f"a square moving right {i}"
        assert torch.equal(item["reference_embeds"], known[i]["prompt_embeds"])
        assert not torch.equal(item["reference_embeds"], item["prompt_embeds"])
        assert torch.equal(item["latents"], known[i]["latents"])  # the same clip


def test_reference_cache_of_other_clips_is_refused(caches):
    with pytest.raises(VidldmError, match="holds other clips than"):
        LatentCacheDataset(caches["new"], reference=caches["three"])


def test_mix_one_on_the_same_captions_moves_nothing(tmp_path, caches):
    """With no reference cache the teacher reads the same caption: a model still at its start has no loss and no
    gradient, so `reference_mix: 1` holds it where it is (the data loss alone would move it)."""
    config = load_config(recipe(tmp_path, caches["root"], data={"latent_cache": str(caches["known"])},
                                train={"reference_mix": 1.0}))
    trainer = Trainer(config)
    before = adapter_weights(trainer)
    trainer.train()
    after = adapter_weights(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_student_reads_its_captions_and_the_teacher_the_reference(tmp_path, caches):
    """At the start student and teacher are the same adapter: the loss is zero where the teacher reads the student's
    own captions and not where it reads the reference cache's."""
    config = load_config(recipe(tmp_path, caches["root"], data={"latent_cache": str(caches["new"]),
                                                                "reference_cache": str(caches["known"])},
                                train={"reference_mix": 1.0}))
    trainer = Trainer(config)
    batch = paired_batch(caches)
    own = {**batch, "reference_embeds": batch["prompt_embeds"]}
    assert gap(trainer, own) == 0
    assert gap(trainer, batch) > 0


def test_mix_pulls_the_prediction_to_the_teachers_on_the_reference_captions(tmp_path, caches):
    """A student moved off its start (noise on the adapter's weights) is pulled back toward the teacher's
    prediction on the reference captions; the teacher never trains and is never saved."""
    config = load_config(recipe(tmp_path, caches["root"], data={"latent_cache": str(caches["new"]),
                                                                "reference_cache": str(caches["known"])},
                                train={"reference_mix": 1.0, "max_steps": 30, "learning_rate": 1e-3}))
    trainer = Trainer(config)
    teacher = adapter_weights(trainer, "teacher")
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in trainer.stage.motion_adapter.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    batch = paired_batch(caches)
    start = gap(trainer, batch)
    trainer.train()
    assert gap(trainer, batch) < 0.7 * start  # 0.61 measured after 30 steps
    assert all(torch.equal(teacher[k], v) for k, v in adapter_weights(trainer, "teacher").items())  # it never trains
    assert not any("reference_unet" in name for name in trainer.trainable_state())  # nor is it checkpointed
    assert not any("reference" in f for f in os.listdir(tmp_path / "run" / "motion_adapter"))


def paired_batch(caches):
    data = LatentCacheDataset(caches["new"], reference=caches["known"])
    return {k: torch.stack([data[i][k] for i in range(4)]) for k in ("latents", "prompt_embeds", "reference_embeds")}


def gap(trainer, batch):
    """The stage loss with `reference_mix: 1` (the prediction's mean squared distance to the teacher's) over
    fixed draws of noise, timesteps and known frames."""
    trainer.stage.eval()
    with torch.no_grad():
        return float(np.mean([trainer.stage(batch, torch.Generator().manual_seed(s)).item() for s in range(6)]))


@pytest.mark.parametrize("change, message", [
    ({"train": {"reference_mix": 1.5}}, "train.reference_mix must be a number from 0 to 1"),
    ({"train": {"reference_mix": "half"}}, "train.reference_mix must be a number, got 'half'"),
    ({"stage": "image", "train": {"reference_mix": 0.5}}, "train.reference_mix is for the temporal stage, not image"),
    ({"data": {"reference_cache": "CACHE"}, "train": {"reference_mix": 0.5}}, "data.reference_cache pairs with data.latent_cache"),
    ({"data": {"latent_cache": "CACHE", "reference_cache": "CACHE"}}, "set train.reference_mix"),
    ({"data": {"latent_cache": "CACHE", "reference_cache": "/no/such/cache"}, "train": {"reference_mix": 0.5}},
     "data.reference_cache '/no/such/cache' is not a latent cache"),
])
def test_bad_reference_settings_are_one_line_errors(tmp_path, caches, change, message):
    for section in change.values():
        if isinstance(section, dict):
            section.update({k: str(caches["known"]) for k, v in section.items() if v == "CACHE"})
    with pytest.raises(VidldmError, match=message):
        load_config(recipe(tmp_path, caches["root"], **change))
