"""``DiffusionPrior``: the UNet and its schedule behind a deepinv-style denoiser interface.

* ``prior(x, sigma)`` / ``prior.denoise(x, sigma)``: the MMSE estimate of a clean image from
  ``x = x0 + sigma * n``. By default ``x`` and ``sigma`` are on the [0, 1] image scale, which is how
  deepinv's ``DPS`` (through ``DPSDataFidelity`` and ``MinusOneOneDenoiserWrapper``) and ``DiffPIR``
  call a denoiser (``model(x, sigma)``, output in [0, 1]); ``minus_one_one=True`` takes and returns
  the [-1, 1] scale instead.
* ``prior.sample(n, steps, generator)``: unconditional DDIM samples in [0, 1].
* :func:`save_diffusion_prior` / :func:`load_diffusion_prior`: a directory with ``config.json``,
  ``model.safetensors``, ``MODEL_CARD.md`` and ``SHA256SUMS`` (verified on loading).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
import torch.nn as nn

from ..io import sha256_file
from .schedule import DDPMSchedule, ScheduleConfig
from .unet import UNet, UNetConfig

PACKAGE_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
WEIGHT_FILES = ("config.json", "model.safetensors")  # the files SHA256SUMS covers
MAX_EXPORT_BYTES = 25 * 1024 * 1024
TRAIN_COMMAND = "python -m varlib.training diffusion --out runs/diffusion64 --steps {steps} --export"


@dataclass
class DiffusionConfig:
    name: str
    image_size: int
    unet: UNetConfig = field(default_factory=UNetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DiffusionConfig":
        return cls(name=d["name"], image_size=int(d["image_size"]), unet=UNetConfig.from_dict(d["unet"]),
                   schedule=ScheduleConfig.from_dict(d["schedule"]))


def tiny64_diffusion_config() -> DiffusionConfig:
    """~7.8 M parameters (the tiny VAR: transformer 7.6 M + tokenizer 2.8 M); widths 32/64/128/160 at
    64/32/16/8 px, two residual blocks per level, attention at 16x16; ~4.8 GFLOP per 64 px forward pass."""
    unet = UNetConfig(base_channels=32, channel_mults=(1, 2, 4, 5), num_res_blocks=2, attn_levels=(2,),
                      mid_attention=False, num_heads=4, groups=16, dropout=0.0)
    return DiffusionConfig("tiny64-diffusion", 64, unet, ScheduleConfig())


def faces64_diffusion_config() -> DiffusionConfig:
    """tiny64-diffusion's network trained on the CelebA training faces (64 px face crops)."""
    cfg = tiny64_diffusion_config()
    cfg.name = "faces64-diffusion"
    return cfg


def test_diffusion_config() -> DiffusionConfig:
    """~0.1 M parameters, for unit tests; runs on inputs whose side is a multiple of 4."""
    unet = UNetConfig(base_channels=8, channel_mults=(1, 2, 3), num_res_blocks=1, attn_levels=(2,),
                      mid_attention=False, num_heads=2, groups=4, dropout=0.0)
    return DiffusionConfig("test", 16, unet, ScheduleConfig())


CONFIGS = {"tiny64-diffusion": tiny64_diffusion_config, "faces64-diffusion": faces64_diffusion_config,
           "test": test_diffusion_config}
KNOWN_DIFFUSION_PRIORS = ("tiny64-diffusion", "faces64-diffusion")


def named_diffusion_config(name: str) -> DiffusionConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown diffusion configuration {name!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[name]()


class DiffusionPrior(nn.Module):
    """An epsilon-prediction DDPM (linear betas, 1000 steps) with a denoiser interface.

    ``eps(x_t, t)`` is the raw network on the [-1, 1] scale. ``denoise``/``forward`` turn it into a
    Gaussian denoiser for any noise level: for ``z = x0 + s n`` ([-1, 1] scale) the network sees
    ``x_t = z / sqrt(1 + s^2)`` (``abar = 1 / (1 + s^2)``) at the fractional timestep whose noise level is
    ``s``, and the estimate is ``z - s * eps``.
    """

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        self.net = UNet(config.unet)
        self.schedule = DDPMSchedule(config.schedule)
        self.metadata: Dict[str, Any] = {}
        #: run the network under bfloat16 autocast on the CPU (about 2x faster on CPUs with AMX/AVX512-bf16)
        self.bf16 = False

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def _dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        return self.net(x_t, t)

    def denoise(self, x: torch.Tensor, sigma, minus_one_one: bool = False, clip: bool = False) -> torch.Tensor:
        """Clean-image estimate from ``x`` (B, 3, H, W) with Gaussian noise of std ``sigma`` (float or (B,)).

        Scale: [0, 1] for ``x``, ``sigma`` and the output (deepinv's convention), or [-1, 1] for all
        three with ``minus_one_one``. ``clip`` clamps the output to the image range.
        """
        in_dtype = x.dtype
        B = x.shape[0]
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1)
        if s.numel() not in (1, B):
            raise ValueError(f"sigma must be a scalar or have one entry per image ({B}), got shape {tuple(s.shape)}")
        s = s.expand(B)
        z = x if minus_one_one else 2 * x - 1
        if not minus_one_one:
            s = 2 * s
        t = self.schedule.t_of_sigma(s.cpu()).to(device=x.device, dtype=torch.float32)
        scale = (1.0 / (1.0 + s ** 2)).sqrt().to(torch.float32)[:, None, None, None]
        dt = self._dtype()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16 and x.device.type == "cpu"):
            eps = self.net((z.to(torch.float32) * scale).to(dt), t)
        eps = eps.to(torch.float32)
        x0 = z.to(torch.float32) - s.to(torch.float32)[:, None, None, None] * eps
        if clip:
            x0 = x0.clamp(-1, 1)
        out = x0 if minus_one_one else (x0 + 1) / 2
        return out.to(in_dtype)

    def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        """deepinv's denoiser call ``model(x, sigma)`` on the [0, 1] scale (extra arguments are ignored)."""
        return self.denoise(x, sigma)

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, generator: Union[torch.Generator, int, None] = None,
               eta: float = 0.0, image_size: Optional[int] = None, device=None) -> torch.Tensor:
        """``n`` unconditional samples (n, 3, S, S) in [0, 1] by DDIM with ``steps`` network evaluations.

        ``eta = 0`` (default) is deterministic given the initial noise, drawn from ``generator`` (a CPU
        ``torch.Generator`` or an int seed), so a seed fixes the samples.
        """
        if isinstance(generator, int) or generator is None:
            generator = torch.Generator().manual_seed(0 if generator is None else int(generator))
        device = device or next(self.net.parameters()).device
        S = int(image_size or self.config.image_size)
        x = torch.randn(n, self.config.unet.in_channels, S, S, generator=generator).to(device)
        ts = self.schedule.ddim_timesteps(steps)
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            eps = self.net(x.to(self._dtype()), torch.full((n,), float(t), device=device)).float()
            noise = torch.randn(x.shape, generator=generator).to(device) if eta > 0 else None
            x = self.schedule.ddim_step(x, eps, t, t_prev, eta=eta, noise=noise)
        return ((x.clamp(-1, 1) + 1) / 2)


def build_diffusion_prior(name_or_config: Union[str, DiffusionConfig] = "tiny64-diffusion",
                          seed: Optional[int] = None) -> DiffusionPrior:
    """A prior with freshly initialised weights (``seed`` seeds torch's global generator first)."""
    cfg = name_or_config if isinstance(name_or_config, DiffusionConfig) else named_diffusion_config(name_or_config)
    if seed is not None:
        torch.manual_seed(seed)
    return DiffusionPrior(cfg)


# -- saving and loading -----------------------------------------------------------------------------


def model_card(prior: DiffusionPrior, training: Optional[Dict[str, Any]] = None) -> str:
    cfg = prior.config
    u = cfg.unet
    lines = [
        f"# {cfg.name}: embedded pixel-space diffusion prior (varlib)",
        "",
        "An epsilon-prediction DDPM for 64 px RGB images, shipped so that the diffusion baselines `dps` and",
        "`diffpir` run offline next to the VAR prior (see docs/prior.md).",
        "",
        "## Model",
        f"- UNet: {prior.num_parameters / 1e6:.2f} M parameters; widths "
        f"{', '.join(str(u.base_channels * m) for m in u.channel_mults)}; residual blocks per level: "
        f"{u.num_res_blocks}; self-attention at levels {list(u.attn_levels)} (level i works at image_size / 2^i); "
        f"GroupNorm ({u.groups} groups), SiLU, sinusoidal timestep embedding.",
        f"- Schedule: DDPM, linear betas {cfg.schedule.beta_start:g} .. {cfg.schedule.beta_end:g} over "
        f"{cfg.schedule.num_steps} steps; the network predicts the noise on the [-1, 1] image scale.",
        "- Interface: `load_diffusion_prior(...)(x, sigma)` is a Gaussian denoiser on the [0, 1] scale "
        "(deepinv convention); `.sample(n, steps, generator)` draws DDIM samples.",
        "- Weights: `model.safetensors` (fp16; loaded as fp32), configuration `config.json`, checksums `SHA256SUMS`.",
        "",
        "## Training",
    ]
    if training:
        for k, v in training.items():
            lines.append(f"- {k}: {v}")
    else:
        lines.append("- (not recorded)")
    lines += [
        "",
        "## Data and intended use",
        *(FACE_DATA_LINES if prior.config.name.startswith("faces") else TINY_DATA_LINES),
        "",
    ]
    return "\n".join(lines)


def save_diffusion_prior(prior: DiffusionPrior, path: Union[str, os.PathLike], half: bool = True,
                         training: Optional[Dict[str, Any]] = None,
                         max_bytes: Optional[int] = MAX_EXPORT_BYTES) -> Path:
    """Write ``config.json``, ``model.safetensors`` (fp16 with ``half``), ``MODEL_CARD.md``, ``SHA256SUMS``.

    Files are written to temporary names first and renamed. Raises ``ValueError`` when the weights
    exceed ``max_bytes`` (25 MB by default, the budget for files shipped in the package).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in prior.net.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if (half and v.is_floating_point()) else v
    tmp = {"model.safetensors": path / "model.safetensors.tmp", "config.json": path / "config.json.tmp",
           "MODEL_CARD.md": path / "MODEL_CARD.md.tmp"}
    save_file(state, str(tmp["model.safetensors"]), metadata={"format": "varlib-diffusion", "name": prior.config.name})
    _sort_safetensors_metadata(tmp["model.safetensors"])
    size = tmp["model.safetensors"].stat().st_size
    if max_bytes is not None and size > max_bytes:
        tmp["model.safetensors"].unlink()
        raise ValueError(f"the weights take {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB budget")
    tmp["config.json"].write_text(json.dumps(prior.config.to_dict(), indent=1))
    tmp["MODEL_CARD.md"].write_text(model_card(prior, training))
    for fname, p in tmp.items():
        os.chmod(p, 0o644)  # safetensors writes 0600; shipped files must be readable by everyone
        os.replace(p, path / fname)
    (path / "SHA256SUMS").write_text("".join(f"{sha256_file(path / f)}  {f}\n" for f in WEIGHT_FILES))
    return path


def _missing_message(path: Path, name: str) -> str:
    return (f"the diffusion prior {name!r} is not built: {path} holds no weights. Build it with "
            f"`{TRAIN_COMMAND.format(steps='N')}` (trains in runs/diffusion64, resumable, then exports to {path}; "
            "see docs/prior.md for the step count and the CPU time it takes)")


def _sort_safetensors_metadata(path: Path) -> None:
    """Rewrite the ``__metadata__`` of a safetensors header with sorted keys, in place. safetensors writes
    them in hash order, which changes from one process to the next, so the same weights would get another
    sha256; sorted keys (the same number of bytes) make the file a function of the weights."""
    raw = bytearray(Path(path).read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None)
    if meta is None:
        return
    text = json.dumps({"__metadata__": dict(sorted(meta.items())), **header}, separators=(",", ":")).encode()
    if len(text) > n:
        raise ValueError(f"{path}: the re-ordered safetensors header does not fit its {n} bytes")
    raw[8:8 + n] = text + b" " * (n - len(text))
    Path(path).write_bytes(bytes(raw))


TINY_DATA_LINES = (
    "Tiny ImageNet training split (`tinyimagenet-train`, 64 px, the VAR prior's training data), random",
    "horizontal flips. Research baseline for the VAR-versus-diffusion comparison of varlib; not a",
    "general-purpose generative model. It has never seen the validation or test images.")
FACE_DATA_LINES = (
    "Aligned CelebA training faces (`celeba-train`, files 000001-009000, 64 px; the face VAR prior's training",
    "data), random horizontal flips. Research baseline for the VAR-versus-diffusion comparison of varlib on",
    "faces; not a general-purpose generative model. It has never seen the held-out faces (`celeba-val`).")


def load_diffusion_prior(name_or_path: Union[str, os.PathLike] = "tiny64-diffusion", device="cpu",
                         verify: bool = True) -> DiffusionPrior:
    """Load a saved prior: a known name (``"tiny64-diffusion"``, from ``varlib/weights/<name>/``) or a
    directory written by :func:`save_diffusion_prior`. Checksums in ``SHA256SUMS`` are verified
    (``ValueError`` on a mismatch); missing files raise ``FileNotFoundError`` naming the path and the
    command that builds them. Returns the prior in eval mode, fp32, on ``device``. Never touches the network.
    """
    from safetensors.torch import load_file

    key = str(name_or_path)
    if key in KNOWN_DIFFUSION_PRIORS and not Path(key).exists():
        path = PACKAGE_WEIGHTS / key
    else:
        path = Path(key)
    for f in WEIGHT_FILES:
        if not (path / f).is_file():
            if key in KNOWN_DIFFUSION_PRIORS or not path.exists():
                raise FileNotFoundError(_missing_message(path, key if key in KNOWN_DIFFUSION_PRIORS else str(path)))
            raise FileNotFoundError(f"{path / f} is missing; {path} is not a complete diffusion prior directory "
                                    f"(expected {', '.join(WEIGHT_FILES)} and SHA256SUMS)")
    sums = path / "SHA256SUMS"
    if verify:
        if not sums.is_file():
            raise FileNotFoundError(f"{sums} is missing; cannot verify the weights (pass verify=False to skip)")
        from ..prior.loading import verify_checksums
        verify_checksums(path, f"rebuild it with `{TRAIN_COMMAND.format(steps='N')}` or restore it from version control")
    cfg = DiffusionConfig.from_dict(json.loads((path / "config.json").read_text()))
    prior = DiffusionPrior(cfg)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path / "model.safetensors")).items()}
    prior.net.load_state_dict(state, strict=True)
    prior.metadata = {"path": str(path)}
    return prior.eval().to(device)
