"""varlib: a VAR (next-scale prediction) prior for imaging inverse problems."""

__version__ = "0.1.0"

# Everything is imported on first use (PEP 562), so that ``import varlib`` stays cheap (no torch) for
# light modules such as the study's table and figure code, and no import cycle can form.
_LAZY = {"KNOWN_PRIORS": "prior", "Prior": "prior", "build_prior": "prior", "load_prior": "prior",
         "save_prior": "prior", "make_operator": "operators", "TASKS": "operators", "TASK_TITLES": "operators",
         "as_operator": "operators", "solve": "solver", "Result": "result", "load_images": "data"}

#: submodules reachable as attributes, e.g. ``import varlib; varlib.data.load_images(...)``
_SUBMODULES = ("data", "operators", "metrics", "baselines", "solver", "prior", "diffusion", "io", "linalg",
               "result", "study", "training")


def __getattr__(name):
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'varlib' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
