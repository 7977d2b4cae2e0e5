"""Render HTML reports to PNG with headless Chromium (a quick look at the reports without a browser).

    python scripts/screenshot.py results/smoke/html --out results/smoke/screenshots [--height 3000]
    make screenshots PARAMS=params/smoke.yaml

Every ``*.html`` in the folder (or the single file given) becomes ``<out>/<name>.png``, a
``width x height`` capture of the top of the page. Needs ``chromium`` (Debian: ``apt-get install
chromium``) or ``chromium-browser`` / ``google-chrome`` on the PATH, or ``$CHROMIUM``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str:
    env = os.environ.get("CHROMIUM")
    if env:
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("no Chromium found: install it (Debian/Ubuntu: `apt-get install chromium`) "
                            f"or set $CHROMIUM to its path (looked for {', '.join(CANDIDATES)})")


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 3000, timeout: float = 120.0,
               chromium: Optional[str] = None) -> Path:
    """Capture ``html`` (a local file) into ``png``; raises RuntimeError when Chromium fails."""
    chromium = chromium or find_chromium()
    html, png = Path(html).resolve(), Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.stem}.tmp.png")
    with tempfile.TemporaryDirectory(prefix="varlib-chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={tmp}", html.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"chromium could not render {html} (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    os.replace(tmp, png)
    return png


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Screenshot HTML reports with headless Chromium.")
    ap.add_argument("html", help="an .html file or a folder of them")
    ap.add_argument("--out", default=None, help="output folder (default: <folder>/../screenshots)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=3000)
    args = ap.parse_args(argv)
    src = Path(args.html)
    files = sorted(src.glob("*.html")) if src.is_dir() else [src]
    if not files:
        print(f"no .html files in {src}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else (src if src.is_dir() else src.parent).parent / "screenshots"
    chromium = find_chromium()
    for f in files:
        png = screenshot(f, out / f"{f.stem}.png", args.width, args.height, chromium=chromium)
        print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
