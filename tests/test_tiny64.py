"""The shipped embedded prior (varlib/weights/tiny64) and the training command."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from varlib.data import data_dir
from varlib.prior import load_prior
from varlib.prior.loading import PACKAGE_WEIGHTS

WEIGHTS = PACKAGE_WEIGHTS / "tiny64"
HAS_TINY = (data_dir() / "tinyimagenet" / "val.tar").exists()
needs_data = pytest.mark.skipif(not HAS_TINY, reason="needs Tiny ImageNet in VARLIB_DATA_DIR (../shared/data); "
                                                     "runs in CI")


def test_shipped_prior_loads_offline_and_is_small():
    assert WEIGHTS.exists(), "varlib/weights/tiny64 must be committed (make prior rebuilds it)"
    total = sum(f.stat().st_size for f in WEIGHTS.iterdir())
    assert total <= 25 * 2 ** 20, f"shipped prior is {total / 2**20:.1f} MiB > 25 MiB"
    prior = load_prior("tiny64")
    assert prior.image_size == 64 and prior.num_classes == 202
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    for f in ("tokenizer.safetensors", "transformer.safetensors"):
        digest = [l.split()[0] for l in (WEIGHTS / "SHA256SUMS").read_text().splitlines() if l.endswith(f)][0]
        assert digest in card, f"model card must state the sha256 of {f}"


@needs_data
@pytest.mark.parametrize("name", ["tiny64", "tiny64-gpu"])
def test_reconstruction_psnr_matches_model_card(name):
    from varlib.training import evaluate_tokenizer
    metrics = json.loads((PACKAGE_WEIGHTS / name / "metrics.json").read_text())["tokenizer"]
    prior = load_prior(name)
    got = evaluate_tokenizer(prior, metrics["val_images"])
    assert abs(got["psnr"] - metrics["psnr"]) < 0.5, (got["psnr"], metrics["psnr"])
    # the coarse-to-fine curve rises with every scale
    assert all(b > a for a, b in zip(got["psnr_per_scales"], got["psnr_per_scales"][1:]))


def test_sampling_is_deterministic_and_cfg_matters():
    prior = load_prior("tiny64")
    a = prior.sample([5, 5], cfg=3.0, top_p=0.95, generator=torch.Generator().manual_seed(0))
    b = prior.sample([5, 5], cfg=3.0, top_p=0.95, generator=torch.Generator().manual_seed(0))
    c = prior.sample([5, 5], cfg=0.0, top_p=0.95, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (2, 3, 64, 64) and float(a.min()) >= 0 and float(a.max()) <= 1


def test_corrupted_or_missing_weight_file_is_refused(tmp_path):
    d = tmp_path / "tiny64"
    shutil.copytree(WEIGHTS, d)
    raw = bytearray((d / "transformer.safetensors").read_bytes())
    raw[-10] ^= 0xFF
    (d / "transformer.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="transformer.safetensors.*corrupted.*make prior"):
        load_prior(d)
    (d / "tokenizer.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.safetensors"):
        load_prior(d)


@needs_data
def test_two_step_training_runs_and_resumes(tmp_path):
    from varlib.training.cli import main
    out = tmp_path / "run"
    common = ["--out", str(out), "--config", "tiny64", "--shards", "0", "--limit", "64", "--batch", "8"]
    main(["tokenizer", "--steps", "2", *common])
    ck = torch.load(out / "tokenizer_ckpt.pt", weights_only=False)
    assert ck["step"] == 2
    with open(out / "tokenizer_log.csv", "a") as f:  # a row logged past the checkpoint by an interrupted run
        f.write("5,9.9,0.001,1.0,1.0,0.0,10.0,7\n")
    main(["tokenizer", "--steps", "3", "--device", "cpu", *common])  # resumes: one more step, not three
    ck3 = torch.load(out / "tokenizer_ckpt.pt", weights_only=False)
    assert ck3["step"] == 3
    rows = (out / "tokenizer_log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,") and rows[-1].startswith("3,")
    assert not any(r.startswith("5,") for r in rows)
    main(["tokenize", *common])
    tokens = np.load(out / "tokens_train.npz")
    assert tokens["tokens"].shape == (64, sum(p * p for p in (1, 2, 4, 8, 16)))
    main(["transformer", "--steps", "2", *common])
    assert torch.load(out / "transformer_ckpt.pt", weights_only=False)["step"] == 2
    # the small copy for training the transformer elsewhere: no optimizer state, same token maps
    packed = tmp_path / "packed"
    main(["pack", "--dest", str(packed), *common])
    assert "opt" not in torch.load(packed / "tokenizer_ckpt.pt", weights_only=False)
    assert np.array_equal(np.load(packed / "tokens_train.npz")["tokens"], tokens["tokens"])
    assert (packed / "tokenizer_ckpt.pt").stat().st_size < (out / "tokenizer_ckpt.pt").stat().st_size
    main(["transformer", "--steps", "2", "--device", "cpu", "--out", str(packed), "--config", "tiny64",
          "--batch", "8"])
    assert torch.load(packed / "transformer_ckpt.pt", weights_only=False)["step"] == 2


def test_a_resumed_log_drops_the_rows_past_its_checkpoint(tmp_path):
    from varlib.training import CsvLog
    path, fields = tmp_path / "log.csv", ["step", "loss"]
    log = CsvLog(path, fields)
    for step in (10, 20, 30, 40):
        log.write(step=step, loss=1.0 / step)
    CsvLog(path, fields, resume_step=40)  # everything up to the checkpoint: the file is kept as it is
    assert len(path.read_text().splitlines()) == 5
    log = CsvLog(path, fields, resume_step=20)  # the checkpoint holds step 20: steps 30 and 40 will be redone
    assert [r.split(",")[0] for r in path.read_text().splitlines()] == ["step", "10", "20"]
    log.write(step=30, loss=0.5)
    assert path.read_text().splitlines()[-1] == "30,0.5"
    CsvLog(path, fields)  # no checkpoint: a fresh start keeps only the header
    assert path.read_text().splitlines() == ["step,loss"]


@needs_data
def test_decoder_finetuning_improves_fit_and_keeps_tokens(tmp_path):
    """The decoder stage trains only the decoder: the encoder, codebook and token maps stay valid, and
    the reconstruction of the (small) training set improves; it resumes from its checkpoint."""
    from varlib.training import load_tokenizer_from_ckpt, load_train_images, split_tokens
    from varlib.training.cli import main
    from varlib.prior.configs import named_config
    out = tmp_path / "run"
    out.mkdir()
    shipped = load_prior("tiny64")
    torch.save({"model": shipped.tokenizer.state_dict(), "step": 3000}, out / "tokenizer_ckpt.pt")
    common = ["--out", str(out), "--config", "tiny64", "--shards", "0", "--limit", "32", "--batch", "8"]
    main(["tokenize", *common])
    tokens = torch.from_numpy(np.load(out / "tokens_train.npz")["tokens"].astype(np.int64))
    images, _ = load_train_images([0], 32)
    x = images.float().div(255) * 2 - 1
    cfg = named_config("tiny64")

    def train_mse(prior):
        with torch.no_grad():
            f_hat = prior.tokenizer.quantize.tokens_to_fhat(split_tokens(tokens, cfg.tokenizer.patch_nums))
            return float((prior.tokenizer.fhat_to_img(f_hat) - x).pow(2).mean())

    before = load_tokenizer_from_ckpt(out, cfg)
    mse0 = train_mse(before)
    main(["decoder", "--steps", "30", "--lr", "1e-4", *common])
    main(["decoder", "--steps", "60", "--lr", "1e-4", *common])  # resumes: thirty more steps
    ck = torch.load(out / "decoder_ckpt.pt", weights_only=False)
    assert ck["step"] == 60
    assert all(k.startswith(("decoder.", "post_quant_conv.")) for k in ck["model"])
    rows = (out / "decoder_log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(s) for s in range(10, 61, 10)]
    after = load_tokenizer_from_ckpt(out, cfg)
    assert train_mse(after) < 0.95 * mse0, (train_mse(after), mse0)
    old = dict(before.tokenizer.named_parameters())
    for name, p in after.tokenizer.named_parameters():  # only the decoder moved
        if not name.startswith(("decoder.", "post_quant_conv.")):
            assert torch.equal(p, old[name]), f"{name} changed during decoder fine-tuning"
    with torch.no_grad():  # same encoding before and after (fp32 here; `tokenize` uses bf16 autocast)
        toks_before, toks_after = (torch.cat([t.flatten(1) for t in p.tokenizer.img_to_tokens(x)], 1)
                                   for p in (before, after))
    assert torch.equal(toks_before, toks_after), "decoder fine-tuning must not change the token maps"


@needs_data
def test_holdout_keeps_best_state_and_from_seeds_the_run(tmp_path):
    """The GPU recipe's options, on CPU: --from copies the tokenizer side of a run, --holdout keeps random
    training maps out and stores the best state, which assembling and evaluation then use."""
    from varlib.training import assemble_prior, transformer_ckpt_path
    from varlib.training.cli import main
    src = tmp_path / "src"
    src.mkdir()
    torch.save({"model": load_prior("tiny64").tokenizer.state_dict(), "step": 3000}, src / "tokenizer_ckpt.pt")
    main(["tokenize", "--out", str(src), "--config", "tiny64", "--shards", "0", "--limit", "48"])
    (src / "tokenizer_log.csv").write_text("step,elapsed_s,psnr\n10,1.0,15.0\n")
    out = tmp_path / "gpu"
    common = ["--out", str(out), "--config", "tiny64-gpu", "--batch", "8"]
    with pytest.raises(ValueError, match="holdout=40 must be between 1 and half"):
        main(["transformer", "--from", str(src), "--steps", "2", "--holdout", "40", *common])
    assert np.array_equal(np.load(out / "tokens_train.npz")["tokens"], np.load(src / "tokens_train.npz")["tokens"])
    assert (out / "tokenizer_log.csv").read_text() == (src / "tokenizer_log.csv").read_text()  # for the figures
    main(["transformer", "--steps", "6", "--holdout", "8", "--eval-every", "2", *common])
    evals = (out / "transformer_eval.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in evals[1:]] == ["2", "4", "6"]
    nll = [float(r.split(",")[2]) for r in evals[1:]]
    best = torch.load(out / "transformer_best.pt", weights_only=False)
    assert best["step"] == 2 + 2 * int(np.argmin(nll)) and abs(best["holdout_nll"] - min(nll)) < 1e-3
    assert best["holdout"] == 8 and best["batch"] == 8 and best["device"] == "cpu"
    assert all(v.dtype == torch.float16 for v in best["model"].values() if v.is_floating_point())
    assert transformer_ckpt_path(out).name == "transformer_best.pt"
    # resuming keeps the earlier best unless a later evaluation beats it
    main(["transformer", "--steps", "8", "--holdout", "8", "--eval-every", "2", *common])
    nll8 = float((out / "transformer_eval.csv").read_text().strip().splitlines()[-1].split(",")[2])
    best8 = torch.load(out / "transformer_best.pt", weights_only=False)
    assert best8["holdout_nll"] <= best["holdout_nll"] + 1e-9
    assert best8["step"] == (8 if nll8 < min(nll) else best["step"])
    prior = assemble_prior(out, load_prior("tiny64").config)
    w = prior.transformer.head.weight
    assert w.dtype == torch.float32 and torch.allclose(w, best8["model"]["head.weight"].float())


def test_wall_budget_fixes_the_step_count(monkeypatch):
    """A --minutes budget measures the pace of the 50 steps after a 20-step warm-up and cuts the run to
    what fits; it never cuts below one more step, so the stage still reaches its final checkpoint."""
    from varlib.training import common
    clock = {"t": 0.0}
    monkeypatch.setattr(common.time, "time", lambda: clock["t"])
    assert common.WallBudget(None, 0, "x").steps(70, 1000) == 1000
    budget = common.WallBudget(1.0, 0, "tokenizer")  # 60 s
    steps = 100000
    for step in range(71):
        clock["t"] = step * 0.5 + (5.0 if step >= 20 else 0.0)  # 5 s of warm-up, then 0.5 s per step
        steps = budget.steps(step, steps)
    assert steps == 70 + int((60 - 40.0) / 0.5)  # at step 70, 40 s are spent; 20 s left at 0.5 s per step
    late = common.WallBudget(0.1, 0, "decoder")
    for step in range(71):
        clock["t"] = 100.0 + step  # already past the 6 s budget at step 70
        steps = late.steps(step, 100000)
    assert steps == 71


@needs_data
def test_decoder_of_another_width_on_the_shipped_tokens(tmp_path):
    """The GPU decoder recipe on CPU: --init-weights starts a run from a shipped prior's tokenizer, the decoder
    stage uses the token maps' prefix for a first-shard run, --decoder-ch trains a wider decoder from scratch,
    --minutes ends the stage at a saved checkpoint, and the checkpoint records what it continued."""
    from varlib.training import decoder_card_lines, evaluate_tokenizer, load_tokenizer_from_ckpt
    from varlib.training.cli import main
    out = tmp_path / "dec"
    main(["tokenize", "--init-weights", "tiny64", "--out", str(out), "--shards", "0", "--limit", "48"])
    shipped = load_prior("tiny64")
    start = torch.load(out / "tokenizer_ckpt.pt", weights_only=False)
    shipped_tk = shipped.metadata["metrics"]["tokenizer"]  # the shipped decoder's own fine-tuning, if it had one
    shipped_runs = [shipped_tk["decoder_finetune_steps"]] if "decoder_finetune_steps" in shipped_tk else []
    assert start["init_weights"] == "tiny64" and [r["steps"] for r in start["decoder_history"]] == shipped_runs
    common = ["--out", str(out), "--shards", "0", "--limit", "32", "--batch", "4", "--decoder-ch", "40"]
    with pytest.raises(ValueError, match="holds 48 token maps but the training split has 64"):
        main(["decoder", "--steps", "2", "--out", str(out), "--shards", "0", "--limit", "64", "--batch", "4",
              "--decoder-ch", "40"])
    main(["decoder", "--steps", "100000", "--minutes", "0.001", *common])
    ck = torch.load(out / "decoder_ckpt.pt", weights_only=False)
    assert ck["step"] == 71 and ck["train_images"] == 32 and ck["batch"] == 4
    assert ck["train_selection"] == {"shards": [0], "every": 1, "limit": 32}
    assert ck["history"] == start["decoder_history"]
    assert ck["model"]["decoder.conv_in.weight"].shape[0] == 40 * 4  # the widest level: 40 x ch_mult[-1]
    cfg = shipped.config
    cfg.tokenizer.decoder_ch = 40
    prior = load_tokenizer_from_ckpt(out, cfg)
    for name, p in prior.tokenizer.named_parameters():  # encoder and codebook are the shipped ones
        if name.startswith(("encoder.", "quant_conv.", "quantize.")):
            assert torch.equal(p, shipped.tokenizer.state_dict()[name]), name
    earlier = [{"steps": 1500, "wall_s": 1032.0, "batch": 32, "lr": 6e-4, "device": "cpu"}]  # a continued CPU run
    lines = decoder_card_lines({"decoder_finetune_steps": 71, "decoder_finetune_wall_s": 60.0,
                                "decoder_batch": 4, "decoder_lr": 3e-4, "decoder_device": "NVIDIA H200",
                                "decoder_train_images": 32, "decoder_history": ck["history"] + earlier})
    assert len(lines) == len(shipped_runs) + 2 and "1500 steps of batch 32" in lines[-2]
    assert lines[0].startswith("- Decoder fine-tuning") and lines[-1].startswith("- Then, continuing that decoder")
    assert "71 steps of batch 4 on the first 32 training images" in lines[-1] and "NVIDIA H200" in lines[-1]


def test_model_card_names_a_carried_training_subset():
    """A decoder trained on a subset written by `varlib.training subset` (read back as shard 0 of the carried
    folder) is described by the selection that subset holds, not as 'the first N images'."""
    from varlib.training import decoder_card_lines
    carried = {"shards": [0], "every": 1, "limit": None,
               "subset_of": {"shards": [0, 1, 2], "every": 6, "limit": 10000, "images": 10000}}
    tk = {"decoder_finetune_steps": 4460, "decoder_finetune_wall_s": 320.5, "decoder_batch": 128,
          "decoder_lr": 3e-4, "decoder_device": "NVIDIA H200", "decoder_train_images": 10000,
          "decoder_train_selection": carried}
    (line,) = decoder_card_lines(tk)
    assert "on 10000 training images (every 6th of each shard's images in name order, shards 0-2" in line
    assert "first 10000 training images" not in line
    tk.update(decoder_train_images=20200, decoder_train_selection={"shards": [0], "every": 1, "limit": None})
    assert "on the first 20200 training images (shard 0)" in decoder_card_lines(tk)[0]
    tk.update(decoder_train_images=60600, decoder_train_selection=None)
    assert " on " not in decoder_card_lines(tk)[0].split(" steps of batch 128")[1].split(",")[0]


def test_continuation_state_grows_the_codebook_and_refuses_other_changes():
    from varlib.prior import build_prior
    from varlib.prior.configs import test_config
    from varlib.training import continuation_state
    src = build_prior(test_config((1, 2, 4))).tokenizer.state_dict()
    grown_cfg = test_config((1, 2, 4, 4))
    grown_cfg.tokenizer.vocab_size = 80
    own = build_prior(grown_cfg).tokenizer.state_dict()
    state = continuation_state(src, own)
    emb = state["quantize.embedding.weight"]
    assert emb.shape == (80, 8)
    assert torch.equal(emb[:64], src["quantize.embedding.weight"]) and torch.equal(emb[64:], own["quantize.embedding.weight"][64:])
    assert state["quantize.ema_vocab_hit_SV"].shape == (4, 80)
    assert torch.equal(state["encoder.conv_in.weight"], src["encoder.conv_in.weight"])
    wider = test_config((1, 2, 4))
    wider.tokenizer.Cvae = 12
    with pytest.raises(ValueError, match="only the schedule and a larger codebook may change"):
        continuation_state(src, build_prior(wider).tokenizer.state_dict())


@needs_data
def test_tokenizer_continuation_starts_from_the_shipped_tokenizer(tmp_path):
    """tokenizer --init-weights continues the whole shipped tokenizer (the capacity experiment): with a
    repeated final scale and a grown codebook it starts at the shipped fidelity or above, not from scratch,
    records what it continued, and resumes."""
    from varlib.prior.configs import PriorConfig
    from varlib.training import evaluate_tokenizer, load_tokenizer_from_ckpt
    from varlib.training.cli import main
    out = tmp_path / "cont"
    args = ["tokenizer", "--init-weights", "tiny64", "--out", str(out), "--patch-nums", "1,2,4,8,16,16",
            "--vocab-size", "1100", "--shards", "0", "--limit", "32", "--batch", "4", "--lr", "1e-7"]
    main([*args, "--steps", "1"])
    ck = torch.load(out / "tokenizer_ckpt.pt", weights_only=False)
    shipped_steps = load_prior("tiny64").metadata["metrics"]["tokenizer"]["steps"]
    assert ck["step"] == 1 and ck["init_weights"] == "tiny64" and ck["init_steps"] == shipped_steps > 0
    cfg = PriorConfig.from_dict(ck["config"])
    assert cfg.tokenizer.patch_nums == (1, 2, 4, 8, 16, 16) and cfg.tokenizer.vocab_size == 1100
    shipped = load_prior("tiny64")
    continued = load_tokenizer_from_ckpt(out, cfg)
    torch.testing.assert_close(continued.tokenizer.quantize.embedding.weight[:1024],
                               shipped.tokenizer.quantize.embedding.weight, atol=1e-4, rtol=0)
    base, more = evaluate_tokenizer(shipped, 24), evaluate_tokenizer(continued, 24)
    assert more["psnr"] > base["psnr"] + 0.2, (more["psnr"], base["psnr"])  # a second 16x16 residual layer
    assert len(more["psnr_per_scales"]) == 6
    main([*args, "--steps", "2"])
    ck = torch.load(out / "tokenizer_ckpt.pt", weights_only=False)
    assert ck["step"] == 2 and ck["init_weights"] == "tiny64"
    # the capacity table scores it beside the shipped tokenizer on the same held-out images
    from varlib.prior_report import tokenizer_levers
    table = tokenizer_levers([out], tmp_path / "report", n_images=24)
    assert list(table["tokens_per_image"]) == [341, 597] and list(table["continued_steps"]) == [0, 2]
    assert table["bits_per_image"][1] == round(597 * np.log2(1100))
    assert table["tokenizer_psnr_db"][1] > table["tokenizer_psnr_db"][0] + 0.2
    assert table["transformer_step_s"][1] > table["transformer_step_s"][0]  # 597 tokens against 341
    assert (tmp_path / "report" / "tokenizer_levers.png").exists()
    with pytest.raises(ValueError, match="continued tiny64's tokenizer, not tiny64-gpu's: pass --prior tiny64"):
        tokenizer_levers([out], tmp_path / "report", base_prior="tiny64-gpu", n_images=8)
    with pytest.raises(ValueError, match="not a tokenizer continuation"):
        scratch = tmp_path / "scratch"
        main(["tokenizer", "--out", str(scratch), "--shards", "0", "--limit", "8", "--batch", "4", "--steps", "1"])
        tokenizer_levers([scratch], tmp_path / "report", n_images=8)


def test_missing_source_run_is_explained(tmp_path):
    from varlib.training.cli import main
    with pytest.raises(FileNotFoundError, match="tokenizer_ckpt.pt, tokens_train.npz missing.*make prior"):
        main(["transformer", "--from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--steps", "1"])


GPU_WEIGHTS = PACKAGE_WEIGHTS / "tiny64-gpu"


@pytest.mark.skipif(not GPU_WEIGHTS.exists(), reason="tiny64-gpu is not exported (make prior-gpu needs a CUDA device)")
def test_gpu_prior_records_the_token_maps_it_was_built_on():
    """tiny64-gpu is a tiny64's encoder and codebook with a decoder and a transformer trained further on a GPU;
    each shipped prior records the fingerprint of its token maps, and the card names the one it was built on."""
    from varlib.training import token_map_fingerprint
    total = sum(f.stat().st_size for f in GPU_WEIGHTS.iterdir())
    assert total <= 25 * 2 ** 20, f"shipped prior is {total / 2**20:.1f} MiB > 25 MiB"
    gpu, cpu = load_prior("tiny64-gpu"), load_prior("tiny64")
    assert gpu.name == "tiny64-gpu"
    fingerprints = [token_map_fingerprint(p) for p in (gpu, cpu)]
    assert [p.metadata["metrics"]["tokenizer"]["token_map_sha256"] for p in (gpu, cpu)] == fingerprints
    assert not torch.equal(gpu.tokenizer.decoder.conv_out.weight, cpu.tokenizer.decoder.conv_out.weight)
    assert not torch.equal(gpu.transformer.head.weight, cpu.transformer.head.weight)
    card = (GPU_WEIGHTS / "MODEL_CARD.md").read_text()
    assert "H200" in card and "over-fitted" in card and "continuing that decoder" in card
    assert fingerprints[0][:16] in card
    assert "A tiny64 with another fingerprint tokenises differently" in card  # whichever tiny64 is shipped beside it


def test_token_map_fingerprint_follows_the_encoder_not_the_decoder():
    from conftest import make_prior
    from varlib.training import token_map_fingerprint
    prior = make_prior()
    before = token_map_fingerprint(prior)
    with torch.no_grad():
        next(prior.tokenizer.decoder.parameters()).add_(0.1)
    assert token_map_fingerprint(prior) == before
    with torch.no_grad():
        next(prior.tokenizer.encoder.parameters()).add_(0.1)
    assert token_map_fingerprint(prior) != before


def test_tuned_settings_fall_back_to_the_prior_sharing_the_tokenizer(tmp_path, monkeypatch):
    """A prior without its own tuned values (tiny64-gpu before `varlib.tune` ran on it) uses tiny64's."""
    from varlib import solver
    table = {"tiny64": {"sr4": {"injection_depth": 4, "guidance_strength": 0.5}},
             "_notes": {"tiny64": "test"}}
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps(table))
    monkeypatch.setattr(solver, "TUNED_SETTINGS_FILE", path)
    gpu = solver.resolve_settings("default", "sr4", 5, "tiny64-gpu")
    assert gpu["injection_depth"] == 4 and gpu["guidance_strength"] == 0.5
    assert gpu == solver.resolve_settings("default", "sr4", 5, "tiny64")
    table["tiny64-gpu"] = {"sr4": {"injection_depth": 3}}  # its own values win
    path.write_text(json.dumps(table))
    assert solver.resolve_settings("default", "sr4", 5, "tiny64-gpu")["injection_depth"] == 3
    assert solver.resolve_settings("default", "sr4", 5, "test")["injection_depth"] != 4  # no fallback
    table["tiny64"]["gaussian_blur"] = {"injection_depth": 2}  # a task the prior was not tuned on
    path.write_text(json.dumps(table))
    assert solver.resolve_settings("default", "gaussian_blur", 5, "tiny64-gpu")["injection_depth"] == 2


def test_crop_schedule_and_random_crops():
    from varlib.training import crop_schedule, random_crops
    assert crop_schedule((1, 2, 4, 8, 16), 64, 32, 4) == (1, 1, 2, 4, 8)
    assert crop_schedule((1, 2, 4, 8, 16), 64, 48, 4) == (1, 2, 3, 6, 12)
    for bad in (30, 64, 0):
        with pytest.raises(ValueError, match="multiple of the tokenizer's down-sampling"):
            crop_schedule((1, 2, 4, 8, 16), 64, bad, 4)
    x = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).view(2, 3, 64, 64)
    crops = random_crops(x, 32, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (2, 3, 32, 32)
    for i in range(2):  # each crop is a window of its own image, on the latent grid
        oy, ox = divmod(int(crops[i, 0, 0, 0] - x[i, 0, 0, 0]), 64)
        assert oy % 4 == 0 and ox % 4 == 0
        assert torch.equal(crops[i], x[i, :, oy:oy + 32, ox:ox + 32])
    again = random_crops(x, 32, 4, torch.Generator().manual_seed(0))
    assert torch.equal(crops, again)


@needs_data
def test_tokenizer_training_choices_and_their_table(tmp_path):
    """The training choices of the tokenizer ablation run end to end, are recorded in the checkpoint, are
    named in the table's `change` column, and the table scores each run on the held-out images."""
    from varlib.prior_report import recipe_changes, tokenizer_ablation
    from varlib.training.cli import main
    common = ["tokenizer", "--shards", "0", "--limit", "32", "--batch", "4", "--steps", "2"]
    runs = {"ref": [], "crop": ["--crop", "32", "--crop-fraction", "0.5"],  # step 0 on crops, step 1 whole
            "mixed": ["--znorm", "--cvae", "8", "--loss", "l2", "--lr-schedule", "constant", "--seed", "1"],
            "whole": ["--crop", "0"], "crops": ["--crop", "32"]}
    for name, extra in runs.items():
        main([*common, "--out", str(tmp_path / name), *extra])
    ck = torch.load(tmp_path / "mixed" / "tokenizer_ckpt.pt", weights_only=False)
    assert ck["loss"] == "l2" and ck["lr_schedule"] == "constant"
    assert ck["crop"] == 32 and ck["crop_fraction"] == 0.9  # no --crop: the recipe's crops
    assert ck["config"]["tokenizer"]["Cvae"] == 8 and ck["config"]["transformer"]["Cvae"] == 8
    assert recipe_changes(ck) == "Cvae 8, cosine code look-up, l2 loss, constant lr, seed 1"
    ck_crop = torch.load(tmp_path / "crop" / "tokenizer_ckpt.pt", weights_only=False)
    assert ck_crop["crop"] == 32 and recipe_changes(ck_crop) == "32 px crops for 50% of the steps"
    whole = torch.load(tmp_path / "whole" / "tokenizer_ckpt.pt", weights_only=False)
    assert whole["crop"] is None and "crop_fraction" not in whole
    table = tokenizer_ablation([tmp_path / n for n in runs], tmp_path / "report", n_images=8)
    assert list(table["change"]) == ["tiny64 recipe", "32 px crops for 50% of the steps",
                                     "Cvae 8, cosine code look-up, l2 loss, constant lr, seed 1",
                                     "whole images", "32 px crops throughout"]
    assert list(table["steps"]) == [2] * 5 and table["vs_first_db"][0] == 0
    assert table["tokenizer_psnr_db"].between(5, 40).all()
    assert table["coarse_to_fine_db"].str.count("/").eq(4).all()  # scored at 64 px with all five scales
    assert (tmp_path / "report" / "tokenizer_ablation.png").exists()
    cached = json.loads((tmp_path / "crop" / "heldout_8.json").read_text())
    assert cached["step"] == 2 and round(cached["tokenizer"]["psnr"], 2) == table["tokenizer_psnr_db"][1]
    with pytest.raises(ValueError, match="was trained with loss='l1\\+l2', not 'l1': resume it"):
        main([*common[:-1], "3", "--out", str(tmp_path / "ref"), "--loss", "l1"])
    main([*common[:-1], "3", "--out", str(tmp_path / "ref")])  # one more step: scored afresh, not from the cache
    again = tokenizer_ablation([tmp_path / "ref"], tmp_path / "report", n_images=8)
    assert again["steps"][0] == 3 and json.loads((tmp_path / "ref" / "heldout_8.json").read_text())["step"] == 3
    with pytest.raises(ValueError, match="unknown tokenizer loss 'l3'"):
        from varlib.training import train_tokenizer
        from varlib.prior.configs import tiny64_config
        train_tokenizer(tmp_path / "bad", tiny64_config(), 1, loss_kind="l3")
    with pytest.raises(ValueError, match="give --steps with --crop-fraction"):
        train_tokenizer(tmp_path / "bad", tiny64_config(), 1, crop=32, crop_fraction=0.5, minutes=5)
    with pytest.raises(ValueError, match="--crop 0 \\(whole images\\) with --minutes"):
        train_tokenizer(tmp_path / "bad", tiny64_config(), 1, crop=32, crop_fraction=0.9, minutes=5)
    cont = tmp_path / "cont"
    main(["tokenizer", "--init-weights", "tiny64", "--out", str(cont), "--shards", "0", "--limit", "8",
          "--batch", "4", "--steps", "1", "--lr", "1e-7"])
    with pytest.raises(ValueError, match="continued tiny64's tokenizer; .* --levers"):
        tokenizer_ablation([cont], tmp_path / "report", n_images=8)


def test_a_recipe_with_crops(monkeypatch):
    """A recipe may crop the tokenizer's images: its crops are the default, --crop N crops every step, --crop 0
    trains on whole images; the ablation table names each run against that recipe."""
    from varlib.prior_report import recipe_changes
    from varlib.training import RECIPES, recipe_crop
    cropping = RECIPES["tiny64"]  # the shipped recipe: 32 px crops for 90 % of the tokenizer's steps
    assert recipe_crop(cropping, None, None) == (32, 0.9)
    assert recipe_crop(cropping, 32, None) == (32, 1.0)
    assert recipe_crop(cropping, 16, 0.5) == (16, 0.5)
    assert recipe_crop(cropping, 0, None) == (None, 1.0)
    whole = {k: v for k, v in cropping.items() if not k.startswith("tokenizer_crop")}
    assert recipe_crop(whole, None, None) == (None, 1.0)
    config = {"tokenizer": {}}
    assert recipe_changes({"config": config, "crop": 32, "crop_fraction": 0.9}) == "tiny64 recipe"
    assert recipe_changes({"config": config, "crop": None}) == "whole images"
    assert recipe_changes({"config": config, "crop": 32}) == "32 px crops throughout"
    monkeypatch.setitem(RECIPES, "tiny64", whole)
    assert recipe_changes({"config": config, "crop": 32, "crop_fraction": 0.9}) == "32 px crops for 90% of the steps"
    assert recipe_changes({"config": config, "crop": None}) == "tiny64 recipe"


def test_model_card_states_the_tokenizer_recipe():
    """The card's tokenizer line follows the recorded training choices; a run from before they were recorded
    reads as the default recipe, word for word as the shipped card."""
    from varlib.training import tokenizer_recipe_words
    assert tokenizer_recipe_words({}) == "AdamW lr 1e-3 cosine to 1e-4, L1 + L2 + VQ loss"
    assert "AdamW lr 1e-3 cosine to 1e-4, L1 + L2 + VQ loss" in (WEIGHTS / "MODEL_CARD.md").read_text()
    words = tokenizer_recipe_words({"lr": 5e-4, "lr_schedule": "constant", "loss": "l2", "crop": 32,
                                    "crop_fraction": 0.9})
    assert words == "AdamW lr 5e-4 constant, L2 + VQ loss, random 32 px crops for the first 90% of the steps"


def test_batch_indices_cover_an_epoch_and_refuse_a_batch_larger_than_the_data():
    from varlib.training import batch_indices
    epoch = np.concatenate([batch_indices(10, k, 3, seed=1) for k in range(3)])  # 3 full batches of 10 images
    assert len(set(epoch.tolist())) == 9 and np.array_equal(batch_indices(10, 1, 3, seed=1), epoch[3:6])
    assert not np.array_equal(batch_indices(10, 3, 3, seed=1), epoch[:3])  # the next epoch is reshuffled
    with pytest.raises(ValueError, match="batch 128 is larger than the 64 training images"):
        batch_indices(64, 0, 128, seed=0)


@pytest.mark.parametrize("name", ["tiny64", "tiny64-gpu"])
def test_model_card_template_renders_the_shipped_card(name):
    """The card is the template filled with the shipped metrics.json: rendering it again gives the shipped
    MODEL_CARD.md byte for byte (the CPU architecture is given, so any machine renders the same card)."""
    from varlib.training import model_card
    folder = PACKAGE_WEIGHTS / name
    if not folder.exists():
        pytest.skip(f"{name} is not exported")
    prior = load_prior(name)
    card = model_card(prior, prior.metadata["metrics"], folder, machine="x86_64")
    assert card == (folder / "MODEL_CARD.md").read_text()


HISTORY_WORDS = ("session", "issue", "retrained", "earlier", "previous", " since", "device call", "lent ", "lease")


@pytest.mark.parametrize("name", ["tiny64", "tiny64-gpu", "tiny64-diffusion"])
def test_model_cards_state_facts_not_history(name):
    from varlib.training.card import TEMPLATE
    card = (PACKAGE_WEIGHTS / name / "MODEL_CARD.md").read_text()
    for text in (card, TEMPLATE.read_text()):
        found = [w for w in HISTORY_WORDS if w in text.lower()]
        assert not found, f"{name}: {found}"
    assert "python -m varlib.training" in card or name == "tiny64-gpu"
    assert "varlib.train " not in card and "varlib.train." not in card


def test_priors_do_not_import_the_trainer():
    """varlib.prior and varlib.diffusion never import varlib.training (the trainer imports them)."""
    import subprocess
    import sys
    code = ("import sys, varlib.prior, varlib.diffusion, varlib.diffusion.solvers, varlib.diffusion.report; "
            "print(sorted(m for m in sys.modules if m.startswith('varlib.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
