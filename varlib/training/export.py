"""Stage ``export``: ship a run's prior (fp16 safetensors, config, metrics, SHA256SUMS, MODEL_CARD.md)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..io import atomic_path
from ..prior import Prior, PriorConfig, save_prior
from .card import model_card
from .decoder import DECODER_PARTS
from .rundir import assemble_prior


def token_map_fingerprint(prior: Prior) -> str:
    """sha256 of the tokenizer weights that decide the token maps: all but ``DECODER_PARTS`` (encoder, quant_conv,
    codebook and phi convolutions, which the decoder stage keeps frozen), rounded to fp16 as shipped. Two priors
    with the same fingerprint tokenise every image the same way, so their transformers' NLLs are comparable;
    tiny64-gpu records the one it was built on."""
    h = hashlib.sha256()
    for name, t in sorted(prior.tokenizer.state_dict().items()):
        if not name.startswith(DECODER_PARTS) and t.is_floating_point() and "ema_vocab_hit" not in name:
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float16).numpy().tobytes())
    return h.hexdigest()


def write_shipped_text(path: Path, text: str) -> Path:
    """Write a shipped text file atomically, readable by everyone."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
    return path


def export(out: Path, cfg: PriorConfig, dest: Path) -> Path:
    """Ship run ``out``'s prior to ``dest``: fp16 safetensors, config, metrics (with the token-map
    fingerprint), SHA256SUMS and MODEL_CARD.md."""
    prior = assemble_prior(out, cfg)
    save_prior(prior, dest, half=True)
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else None
    if metrics is not None:
        metrics["tokenizer"]["token_map_sha256"] = token_map_fingerprint(prior)
        write_shipped_text(dest / "metrics.json", json.dumps(metrics, indent=1))
    write_shipped_text(dest / "MODEL_CARD.md", model_card(prior, metrics, dest))
    return dest
