"""An embedded pixel-space diffusion prior (DDPM, 64 px) for the VAR-versus-diffusion comparison.

- :mod:`.unet`: the UNet (:class:`UNetConfig`, :class:`UNet`);
- :mod:`.schedule`: the DDPM linear-beta schedule and DDIM steps (:class:`DDPMSchedule`);
- :mod:`.model`: :class:`DiffusionPrior` (deepinv-style denoiser ``prior(x, sigma)`` on [0, 1],
  DDIM ``sample``), saving/loading (:func:`save_diffusion_prior`, :func:`load_diffusion_prior`);
- :mod:`.solvers`: DPS, DiffPIR and PnP-UNet (DPIR with the network as denoiser) with this prior
  (:func:`dps_embedded`, :func:`diffpir_embedded`, :func:`pnp_unet_embedded`).

Its trainer is :mod:`varlib.training.diffusion` (``python -m varlib.training diffusion``).

See docs/prior.md.
"""
from .model import (CONFIGS, KNOWN_DIFFUSION_PRIORS, DiffusionConfig, DiffusionPrior, build_diffusion_prior,
                    load_diffusion_prior, named_diffusion_config, save_diffusion_prior, test_diffusion_config,
                    tiny64_diffusion_config)
from .schedule import DDPMSchedule, ScheduleConfig
from .unet import UNet, UNetConfig
