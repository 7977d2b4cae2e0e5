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


def test_training_curves_draw_a_continued_decoder_after_the_first(tmp_path, monkeypatch):
    """The GPU recipe's decoder run continues the CPU decoder: its curve starts where that one ended
    and says on which device it ran."""
    run, dec = tmp_path / "run", tmp_path / "dec"
    run.mkdir(); dec.mkdir()
    pd.DataFrame({"step": [10, 20], "elapsed_s": [60.0, 120.0], "psnr": [18.0, 20.0]}).to_csv(run / "tokenizer_log.csv")
    pd.DataFrame({"step": [10, 20], "elapsed_s": [30.0, 60.0], "psnr": [21.0, 21.5]}).to_csv(run / "decoder_log.csv")
    pd.DataFrame({"step": [10, 20], "elapsed_s": [6.0, 12.0], "psnr": [22.0, 22.4]}).to_csv(dec / "decoder_log.csv")
    saved = {}
    monkeypatch.setattr(prior_report, "_save", lambda fig, out, name: saved.update({name: fig}))
    prior_report.training_curves_figure(run, tmp_path, decoder_run=dec, decoder_device="NVIDIA H200")
    left = saved["training_curves"].axes[0]
    lines = {ln.get_label(): ln for ln in left.get_lines()}
    gpu = lines["decoder continued on NVIDIA H200 (50-pt mean)"]
    assert np.allclose(gpu.get_xdata(), [(120 + 60 + 6) / 60, (120 + 60 + 12) / 60])
    assert "NVIDIA H200" in left.get_xlabel()
    assert set(lines) == {"tokenizer", "decoder fine-tuning (frozen tokens)", gpu.get_label()}


def test_tokenizer_ceiling_separates_quantisation_from_the_autoencoder():
    """On real photographs the shipped tokenizer decodes its continuous latent better than its token maps, and the
    "quantised" row is exactly what ``Prior.reconstruct`` gives."""
    import torch
    from skimage import data as skdata
    from skimage.transform import resize

    from varlib.prior import load_prior
    from varlib.training import psnr_batch

    photos = [resize(getattr(skdata, n)(), (64, 64), anti_aliasing=True) for n in ("astronaut", "coffee", "chelsea")]
    x = torch.tensor(np.stack(photos), dtype=torch.float32).permute(0, 3, 1, 2).clamp(0, 1)
    prior = load_prior("tiny64")
    psnr = prior_report.tokenizer_ceiling(prior, x, batch=2)
    assert psnr["quantised"] == pytest.approx(float(psnr_batch(prior.reconstruct(x), x).mean()), abs=1e-4)
    assert psnr["unquantised"] > psnr["quantised"] + 0.3
    assert abs(psnr["phi_aware_finest"] - psnr["quantised"]) < 1.0  # only the finest scale's look-up differs
