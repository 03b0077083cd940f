"""A user's own task, estimator, sampler and intervention join cem-lab the way models and patch banks do:
a YAML file with a ``_target_`` in a config folder of theirs (``hydra.searchpath``), chosen by name.

The classes live in a module written to ``tmp_path`` (as a user's package would), the YAML files in a
config folder beside it; a real `cem-lab` process computes a map with all four, and its summary records
what each object describes. The built-in short names (``cem.intervention=zeros``) keep working beside the
``_target_`` form and give the same map.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import run_console
from hydra import compose, initialize_config_module

from cem_lab.causal.interventions import BaselineIntervention
from cem_lab.compose import resolvers  # noqa: F401 (registers the resolvers the configs use)
from cem_lab.compose.build import build_task
from cem_lab.compose.prepare import map_settings
from cem_lab.errors import InputError

USER_MODULE = '''
"""A user's own classes (not part of cem_lab)."""
import numpy as np
from cem_lab.causal.estimators import CoarseToFineEstimator
from cem_lab.causal.interventions import BaselineIntervention
from cem_lab.patches.sampling import PatchSampler
from cem_lab.tasks.denoise import DenoiseTask


class StrongNoise(DenoiseTask):
    """Denoising at twice the given sigma."""

    def __init__(self, base_sigma: float = 10.0):
        super().__init__(sigma=2 * base_sigma)
        self.base_sigma = base_sigma


class ShortCoarseToFine(CoarseToFineEstimator):
    name = "short_coarse_to_fine"

    def describe(self):
        return {**super().describe(), "name": self.name}


class DarkestFirst(PatchSampler):
    """Always the bank's first patch."""

    name = "first_patch"

    def draw(self, rng, block_sharpness, sample_index):
        self._check_bound()
        rng.integers(self._n)  # one draw, as every sampler
        return 0


class Grey(BaselineIntervention):
    """The block set to one grey level."""

    def __init__(self, level: float = 0.5):
        super().__init__("zeros")
        self.name = "grey"
        self.level = float(level)

    def apply(self, inputs, context, placements, draws, origin=(0, 0)):
        for i, pl in enumerate(placements):
            y0, y1, x0, x1 = pl.dst
            inputs[i, :, y0:y1, x0:x1] = self.level
        return inputs

    def describe(self):
        return {"name": self.name, "level": self.level}
'''

USER_CONFIGS = {
    "task/strong_noise.yaml": "_target_: my_cem_classes.StrongNoise\nbase_sigma: 15\n",
    "cem/short.yaml": (
        "block: 16\ncoarse: 2\nfine: 3\ntol: 0.01\nclassification: tol\n"
        "estimator:\n  _target_: my_cem_classes.ShortCoarseToFine\n  coarse: ${..coarse}\n  fine: ${..fine}\n"
        "  tol: ${..tol}\n"
    ),
    "sampler/first_patch.yaml": "# @package cem.sampler\n_target_: my_cem_classes.DarkestFirst\n",
    "intervention/grey.yaml": "# @package cem.intervention\n_target_: my_cem_classes.Grey\nlevel: 0.25\n",
}

SMALL = [
    "model=custom",
    "model.net._target_=cem_lab.models.DnCNN",
    "+model.net.features=8",
    "+model.net.depth=3",
    "roi=[112,112,32]",
    "patches.count=300",
    "progress=false",
    "figures=false",
]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    (root / "my_cem_classes.py").write_text(USER_MODULE)
    for rel, text in USER_CONFIGS.items():
        path = root / "my_conf" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _cfg(overrides):
    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        return compose(config_name="cem", overrides=overrides)


def test_own_classes_are_built_from_their_nodes(user_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(user_dir))
    cfg = _cfg(
        [
            f"hydra.searchpath=[file://{user_dir / 'my_conf'}]",
            "task=strong_noise",
            "cem=short",
            "sampler=first_patch",
            "intervention=grey",
        ]
    )
    task = build_task(cfg.task)
    assert type(task).__name__ == "StrongNoise" and task.sigma == 30
    settings = map_settings(cfg)
    assert type(settings.estimator).__name__ == "ShortCoarseToFine" and settings.estimator.fine == 3
    assert settings.make_estimator().describe()["name"] == "short_coarse_to_fine"
    assert type(settings.intervention).__name__ == "Grey" and settings.intervention.level == 0.25
    assert type(settings.sampler).__name__ == "DarkestFirst"
    # the LV intervention draws with the sampler the `sampler` group chose
    lv = map_settings(_cfg([f"hydra.searchpath=[file://{user_dir / 'my_conf'}]", "sampler=first_patch"]))
    assert type(lv.intervention.sampler).__name__ == "DarkestFirst"
    assert lv.make_intervention().describe()["sampler"] == "first_patch"
    # the knobs stay where they were: cem.fine=5 reaches the estimator through its node's interpolation
    assert (
        map_settings(
            _cfg([f"hydra.searchpath=[file://{user_dir / 'my_conf'}]", "cem=short", "cem.fine=5"])
        ).estimator.fine
        == 5
    )


def test_a_node_that_cannot_be_built_is_one_user_error(user_dir):
    with pytest.raises(InputError, match=r"cem.intervention: cannot build my_cem_classes.Nope"):
        map_settings(_cfg(["cem.intervention._target_=my_cem_classes.Nope"]))
    with pytest.raises(InputError, match=r"fine must be a positive integer"):
        map_settings(_cfg(["cem.fine=many"]))  # a plain knob is named as itself, before any object is built
    with pytest.raises(InputError, match=r"did you mean 'fine'"):
        map_settings(_cfg(["+cem.fien=5"]))


def test_short_names_and_nodes_give_the_same_objects():
    short = map_settings(_cfg(["cem.intervention=blur", "cem.sampler=stratified"]))
    node = map_settings(_cfg(["intervention=blur", "sampler=stratified"]))
    assert short.intervention == "blur" and isinstance(node.intervention, BaselineIntervention)
    assert short.make_intervention().describe() == node.make_intervention().describe()
    assert node.sampler.options() == {}  # the defaults record nothing beyond the name: old fingerprints hold
    strata3 = map_settings(_cfg(["sampler=stratified", "cem.sampler.strata=3"]))
    assert strata3.make_intervention().describe()["sampler_options"] == {"strata": 3}


def _cli(args, cwd, pythonpath):
    return run_console(
        "cem", args, cwd, PYTHONPATH=os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")])
    )


def test_cem_lab_runs_a_map_with_a_users_four_classes(user_dir, tmp_path):
    own = [
        f"hydra.searchpath=[file://{user_dir / 'my_conf'}]",
        "task=strong_noise",
        "cem=short",
        "sampler=first_patch",
        "intervention=grey",
    ]
    p = _cli([*SMALL, *own], tmp_path, user_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    (folder,) = (tmp_path / "runs" / "cem").iterdir()
    settings = json.loads((folder / "summary.json").read_text())["settings"]
    assert settings["task"]["sigma"] == 30.0
    assert settings["estimator"]["name"] == "short_coarse_to_fine" and settings["estimator"]["fine"] == 3
    assert settings["intervention"] == {"name": "grey", "level": 0.25}
    effect = np.load(folder / "cem.npz")["effect"]
    assert effect.shape == (16, 16) and np.isfinite(effect).all()
