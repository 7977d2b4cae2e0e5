"""Named prior configurations: the official VAR ImageNet-256 models and our small ones."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict

from .tokenizer import TokenizerConfig
from .transformer import TransformerConfig

HUB_REPO_ID = "FoundationVision/var"
OFFICIAL_TOKENIZER_FILE = "vae_ch160v4096z32.pth"
OFFICIAL_DEPTHS = (16, 20, 24, 30)


@dataclass
class PriorConfig:
    name: str
    image_size: int
    tokenizer: TokenizerConfig
    transformer: TransformerConfig

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PriorConfig":
        tok = TokenizerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["tokenizer"].items()})
        tr = TransformerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["transformer"].items()})
        return cls(name=d["name"], image_size=int(d["image_size"]), tokenizer=tok, transformer=tr)


def _make(name: str, image_size: int, tok: TokenizerConfig, depth: int, width: int, heads: int,
          num_classes: int, mlp_ratio: float = 4.0) -> PriorConfig:
    tr = TransformerConfig(depth=depth, width=width, num_heads=heads, mlp_ratio=mlp_ratio, num_classes=num_classes,
                           vocab_size=tok.vocab_size, Cvae=tok.Cvae, patch_nums=tok.patch_nums)
    return PriorConfig(name=name, image_size=image_size, tokenizer=tok, transformer=tr)


def official_config(depth: int) -> PriorConfig:
    """VAR-d{depth} on ImageNet 256 px: width 64*depth, heads = depth, shared tokenizer."""
    return _make(f"var-d{depth}", 256, TokenizerConfig(), depth, 64 * depth, depth, 1000)


def tiny64_config() -> PriorConfig:
    """The embedded prior trained on Tiny ImageNet at 64 px (see weights/tiny64/MODEL_CARD.md)."""
    tok = TokenizerConfig(vocab_size=1024, Cvae=16, ch=32, ch_mult=(1, 2, 4), num_res_blocks=1,
                          using_sa=False, using_mid_sa=True, patch_nums=(1, 2, 4, 8, 16))
    return _make("tiny64", 64, tok, depth=6, width=256, heads=4, num_classes=202)


def tiny64_gpu_config() -> PriorConfig:
    """tiny64's architecture and tokenizer with a transformer trained longer on a GPU (``make prior-gpu``)."""
    cfg = tiny64_config()
    cfg.name = "tiny64-gpu"
    return cfg


def faces64_config() -> PriorConfig:
    """The embedded face prior: tiny64's tokenizer architecture (its training continued on CelebA faces)
    and transformer size, unconditional (one class plus the null class), 64 px aligned CelebA crops."""
    cfg = tiny64_config()
    cfg.name = "faces64"
    cfg.transformer.num_classes = 1
    return cfg


def test_config(patch_nums=(1, 2, 4), image_size: int = 16) -> PriorConfig:
    """A very small model for unit tests (random weights)."""
    tok = TokenizerConfig(vocab_size=64, Cvae=8, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1,
                          using_sa=True, using_mid_sa=True, patch_nums=tuple(patch_nums))
    return _make("test", image_size, tok, depth=2, width=32, heads=2, num_classes=5)


def named_config(name: str) -> PriorConfig:
    name = name.lower()
    if name.startswith("var-d") and name[5:].isdigit() and int(name[5:]) in OFFICIAL_DEPTHS:
        return official_config(int(name[5:]))
    if name == "tiny64":
        return tiny64_config()
    if name == "tiny64-gpu":
        return tiny64_gpu_config()
    if name == "faces64":
        return faces64_config()
    if name == "test":
        return test_config()
    raise ValueError(f"unknown prior name {name!r}; known: " + ", ".join(KNOWN_PRIORS)
                     + " (or a directory holding checkpoint files)")


#: The make target that rebuilds each shipped prior (missing-file and checksum errors name it).
REBUILD_TARGETS = {"tiny64": "make prior", "faces64": "make prior-faces"}


def rebuild_command(name: str) -> str:
    """How to rebuild the shipped prior ``name``: its make target (``make prior`` for others)."""
    return REBUILD_TARGETS.get(name, "make prior")


KNOWN_PRIORS = tuple(f"var-d{d}" for d in OFFICIAL_DEPTHS) + ("tiny64", "tiny64-gpu", "faces64", "test")
