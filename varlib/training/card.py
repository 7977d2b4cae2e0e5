"""The model card of an exported VAR prior: numbers from the run's ``metrics.json``, words from the
template ``model_card.md.tmpl`` beside this module (fragments filled with :class:`string.Template`)."""
from __future__ import annotations

import platform
import re
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Dict, List, Optional

import torch

from ..prior import Prior
from ..prior.configs import rebuild_command
from .common import SHARD_IMAGES, VAL_SLICE, training_data

TEMPLATE = Path(__file__).with_name("model_card.md.tmpl")
LOSS_NAMES = {"l1+l2": "L1 + L2", "l2": "L2", "l1": "L1"}


@lru_cache(maxsize=None)
def fragments() -> Dict[str, str]:
    """The template's fragments by name (the text after each ``@@ name`` line, without its final line break)."""
    parts = re.split(r"^@@ (\S+)\n", TEMPLATE.read_text(), flags=re.M)
    return {name: text[:-1] if text.endswith("\n") else text for name, text in zip(parts[1::2], parts[2::2])}


def fill(fragment: str, /, **values) -> str:
    """The template's ``fragment`` with its placeholders replaced by ``values``."""
    return Template(fragments()[fragment]).substitute(**values)


def _sci(v: float) -> str:
    return f"{v:.0e}".replace("e-0", "e-")  # 6e-4, as the card writes learning rates


def _minutes(seconds: float, digits: int = 0) -> str:
    return f"{(seconds or 0) / 60:.{digits}f}"


def tokenizer_recipe_words(tk: Dict) -> str:
    """The tokenizer's optimiser, loss and crops as the model card states them (``tk``: metrics["tokenizer"];
    a run that recorded none of these choices used the defaults)."""
    lr = tk.get("lr", 1e-3)
    schedule = (fill("schedule_cosine", final_lr=_sci(lr / 10)) if tk.get("lr_schedule", "cosine") == "cosine"
                else fill("schedule_constant"))
    words = dict(lr=_sci(lr), schedule=schedule, loss=LOSS_NAMES[tk.get("loss", "l1+l2")])
    if tk.get("crop"):
        return fill("recipe_crops", **words, crop=tk["crop"], share=f"{tk.get('crop_fraction', 1.0):.0%}")
    return fill("recipe", **words)


def _decoder_data_words(n: int, selection: Optional[Dict]) -> str:
    """' on ...' naming the training images a decoder run saw ('' for the whole split)."""
    sel = (selection or {}).get("subset_of", selection)  # a carried subset: the selection it was cut from
    if sel and sel.get("every", 1) > 1:
        shards = sel.get("shards", [0, 1, 2])
        cut = fill("data_subset_cut", n=n) if sel.get("limit") else ""
        return fill("data_subset", n=n, every=sel["every"], first=shards[0], last=shards[-1], cut=cut)
    if n >= 3 * SHARD_IMAGES:
        return ""
    shards = ""
    if n % SHARD_IMAGES == 0:
        shards = fill("data_first_shards", last=n // SHARD_IMAGES - 1) if n > SHARD_IMAGES else fill("data_first_shard")
    return fill("data_first", n=n, shards=shards)


def decoder_card_lines(tk: Dict) -> List[str]:
    """The model card's decoder fine-tuning lines: the decoder runs it continued (``decoder_history``), then its own."""
    if "decoder_finetune_steps" not in tk:
        return []
    runs = list(tk.get("decoder_history", [])) + [
        {"steps": tk["decoder_finetune_steps"], "wall_s": tk["decoder_finetune_wall_s"], "batch": tk.get("decoder_batch", 32),
         "lr": tk.get("decoder_lr", 6e-4), "device": tk.get("decoder_device", "cpu"),
         "train_images": tk.get("decoder_train_images"), "train_selection": tk.get("decoder_train_selection")}]
    lines = []
    for i, r in enumerate(runs):
        lr = r.get("lr", 6e-4)
        where = "" if r.get("device", "cpu") == "cpu" else fill("decoder_where", device=r["device"])
        run = fill("decoder_run", steps=r["steps"], batch=r["batch"], lr=_sci(lr), final_lr=_sci(lr / 10),
                   data=_decoder_data_words(r.get("train_images") or 3 * SHARD_IMAGES, r.get("train_selection")),
                   minutes=_minutes(r.get("wall_s")), where=where)
        lines.append(fill("decoder_first" if i == 0 else "decoder_then", run=run))
    return lines


def transformer_card_lines(tr: Dict) -> List[str]:
    """The model card's transformer line (with the held-out selection of the best state, if the run kept one)."""
    holdout = "" if "holdout" not in tr else fill(
        "transformer_holdout", device=tr.get("device", "cpu"), steps_run=tr.get("steps_run", tr["steps"]),
        holdout=tr["holdout"], holdout_nll=f"{tr['holdout_nll']:.3f}")
    init = fill("transformer_init", init_weights=tr["init_weights"]) if tr.get("init_weights") else ""
    return [fill("transformer", steps=tr["steps"], batch=tr.get("batch", 32), lr=f"{tr.get('lr', 1e-3):g}",
                 minutes=_minutes(tr["train_wall_s"], 1), holdout=holdout, init=init)]


def _hardware(tk: Dict, tr: Dict, machine: str) -> str:
    cpu = dict(machine=machine, torch=tk.get("torch", torch.__version__))
    if tr.get("device", "cpu") == "cpu":
        return fill("hardware_cpu", **cpu)
    name = "hardware_gpu_decoder" if tk.get("decoder_device", "cpu") != "cpu" else "hardware_gpu"
    return fill(name, **cpu, gpu=tr["device"], gpu_torch=tr.get("torch", "?"))


def _scale_rows(tr: Dict) -> str:
    cls = tr.get("class_unigram_nll") or [float("nan")] * len(tr["scales"])
    nll = ("model_nll", "model_nll_uncond", "unigram_nll", "copy_nll")
    acc = ("model_acc", "unigram_acc", "copy_acc")
    return "\n".join(fill("scale_row", pn=pn, class_unigram_nll=f"{cls[i]:.3f}", **{k: f"{tr[k][i]:.3f}" for k in nll},
                          **{k: f"{100 * tr[k][i]:.1f}" for k in acc}) for i, pn in enumerate(tr["scales"]))


def results_section(metrics: Dict, machine: str) -> str:
    """The card's training and held-out metrics sections."""
    tk, tr, sm = metrics["tokenizer"], metrics["transformer"], metrics.get("sampling_cpu", {})
    gpu = tr.get("device", "cpu") != "cpu"
    steps = (fill("continued", init_weights=tk["init_weights"], init_steps=tk.get("init_steps", "?"), steps=tk["steps"])
             if "init_weights" in tk else tk["steps"])
    sampling = "" if not sm else "\n\n" + fill(
        "sampling", kv_cache=f"{sm['seconds_per_image_kv_cache']:.3f}", no_cache=f"{sm['seconds_per_image_no_cache']:.3f}")
    cls = tr.get("class_unigram_nll") or [float("nan")] * len(tr["scales"])
    return fill(
        "results", where=fill("where_gpu", gpu=tr["device"]) if gpu else fill("where_cpu"),
        tokenizer_steps=steps, tokenizer_batch=tk.get("batch", 32), recipe=tokenizer_recipe_words(tk),
        tokenizer_minutes=_minutes(tk["train_wall_s"]), stage_lines="\n".join(decoder_card_lines(tk) + transformer_card_lines(tr)),
        hardware=_hardware(tk, tr, machine), psnr=f"{tk['psnr']:.2f}", val_images=tk["val_images"],
        bicubic_x4=f"{tk.get('bicubic_x4_psnr', float('nan')):.2f}", bicubic_x2=f"{tk.get('bicubic_x2_psnr', float('nan')):.2f}",
        psnr_per_scales=", ".join(f"{v:.2f}" for v in tk["psnr_per_scales"]), codes_used=tk["codes_used_val"],
        vocab=tk["vocab_size"], scale_rows=_scale_rows(tr), class_gap=f"{tr['model_nll'][0] - cls[0]:+.3f}", sampling=sampling)


def _intro(name: str, metrics: Optional[Dict]) -> str:
    tk, tr = (metrics or {}).get("tokenizer", {}), (metrics or {}).get("transformer", {})
    devices = [d for d in (tr.get("device", "cpu"), tk.get("decoder_device", "cpu")) if d != "cpu"]
    if not devices:
        return fill("intro_faces" if training_data(name) == "celeba" else "intro_cpu")
    intro = fill("intro_gpu", gpu=devices[0])
    if tk.get("token_map_sha256"):
        intro += "\n\n" + fill("fingerprint", fingerprint=tk["token_map_sha256"][:16])
    return intro


def model_card(prior: Prior, metrics: Optional[Dict], dest: Path, machine: Optional[str] = None) -> str:
    """MODEL_CARD.md of ``prior`` exported to ``dest`` (whose ``SHA256SUMS`` it quotes) with the run's
    ``metrics`` (None: architecture and checksums only); ``machine``: the CPU's architecture as the card
    states it (default: this machine's)."""
    c = prior.config
    machine = machine or platform.processor() or platform.machine()
    return fill(
        "card", name=c.name, intro=_intro(c.name, metrics), rebuild=rebuild_command(c.name),
        data=fill(f"data_{training_data(c.name)}", val_images=VAL_SLICE),
        tokenizer_params=f"{sum(p.numel() for p in prior.tokenizer.parameters()) / 1e6:.2f}",
        ch=c.tokenizer.ch, ch_mult=c.tokenizer.ch_mult, res_blocks=c.tokenizer.num_res_blocks,
        downsample=c.tokenizer.downsample, vocab=c.tokenizer.vocab_size, cvae=c.tokenizer.Cvae,
        patch_nums=c.tokenizer.patch_nums, tokens=sum(p * p for p in c.tokenizer.patch_nums),
        transformer_params=f"{sum(p.numel() for p in prior.transformer.parameters()) / 1e6:.2f}",
        depth=c.transformer.depth, width=c.transformer.width, heads=c.transformer.num_heads,
        classes=c.transformer.num_classes, results=results_section(metrics, machine) + "\n\n" if metrics else "",
        sums=(dest / "SHA256SUMS").read_text().strip()) + "\n"
