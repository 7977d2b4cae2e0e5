"""``python -m varlib.training``: see :mod:`varlib.training.cli`."""
from .cli import main

main()
