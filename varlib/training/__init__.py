"""Training the embedded priors: ``python -m varlib.training <stage> ...`` (``varlib train ...``).

- :mod:`.common`: what the stages share (data, batch order, learning rate, CSV logs, wall budgets, resuming);
- :mod:`.recipes`: ``RECIPES`` (the CPU recipe of tiny64) and the tokenizer's crops;
- :mod:`.rundir`: a run directory, started from another run (``--from``) or shipped weights (``--init-weights``);
- :mod:`.tokenizer`, :mod:`.tokens`, :mod:`.decoder`, :mod:`.transformer`: the VAR prior's training stages;
- :mod:`.evaluate`: held-out metrics (``metrics.json``); :mod:`.export` and :mod:`.card`: the shipped folder
  and its model card (words in ``model_card.md.tmpl``);
- :mod:`.diffusion`: the embedded diffusion prior's trainer;
- :mod:`.cli`: the command line (:func:`varlib.training.cli.main`).

See docs/prior.md.
"""
from .card import decoder_card_lines, model_card, tokenizer_recipe_words, transformer_card_lines
from .common import (SHARD_IMAGES, VAL_SLICE, CsvLog, WallBudget, batch_indices, image_set_of, load_train_images,
                     load_val_images, lr_at, psnr_batch, read_split, training_data)
from .decoder import DECODER_PARTS, train_decoder
from .evaluate import (class_unigram_baseline, class_unigram_nll, evaluate, evaluate_tokenizer, evaluate_transformer,
                       time_sampling)
from .export import export, token_map_fingerprint
from .recipes import RECIPES, recipe_crop
from .rundir import assemble_prior, init_from_weights, load_tokenizer_from_ckpt, seed_run, transformer_ckpt_path
from .tokenizer import (LR_SCHEDULES, TOKENIZER_LOSSES, continuation_state, crop_schedule, random_crops,
                        restart_dead_codes, train_tokenizer)
from .tokens import pack_for_transfer, split_tokens, tokenize_split
from .transformer import holdout_nll, token_nll, train_transformer

__all__ = ["decoder_card_lines", "model_card", "tokenizer_recipe_words", "transformer_card_lines", "SHARD_IMAGES",
           "VAL_SLICE", "CsvLog", "WallBudget", "batch_indices", "image_set_of", "load_train_images", "load_val_images",
           "lr_at", "read_split", "training_data",
           "psnr_batch", "DECODER_PARTS", "train_decoder", "class_unigram_baseline", "class_unigram_nll", "evaluate",
           "evaluate_tokenizer", "evaluate_transformer", "time_sampling", "export", "token_map_fingerprint", "RECIPES",
           "recipe_crop", "assemble_prior", "init_from_weights", "load_tokenizer_from_ckpt", "seed_run",
           "transformer_ckpt_path", "LR_SCHEDULES", "TOKENIZER_LOSSES", "continuation_state", "crop_schedule",
           "random_crops", "restart_dead_codes", "train_tokenizer", "pack_for_transfer", "split_tokens",
           "tokenize_split", "holdout_nll", "token_nll", "train_transformer"]
