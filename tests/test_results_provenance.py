"""Every committed result table comes from the weights the package ships.

A case row names its prior as ``name@<hash of the weight files>`` (``varlib.study.cache.prior_fingerprint``).
A folder made with other weights than the shipped ones (older training, a local experiment) fails
here until it is regenerated. Tables are read as committed, so folders whose images are absent on a
fresh clone (Tiny ImageNet, CelebA) are checked as well.
"""
from pathlib import Path

import pandas as pd
import pytest

from varlib.study.cache import prior_fingerprint

ROOT = Path(__file__).resolve().parents[1]
TABLES = sorted((ROOT / "results").glob("**/tables/cases.csv"))


def test_there_are_committed_tables():
    assert len(TABLES) >= 5, TABLES


@pytest.mark.parametrize("table", TABLES, ids=lambda p: str(p.relative_to(ROOT / "results")))
def test_committed_cases_name_the_shipped_weights(table):
    ids = pd.read_csv(table, usecols=["prior_id"], keep_default_na=False)["prior_id"]
    stale = {}
    for pid in sorted(set(ids) - {""}):
        name = pid.split("@", 1)[0]
        if prior_fingerprint(name) != pid:
            stale[pid] = prior_fingerprint(name)
    assert not stale, (f"{table.relative_to(ROOT)} was made with weights other than the shipped ones "
                       f"(table -> shipped: {stale}); regenerate it (make all PARAMS=params/<run>.yaml)")
