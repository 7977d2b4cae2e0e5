"""The training recipes: step counts and tokenizer crops per configuration.

``RECIPES["tiny64"]`` is the CPU recipe that produced the shipped tiny64 (``make prior``): 11,500 tokenizer
steps of 32, the first 90 % on random 32 px crops (results/prior/tokenizer_ablation.md), no decoder stage,
and 1900 transformer steps, sized to fit 2.5 h on a 2-core x86 CPU. ``RECIPES["faces64"]`` (``make
prior-faces``) continues tiny64's shipped tokenizer for 2000 steps (lr 3e-4, 32 px crops for 80 %) on the
CelebA training faces and fine-tunes tiny64's transformer on their token maps for 693 steps (lr 5e-4; the
count a 48 min budget gave on one thread beside the diffusion run). Other configurations get
:func:`recipe_for`'s short default.

The GPU recipe of tiny64-gpu is ``make prior-gpu`` (scripts/prior_gpu_device.sh): tiny64's tokenizer and
token maps, the transformer stage with ``--device cuda --batch 256 --steps 4500 --holdout 1000``, and
tiny64's shipped decoder continued with ``--batch 128 --lr 3e-4 --steps 4460`` on the 10,000 images of
``subset --every 6 --limit 10000`` (read back as shard 0), side by side on one NVIDIA H200.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

FACES_TOKENIZER_STEPS, FACES_TRANSFORMER_STEPS = 2000, 693

RECIPES = {
    "tiny64": dict(tokenizer_steps=11500, tokenizer_crop=32, tokenizer_crop_fraction=0.9, decoder_steps=0,
                   transformer_steps=1900, batch=32),
    # tiny64's shipped tokenizer continued on the CelebA training faces at a lower learning rate, then a
    # transformer from scratch on their token maps (two jobs of one thread each beside the diffusion prior)
    "faces64": dict(tokenizer_steps=FACES_TOKENIZER_STEPS, tokenizer_crop=32, tokenizer_crop_fraction=0.8,
                    tokenizer_lr=3e-4, tokenizer_init="tiny64", decoder_steps=0,
                    transformer_steps=FACES_TRANSFORMER_STEPS, transformer_init="tiny64", transformer_lr=5e-4,
                    batch=32),
}


def recipe_for(config: str, batch: int) -> Dict:
    """The recipe of configuration ``config``; a short one (200 + 200 steps of ``batch``) if it has none."""
    return RECIPES.get(config, dict(tokenizer_steps=200, decoder_steps=0, transformer_steps=200, batch=batch))


def recipe_crop(recipe: Dict, crop: Optional[int], crop_fraction: Optional[float]) -> Tuple[Optional[int], float]:
    """The tokenizer's crop size and crop share: the recipe's unless ``--crop`` is given (0: whole images);
    an explicit ``--crop`` without ``--crop-fraction`` crops every step."""
    if crop is None:
        crop = recipe.get("tokenizer_crop")
        if crop_fraction is None:
            crop_fraction = recipe.get("tokenizer_crop_fraction", 1.0)
    return (crop or None), (1.0 if crop_fraction is None else crop_fraction)
