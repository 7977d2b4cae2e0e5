"""The VAR prior: multi-scale VQ tokenizer, next-scale transformer, configurations and loading."""
from .configs import KNOWN_PRIORS, PriorConfig, named_config, official_config, tiny64_config, test_config
from .loading import build_prior, load_prior, save_prior, save_official
from .model import Prior, check_images
from .sampling import ScaleStepper, filter_logits, sample_tokens
from .tokenizer import MultiScaleQuantizer, MultiScaleVQVAE, TokenizerConfig
from .transformer import NextScaleTransformer, TransformerConfig
