"""Training the embedded priors on Tiny ImageNet: tokenizer, tokenising, decoder, transformer, evaluation, export.

    python -m varlib.training all --out runs/tiny64            # the whole recipe (what `make prior` runs)
    python -m varlib.training tokenizer --out runs/tiny64 --steps 3600
    python -m varlib.training tokenize --out runs/tiny64
    python -m varlib.training decoder --out runs/tiny64 --steps 2000   # fine-tune the decoder on the frozen tokens
    python -m varlib.training transformer --out runs/tiny64 --steps 1500
    python -m varlib.training evaluate --out runs/tiny64
    python -m varlib.training export --out runs/tiny64 --dest varlib/weights/tiny64
    python -m varlib.training pack --out runs/tiny64 --dest runs/gpu   # small copy to train the transformer elsewhere
    python -m varlib.training subset --every 6 --limit 10000 --dest runs/gpu/data   # 10,000 images as one 27 MB tar
    python -m varlib.training transformer --config tiny64-gpu --from runs/tiny64 --out runs/tiny64-gpu \
        --device cuda --batch 256 --steps 4500 --holdout 1000 --eval-every 500   # GPU recipe (make prior-gpu)
    python -m varlib.training diffusion --out runs/diffusion64 --steps 2600 --export   # the diffusion prior

Every stage is seeded, resumable (re-running continues from the last checkpoint in ``--out``),
shows a progress bar and appends to a CSV log in ``--out``. Data order and flips depend only on the
seed and the step, so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..prior import PriorConfig
from ..prior.configs import named_config
from .recipes import recipe_crop, recipe_for
from .tokenizer import LR_SCHEDULES, TOKENIZER_LOSSES

STAGES = ["tokenizer", "tokenize", "decoder", "transformer", "evaluate", "export", "pack", "subset", "all"]


def _model_options(ap: argparse.ArgumentParser) -> None:
    """The configuration and its variants (every stage of a run needs the same ones)."""
    ap.add_argument("--config", default="tiny64")
    ap.add_argument("--patch-nums", default=None, help="override the scale schedule, e.g. 1,2,4,8,16")
    ap.add_argument("--tokenizer-ch", type=int, default=None,
                    help="override the tokenizer's base conv width (a tokenizer variant; every stage of the run needs it)")
    ap.add_argument("--tokenizer-res-blocks", type=int, default=None,
                    help="override the tokenizer's residual blocks per level")
    ap.add_argument("--decoder-ch", type=int, default=None,
                    help="decoder stage: a decoder of this base width, trained from scratch on the frozen tokens")
    ap.add_argument("--vocab-size", type=int, default=None,
                    help="override the codebook size (with tokenizer --init-weights: grow the shipped codebook)")
    ap.add_argument("--cvae", type=int, default=None, help="override the latent and code dimension (tokenizer variant)")
    ap.add_argument("--znorm", action="store_true",
                    help="tokenizer variant: look codes up by cosine similarity (l2-normalised) instead of l2 distance")


def _tokenizer_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--loss", default="l1+l2", choices=TOKENIZER_LOSSES, help="tokenizer: reconstruction loss")
    ap.add_argument("--lr-schedule", default="cosine", choices=LR_SCHEDULES,
                    help="tokenizer: cosine decay to a tenth after the warm-up, or constant")
    ap.add_argument("--crop", type=int, default=None,
                    help="tokenizer: train on random CROP x CROP windows (a multiple of the down-sampling, e.g. 32); "
                         "default: the recipe's (32 px crops for 90 %% of the steps for tiny64); 0: whole images")
    ap.add_argument("--crop-fraction", type=float, default=None,
                    help="tokenizer with --crop: the share of the steps on crops, whole images after that "
                         "(default: the recipe's with its crop, else 1)")


def _run_options(ap: argparse.ArgumentParser) -> None:
    """Steps, optimiser, data, device and the options of single stages."""
    ap.add_argument("--steps", type=int, default=None, help="steps of the chosen stage (default: the recipe)")
    ap.add_argument("--tokenizer-steps", type=int, default=None)
    ap.add_argument("--decoder-steps", type=int, default=None)
    ap.add_argument("--transformer-steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", default=None, help="comma-separated train shards (default 0,1,2)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training images (tests)")
    ap.add_argument("--every", type=int, default=1,
                    help="tokenize/decoder/subset: only every N-th training image of each shard (name order)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--device", default="cpu", help="device of the tokenizer, decoder and transformer stages (e.g. cuda)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="tokenizer, decoder, transformer: wall budget; the pace of steps 20-70 fixes the step count")
    ap.add_argument("--holdout", type=int, default=0,
                    help="transformer: keep N random training maps out, score them every --eval-every steps, "
                         "keep the best state in transformer_best.pt")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--ckpt-every", type=int, default=100, help="transformer: steps between resumable checkpoints")
    ap.add_argument("--dest", default=None, help="export directory (default varlib/weights/<config>); pack, subset: their target")
    ap.add_argument("--from", dest="from_run", default=None,
                    help="start --out from another run's tokenizer, decoder and token maps (e.g. the GPU recipe)")
    ap.add_argument("--init-weights", default=None,
                    help="start --out from a shipped prior's tokenizer (e.g. tiny64): the decoder stage continues its "
                         "decoder on its tokens; the tokenizer stage continues all of it, for --steps more steps")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m varlib.training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=STAGES,
                    help="stage of the VAR prior; `python -m varlib.training diffusion --help` for the diffusion prior")
    ap.add_argument("--out", default="runs/tiny64", help="run directory (checkpoints, logs, tokens)")
    _model_options(ap)
    _tokenizer_options(ap)
    _run_options(ap)
    return ap


def config_from_args(a: argparse.Namespace) -> PriorConfig:
    """The named configuration with the command line's overrides."""
    cfg = named_config(a.config)
    if a.patch_nums:
        pn = tuple(int(v) for v in a.patch_nums.split(","))
        cfg.tokenizer.patch_nums = pn
        cfg.transformer.patch_nums = pn
    if a.tokenizer_ch:
        cfg.tokenizer.ch = a.tokenizer_ch
    if a.tokenizer_res_blocks:
        cfg.tokenizer.num_res_blocks = a.tokenizer_res_blocks
    if a.decoder_ch:
        cfg.tokenizer.decoder_ch = a.decoder_ch
    if a.vocab_size:
        cfg.tokenizer.vocab_size = a.vocab_size
        cfg.transformer.vocab_size = a.vocab_size
    if a.cvae:
        cfg.tokenizer.Cvae = a.cvae
        cfg.transformer.Cvae = a.cvae
    if a.znorm:
        cfg.tokenizer.using_znorm = True
    return cfg


def stage_steps(a: argparse.Namespace, recipe: Dict) -> Dict[str, int]:
    """Steps of each training stage: ``--<stage>-steps``, else ``--steps`` for the chosen stage, else the recipe's."""
    return {"tokenizer": a.tokenizer_steps or (a.steps if a.stage == "tokenizer" else None) or recipe["tokenizer_steps"],
            "transformer": a.transformer_steps or (a.steps if a.stage == "transformer" else None)
            or recipe["transformer_steps"],
            "decoder": a.decoder_steps if a.decoder_steps is not None else (
                a.steps if a.stage == "decoder" and a.steps is not None else recipe.get("decoder_steps", 0))}


def _train_stages(a, cfg: PriorConfig, out: Path, recipe: Dict, shards: Optional[List[int]]) -> None:
    """The stages that train: tokenizer, tokenize, decoder (when it has steps), transformer."""
    from .decoder import train_decoder
    from .tokenizer import train_tokenizer
    from .tokens import tokenize_split
    from .transformer import train_transformer
    steps, bf16 = stage_steps(a, recipe), not a.no_bf16
    if a.stage in ("tokenizer", "all"):
        crop, crop_fraction = recipe_crop(recipe, a.crop, a.crop_fraction)
        train_tokenizer(out, cfg, steps["tokenizer"], a.batch, a.lr or recipe.get("tokenizer_lr", 1e-3), a.seed, shards,
                        a.limit, bf16=bf16, device=a.device, minutes=a.minutes,
                        init_weights=a.init_weights or recipe.get("tokenizer_init"), loss_kind=a.loss,
                        lr_schedule=a.lr_schedule, crop=crop, crop_fraction=crop_fraction)
    if a.stage in ("tokenize", "all"):
        tokenize_split(out, cfg, "train", shards, a.limit, device=a.device, every=a.every)
    if a.stage in ("decoder", "all") and steps["decoder"] > 0:
        train_decoder(out, cfg, steps["decoder"], a.batch, a.lr or 6e-4, a.seed, shards, a.limit, bf16=bf16,
                      device=a.device, minutes=a.minutes, every=a.every)
    if a.stage in ("transformer", "all"):
        train_transformer(out, cfg, steps["transformer"], a.batch, a.lr or recipe.get("transformer_lr", 1e-3), a.seed,
                          bf16=bf16, device=a.device, minutes=a.minutes, holdout=a.holdout, eval_every=a.eval_every, ckpt_every=a.ckpt_every,
                          init_weights=recipe.get("transformer_init"))


def _output_stages(a, cfg: PriorConfig, out: Path, shards: Optional[List[int]]) -> None:
    """The stages that write results: evaluate, subset, pack, export."""
    if a.stage in ("evaluate", "all"):
        from .evaluate import evaluate
        print(json.dumps(evaluate(out, cfg), indent=1))
    if a.stage == "subset":
        if not a.dest:
            raise SystemExit("subset needs --dest, the data folder to write (read it with VARLIB_DATA_DIR=DEST --shards 0)")
        from ..data import write_train_subset
        print("wrote", write_train_subset(Path(a.dest), shards, a.every, a.limit))
    if a.stage == "pack":
        if not a.dest:
            raise SystemExit("pack needs --dest, the folder to write the small copy to")
        from .tokens import pack_for_transfer
        print("packed to", pack_for_transfer(out, Path(a.dest)))
    if a.stage in ("export", "all"):
        from ..prior.loading import PACKAGE_WEIGHTS
        from .export import export
        print("exported to", export(out, cfg, Path(a.dest) if a.dest else PACKAGE_WEIGHTS / cfg.name))


def main(argv=None) -> None:
    """``python -m varlib.training STAGE [options]`` (``varlib train ...``); ``diffusion`` has its own options."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["diffusion"]:
        from .diffusion import main as diffusion_main
        return diffusion_main(argv[1:])
    a = build_parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = config_from_args(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.from_run:
        from .rundir import seed_run
        seed_run(Path(a.from_run), out)
    if a.init_weights and a.stage not in ("tokenizer", "all"):  # those continue the whole tokenizer instead
        from .rundir import init_from_weights
        init_from_weights(out, a.init_weights)
    shards = [int(s) for s in a.shards.split(",")] if a.shards else None
    _train_stages(a, cfg, out, recipe_for(a.config, a.batch), shards)
    _output_stages(a, cfg, out, shards)
