"""The prior report's schedule trade-off: NLL summaries of trained transformers joined to the table."""
import json

import numpy as np
import pandas as pd
import pytest

from varlib import prior_report


def _metrics(scales, model, unigram, copy, steps=10):
    return {"transformer": {"scales": scales, "model_nll": model, "unigram_nll": unigram, "copy_nll": copy,
                            "steps": steps}}


def test_nll_summary_weights_scales_by_their_tokens():
    s = prior_report.transformer_nll_summary(_metrics([1, 2], [1.0, 2.0], [1.5, 2.5], [1.5, 2.2]))
    assert s["model_nll_per_token"] == pytest.approx((1 * 1.0 + 4 * 2.0) / 5)
    assert s["margin_per_token"] == pytest.approx(0.5)
    assert s["min_scale_margin"] == pytest.approx(0.2)  # 2x2: copy-coarser 2.2 is the better baseline
    assert s["model_nats_per_image"] == pytest.approx(9.0)


def test_tradeoff_table_joins_trained_runs_without_remeasuring(tmp_path):
    names = list(prior_report.SCHEDULES)[:2]
    table = pd.DataFrame({"schedule": names, "scales": [5, 7], "tokens_per_image": [341, 521],
                          "tokenizer_psnr_db": [21.9, 22.0], "transformer_step_s": [2.3, 4.3],
                          "train_images_per_hour": [50000, 27000]})
    table.to_csv(tmp_path / "schedule_tradeoff.csv", index=False)
    run = tmp_path / "run.json"
    run.write_text(json.dumps(_metrics([1, 2, 4], [3.0, 3.5, 4.0], [3.1, 3.7, 4.4], [3.1, 3.8, 4.3], steps=696)))
    df = prior_report.schedule_tradeoff(None, tmp_path, {names[1]: run}, remeasure=False)
    row = df.set_index("schedule").loc[names[1]]
    assert row["transformer_steps"] == 696 and row["margin_per_token"] == pytest.approx(
        (0.1 + 4 * 0.2 + 16 * 0.4) / 21, abs=1e-3)
    assert np.isnan(df.set_index("schedule").loc[names[0], "margin_per_token"])
    assert (tmp_path / "schedule_tradeoff.png").stat().st_size > 10_000
    assert "margin_per_token" in (tmp_path / "schedule_tradeoff.md").read_text()


def test_samples_grid_shows_each_class_as_a_block():
    from varlib.prior_report import class_block_order
    n_classes, per_class, rows = 8, 4, 2
    order = class_block_order(n_classes, per_class)
    assert sorted(order.tolist()) == list(range(n_classes * per_class))
    ncol = n_classes * per_class // rows
    for pos, sample in enumerate(order.tolist()):  # the grid fills row by row
        r, c = divmod(pos, ncol)
        assert sample // per_class == c // (per_class // rows), (r, c, sample)
