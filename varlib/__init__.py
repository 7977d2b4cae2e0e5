"""varlib: a VAR (next-scale prediction) prior for imaging inverse problems."""

__version__ = "0.1.0"

# The prior API is imported on first use, so that light modules (varlib.study's table and figure
# code, used by the report notebooks) do not pay for importing torch.
_LAZY = {"KNOWN_PRIORS": "prior", "Prior": "prior", "build_prior": "prior", "load_prior": "prior",
         "save_prior": "prior", "make_operator": "operators", "TASKS": "operators", "solve": "solver",
         "Result": "result", "load_images": "data"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'varlib' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
