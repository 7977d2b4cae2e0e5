"""Shared fixtures: tiny random-weight priors built from ``varlib.prior.configs.test_config``.

Everything here runs on the CPU with fixed seeds and takes well under a second per fixture.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from varlib.prior import build_prior
from varlib.prior import configs as prior_configs

REPO_ROOT = Path(__file__).parents[1]
SPEC_DIR = REPO_ROOT.parent / "shared" / "spec"


@pytest.fixture(autouse=True)
def _few_threads():
    """The test machine is shared with long training jobs: keep PyTorch to one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_prior(seed: int = 0, perturb: bool = True, patch_nums=(1, 2, 4)):
    """A 16 px test prior (latent 4x4, scales ``patch_nums``) with random weights.

    The default transformer initialisation makes every block close to the identity and the head
    tiny, so logits are almost constant; with ``perturb`` the adaptive-norm weights get
    ``randn * 0.1`` added and the head gets O(0.1) weights, making the logits depend visibly on
    the class and on the coarser scales.
    """
    torch.manual_seed(seed)
    prior = build_prior(prior_configs.test_config(patch_nums))
    if perturb:
        g = torch.Generator().manual_seed(seed + 1000)
        tr = prior.transformer
        with torch.no_grad():
            for mod in [b.ada_lin[-1] for b in tr.blocks] + [tr.head_nm.ada_lin[-1]]:
                mod.weight.add_(torch.randn(mod.weight.shape, generator=g) * 0.1)
            tr.head.weight.copy_(torch.randn(tr.head.weight.shape, generator=g) * 0.1)
    return prior


@pytest.fixture
def prior():
    return make_prior(0)


@pytest.fixture(params=[(1, 2, 4), (1, 2, 3, 4)], ids=["scales124", "scales1234"])
def prior_any(request):
    """The test prior with two schedules; (1, 2, 3, 4) makes area down-sampling differ from bilinear."""
    return make_prior(0, patch_nums=request.param)


@pytest.fixture
def images():
    """Four smooth-ish random 16 px RGB images in [0, 1]."""
    g = torch.Generator().manual_seed(123)
    x = torch.rand(4, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.rand(4, 3, 16, 16, generator=g)).clamp(0, 1)
