"""A run directory and the priors in it: starting a run from another run or from shipped weights, and
assembling the prior a run has trained so far.

A run directory (``--out``) holds ``tokenizer_ckpt.pt``, ``tokens_train.npz`` (and ``tokens_val.npz``),
``decoder_ckpt.pt`` when the decoder stage ran, ``transformer_ckpt.pt`` and, with a holdout,
``transformer_best.pt``, each stage's CSV log and ``metrics.json``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..io import atomic_copy, atomic_torch_save
from ..prior import Prior, PriorConfig, build_prior


def decoder_runs(tk: dict) -> list:
    """The decoder runs a shipped tokenizer's ``metrics["tokenizer"]`` records, oldest first: its
    ``decoder_history`` and then its own fine-tuning, as the keys of a decoder checkpoint."""
    own = [] if "decoder_finetune_steps" not in tk else [{
        "steps": tk["decoder_finetune_steps"], "wall_s": tk.get("decoder_finetune_wall_s"),
        "batch": tk.get("decoder_batch", 32), "lr": tk.get("decoder_lr", 6e-4), "device": tk.get("decoder_device", "cpu"),
        **{key: tk[f"decoder_{key}"] for key in ("train_images", "train_selection") if f"decoder_{key}" in tk}}]
    return list(tk.get("decoder_history", [])) + own


def init_from_weights(out: Path, name: str) -> Path:
    """Start run ``out`` from a shipped prior's tokenizer (encoder, codebook and fine-tuned decoder): writes
    ``tokenizer_ckpt.pt`` (no optimizer state) unless the run has one. The decoder stage then continues that
    decoder with a fresh optimizer, and the tokens are the shipped prior's, so its transformer stays valid."""
    from ..prior.loading import load_prior
    path = out / "tokenizer_ckpt.pt"
    if path.exists():
        return path
    out.mkdir(parents=True, exist_ok=True)
    prior = load_prior(name)  # verifies the checksums; metadata["metrics"] is its metrics.json
    tk = prior.metadata.get("metrics", {}).get("tokenizer", {})
    atomic_torch_save({"model": prior.tokenizer.state_dict(), "step": tk.get("steps", 0),
                       "elapsed": tk.get("train_wall_s", 0.0), "config": prior.config.to_dict(), "init_weights": name,
                       "decoder_history": decoder_runs(tk)}, path)
    return path


def seed_run(src: Path, out: Path) -> None:
    """Copy the tokenizer side of run ``src`` (checkpoints, token maps, training logs) into ``out``, where missing."""
    need = ("tokenizer_ckpt.pt", "tokens_train.npz")
    missing = [n for n in need if not (src / n).exists()]
    if missing:
        raise FileNotFoundError(f"--from {src}: {', '.join(missing)} missing; run the tokenizer stages there first "
                                "(make prior, or python -m varlib.training tokenizer/tokenize --out " + str(src) + ")")
    for name in need + ("decoder_ckpt.pt", "tokens_val.npz", "tokenizer_log.csv", "decoder_log.csv"):  # logs: the figures
        if (src / name).exists() and not (out / name).exists():
            atomic_copy(src / name, out / name)


def load_tokenizer_from_ckpt(out: Path, cfg: PriorConfig) -> Prior:
    """A prior of ``cfg`` holding run ``out``'s tokenizer (with its fine-tuned decoder, if any) and a fresh
    transformer; ``metadata["decoder_history"]``: the decoder runs its checkpoint continued."""
    prior = build_prior(cfg)
    ck = torch.load(out / "tokenizer_ckpt.pt", map_location="cpu", weights_only=False)
    state, own = dict(ck["model"]), prior.tokenizer.state_dict()
    if cfg.tokenizer.decoder_ch not in (None, cfg.tokenizer.ch):
        # a decoder of another width: it starts from scratch (or from decoder_ckpt.pt below), the rest is kept
        state.update({k: v for k, v in own.items() if k.startswith("decoder.")})
    # code-usage statistics are kept per scale: a tokenizer reused with another schedule starts them afresh
    for key in [k for k in state if k.endswith("ema_vocab_hit_SV")]:
        if state[key].shape != own[key].shape:
            state[key] = own[key]
    if (out / "decoder_ckpt.pt").exists():  # the fine-tuned decoder (stage `decoder`) replaces its part
        state.update(torch.load(out / "decoder_ckpt.pt", map_location="cpu", weights_only=False)["model"])
    prior.tokenizer.load_state_dict(state)
    prior.tokenizer.eval()
    prior.metadata["decoder_history"] = ck.get("decoder_history", [])  # decoder runs it continued (--init-weights)
    return prior


def transformer_ckpt_path(out: Path) -> Path:
    """The transformer state a run ships: the best held-out one when the run kept a holdout, else the last."""
    best = out / "transformer_best.pt"
    return best if best.exists() else out / "transformer_ckpt.pt"


def assemble_prior(out: Path, cfg: PriorConfig) -> Prior:
    """Run ``out``'s tokenizer and transformer (:func:`transformer_ckpt_path`) as one prior, in eval mode."""
    prior = load_tokenizer_from_ckpt(out, cfg)
    ck = torch.load(transformer_ckpt_path(out), map_location="cpu", weights_only=False)
    prior.transformer.load_state_dict(ck["model"])  # copies fp16 values (transformer_best.pt) into fp32 parameters
    prior.transformer.eval()
    return prior
