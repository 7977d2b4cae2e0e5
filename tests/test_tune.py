"""The per-task coordinate search of the solver's defaults (varlib.tune), on a small real prior."""
import json

import pytest
import torch

from varlib import tune
from varlib.prior import build_prior


def _tuning_setup(tmp_path, monkeypatch, table: dict, seed: int):
    """The random 16 px test prior named ``tiny-test``, two seeded images as its "training" images, and a
    temporary ``tuned_settings.json`` holding ``table``; returns the file."""
    torch.manual_seed(0)
    prior = build_prior("test")  # 16 px, schedule (1, 2, 4)
    prior.name = "tiny-test"
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed)),
                                        size=(16, 16), mode="bilinear")
    settings_file = tmp_path / "tuned.json"
    settings_file.write_text(json.dumps(table))
    monkeypatch.setattr(tune, "TUNED_SETTINGS_FILE", settings_file)
    monkeypatch.setattr("varlib.solver.TUNED_SETTINGS_FILE", settings_file)
    monkeypatch.setattr(tune, "load_prior", lambda name: prior)
    monkeypatch.setattr(tune, "tuning_images",
                        lambda n, image_set=None: (x[:n], torch.zeros(n, dtype=torch.long), ["a", "b"][:n]))
    return settings_file


def test_candidates_name_the_schedule_and_moot_keys_are_skipped():
    assert tune._candidate("all", 5) == 5 and tune._candidate("all-1", 5) == 4 and tune._candidate(2, 5) == 2
    # every scale injected: no guidance setting can change the result
    for key in ("guidance_strength", "guidance_steps", "decode", "partial_injection_depth"):
        assert tune._moot(key, {"injection_depth": 5}, 5)
        assert not tune._moot(key, {"injection_depth": 2, "guidance_strength": 1.0}, 5)
    assert tune._moot("guidance_steps", {"injection_depth": 2, "guidance_strength": 0.0}, 5)
    assert not tune._moot("dc_latent_weight", {"injection_depth": 5}, 5)


def test_tuning_writes_best_values_and_keeps_other_task_settings(tmp_path, monkeypatch):
    settings_file = _tuning_setup(tmp_path, monkeypatch, {"tiny-test": {"sr4": {"dc_latent_steps": 2, "dc_pixel_rho": 0.5}}},
                                  seed=0)
    tune.main(["--prior", "tiny-test", "--images", "2", "--tasks", "sr4", "--out", str(tmp_path / "out")])
    chosen = json.loads(settings_file.read_text())["tiny-test"]["sr4"]
    assert chosen["dc_latent_steps"] == 2  # not searched: kept
    assert chosen["dc_pixel_rho"] in (0.5, *tune.SEARCH["dc_pixel_rho"])  # the current value competes
    assert chosen["injection_depth"] in range(0, 3)  # at least one scale is left to the transformer
    import pandas as pd
    log = pd.read_csv(tmp_path / "out" / "var_tuning_tiny-test.csv")
    depth_rows = log[log.swept == "injection_depth"]
    assert sorted(depth_rows.value.astype(int)) == [0, 1, 2]  # 0..3 and "all-1" (= 2) below the 3 scales
    best_row = depth_rows.loc[depth_rows.psnr.idxmax()]
    assert int(best_row.value) == chosen["injection_depth"]


def test_a_partial_search_sweeps_only_the_named_keys(tmp_path, monkeypatch):
    table = {"tiny-test": {"gaussian_blur": {"injection_depth": 1}}, "_notes": {"tiny-test": "first search"}}
    settings_file = _tuning_setup(tmp_path, monkeypatch, table, seed=1)
    tune.main(["--prior", "tiny-test", "--images", "2", "--tasks", "gaussian_blur", "--out", str(tmp_path / "out"),
               "--keys", "dc_pixel_prior_weight"])
    table = json.loads(settings_file.read_text())
    chosen = table["tiny-test"]["gaussian_blur"]
    assert chosen["injection_depth"] == 1  # not swept
    import pandas as pd
    log = pd.read_csv(tmp_path / "out" / "var_tuning_tiny-test.csv")
    assert set(log.swept) == {"dc_pixel_prior_weight"}
    assert sorted(log.value) == [0.25, 0.5, 0.75, 1.0]  # the current value (1.0) is among them
    assert chosen["dc_pixel_prior_weight"] == log.loc[log.psnr.idxmax(), "value"]
    assert table["_notes"]["tiny-test"].startswith("first search; then dc_pixel_prior_weight chosen")
    with pytest.raises(SystemExit):
        tune.main(["--prior", "tiny-test", "--keys", "guidance", "--out", str(tmp_path / "out")])


def test_a_prior_tuned_from_its_fallback_records_the_values_it_was_scored_with(tmp_path, monkeypatch):
    """A prior without tuned values starts from those of the prior it shares a tokenizer with; the values
    it records include that prior's unswept ones (e.g. latent steps), which its trials ran with."""
    settings_file = _tuning_setup(tmp_path, monkeypatch, {"base-test": {"sr4": {"dc_latent_steps": 2, "dc_latent_lr": 0.05}}},
                                  seed=2)
    monkeypatch.setattr("varlib.solver.TUNED_SETTINGS_FALLBACK", {"tiny-test": "base-test"})
    tune.main(["--prior", "tiny-test", "--images", "2", "--tasks", "sr4", "--out", str(tmp_path / "out"),
               "--keys", "dc_pixel_prior_weight"])
    chosen = json.loads(settings_file.read_text())["tiny-test"]["sr4"]
    assert chosen["dc_latent_steps"] == 2 and chosen["dc_latent_lr"] == 0.05
    assert "dc_pixel_prior_weight" in chosen


def test_named_settings_are_tuned_into_their_own_entry(tmp_path, monkeypatch):
    """--settings reference --keys injection_depth: only the unstated depth is searched, it is recorded under
    "<prior>/reference", the solver's "reference" settings pick it up, and "default" is untouched."""
    from varlib.solver import resolve_settings

    settings_file = _tuning_setup(tmp_path, monkeypatch, {"tiny-test": {"sr4": {"injection_depth": 1}}}, seed=3)
    tune.main(["--prior", "tiny-test", "--images", "2", "--tasks", "sr4", "--out", str(tmp_path / "out"),
               "--settings", "reference", "--keys", "injection_depth"])
    table = json.loads(settings_file.read_text())
    assert table["tiny-test"] == {"sr4": {"injection_depth": 1}}  # the default entry is untouched
    assert set(table["tiny-test/reference"]["sr4"]) == {"injection_depth"}
    depth = table["tiny-test/reference"]["sr4"]["injection_depth"]
    import pandas as pd
    log = pd.read_csv(tmp_path / "out" / "var_tuning_tiny-test_reference.csv")
    assert set(log.swept) == {"injection_depth"} and int(log.loc[log.psnr.idxmax(), "value"]) == depth
    ref = resolve_settings("reference", "sr4", prior_name="tiny-test")
    assert ref["injection_depth"] == depth and ref["guidance_schedule"] == "reference"  # published values kept
    assert resolve_settings("reference", "gaussian_blur", prior_name="tiny-test")["injection_depth"] == 2


def test_settings_a_named_set_switches_off_are_not_swept():
    assert tune._moot("guidance_strength", {"injection_depth": 2, "guidance_steps": 0}, 5)
    assert tune._moot("dc_latent_weight", {"dc_latent_steps": 0}, 5)
    assert tune._moot("dc_pixel_rho", {"dc_pixel": False}, 5) and not tune._moot("dc_pixel_rho", {"dc_pixel": True}, 5)


def test_posterior_sampling_is_tuned_for_calibration_within_the_psnr_slack(tmp_path, monkeypatch):
    """--settings posterior: the full temperature x top-p grid is scored (mean's PSNR, coverage); the pair
    recorded under "<prior>/posterior" is the best-calibrated one of those within the PSNR slack, and the
    solver's "posterior" settings keep the default's tuned values beside it."""
    import pandas as pd
    from varlib.metrics import CALIBRATED_COVERAGE
    from varlib.solver import resolve_settings

    settings_file = _tuning_setup(tmp_path, monkeypatch,
                                  {"tiny-test": {"sr4": {"injection_depth": 1, "dc_latent_steps": 2}}}, seed=4)
    monkeypatch.setattr(tune, "SAMPLE_SEARCH", {"temperature": [0.5, 3.0], "top_p": [1.0]})
    tune.main(["--prior", "tiny-test", "--images", "2", "--tasks", "sr4", "--out", str(tmp_path / "out"),
               "--settings", "posterior"])
    table = json.loads(settings_file.read_text())
    chosen = table["tiny-test/posterior"]["sr4"]
    log = pd.read_csv(tmp_path / "out" / "var_tuning_tiny-test_posterior.csv")
    assert len(log) == 2 and set(log.temperature) == {0.5, 3.0}
    assert (log.coverage.between(0, 1)).all() and (log.mean_std > 0).all()
    # (the random test prior's logits are near uniform, so its spread hardly depends on the temperature)
    ok = log[log.psnr >= log.psnr.max() - tune.PSNR_SLACK_DB]
    expect = ok.loc[(ok.coverage - CALIBRATED_COVERAGE).abs().idxmin()]
    assert chosen == {"temperature": expect.temperature, "top_p": expect.top_p}
    s = resolve_settings("posterior", "sr4", prior_name="tiny-test")
    assert s["temperature"] == chosen["temperature"] and s["num_samples"] == 8 and s["decode"] == "sample"
    assert s["injection_depth"] == 1 and s["dc_latent_steps"] == 2  # the default's tuned values underneath
    assert table["tiny-test"] == {"sr4": {"injection_depth": 1, "dc_latent_steps": 2}}
    with pytest.raises(SystemExit):
        tune.main(["--prior", "tiny-test", "--settings", "posterior", "--keys", "temperature"])
