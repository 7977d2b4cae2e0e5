"""The committed results were made with the weights shipped now."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_results_come_from_the_shipped_weights():
    """Every committed results table names, for each case, the fingerprint of the weights shipped now
    (`prior_fingerprint`): a table made with other weights must be regenerated, not kept beside them."""
    import pandas as pd

    from varlib.study.cache import prior_fingerprint
    tables = sorted((ROOT / "results").glob("**/tables/cases.csv"))
    assert tables
    stale = {}
    for path in tables:
        ids = set(pd.read_csv(path, usecols=["prior_id"], keep_default_na=False)["prior_id"]) - {""}
        wrong = sorted(i for i in ids if "@" in i and prior_fingerprint(i.split("@", 1)[0]) != i)
        if wrong:
            stale[str(path.relative_to(ROOT))] = wrong
    assert not stale, f"results made with other weights than the shipped ones (regenerate them): {stale}"
