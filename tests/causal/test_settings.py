"""CEMSettings: every knob of a map with its default and its check in one place, and the one
translation from settings to an estimator."""

from __future__ import annotations

import inspect

import pytest
from conftest import ConvStack

from cem_lab.causal import AdaptiveEstimator, CEMSettings, CoarseToFineEstimator
from cem_lab.causal.estimators import EstimatorError
from cem_lab.causal.run import prepare_cem
from cem_lab.causal.settings import ADAPTIVE_OPTIONS


def test_the_defaults_are_the_estimators_own():
    s = CEMSettings()
    ctf = inspect.signature(CoarseToFineEstimator).parameters
    assert (s.coarse, s.fine, s.tol) == (ctf["coarse"].default, ctf["fine"].default, ctf["tol"].default)
    ada = inspect.signature(AdaptiveEstimator).parameters
    assert {k: getattr(s, k) for k in ADAPTIVE_OPTIONS} == {k: ada[k].default for k in ADAPTIVE_OPTIONS}
    assert s.make_estimator().describe() == CoarseToFineEstimator().describe()


def test_the_estimator_is_translated_once():
    assert CEMSettings(estimator="exhaustive", fine=7).make_estimator().describe() == {
        "name": "exhaustive",
        "samples": 7,
    }
    est = CEMSettings(estimator="adaptive", round_size=4, max_samples=8, fine=6).make_estimator()
    assert (est.round_size, est.max_samples, est.fine, est.totals) == (4, 8, 6, [4, 8])
    mine = CoarseToFineEstimator(2, 2, tol=0.5)
    s = CEMSettings(estimator=mine)
    made = s.make_estimator()  # a copy: each job binds its own (an atlas's ROIs must not share one)
    assert made is not mine and made.describe() == mine.describe() and s.map_tol(made) == 0.5


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"mode": "crop"}, "mode must be"),
        ({"recompute": "tiles"}, "recompute must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"forward_batch": "max"}, "forward_batch must be"),
        ({"crop_multiple": 0}, "crop_multiple must be"),
        ({"classification": "sign"}, "classification must be"),
        ({"estimator": "bayes"}, "unknown estimator 'bayes'; choose one of"),
        ({"intervention": "paint"}, "intervention must be"),
        ({"round_size": 5}, "round_size is an option of estimator='adaptive' only"),
        ({"samples": 5}, "samples is an option of estimator='exhaustive' only"),
        ({"metric": "lpips"}, "unknown metric"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(bad, words):
    with pytest.raises(ValueError, match=words):
        CEMSettings(**bad)


def test_estimator_checks_keep_their_messages():
    with pytest.raises(EstimatorError, match="half_width must be > 0"):
        CEMSettings(estimator="adaptive", half_width=0)


def test_from_mapping_ignores_nothing():
    assert CEMSettings.from_mapping({"block": 16, "coarse": 2}) == CEMSettings(block=16, coarse=2)
    with pytest.raises(ValueError, match=r"unknown CEM setting 'blok' \(did you mean 'block'\?\)"):
        CEMSettings.from_mapping({"blok": 16})
    with pytest.raises(ValueError, match="not adaptive options"):
        CEMSettings.from_keywords(estimator="adaptive", estimator_options={"block": 4})


def test_settings_and_keywords_make_the_same_job(clean_image, small_bank):
    kw = dict(block=8, coarse=2, fine=3, seed=3, estimator="adaptive", estimator_options={"round_size": 2})
    a = prepare_cem(ConvStack(depth=3), clean_image, "dn", (16, 16, 16), patch_bank=small_bank, **kw)
    s = CEMSettings(block=8, coarse=2, fine=3, seed=3, estimator="adaptive", round_size=2)
    b = prepare_cem(ConvStack(depth=3), clean_image, "dn", (16, 16, 16), patch_bank=small_bank, settings=s)
    assert a.settings() == b.settings() and a.fingerprint() == b.fingerprint()
    with pytest.raises(ValueError, match="not both"):
        prepare_cem(ConvStack(depth=3), clean_image, "dn", (16, 16, 16), settings=s, block=8)
