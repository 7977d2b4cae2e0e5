"""Does the VAR solver's per-pixel standard deviation (several samples per measurement) mean anything?

With ``num_samples > 1`` the solver returns the mean of the samples (the MMSE estimate) and their
per-pixel standard deviation. An uncertainty map is useful only if it is high where the mean is
wrong, so we measure, per image, the correlation between the standard deviation and the absolute
error of the mean over all pixels and channels:

* Pearson's r (linear) and Spearman's rho (rank; insensitive to how the two scale);
* the mean absolute error in each decile of the standard deviation (a calibration curve: it should
  rise from the least to the most uncertain decile);
* the coverage: the share of pixel values whose error of the mean is at most ``COVERAGE_K`` (2) times
  their std (about 0.95 for a calibrated Gaussian posterior; far less when the samples agree
  where the mean is wrong);
* for inpainting, the mean std inside the hole and on the observed pixels: samples of a prior that
  paints should differ where the measurement is silent and agree where it is not.

:func:`sample_mmse_table` compares the PSNR of the samples' mean (the MMSE estimate) with that of
one sample drawn with the same settings (the params' entry of ``num_samples: 1`` and otherwise the
same resolved settings), on the images both ran on.

:func:`uncertainty_table` / :func:`uncertainty_figure` read the benchmark's cached outputs (the
``_std.npy`` files and PNGs of ``results/<run>/cache/images/``), so they cost no solver time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np
import pandas as pd

from ..metrics import COVERAGE_K, coverage
from ..operators import TASK_TITLES
from .cache import read_png
from .figures import save_figure, themed_pyplot
from .paths import study_paths
from .tables import fmt_mean_std, plural, save_table, task_order

DECILES = 10


def std_error_correlation(mean: np.ndarray, std: np.ndarray, target: np.ndarray) -> Dict[str, Any]:
    """Per-pixel agreement of an uncertainty map with the error of an estimate.

    mean, std, target: arrays of one shape (e.g. (3, H, W) or (H, W, 3)), images in [0, 1].
    Returns ``pearson``, ``spearman``, ``error_by_decile`` (mean |mean - target| in each
    decile of ``std``, least uncertain first) and ``coverage`` (share of values with
    |mean - target| <= ``COVERAGE_K`` * std).
    """
    mean, std, target = (np.asarray(a, dtype=np.float64).ravel() for a in (mean, std, target))
    if not (mean.shape == std.shape == target.shape):
        raise ValueError(f"mean, std and target must have the same number of values, got "
                         f"{mean.size}, {std.size}, {target.size}")
    err = np.abs(mean - target)
    covered = coverage(mean, std, target)
    if np.ptp(std) == 0 or np.ptp(err) == 0:  # a constant map: no correlation is defined
        return {"pearson": np.nan, "spearman": np.nan, "error_by_decile": [np.nan] * DECILES, "coverage": covered}
    pearson = float(np.corrcoef(std, err)[0, 1])
    rank = lambda a: pd.Series(a).rank().to_numpy()  # noqa: E731 (average ranks for ties)
    spearman = float(np.corrcoef(rank(std), rank(err))[0, 1])
    order = np.argsort(std, kind="stable")
    deciles = [float(err[chunk].mean()) for chunk in np.array_split(order, DECILES)]
    return {"pearson": pearson, "spearman": spearman, "error_by_decile": deciles, "coverage": covered}


def _observed_mask(task: str, size: int, seed: int, cache: Dict[tuple, Optional[np.ndarray]]) -> Optional[np.ndarray]:
    """The (H, W) boolean mask of observed pixels of an inpainting task (it depends on task, size and
    seed only), or None for the other tasks."""
    key = (task, size, seed)
    if key not in cache:
        from ..operators import make_operator

        m = getattr(make_operator(task, size, seed=seed), "observed_mask", None)
        cache[key] = None if m is None else m[0, 0].cpu().numpy() > 0.5
    return cache[key]


def case_correlations(df: pd.DataFrame, run_dir: Path) -> pd.DataFrame:
    """One row per case of ``df`` that has an uncertainty map: image, task, method, pearson, spearman,
    mean |error| per std decile (``err_d1`` .. ``err_d10``), mean std, coverage, and for inpainting
    the mean std in the hole (``std_hole``) and on the observed pixels (``std_observed``) and the
    hole's coverage (``coverage_hole``; NaN for the other tasks)."""
    rows, masks = [], {}
    run_dir = Path(run_dir)
    with_std = df[df["std_path"].fillna("").astype(str) != ""] if "std_path" in df.columns else df.iloc[:0]
    for _, r in with_std.iterrows():
        std = np.load(run_dir / r["std_path"])
        mean, gt = read_png(run_dir / r["recon_path"]), read_png(run_dir / r["gt_path"])
        c = std_error_correlation(mean, std, gt)
        hole = {"std_hole": np.nan, "std_observed": np.nan, "coverage_hole": np.nan}
        seen = _observed_mask(r["task"], int(std.shape[-1]), int(r.get("seed", 0)), masks)
        if seen is not None and (~seen).any():
            hole = {"std_hole": float(std[:, ~seen].mean()), "std_observed": float(std[:, seen].mean()),
                    "coverage_hole": coverage(mean[:, ~seen], std[:, ~seen], gt[:, ~seen])}
        rows.append({"image": r["image"], "task": r["task"], "method": r["method"], "pearson": c["pearson"],
                     "spearman": c["spearman"], "mean_std": float(std.mean()), "coverage": c["coverage"], **hole,
                     **{f"err_d{k + 1}": v for k, v in enumerate(c["error_by_decile"])}})
    return pd.DataFrame(rows)


def uncertainty_table(df: pd.DataFrame, params: Mapping[str, Any]) -> Optional[pd.DataFrame]:
    """Correlation of the standard deviation with the error of the mean, per method and task (mean ±
    std over images), written as ``tables/uncertainty``; None when no method produced std maps."""
    paths = study_paths(params)
    cases = case_correlations(df, paths.root)
    if cases.empty:
        return None
    tasks = task_order(cases, params)
    g = cases.groupby(["method", "task"], sort=False)
    numbers = g[["pearson", "spearman", "mean_std", "coverage", "std_hole", "std_observed", "coverage_hole",
                 "err_d1", f"err_d{DECILES}"]].agg(["mean", "std"])
    numbers.columns = [f"{a} {b}" for a, b in numbers.columns]
    numbers["n"] = g.size()
    numbers = numbers.reset_index()
    numbers["task"] = pd.Categorical(numbers["task"], tasks, ordered=True)
    numbers = numbers.sort_values(["method", "task"]).reset_index(drop=True)
    display = pd.DataFrame({
        "method": numbers["method"],
        "task": [TASK_TITLES.get(t, t) for t in numbers["task"]],
        "Pearson r": [fmt_mean_std(a, b, 2) for a, b in zip(numbers["pearson mean"], numbers["pearson std"])],
        "Spearman rho": [fmt_mean_std(a, b, 2) for a, b in zip(numbers["spearman mean"], numbers["spearman std"])],
        "mean std": [f"{v:.3f}" for v in numbers["mean_std mean"]],
        "std in hole / observed": ["–" if pd.isna(a) else f"{a:.3f} / {b:.3f}"
                                   for a, b in zip(numbers["std_hole mean"], numbers["std_observed mean"])],
        f"coverage (|error| <= {COVERAGE_K:g} std)": [f"{v:.2f}" for v in numbers["coverage mean"]],
        "coverage in hole": ["–" if pd.isna(v) else f"{v:.2f}" for v in numbers["coverage_hole mean"]],
        "|error|, least uncertain 10 %": [f"{v:.3f}" for v in numbers["err_d1 mean"]],
        f"|error|, most uncertain 10 %": [f"{v:.3f}" for v in numbers[f"err_d{DECILES} mean"]],
    })
    cap = ("Per-pixel correlation between the samples' standard deviation and the absolute error of their mean "
           f"(mean ± std over {plural(cases['image'].nunique(), 'image')}), and the mean absolute error "
           "(on the [0, 1] scale) in the least and the most uncertain tenth of the pixels; for inpainting the mean std "
           f"in the hole and on the observed pixels; coverage: the share of pixel values whose error is at most "
           f"{COVERAGE_K:g} std (about 0.95 if calibrated).")
    save_table(numbers, "uncertainty", params, display=display, caption=cap)
    return display


def _single_sample_twin(df: pd.DataFrame, method: str) -> Optional[str]:
    """The method label whose resolved settings equal ``method``'s with ``num_samples`` 1, if any."""
    import json

    def settings(label):
        full = df.loc[df["method"] == label, "settings_full"].dropna()
        return {t: json.loads(v) for t, v in zip(df.loc[full.index, "task"], full)}

    want = {t: {**v, "num_samples": 1} for t, v in settings(method).items()}
    for other in dict.fromkeys(df["method"]):
        theirs = settings(other) if other != method else {}
        if theirs and all(theirs.get(t) == v for t, v in want.items()):
            return other
    return None


def sample_mmse_table(df: pd.DataFrame, params: Mapping[str, Any]) -> Optional[pd.DataFrame]:
    """PSNR of the samples' mean (each entry with ``num_samples > 1``) against one sample with the same
    settings, per task, on the images both ran on; written as ``tables/sample_mmse``. None when the
    run has no such pair of entries."""
    if "settings_full" not in df.columns or "std_path" not in df.columns:
        return None
    multi = list(dict.fromkeys(df.loc[df["std_path"].fillna("").astype(str) != "", "method"]))
    rows = []
    for m in multi:
        twin = _single_sample_twin(df, m)
        if twin is None:
            continue
        both = df[df["method"] == m].merge(df[df["method"] == twin], on=["image", "task"], suffixes=("", "_one"))
        for t in task_order(both, params):
            d = both[both["task"] == t]
            rows.append({"method": m, "single": twin, "task": t, "n": len(d), "psnr_mean_of_samples": d["psnr"].mean(),
                         "psnr_one_sample": d["psnr_one"].mean(), "gain_db": (d["psnr"] - d["psnr_one"]).mean(),
                         "gain_std_db": (d["psnr"] - d["psnr_one"]).std(ddof=0)})
    if not rows:
        return None
    numbers = pd.DataFrame(rows)
    display = pd.DataFrame({
        "method": numbers["method"], "one sample": numbers["single"],
        "task": [TASK_TITLES.get(t, t) for t in numbers["task"]], "images": numbers["n"],
        "PSNR, mean of the samples (dB)": numbers["psnr_mean_of_samples"].map("{:.2f}".format),
        "PSNR, one sample (dB)": numbers["psnr_one_sample"].map("{:.2f}".format),
        "gain (dB)": [fmt_mean_std(a, b, 2) for a, b in zip(numbers["gain_db"], numbers["gain_std_db"])],
    })
    cap = ("The MMSE estimate (mean of the samples) against a single sample drawn with the same settings, "
           "on the images both entries ran on; gain: mean ± std over those images.")
    save_table(numbers, "sample_mmse", params, display=display, caption=cap)
    return display


def uncertainty_figure(df: pd.DataFrame, params: Mapping[str, Any], image: Optional[str] = None,
                       task: Optional[str] = None, name: str = "uncertainty"):
    """Left: mean |error| per decile of the standard deviation, one line per task (calibration).
    Right: for one case, the ground truth, the mean, |error| and the standard deviation maps."""
    plt, sns = themed_pyplot()
    paths = study_paths(params)
    cases = case_correlations(df, paths.root)
    if cases.empty:
        return None
    tasks = task_order(cases, params)
    method = cases["method"].iloc[0]
    cases = cases[cases["method"] == method]
    fig = plt.figure(figsize=(14, 3.8))
    gs = fig.add_gridspec(1, 5, width_ratios=[1.6, 1, 1, 1, 1], wspace=0.45)
    ax = fig.add_subplot(gs[0])
    colors = dict(zip(tasks, sns.color_palette("tab10", n_colors=len(tasks))))
    x = np.arange(1, DECILES + 1)
    for t in tasks:
        d = cases[cases["task"] == t][[f"err_d{k}" for k in x]].mean()
        r = cases.loc[cases["task"] == t, "spearman"].mean()
        ax.plot(x, d.to_numpy(), marker="o", color=colors[t], label=f"{TASK_TITLES.get(t, t)} (rho {r:.2f})")
    ax.set_xticks(x)
    ax.set_xlabel("decile of the per-pixel std (1 = least uncertain)")
    ax.set_ylabel("mean |error| of the mean ([0, 1] scale)")
    ax.set_title(f"{method}: error rises with uncertainty?", fontsize=10, fontweight="bold")
    ax.legend(fontsize=7, frameon=False)
    rows = df[(df["method"] == method) & (df["std_path"].fillna("").astype(str) != "")]
    if task is not None and (rows["task"] == task).any():
        rows = rows[rows["task"] == task]
    if image is not None and (rows["image"] == image).any():
        rows = rows[rows["image"] == image]
    r = rows.iloc[0]
    gt, mean = read_png(paths.root / r["gt_path"]), read_png(paths.root / r["recon_path"])
    std = np.load(paths.root / r["std_path"])
    err, sd = np.abs(mean - gt).mean(0), std.mean(0)
    # separate colour scales: the samples' spread is several times smaller than the error (see the table)
    panels = [("ground truth", gt.transpose(1, 2, 0), None), ("mean of the samples", mean.transpose(1, 2, 0), None),
              ("|error| of the mean", err, float(max(np.percentile(err, 99.5), 1e-3))),
              ("per-pixel std (own scale)", sd, float(max(np.percentile(sd, 99.5), 1e-3)))]
    for k, (title, img, vm) in enumerate(panels):
        a = fig.add_subplot(gs[k + 1])
        im = a.imshow(img, cmap="magma" if vm else None, vmin=0 if vm else None, vmax=vm, interpolation="nearest")
        a.set_title(title, fontsize=9)
        a.axis("off")
        if vm:
            fig.colorbar(im, ax=a, fraction=0.046, pad=0.03).set_label("[0, 1] scale, RGB mean", fontsize=8)
    fig.suptitle(f"Uncertainty of {method} ({plural(cases['image'].nunique(), 'image')} per task); example: "
                 f"{r['image']}, {TASK_TITLES.get(r['task'], r['task'])}", fontsize=11)
    save_figure(fig, name, params)
    return fig


def posterior_samples_figure(params: Mapping[str, Any], method: Optional[str] = None, image: Optional[str] = None,
                             task: str = "inpaint_box", name: str = "posterior_samples"):
    """The samples of one measurement, drawn again (the benchmark keeps only their mean and std): ground
    truth, measurement, every sample of the params' first VAR entry with ``num_samples > 1`` (or
    ``method``), their mean and per-pixel std. ``image``: a name of the set (default its first image).
    Returns the figure, or None when the run has no such method."""
    from ..data import load_images
    from ..operators import make_operator
    from ..prior import load_prior
    from ..solver import solve
    from .methods import method_specs

    prior_name, im = str(params["prior"]), params["images"]
    # num_samples may come from a named set (var-posterior), so filter on the resolved settings
    resolved = [(s, s.method.resolve(s.settings, task, prior_name, str(im["set"]))) for s in method_specs(params)
                if s.kind == "var" and method in (None, s.label)]
    specs = [(s, r) for s, r in resolved if int(r.get("num_samples", 1)) > 1]
    if not specs:
        return None
    spec, settings = specs[0]
    x, names = load_images(im["set"], im["image_size"], limit=im["limit"], with_names=True)
    i = names.index(image) if image in names else 0
    op = make_operator(task, im["image_size"], seed=params["seed"], noise_sigma=params["noise_sigma"])
    y = op.measure(x[i:i + 1], indices=[i])  # the benchmark's measurement of this image
    prior = load_prior(prior_name)
    res = solve(y, op, prior, spec.method.target, return_samples=True, **{"seed": params["seed"], **settings})
    samples = res.samples[:, 0].clamp(0, 1)
    plt, _ = themed_pyplot()
    n = samples.shape[0]
    fig, axes = plt.subplots(2, max(n // 2, 2) + 2, figsize=(2.0 * (max(n // 2, 2) + 2), 4.4))
    show = lambda a, img, title: (a.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest"),
                                  a.set_title(title, fontsize=8))
    show(axes[0, 0], x[i], "ground truth")
    show(axes[1, 0], op.init_estimate(y)[0].clamp(0, 1), "initial estimate")
    per_row = max(n // 2, 2)
    for k in range(n):
        show(axes[k // per_row, 1 + k % per_row], samples[k], f"sample {k + 1}")
    show(axes[0, -1], res.image[0], "mean of the samples")
    sd = samples.std(0).mean(0).numpy()
    im_sd = axes[1, -1].imshow(sd, cmap="magma", vmin=0, interpolation="nearest")
    axes[1, -1].set_title("per-pixel std", fontsize=8)
    fig.colorbar(im_sd, ax=axes[1, -1], fraction=0.046, pad=0.03).set_label("[0, 1] scale, RGB mean", fontsize=7)
    for a in axes.flat:
        a.axis("off")
    fig.suptitle(f"{spec.label}: {n} posterior samples of {names[i]}, {TASK_TITLES.get(task, task)} "
                 f"(prior {params['prior']})", fontsize=10)
    save_figure(fig, name, params)
    return fig
