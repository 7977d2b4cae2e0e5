"""Figures and tables that show how good the embedded prior is (``results/prior/``).

    python -m varlib.prior_report --run runs/tiny64 --out results/prior

Reads the run directory written by :mod:`varlib.training` (logs, checkpoints, metrics.json) or the
shipped weights, and draws: held-out reconstructions with PSNR, the coarse-to-fine PSNR curve,
training curves, the per-scale NLL against the baselines, class-conditional samples (two
guidance values) and class-agnostic samples, and the schedule trade-off table.
``--levers RUN ...`` instead scores tokenizer continuations (``make prior-levers``) side by side;
``--ablation RUN ...`` scores short from-scratch tokenizer runs with other training choices (``make prior-ablation``);
``--ceiling`` compares the shipped token maps with decoding the encoder's continuous latent (``tokenizer_ceiling.md``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .io import atomic_path, atomic_write_text
from .prior import Prior, load_prior


def _save(fig, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=130, bbox_inches="tight")
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)


def _write_table(df: pd.DataFrame, out: Path, name: str) -> None:
    """``name``.csv (written whole or not at all) and ``name``.md under ``out``."""
    with atomic_path(out / f"{name}.csv") as tmp:
        df.to_csv(tmp, index=False)
    atomic_write_text(out / f"{name}.md", df.to_markdown(index=False))


def _grid(ax, images: torch.Tensor, nrow: int) -> None:
    """Show (N,3,H,W) in [0,1] as a grid with 1 px white gutters."""
    N, _, H, W = images.shape
    ncol = int(np.ceil(N / nrow))
    canvas = np.ones((nrow * (H + 1) - 1, ncol * (W + 1) - 1, 3))
    for i in range(N):
        r, c = divmod(i, ncol)
        canvas[r * (H + 1):r * (H + 1) + H, c * (W + 1):c * (W + 1) + W] = images[i].permute(1, 2, 0).cpu().numpy()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([]); ax.set_yticks([])


def class_block_order(num_classes: int, per_class: int) -> torch.Tensor:
    """Permutation of class-major samples (``per_class`` consecutive per class) such that a row-major
    grid of 2 rows shows each class as a block of ``per_class // 2`` columns x 2 rows, classes left
    to right."""
    cols = per_class // 2
    return torch.tensor([k * per_class + r * cols + j for r in range(2) for k in range(num_classes) for j in range(cols)])


def reconstructions_figure(prior: Prior, out: Path, n: int = 8) -> None:
    from .data import load_images
    from .training import image_set_of, psnr_batch
    held_out = image_set_of(prior.name, "val")
    x, names = load_images(held_out, prior.image_size, limit=n, with_names=True)
    rec = prior.reconstruct(x)
    p = psnr_batch(rec, x)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6))
    for i in range(n):
        axes[0, i].imshow(x[i].permute(1, 2, 0).numpy())
        axes[0, i].set_title(names[i].replace(".JPEG", "").replace(".jpg", ""), fontsize=7)
        axes[1, i].imshow(rec[i].permute(1, 2, 0).numpy()); axes[1, i].set_title(f"{p[i]:.1f} dB", fontsize=8)
        for a in axes[:, i]:
            a.set_xticks([]); a.set_yticks([])
    axes[0, 0].set_ylabel("held-out\nimage", fontsize=8)
    axes[1, 0].set_ylabel("tokenizer\nreconstruction", fontsize=8)
    fig.suptitle(f"{prior.name}: {held_out} reconstructions (64 px, all {prior.num_scales} scales), PSNR per image",
                 fontsize=9)
    _save(fig, out, "reconstructions")


def coarse_to_fine_figure(prior: Prior, metrics: Dict, out: Path) -> None:
    from .training import image_set_of
    tok = metrics["tokenizer"]
    curve = tok["psnr_per_scales"]
    pn = prior.patch_nums
    cum_tokens = np.cumsum([p * p for p in pn])
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(range(1, len(curve) + 1), curve, "o-")
    for k, (c, t) in enumerate(zip(curve, cum_tokens), start=1):
        ax.annotate(f"{pn[k - 1]}x{pn[k - 1]}\n{t} tok", (k, c), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7)
    if "bicubic_x4_psnr" in tok:
        ax.axhline(tok["bicubic_x4_psnr"], color="gray", ls="--", lw=1, label=f"bicubic x4 down/up ({tok['bicubic_x4_psnr']:.1f} dB)")
        ax.axhline(tok["bicubic_x2_psnr"], color="gray", ls=":", lw=1, label=f"bicubic x2 down/up ({tok['bicubic_x2_psnr']:.1f} dB)")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xticks(range(1, len(curve) + 1))
    ax.set_xlabel("number of scales decoded (coarse to fine)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{prior.name} tokenizer coarse-to-fine PSNR, {tok['val_images']} {image_set_of(prior.name, 'val')} images",
                 fontsize=9)
    ax.set_ylim(min(curve) - 1, max(curve) + 2.5)
    ax.grid(alpha=0.3)
    _save(fig, out, "coarse_to_fine")


def training_curves_figure(run: Path, out: Path, transformer_device: str = "2-core CPU",
                           shipped_step: Optional[int] = None, decoder_run: Optional[Path] = None,
                           decoder_device: str = "GPU") -> None:
    """Training curves: tokenizer (and decoder) train-batch PSNR, transformer loss (and holdout NLL).
    ``decoder_run``: a later decoder run that continued this one's decoder (the GPU recipe), drawn after it."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    tl = pd.read_csv(run / "tokenizer_log.csv")
    axes[0].plot(tl["elapsed_s"] / 60, tl["psnr"].rolling(10, min_periods=1).mean(), label="tokenizer")
    end = tl["elapsed_s"].max()
    if (run / "decoder_log.csv").exists():  # the decoder stage continues where the tokenizer stopped
        dl = pd.read_csv(run / "decoder_log.csv")
        axes[0].plot((end + dl["elapsed_s"]) / 60, dl["psnr"].rolling(10, min_periods=1).mean(),
                     label="decoder fine-tuning (frozen tokens)")
        end += dl["elapsed_s"].max()
        axes[0].legend(fontsize=7)
    xlabel = "wall time (min, 2-core CPU)"
    if decoder_run is not None and (decoder_run / "decoder_log.csv").exists():
        gl = pd.read_csv(decoder_run / "decoder_log.csv")
        axes[0].plot((end + gl["elapsed_s"]) / 60, gl["psnr"].rolling(50, min_periods=1).mean(),
                     label=f"decoder continued on {decoder_device} (50-pt mean)")
        axes[0].legend(fontsize=7)
        xlabel = f"wall time (min; 2-core CPU, then {decoder_device})"
    axes[0].set_xlabel(xlabel); axes[0].set_ylabel("train-batch PSNR (dB), 10-pt mean")
    axes[0].set_title("tokenizer", fontsize=9); axes[0].grid(alpha=0.3)
    if (run / "transformer_log.csv").exists():
        ml = pd.read_csv(run / "transformer_log.csv")
        axes[1].plot(ml["elapsed_s"] / 60, ml["loss"].rolling(10, min_periods=1).mean(), label="training batches")
        if (run / "transformer_eval.csv").exists():  # a run with a holdout (the GPU recipe)
            ev = pd.read_csv(run / "transformer_eval.csv")
            # the shipped state's step (the log's 4 decimals can tie); else the lowest logged NLL
            hit = ev[ev["step"] == shipped_step]
            best = hit.iloc[0] if len(hit) else ev.loc[ev["holdout_nll"].idxmin()]
            axes[1].plot(ev["elapsed_s"] / 60, ev["holdout_nll"], "o-", ms=3, label="held-out training maps")
            axes[1].plot(best["elapsed_s"] / 60, best["holdout_nll"], "k*", ms=10,
                         label=f"shipped state (step {int(best['step'])})")
            axes[1].legend(fontsize=7)
        axes[1].set_xlabel(f"wall time (min, {transformer_device})"); axes[1].set_ylabel("cross-entropy (nats/token)")
        axes[1].set_title("transformer", fontsize=9); axes[1].grid(alpha=0.3)
    _save(fig, out, "training_curves")


def nll_figure(metrics: Dict, out: Path, images: str = "tinyimagenet-val") -> None:
    m = metrics["transformer"]
    pn = m["scales"]
    xs = np.arange(len(pn))
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for key, lab in (("model_nll", "transformer (class given)"), ("model_nll_uncond", "transformer (null class)"),
                     ("unigram_nll", "unigram baseline"), ("copy_nll", "copy-coarser baseline"),
                     ("class_unigram_nll", "class-unigram baseline")):
        if key in m:
            axes[0].plot(xs, m[key], "o-" if "model" in key else "s--", label=lab)
    for key, lab in (("model_acc", "transformer"), ("unigram_acc", "unigram"), ("copy_acc", "copy-coarser")):
        axes[1].plot(xs, np.asarray(m[key]) * 100, "o-", label=lab)
    for a, yl in zip(axes, ("held-out NLL (nats/token)", "held-out top-1 accuracy (%)")):
        a.set_xticks(xs); a.set_xticklabels([f"{p}x{p}" for p in pn]); a.set_xlabel("scale")
        a.set_ylabel(yl); a.grid(alpha=0.3); a.legend(fontsize=7)
    fig.suptitle(f"Teacher-forced transformer metrics per scale, {m['val_images']} {images} images", fontsize=9)
    _save(fig, out, "transformer_nll")


def samples_figure(prior: Prior, out: Path, classes: Optional[List[int]] = None, per_class: int = 4,
                   cfgs=(0.0, 3.0), seed: int = 0) -> None:
    from .data import tinyimagenet_classes
    words = {}
    try:
        wnids = tinyimagenet_classes()
        from .data import data_dir
        for line in (data_dir() / "tinyimagenet" / "words.txt").read_text().splitlines():
            k, v = line.split("\t", 1)
            words[k] = v.split(",")[0]
        names = [words.get(w, w) for w in wnids]
    except Exception:
        names = [str(i) for i in range(prior.num_classes)]
    classes = classes or [0, 20, 50, 80, 110, 140, 170, 190]
    cols = per_class // 2
    order = class_block_order(len(classes), per_class)
    fig, axes = plt.subplots(len(cfgs) + 1, 1, figsize=(1.0 * per_class * len(classes) / 2 + 1, 2.3 * (len(cfgs) + 1)))
    for row, cfg in enumerate(cfgs):
        g = torch.Generator().manual_seed(seed)
        labels = torch.tensor(classes).repeat_interleave(per_class)
        imgs = prior.sample(labels, cfg=cfg, top_k=0, top_p=0.95, generator=g)
        _grid(axes[row], imgs[order], nrow=2)
        axes[row].set_title(f"class-conditional, cfg = {cfg} (columns grouped by class: "
                            + ", ".join(names[c] for c in classes) + ")", fontsize=7)
    g = torch.Generator().manual_seed(seed)
    imgs = prior.sample(torch.full((per_class * len(classes),), -1), cfg=0.0, top_p=0.95, generator=g)
    _grid(axes[-1], imgs, nrow=2)
    axes[-1].set_title("class-agnostic (null class)", fontsize=7)
    fig.suptitle(f"{prior.name} samples (top-p 0.95, seed {seed}); each class fills {cols} columns x 2 rows", fontsize=8)
    _save(fig, out, "samples")


def face_samples_figure(prior: Prior, diffusion_prior, out: Path, n: int = 16, seed: int = 0,
                        cfg: float = 1.5, top_p: float = 0.95, steps: int = 50) -> None:
    """``n`` unconditional samples of the VAR face prior (the face class, CFG ``cfg`` against the null class,
    top-p ``top_p``) above ``n`` of the diffusion face prior (DDIM, ``steps`` network evaluations), one seed."""
    g = torch.Generator().manual_seed(seed)
    var = prior.sample(torch.zeros(n, dtype=torch.long), cfg=cfg, top_k=0, top_p=top_p, generator=g)
    with torch.no_grad():
        ddim = diffusion_prior.sample(n, steps=steps, generator=seed)
    fig, axes = plt.subplots(2, 1, figsize=(0.85 * n / 2 + 1, 4.6))
    _grid(axes[0], var, nrow=2)
    axes[0].set_title(f"{prior.name} (VAR, {prior.num_scales} scales): cfg {cfg}, top-p {top_p}", fontsize=8)
    _grid(axes[1], ddim.clamp(0, 1), nrow=2)
    axes[1].set_title(f"{diffusion_prior.config.name} (diffusion): DDIM {steps} steps", fontsize=8)
    fig.suptitle(f"Unconditional 64 px samples of the two face priors, seed {seed}", fontsize=9)
    _save(fig, out, "face_samples")


SCHEDULES = {
    "1,2,4,8,16 (shipped)": (1, 2, 4, 8, 16),
    "1,2,4,6,8,12,16": (1, 2, 4, 6, 8, 12, 16),
    "1,2,3,4,6,8,11,16": (1, 2, 3, 4, 6, 8, 11, 16),
    "official 1..16": (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
}


@torch.no_grad()
def _tokenizer_psnr_with_schedule(prior: Prior, x: torch.Tensor, patch_nums) -> float:
    from .training import psnr_batch
    q = prior.tokenizer.quantize
    f = prior.tokenizer.encode_latent(x * 2 - 1)
    toks = q.f_to_tokens(f, patch_nums)
    f_hat = q.tokens_to_fhat(toks, patch_nums=patch_nums)
    return float(psnr_batch(prior.fhat_to_image(f_hat), x).mean())


def _measure_schedules(prior: Prior, n_images: int = 200, steps: int = 3, batch: int = 32) -> pd.DataFrame:
    """Tokens per image, tokenizer PSNR and transformer training speed for each of ``SCHEDULES``.

    The tokenizer PSNR of the other schedules re-uses the shipped tokenizer (trained on the shipped
    schedule) with that schedule's residual quantisation, so it is a lower bound of what a
    tokenizer trained for it would reach. Speeds are measured here: ``steps`` timed transformer
    training steps (batch 32, bf16 autocast, this machine's threads) of the shipped transformer size.
    """
    import copy
    from .data import read_tinyimagenet
    x, _, _ = read_tinyimagenet("val", limit=n_images)
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    rows = []
    for name, pn in SCHEDULES.items():
        cfg = copy.deepcopy(prior.config)
        cfg.tokenizer.patch_nums = pn
        cfg.transformer.patch_nums = pn
        psnr = _tokenizer_psnr_with_schedule(prior, x, pn)
        step_s = transformer_step_seconds(cfg, steps, batch)
        rows.append({"schedule": name, "scales": len(pn), "tokens_per_image": sum(p * p for p in pn),
                     "tokenizer_psnr_db": round(psnr, 2), "transformer_step_s": round(step_s, 2),
                     "train_images_per_hour": int(batch * 3600 / step_s)})
    return pd.DataFrame(rows)


@torch.no_grad()
def tokenizer_ceiling(prior: Prior, x: torch.Tensor, batch: int = 100) -> Dict[str, float]:
    """Mean PSNR (dB) of three decodings of ``x`` (B,3,H,W) in [0,1]: where the tokenizer loses fidelity.

    ``quantised``: the token maps as shipped (greedy residual look-up, coarse to fine);
    ``phi_aware_finest``: the finest scale's codes looked up against the codebook as its phi convolution
    maps it (centre tap only), an encoder-side variant that needs no training but changes the token maps;
    ``unquantised``: the encoder's continuous latent decoded directly, no codebook at all. The decoder was
    trained on quantised latents, so ``unquantised`` indicates the autoencoder's ceiling; it is not a bound.
    """
    from .training import psnr_batch
    tok = prior.tokenizer
    q = tok.quantize
    last = len(q.patch_nums) - 1
    phi = q.phi(last)
    emb = q.embedding.weight
    mix = getattr(phi, "resi_ratio", 0.0)  # Identity when quant_resi is 0: the look-up is then the greedy one
    centre = (1 - mix) * emb + (mix * (emb @ phi.weight[:, :, 1, 1].T + phi.bias) if mix else 0)
    sums = {"quantised": 0.0, "phi_aware_finest": 0.0, "unquantised": 0.0}
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(prior.device)
        f = tok.encode_latent(xb * 2 - 1)
        toks = q.f_to_tokens(f)
        coarse = q.tokens_to_fhat(toks, last)
        finest = q.nearest_codes((f - coarse).permute(0, 2, 3, 1).reshape(-1, f.shape[1]), centre).view_as(toks[last])
        decoded = {"quantised": q.tokens_to_fhat(toks), "phi_aware_finest": q.tokens_to_fhat(toks[:last] + [finest]),
                   "unquantised": f}
        for key, f_hat in decoded.items():
            sums[key] += float(psnr_batch(prior.fhat_to_image(f_hat), xb).sum())
    return {k: v / len(x) for k, v in sums.items()}


def tokenizer_ceiling_table(prior: Prior, out: Path, n_images: int = 500) -> pd.DataFrame:
    """``tokenizer_ceiling`` on the first ``n_images`` of ``tinyimagenet-val``, as ``tokenizer_ceiling.{csv,md}``."""
    from .data import read_tinyimagenet
    x, _, _ = read_tinyimagenet("val", limit=n_images)
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    psnr = tokenizer_ceiling(prior, x)
    words = {"quantised": "token maps as shipped (greedy look-up)",
             "phi_aware_finest": "finest scale looked up through its phi convolution (not kept)",
             "unquantised": "continuous latent, no codebook (the autoencoder's ceiling)"}
    df = pd.DataFrame([{"decoding": words[k], "psnr_db": round(v, 2), "vs_shipped_db": round(v - psnr["quantised"], 2)}
                       for k, v in psnr.items()])
    df.insert(0, "prior", prior.name)
    df["val_images"] = len(x)
    _write_table(df, out, "tokenizer_ceiling")
    return df


def transformer_step_seconds(cfg, steps: int = 3, batch: int = 32) -> float:
    """Median seconds of a transformer training step of ``cfg``'s size on random tokens (batch ``batch``,
    bf16 autocast, this machine's threads), after one warm-up step."""
    import torch.nn.functional as F
    from .prior import build_prior
    torch.manual_seed(0)
    tr = build_prior(cfg).transformer.train()
    L = sum(p * p for p in cfg.transformer.patch_nums)
    opt = torch.optim.AdamW(tr.parameters(), 1e-4)
    seq = torch.randint(0, tr.V, (batch, L))
    lab = torch.randint(0, tr.num_classes, (batch,))
    xin = torch.randn(batch, L - 1, tr.Cvae)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = tr(lab, xin)
        loss = F.cross_entropy(logits.float().reshape(-1, tr.V), seq.reshape(-1))
        opt.zero_grad(); loss.backward(); opt.step()
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


TOKENIZER_TARGET_DB = 24.0  # the held-out tokenizer PSNR the CPU recipe aims at


def tokenizer_levers(runs: List[Path], out: Path, base_prior: str = "tiny64", n_images: int = 500) -> pd.DataFrame:
    """Tokenizer capacity levers at equal training: continuations of ``base_prior``'s tokenizer
    (``python -m varlib.training tokenizer --init-weights tiny64 --patch-nums ... --vocab-size ... --steps N``),
    each scored on the same held-out images beside the shipped tokenizer. Bits per image are the
    tokens' raw code length (tokens x log2 codebook size); the transformer step time is measured here
    for the prior's transformer size on each run's schedule and codebook.
    Writes ``tokenizer_levers.{csv,md,png,pdf}`` under ``out``."""
    from .prior.configs import PriorConfig
    from .training import evaluate_tokenizer, load_tokenizer_from_ckpt
    base = load_prior(base_prior)
    entries = [(f"{base_prior} (shipped)", base, {})]
    for run in runs:
        ck = torch.load(Path(run) / "tokenizer_ckpt.pt", map_location="cpu", weights_only=False)
        if "init_weights" not in ck:
            raise ValueError(f"{run} is not a tokenizer continuation (no init_weights in its tokenizer_ckpt.pt); "
                             f"make one with `python -m varlib.training tokenizer --init-weights {base_prior} ...`")
        if ck["init_weights"] != base_prior:
            raise ValueError(f"{run} continued {ck['init_weights']}'s tokenizer, not {base_prior}'s: pass --prior "
                             f"{ck['init_weights']} to compare it with the tokenizer it started from")
        cfg = PriorConfig.from_dict(ck["config"])
        entries.append((Path(run).name, load_tokenizer_from_ckpt(Path(run), cfg),
                        {"continued_steps": ck["step"], "continued_wall_min": round(ck.get("elapsed", 0.0) / 60, 1)}))
    rows, step_times = [], {}
    for name, prior, extra in entries:
        tk = evaluate_tokenizer(prior, n_images)
        pn, vocab = prior.patch_nums, prior.config.tokenizer.vocab_size
        tokens = sum(p * p for p in pn)
        if (pn, vocab) not in step_times:  # one timing per transformer shape; 8 steps tame the noise
            step_times[pn, vocab] = transformer_step_seconds(prior.config, steps=8)
        step_s = step_times[pn, vocab]
        rows.append({"run": name, "schedule": ",".join(map(str, pn)), "codebook": vocab, "tokens_per_image": tokens,
                     "bits_per_image": int(round(tokens * np.log2(vocab))), "continued_steps": extra.get("continued_steps", 0),
                     "continued_wall_min": extra.get("continued_wall_min", 0.0), "tokenizer_psnr_db": round(tk["psnr"], 2),
                     "codes_used_val": tk["codes_used_val"], "transformer_step_s": round(step_s, 2)})
    df = pd.DataFrame(rows)
    _write_table(df, out, "tokenizer_levers")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.scatter(df["bits_per_image"], df["tokenizer_psnr_db"], s=60 * df["transformer_step_s"] / df["transformer_step_s"].min())
    for _, r in df.iterrows():
        ax.annotate(f"{r['run']}\n{r['schedule']} x {r['codebook']} codes, {r['transformer_step_s']} s/step",
                    (r["bits_per_image"], r["tokenizer_psnr_db"]), textcoords="offset points", xytext=(6, -4), fontsize=6.5)
    ax.set_xlabel("bits per image (tokens x log2 codebook size)")
    ax.set_ylabel(f"tokenizer PSNR (dB), {n_images} held-out images")
    ax.axhline(TOKENIZER_TARGET_DB, color="grey", ls="--", lw=1)
    ax.annotate(f"target of the CPU recipe, {TOKENIZER_TARGET_DB:g} dB", (df["bits_per_image"].min() - 250, TOKENIZER_TARGET_DB),
                textcoords="offset points", xytext=(0, -10), fontsize=7, color="grey")
    ax.set_xlim(df["bits_per_image"].min() - 300, df["bits_per_image"].max() + 2500)
    ax.set_ylim(top=max(TOKENIZER_TARGET_DB, df["tokenizer_psnr_db"].max()) + 0.2)
    ax.set_title(f"Tokenizer capacity levers: {base_prior}'s tokenizer continued {df['continued_steps'].max()} more steps each\n"
                 "(marker area = transformer training step time, batch 32, this CPU)", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out, "tokenizer_levers")
    return df


ABLATION_FIELDS = ("Cvae", "vocab_size", "patch_nums", "ch", "num_res_blocks", "decoder_ch")


def recipe_changes(ck: Dict, reference: str = "tiny64") -> str:
    """What a tokenizer run (its ``tokenizer_ckpt.pt`` dict) changed from the ``reference`` recipe, in words."""
    from .prior.configs import named_config
    from .training import RECIPES, recipe_crop
    tok, ref = ck["config"]["tokenizer"], named_config(reference).tokenizer
    changes = [f"{k} {tok[k]}" for k in ABLATION_FIELDS
               if k in tok and (tuple(tok[k]) if isinstance(tok[k], list) else tok[k]) != getattr(ref, k)]
    if tok.get("using_znorm") and not ref.using_znorm:
        changes.append("cosine code look-up")
    if ck.get("loss", "l1+l2") != "l1+l2":
        changes.append(f"{ck['loss']} loss")
    if ck.get("lr_schedule", "cosine") != "cosine":
        changes.append(f"{ck['lr_schedule']} lr")
    crop, share = ck.get("crop") or None, ck.get("crop_fraction", 1.0)
    if (crop, share if crop else 1.0) != recipe_crop(RECIPES.get(reference, {}), None, None):
        changes.append(f"{crop} px crops" + (f" for {share:.0%} of the steps" if share < 1 else " throughout")
                       if crop else "whole images")
    if ck.get("lr", 1e-3) != 1e-3:
        changes.append(f"lr {ck['lr']:g}")
    if ck.get("seed", 0):
        changes.append(f"seed {ck['seed']}")
    return ", ".join(changes) or f"{reference} recipe"


def tokenizer_ablation(runs: List[Path], out: Path, n_images: int = 500, reference: str = "tiny64") -> pd.DataFrame:
    """Tokenizer training choices side by side: short from-scratch runs (``python -m varlib.training tokenizer
    --steps N --loss/--lr-schedule/--znorm/--cvae/--crop ...``), each scored on the same held-out images.
    The first run is the reference the others are compared with. Each run's scores are kept in its
    ``heldout_<n_images>.json`` for the step they were taken at. Writes ``tokenizer_ablation.{csv,md,png,pdf}``."""
    from .prior.configs import PriorConfig
    from .training import evaluate_tokenizer, load_tokenizer_from_ckpt
    rows, curves = [], {}
    for run in tqdm(runs, desc="tokenizer runs", unit="run"):
        run = Path(run)
        ck = torch.load(run / "tokenizer_ckpt.pt", map_location="cpu", weights_only=False)
        if "init_weights" in ck:
            raise ValueError(f"{run} continued {ck['init_weights']}'s tokenizer; this table compares runs from "
                             f"scratch (score continuations with --levers)")
        cache = run / f"heldout_{n_images}.json"  # scoring takes a minute per run; redrawing should not
        scored = json.loads(cache.read_text()) if cache.exists() else {}
        if scored.get("step") != ck["step"]:
            scored = {"step": ck["step"], "tokenizer": evaluate_tokenizer(
                load_tokenizer_from_ckpt(run, PriorConfig.from_dict(ck["config"])), n_images)}
            cache.with_suffix(".tmp").write_text(json.dumps(scored))
            cache.with_suffix(".tmp").replace(cache)
        tk = scored["tokenizer"]
        wall = ck.get("elapsed", 0.0)
        rows.append({"run": run.name, "change": recipe_changes(ck, reference), "steps": ck["step"],
                     "images_seen": ck["step"] * ck.get("batch", 32), "train_wall_min": round(wall / 60, 1),
                     "s_per_step": round(wall / max(1, ck["step"]), 2), "tokenizer_psnr_db": round(tk["psnr"], 2),
                     "coarse_to_fine_db": " / ".join(f"{v:.1f}" for v in tk["psnr_per_scales"]),
                     "codes_used_val": f"{tk['codes_used_val']} of {tk['vocab_size']}"})
        log = pd.read_csv(run / "tokenizer_log.csv")
        curves[rows[-1]["change"]] = (log["elapsed_s"] / 60, log["psnr"].rolling(10, min_periods=1).mean(),
                                      bool(ck.get("crop")))
    df = pd.DataFrame(rows)
    df.insert(7, "vs_first_db", (df["tokenizer_psnr_db"] - df["tokenizer_psnr_db"].iloc[0]).round(2))
    _write_table(df, out, "tokenizer_ablation")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13.5, 4.6), gridspec_kw={"width_ratios": [1, 1]})
    order = df.sort_values("tokenizer_psnr_db")
    labels = [f"{r['change']} ({r['steps']} steps, {r['train_wall_min']} min)" for _, r in order.iterrows()]
    ax.barh(labels, order["tokenizer_psnr_db"], color=["C1" if i == 0 else "C0" for i in order.index])
    ax.axvline(df["tokenizer_psnr_db"].iloc[0], color="C1", ls="--", lw=1)
    for y, v in enumerate(order["tokenizer_psnr_db"]):
        ax.annotate(f"{v:.2f}", (v, y), textcoords="offset points", xytext=(3, -3), fontsize=7)
    lo = df["tokenizer_psnr_db"].min()
    ax.set_xlim(lo - 1.0, df["tokenizer_psnr_db"].max() + 0.6)
    ax.set_xlabel(f"tokenizer PSNR (dB), {n_images} held-out tinyimagenet-val images")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("held-out fidelity at the end of each run (orange: first run, the reference)", fontsize=8)
    # the reference in the bars' orange, the others in distinct colours (tab20 without its oranges)
    palette = ["C1"] + [plt.cm.tab20(i) for i in range(20) if i not in (2, 3)]
    for i, (name, (minutes, psnr, cropped)) in enumerate(curves.items()):
        ax2.plot(minutes, psnr, ls="--" if cropped else "-", lw=1.3 if i == 0 else 1.0,
                 color=palette[i % len(palette)], label=name)
    ax2.set_xlabel("training wall time (min, this CPU)")
    ax2.set_ylabel("training-batch PSNR (dB), mean over 100 steps")
    ax2.set_title("training curves (dashed: runs with crops, whose batch PSNR is on the crops while cropping,\n"
                  "so not comparable with whole images; the held-out bars are all on whole 64 px images)", fontsize=8)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    _save(fig, out, "tokenizer_ablation")
    return df


def transformer_nll_summary(metrics: Dict) -> Dict:
    """Token-weighted held-out NLL of a trained transformer and of the unigram baseline (nats/token),
    nats per image, and the smallest per-scale margin over the better of unigram / copy-coarser."""
    m = metrics["transformer"]
    n = np.asarray([p * p for p in m["scales"]], dtype=float)
    model, uni = np.asarray(m["model_nll"]), np.asarray(m["unigram_nll"])
    best_base = np.minimum(uni, np.asarray(m["copy_nll"]))
    return {"transformer_steps": m.get("steps"), "model_nll_per_token": round(float((model * n).sum() / n.sum()), 3),
            "unigram_nll_per_token": round(float((uni * n).sum() / n.sum()), 3),
            "margin_per_token": round(float(((uni - model) * n).sum() / n.sum()), 3),
            "min_scale_margin": round(float((best_base - model).min()), 3),
            "model_nats_per_image": round(float((model * n).sum()), 1)}


def schedule_tradeoff(prior: Prior, out: Path, trained: Optional[Dict[str, Path]] = None,
                      remeasure: bool = True) -> pd.DataFrame:
    """Tokens per image vs tokenizer PSNR vs transformer NLL and training images per hour.

    ``trained`` maps a schedule name of ``SCHEDULES`` to the ``metrics.json`` of a transformer trained
    on it for the same wall time as the shipped one (``python -m varlib.training transformer
    --patch-nums ...`` with the shipped tokenizer; README); their NLL columns join the table. With
    ``remeasure=False`` the measured columns are read back from ``schedule_tradeoff.csv``.
    """
    csv_path = out / "schedule_tradeoff.csv"
    if remeasure or not csv_path.exists():
        df = _measure_schedules(prior)
    else:
        df = pd.read_csv(csv_path)[["schedule", "scales", "tokens_per_image", "tokenizer_psnr_db",
                                    "transformer_step_s", "train_images_per_hour"]]
    per_scale = {}
    for name, path in (trained or {}).items():
        metrics = json.loads(Path(path).read_text())
        for k, v in transformer_nll_summary(metrics).items():
            df.loc[df["schedule"] == name, k] = v
        per_scale[name] = metrics["transformer"]
    _write_table(df, out, "schedule_tradeoff")
    fig, axes = plt.subplots(1, 2 if per_scale else 1, figsize=(11 if per_scale else 5.5, 3.8), squeeze=False)
    ax = axes[0, 0]
    ax.scatter(df["tokens_per_image"], df["tokenizer_psnr_db"], s=df["train_images_per_hour"] / 400)
    for _, r in df.iterrows():
        label = f"{r['schedule']}\n{r['train_images_per_hour'] / 1000:.0f}k img/h, {r['transformer_step_s']} s/step"
        if pd.notna(r.get("model_nll_per_token", np.nan)):
            label += f"\nNLL {r['model_nll_per_token']:.2f} nats/token ({r['margin_per_token']:.2f} below unigram)"
        ax.annotate(label, (r["tokens_per_image"], r["tokenizer_psnr_db"]), textcoords="offset points",
                    xytext=(6, -4), fontsize=6.5)
    ax.set_xlabel("tokens per image")
    ax.set_ylabel("tokenizer PSNR (dB), held-out")
    ax.set_xlim(df["tokens_per_image"].min() - 60, df["tokens_per_image"].max() + 300)
    ax.set_title("Schedule trade-off (marker area = transformer training images per hour)", fontsize=8)
    ax.grid(alpha=0.3)
    if per_scale:
        ax = axes[0, 1]
        for name, m in per_scale.items():
            margin = np.asarray(m["unigram_nll"]) - np.asarray(m["model_nll"])
            ax.plot(m["scales"], margin, "o-", label=f"{name}, {m.get('steps')} steps")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("scale (side of the token map)")
        ax.set_ylabel("unigram NLL - transformer NLL (nats/token)")
        ax.set_title("Held-out NLL gain over the unigram baseline, equal training wall time", fontsize=8)
        ax.legend(fontsize=7); ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out, "schedule_tradeoff")
    return df


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m varlib.prior_report")
    ap.add_argument("--run", default="runs/tiny64")
    ap.add_argument("--prior", default="tiny64")
    ap.add_argument("--out", default="results/prior")
    ap.add_argument("--tradeoff", action="store_true", help="also measure the schedule trade-off (a few minutes)")
    ap.add_argument("--tradeoff-from-table", action="store_true",
                    help="redraw the trade-off from schedule_tradeoff.csv (no re-measuring) with the trained NLL runs")
    ap.add_argument("--trained", nargs="*", default=[], metavar="SCHEDULE=METRICS_JSON",
                    help="transformers trained on other schedules for the trade-off, e.g. "
                         "'1,2,4,6,8,12,16=results/prior/schedule_runs/1-2-4-6-8-12-16/metrics.json'")
    ap.add_argument("--decoder-run", default=None,
                    help="a decoder run that continued --run's decoder (make prior-gpu: runs/tiny64-gpu-decoder)")
    ap.add_argument("--levers", nargs="+", default=None, metavar="RUN",
                    help="only the tokenizer capacity table: score these continuations of --prior's tokenizer "
                         "(python -m varlib.training tokenizer --init-weights ...) beside it")
    ap.add_argument("--ceiling", action="store_true",
                    help="only the tokenizer ceiling table: quantised against unquantised decoding of 500 held-out images")
    ap.add_argument("--diffusion-prior", default=None,
                    help="a diffusion prior whose unconditional samples go beside --prior's (face_samples.png)")
    ap.add_argument("--ablation", nargs="+", default=None, metavar="RUN",
                    help="only the tokenizer training-choice table: score these from-scratch tokenizer runs, the first "
                         "being the reference (make prior-ablation)")
    a = ap.parse_args(argv)
    out, run = Path(a.out), Path(a.run)
    if a.ceiling:
        print(tokenizer_ceiling_table(load_prior(a.prior), out).to_string())
        return
    if a.ablation:
        print(tokenizer_ablation([Path(r) for r in a.ablation], out).to_string())
        return
    if a.levers:
        print(tokenizer_levers([Path(r) for r in a.levers], out, a.prior).to_string())
        return
    prior = load_prior(a.prior)
    metrics = prior.metadata.get("metrics") or json.loads((run / "metrics.json").read_text())
    reconstructions_figure(prior, out)
    coarse_to_fine_figure(prior, metrics, out)
    if run.exists():
        device = metrics.get("transformer", {}).get("device", "cpu")
        training_curves_figure(run, out, "2-core CPU" if device == "cpu" else device,
                               metrics.get("transformer", {}).get("steps"),
                               Path(a.decoder_run) if a.decoder_run else None,
                               metrics.get("tokenizer", {}).get("decoder_device", "GPU"))
    from .training import image_set_of
    nll_figure(metrics, out, image_set_of(prior.name, "val"))
    if a.diffusion_prior:
        from .diffusion import load_diffusion_prior
        face_samples_figure(prior, load_diffusion_prior(a.diffusion_prior), out)
    else:
        samples_figure(prior, out)
    if a.tradeoff or a.tradeoff_from_table:
        trained = dict(t.split("=", 1) for t in a.trained)
        trained = {next((k for k in SCHEDULES if k.split(" ")[0] == n), n): p for n, p in trained.items()}
        print(schedule_tradeoff(prior, out, trained, remeasure=a.tradeoff).to_string())
    print("figures written to", out)


if __name__ == "__main__":
    main()
