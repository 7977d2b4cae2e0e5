"""varlib: a VAR (next-scale prediction) prior for imaging inverse problems."""
from .prior import KNOWN_PRIORS, Prior, build_prior, load_prior, save_prior

__version__ = "0.1.0"
