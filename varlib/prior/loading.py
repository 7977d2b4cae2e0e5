"""Building, loading and saving priors: official VAR checkpoints and our safetensors format.

Official format (hub ``FoundationVision/var``): ``vae_ch160v4096z32.pth`` (tokenizer state dict) and
``var_d{16,20,24,30}.pth`` (transformer state dict), plain ``torch.save`` files.
Our format (a directory): ``config.json``, ``tokenizer.safetensors``, ``transformer.safetensors`` and
``SHA256SUMS``; loading verifies the checksums.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import torch

from ..io import sha256_file
from .configs import (HUB_REPO_ID, KNOWN_PRIORS, OFFICIAL_DEPTHS, OFFICIAL_TOKENIZER_FILE, PriorConfig,
                      named_config, rebuild_command)
from .model import Prior

PACKAGE_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
OUR_FILES = ("config.json", "tokenizer.safetensors", "transformer.safetensors")


def build_prior(name_or_config: Union[str, PriorConfig], device: Union[str, torch.device] = "cpu") -> Prior:
    """A prior of a named configuration with freshly initialised (random) weights.

    ``device="meta"`` builds without allocating memory (used to check key/shape parity).
    """
    cfg = name_or_config if isinstance(name_or_config, PriorConfig) else named_config(name_or_config)
    return Prior(cfg, device=device)


def verify_checksums(path: Path, rebuild: str) -> None:
    """Check every file listed in ``path/SHA256SUMS``; errors name the file and say how to rebuild it."""
    sums_file = path / "SHA256SUMS"
    for line in sums_file.read_text().splitlines():
        if not line.strip():
            continue
        digest, fname = line.split(maxsplit=1)
        fpath = path / fname.strip().lstrip("*")
        if not fpath.is_file():
            raise FileNotFoundError(f"weight file {fpath}, listed in {sums_file}, is missing; {rebuild}")
        if sha256_file(fpath) != digest:
            raise ValueError(f"weight file {fpath} is corrupted (sha256 does not match SHA256SUMS); {rebuild}")


def check_state_dict(module: torch.nn.Module, state: Dict[str, torch.Tensor], what: str, max_report: int = 10) -> None:
    """Raise ValueError listing the first key/shape mismatches between ``module`` and ``state``."""
    expected = module.state_dict()
    problems: List[str] = []
    for k in expected:
        if k not in state:
            problems.append(f"missing key {k} (expected shape {tuple(expected[k].shape)})")
        elif tuple(state[k].shape) != tuple(expected[k].shape):
            problems.append(f"{k}: checkpoint shape {tuple(state[k].shape)} != model shape {tuple(expected[k].shape)}")
    for k in state:
        if k not in expected:
            problems.append(f"unexpected key {k} (shape {tuple(state[k].shape)})")
    if problems:
        more = f" ... and {len(problems) - max_report} more" if len(problems) > max_report else ""
        raise ValueError(f"{what} does not match the model configuration; first mismatches:\n  "
                         + "\n  ".join(problems[:max_report]) + more)


def _load_into(prior: Prior, tok_state: Dict[str, torch.Tensor], tr_state: Dict[str, torch.Tensor],
               tok_name: str, tr_name: str) -> Prior:
    check_state_dict(prior.tokenizer, tok_state, f"tokenizer checkpoint {tok_name}")
    check_state_dict(prior.transformer, tr_state, f"transformer checkpoint {tr_name}")
    prior.tokenizer.load_state_dict(tok_state, strict=True)
    prior.transformer.load_state_dict(tr_state, strict=True)
    return prior


def _official_files(depth: int) -> Tuple[str, str]:
    return OFFICIAL_TOKENIZER_FILE, f"var_d{depth}.pth"


def _missing_official_message(depth: int, where: str) -> str:
    vae, var = _official_files(depth)
    return (f"VAR-d{depth} weights not found ({where}). Needed files: {vae} and {var} from the Hugging Face hub "
            f"repository {HUB_REPO_ID}. With internet, load_prior('var-d{depth}') downloads them into the "
            f"huggingface cache. Offline, download them elsewhere (huggingface-cli download {HUB_REPO_ID} {vae} {var} "
            f"--local-dir DIR), copy DIR here and call load_prior('DIR') or set VARLIB_VAR_DIR=DIR.")


def _fetch_official(depth: int, cache_dir: Optional[str] = None) -> Path:
    """Local directory holding both official files: VARLIB_VAR_DIR, else the hub (cache or download)."""
    vae, var = _official_files(depth)
    local = os.environ.get("VARLIB_VAR_DIR")
    if local and (Path(local) / vae).exists() and (Path(local) / var).exists():
        return Path(local)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a declared dependency
        raise ImportError("huggingface_hub is needed to download official VAR weights: pip install huggingface_hub") from e
    try:
        p_vae = hf_hub_download(HUB_REPO_ID, vae, cache_dir=cache_dir)
        p_var = hf_hub_download(HUB_REPO_ID, var, cache_dir=cache_dir)
    except Exception as e:  # offline, hub unreachable, or file not in cache
        where = f"no local copy in VARLIB_VAR_DIR={local!r} and the hub could not be reached: {type(e).__name__}"
        raise FileNotFoundError(_missing_official_message(depth, where)) from e
    if Path(p_vae).parent != Path(p_var).parent:
        # both land in the same snapshot directory in practice; be safe otherwise
        tmp = Path(p_var).parent
        if not (tmp / vae).exists():
            os.symlink(p_vae, tmp / vae)
    return Path(p_var).parent


def _torch_load(path: Path) -> Dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def _load_official_dir(path: Path, config: Optional[PriorConfig], device, depth: Optional[int] = None) -> Prior:
    """``depth`` (from a name like 'var-d20') or else the config's depth picks var_d{depth}.pth when present."""
    var_files = sorted(path.glob("var_d*.pth"))
    vae_files = sorted(path.glob("vae*.pth"))
    if not var_files or not vae_files:
        raise FileNotFoundError(f"{path} holds no official VAR checkpoint pair (vae_*.pth + var_d*.pth)")
    if config is None and (path / "config.json").exists():
        config = PriorConfig.from_dict(json.loads((path / "config.json").read_text()))
    depth = depth if depth is not None else (config.transformer.depth if config is not None else None)
    if depth is not None and (path / f"var_d{depth}.pth").exists():
        var_files = [path / f"var_d{depth}.pth"]
    if len(var_files) > 1 and config is None:
        raise ValueError(f"{path} holds several transformers ({', '.join(f.name for f in var_files)}); "
                         "load by name (e.g. 'var-d16' with VARLIB_VAR_DIR) or pass config=")
    var_file, vae_file = var_files[0], vae_files[0]
    if config is None:
        m = re.match(r"var_d(\d+)\.pth", var_file.name)
        depth = int(m.group(1)) if m else -1
        if depth not in OFFICIAL_DEPTHS:
            raise ValueError(f"cannot infer the configuration of {var_file}; pass config=")
        config = named_config(f"var-d{depth}")
    prior = Prior(config, device="cpu")
    _load_into(prior, _torch_load(vae_file), _torch_load(var_file), str(vae_file), str(var_file))
    prior.metadata = {"format": "official", "files": [str(vae_file), str(var_file)]}
    return prior.to(device)


def _load_our_dir(path: Path, device, verify: bool = True) -> Prior:
    from safetensors.torch import load_file

    rebuild = (f"rebuild it with `{rebuild_command(path.name)}` (python -m varlib.training all --config {path.name}) "
               f"or restore it with `git checkout -- {path}`")
    for f in OUR_FILES:
        if not (path / f).exists():
            raise FileNotFoundError(f"prior file {path / f} is missing; {rebuild}")
    if verify and (path / "SHA256SUMS").exists():
        verify_checksums(path, rebuild)
    config = PriorConfig.from_dict(json.loads((path / "config.json").read_text()))
    prior = Prior(config, device="cpu")
    try:
        tok_state = load_file(str(path / "tokenizer.safetensors"))
        tr_state = load_file(str(path / "transformer.safetensors"))
    except Exception as e:
        raise ValueError(f"cannot read the weights in {path}: {e}; {rebuild}") from e
    tok_state = {k: v.float() for k, v in tok_state.items()}
    tr_state = {k: (v.float() if v.is_floating_point() else v) for k, v in tr_state.items()}
    _load_into(prior, tok_state, tr_state, str(path / "tokenizer.safetensors"), str(path / "transformer.safetensors"))
    prior.metadata = {"format": "varlib", "path": str(path)}
    card = path / "metrics.json"
    if card.exists():
        prior.metadata["metrics"] = json.loads(card.read_text())
    return prior.to(device)


def load_prior(name_or_path: Union[str, os.PathLike] = "tiny64", device: Union[str, torch.device] = "cpu",
               config: Optional[PriorConfig] = None, cache_dir: Optional[str] = None, verify: bool = True) -> Prior:
    """Build and load a prior.

    - ``"tiny64"``: the embedded prior shipped in ``varlib/weights/tiny64`` (offline);
    - ``"var-d16"`` (d20, d24, d30): the official ImageNet-256 weights, from ``VARLIB_VAR_DIR`` or the
      Hugging Face hub (downloaded into the usual cache);
    - a directory: our format (``config.json`` + safetensors) or the official ``.pth`` pair.
    """
    key = str(name_or_path)
    if key.lower().startswith("var-d") and not Path(key).exists():
        cfg = named_config(key)  # validates the depth
        depth = cfg.transformer.depth
        return _load_official_dir(_fetch_official(depth, cache_dir), config or cfg, device, depth=depth)
    path = Path(key)
    if not path.exists() and key in KNOWN_PRIORS:
        path = PACKAGE_WEIGHTS / key
        if not path.exists():
            raise FileNotFoundError(f"the embedded prior {key!r} is not in {path}; build it with "
                                    f"`{rebuild_command(key)}` (python -m varlib.training all --config {key})")
    if not path.exists():
        raise FileNotFoundError(f"no prior named or at {key!r}: known names are {', '.join(KNOWN_PRIORS)}, "
                                "or give a directory holding checkpoint files")
    if path.is_dir() and (path / "tokenizer.safetensors").exists() or (path / "config.json").exists() and not list(path.glob("*.pth")):
        return _load_our_dir(path, device, verify)
    return _load_official_dir(path, config, device)


def save_prior(prior: Prior, path: Union[str, os.PathLike], half: bool = False) -> Path:
    """Write our format (config.json, safetensors, SHA256SUMS); ``half`` stores float weights in fp16."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    def prep(sd):
        out = {}
        for k, v in sd.items():
            v = v.detach().cpu().contiguous()
            if half and v.is_floating_point() and k != "attn_bias_for_masking":
                v = v.half()
            out[k] = v
        return out

    tr_sd = prep(prior.transformer.state_dict())
    tmp = {}
    for fname, sd in (("tokenizer.safetensors", prep(prior.tokenizer.state_dict())), ("transformer.safetensors", tr_sd)):
        save_file(sd, str(path / (fname + ".tmp")))
        tmp[fname] = path / (fname + ".tmp")
    (path / "config.json.tmp").write_text(json.dumps(prior.config.to_dict(), indent=1))
    tmp["config.json"] = path / "config.json.tmp"
    for fname, p in tmp.items():
        os.replace(p, path / fname)
    (path / "SHA256SUMS").write_text("".join(f"{sha256_file(path / f)}  {f}\n" for f in OUR_FILES))
    return path


def save_official(prior: Prior, path: Union[str, os.PathLike], depth: Optional[int] = None) -> Path:
    """Write the official ``.pth`` pair (plus our config.json so non-official sizes reload)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    depth = depth or prior.config.transformer.depth
    vae, var = _official_files(depth)
    torch.save(prior.tokenizer.state_dict(), path / vae)
    torch.save(prior.transformer.state_dict(), path / var)
    (path / "config.json").write_text(json.dumps(prior.config.to_dict(), indent=1))
    return path
