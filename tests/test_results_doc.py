"""docs/results.md and the README's results block are what the committed tables give."""
from __future__ import annotations

from pathlib import Path

from varlib.study import results_doc

ROOT = Path(__file__).resolve().parent.parent


def test_results_doc_and_readme_block_are_current():
    assert (ROOT / "docs" / "results.md").read_text() == results_doc.results_markdown(ROOT), \
        "docs/results.md is stale: run `make results-doc`"
    readme = (ROOT / "README.md").read_text()
    assert readme == results_doc.updated_readme(readme, results_doc.readme_block(ROOT)), \
        "the README's results block is stale: run `make results-doc`"


def test_readme_is_short_and_generated_block_holds_the_lead_table():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    block = readme.split(results_doc.README_START, 1)[1].split(results_doc.README_END, 1)[0]
    lead = (ROOT / "results" / results_doc.lead_run(ROOT) / "tables" / "main_psnr.md").read_text().strip()
    assert lead in block


def test_check_mode_reports_a_stale_doc(tmp_path):
    for rel in ("results", "params"):
        (tmp_path / rel).symlink_to(ROOT / rel)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text("stale\n")
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text())
    assert results_doc.main(["--root", str(tmp_path), "--check"]) == 1
    assert results_doc.main(["--root", str(tmp_path)]) == 0
    assert results_doc.main(["--root", str(tmp_path), "--check"]) == 0
