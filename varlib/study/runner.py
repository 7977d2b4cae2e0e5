"""The benchmark runner: images x tasks x methods, resumable through the case cache.

:func:`run_benchmark` runs every pass of a params file (the benchmark, and with ``use_labels:
[false, true]`` the VAR methods a second time with the class labels, into ``<run>/with-labels/``);
:func:`run_cases` runs one pass into one folder:

1. :func:`plan_cases` lists the cases with their keys (:mod:`varlib.study.cache`); the cached ones
   are skipped;
2. the network priors the remaining cases need are loaded once (:func:`load_models`);
3. per task, the measurements are drawn once (:func:`measure_task`; the noise of each image is
   seeded by its index, so a resumed run draws the same ones);
4. per method, the cases run in groups (:func:`run_group`): batched on the params' device for the
   network methods, one image at a time on the CPU for the others; every finished case is appended
   to ``cache/cases.jsonl`` at once (:func:`case_row`);
5. ``tables/cases.csv`` and ``tables/summary.*`` are written from the cache (:func:`finish`). Rows
   cached before a metric column existed (HaarPSI) get it from their saved 8-bit PNGs, appended to
   the cache as the row's newer version (:func:`backfill_haarpsi`), so no case is solved again.

With ``shard=Shard(i, n)`` only that shard's cases run (:mod:`varlib.study.shards`), appended to its
own ``cache/cases.shard-<i>-of-<n>.jsonl``, and no tables are written; ``merge=True`` runs nothing
and writes the tables once every planned case is in some case file (else
:class:`MissingCasesError` names what is missing and which shards own it). Every case file of a run
counts as its cache.

Progress: a tqdm bar (``progress=True``) and, unless ``verbose=False``, one plain line per finished
group on stdout, flushed, e.g. ``[bench default] 37/240 cases  task=sr4  method=var  (12.3 s)``, so
that it reaches the terminal through papermill's ``--log-output`` as well.

Columns of a case row (:data:`varlib.study.cache.CASE_COLUMNS`): run, key, image_set, image_index,
image, class_label, task, method (the row label), method_name, settings (JSON of the overrides),
settings_full (JSON of the resolved settings), psnr, ssim, haarpsi, lpips (empty when LPIPS is unavailable),
seconds (wall time per image; for a batched call the call's time divided by the batch size),
transformer_evals, decoder_evals, denoiser_evals, network_evals (per image), peak_mem_mb, mem_kind
(:mod:`varlib.study.memory`), residual (||y - A x||_2 per image), seed, noise_sigma, image_size,
prior, prior_id (name@weights hash), device, git_commit, created, recon_path, gt_path,
measurement_path, std_path (paths relative to the run folder).
"""
from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import pandas as pd
import torch

from ..io import atomic_write_text
from .cache import (append_row, cache_files, case_key, git_commit, gt_png_name, key_settings, measurement_png_name, number,
                    prior_fingerprint, read_cache, read_png, read_run_rows, save_npy, save_png)
from .memory import PeakMemory
from .methods import METHODS, MethodSpec, compact, method_specs
from .params import LABELS_SUFFIX, bench_params, check_params, labels_modes, load_params
from .paths import study_paths
from .shards import Shard, owner, shard_of_file, unit_keys
from .tables import write_tables

ParamsLike = Union[str, os.PathLike, Mapping[str, Any]]


@dataclass(frozen=True)
class Case:
    """One planned case: an image of the set through one task and one method entry."""

    key: str
    index: int               # position in the image set
    image: str               # image name
    task: str
    spec: MethodSpec
    full: Dict[str, Any]     # resolved settings (recorded; in the key less neutral values)
    class_label: int
    uses_labels: bool        # the VAR methods of a use_labels pass get the class label
    prior_id: str            # fingerprint of the network prior it runs ("" for none)


@dataclass(frozen=True)
class Pass:
    """One benchmark pass of a params file: its params (one ``use_labels`` value) and folder."""

    kind: str                # "main" or "with-labels"
    params: Dict[str, Any]
    root: Path
    suffix: str = ""         # appended to the method labels in the combined table


# ==================================================================================================
# planning
# ==================================================================================================
def plan_cases(p: Mapping[str, Any], names: Sequence[str], labels: Sequence[int]) -> List[Case]:
    """Every case of one pass (task, then method, then image order), with its key.

    ``p``: checked params with one ``use_labels`` value; ``names`` / ``labels``: the images' names and
    class labels, in the order of the image set."""
    from ..operators import make_operator

    specs = method_specs(p)
    ids = {s.method.prior: prior_fingerprint(str(p[s.method.prior])) for s in specs if s.method.prior}
    size = p["images"]["image_size"]
    out = []
    for task in p["tasks"]:
        op_desc = make_operator(task, size, seed=p["seed"], noise_sigma=p["noise_sigma"]).describe()
        for m in specs:
            full = m.method.resolve(m.settings, task, str(p["prior"]), str(p["images"]["set"]))
            uses_labels = m.kind == "var" and bool(p["use_labels"])
            if uses_labels:
                full = {**full, "use_labels": True}
            pid = ids.get(m.method.prior, "")
            for i, name in enumerate(names[:m.limit]):
                key = case_key(image_set=str(p["images"]["set"]), image=name, task=task, method=m.name,
                               label=m.label, settings=key_settings(full), prior=pid, seed=p["seed"],
                               noise_sigma=p["noise_sigma"], image_size=size, operator=op_desc)
                out.append(Case(key=key, index=i, image=name, task=task, spec=m, full=full,
                                class_label=int(labels[i]), uses_labels=uses_labels, prior_id=pid))
    return out


def benchmark_passes(params: Mapping[str, Any], results_dir: Optional[Union[str, os.PathLike]] = None
                     ) -> List[Pass]:
    """The passes :func:`run_benchmark` runs for checked ``params``: the benchmark with the first
    ``use_labels`` value into ``<run>/``, and with a second value the VAR methods again into
    ``<run>/with-labels/`` (their rows labelled ``<method> +labels``)."""
    root = study_paths(params, results_dir).root
    where = str(params.get("_source", "params"))
    modes = labels_modes(params)
    passes = [Pass("main", check_params({**bench_params(params, modes[0]), "run": root.name}, where), root)]
    if len(modes) > 1:
        p = bench_params(params, modes[1])
        p["methods"] = [m for m in p["methods"] if METHODS[m["name"]].kind == "var"]
        if p["methods"]:
            sub = root / "with-labels"
            passes.append(Pass("with-labels", check_params({**p, "run": sub.name}, where), sub,
                               LABELS_SUFFIX if modes[1] else " -labels"))
    return passes


# ==================================================================================================
# running one pass
# ==================================================================================================
class Progress:
    """The tqdm bar (optional) and one plain, flushed stdout line per finished group."""

    def __init__(self, name: str, total: int, todo: int, bar: bool = False, lines: bool = True):
        from tqdm.auto import tqdm

        self.name, self.total, self.done, self.lines = name, total, total - todo, lines
        self.bar = tqdm(total=todo, desc=f"bench {name}", disable=not bar or not todo, unit="case")
        self._say(f"{total} cases: {total - todo} cached, {todo} to run")

    def _say(self, text: str) -> None:
        if self.lines:
            line = f"[bench {self.name}] {text}"
            if self.bar.disable:
                print(line, flush=True)
            else:
                self.bar.write(line, file=sys.stdout)
                sys.stdout.flush()

    def update(self, n: int, task: str, method: str, seconds: float) -> None:
        self.done += n
        self.bar.update(n)
        self._say(f"{self.done}/{self.total} cases  task={task}  method={method}  ({seconds:.1f} s)")

    def close(self) -> None:
        self.bar.close()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _load_var_prior(name: str, device: torch.device):
    if name == "test":  # random weights, for tests
        from ..prior import build_prior

        torch.manual_seed(0)
        return build_prior("test", device=device)
    from ..prior import load_prior

    return load_prior(name, device=device)


def load_models(p: Mapping[str, Any], todo: Sequence[Case], device: torch.device) -> Dict[str, Any]:
    """The network priors the cases ``todo`` run, by params key (``prior``, ``diffusion_prior``),
    loaded once on ``device``; their image size must be the benchmark's."""
    needed = {c.spec.method.prior for c in todo} - {None}
    size = int(p["images"]["image_size"])
    models: Dict[str, Any] = {}
    if "prior" in needed:
        prior = models["prior"] = _load_var_prior(str(p["prior"]), device)
        if prior.image_size != size:
            raise ValueError(f"prior {p['prior']!r} works at {prior.image_size} px but images.image_size is {size}")
    if "diffusion_prior" in needed:
        from ..diffusion.model import load_diffusion_prior

        dp = models["diffusion_prior"] = load_diffusion_prior(str(p["diffusion_prior"]), device=device)
        if dp.config.image_size != size:
            raise ValueError(f"diffusion prior {p['diffusion_prior']!r} was trained at {dp.config.image_size}"
                             f" px but images.image_size is {size}")
    return models


@dataclass
class Context:
    """What every group of one pass shares."""

    p: Mapping[str, Any]
    root: Path
    images: torch.Tensor     # (N, 3, H, W) in [0, 1]
    labels: Sequence[int]
    names: Sequence[str]
    models: Dict[str, Any]
    device: torch.device     # of the batched (network) methods
    commit: str
    have_lpips: bool

    @property
    def size(self) -> int:
        return int(self.p["images"]["image_size"])


@dataclass
class Measured:
    """One task's operators and the measurements of the images its remaining cases need."""

    task: str
    op_cpu: Any
    y_of: Dict[int, torch.Tensor]           # image index -> (1, ...) measurement on the CPU
    paths: Dict[int, tuple]                 # image index -> (gt png, measurement png), relative to the run
    op_device: Any = None                   # the operator on ctx.device (made when first needed)


def measure_task(ctx: Context, task: str, cases: Sequence[Case]) -> Measured:
    """Draw the measurements of ``cases``' images once and save ground truth and measurement PNGs."""
    from ..operators import make_operator

    p, img_dir = ctx.p, ctx.root / "cache" / "images"
    op = make_operator(task, ctx.size, seed=p["seed"], noise_sigma=p["noise_sigma"])
    idx = sorted({c.index for c in cases})
    y_all = op.measure(ctx.images[idx], indices=idx)  # noise seeded by the image index
    y_of = {i: y_all[k:k + 1] for k, i in enumerate(idx)}
    paths = {}
    for i in idx:
        gt = img_dir / gt_png_name(p["images"]["set"], ctx.names[i], ctx.size)
        meas = img_dir / measurement_png_name(p["images"]["set"], ctx.names[i], i, ctx.size, task, op.describe())
        if not gt.exists():
            save_png(ctx.images[i], gt)
        if not meas.exists():
            save_png(y_of[i][0], meas)
        paths[i] = (str(gt.relative_to(ctx.root)), str(meas.relative_to(ctx.root)))
    return Measured(task=task, op_cpu=op, y_of=y_of, paths=paths)


def method_groups(ctx: Context, measured: Measured, spec: MethodSpec, cases: Sequence[Case]) -> tuple:
    """(groups of cases, operator, device): network methods in batches of ``batch_size`` on the
    params' device, the others one case at a time on the CPU."""
    if not spec.method.batched:
        return [[c] for c in cases], measured.op_cpu, torch.device("cpu")
    if measured.op_device is None:
        from ..operators import make_operator

        measured.op_device = make_operator(measured.task, ctx.size, seed=ctx.p["seed"],
                                           noise_sigma=ctx.p["noise_sigma"], device=ctx.device)
    b = int(ctx.p["batch_size"])
    return [list(cases[k:k + b]) for k in range(0, len(cases), b)], measured.op_device, ctx.device


def call_method(spec: MethodSpec, y: torch.Tensor, op, models: Mapping[str, Any], labels: Optional[torch.Tensor],
                seed: int, full: Optional[Mapping[str, Any]] = None):
    """Run one method entry on a batch of measurements ``y``; returns its :class:`varlib.Result`.

    ``full``: the case's resolved settings. The baselines get them whole (they carry the values tuned
    for the image set's domain, which the functions alone do not know); the VAR solver gets the
    entry's overrides and resolves the rest itself."""
    m = spec.method
    settings = dict(full) if full is not None and m.kind != "var" else spec.settings
    return m.call(settings, y, op, models.get(m.prior) if m.prior else None, labels, seed)


def run_group(ctx: Context, measured: Measured, spec: MethodSpec, group: Sequence[Case], op,
              dev: torch.device) -> List[Dict[str, Any]]:
    """Run one group of cases (one call), score it and save its images; returns the case rows."""
    from ..metrics import HAARPSI_MIN_SIZE, haarpsi, lpips, psnr, ssim

    idx = [c.index for c in group]
    y = torch.cat([measured.y_of[i] for i in idx]).to(dev)
    lab = torch.as_tensor([int(ctx.labels[i]) for i in idx]) if group[0].uses_labels else None
    t0 = time.perf_counter()
    with PeakMemory(dev) as mem:
        res = call_method(spec, y, op, ctx.models, lab, ctx.p["seed"], group[0].full)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.perf_counter() - t0
    xhat = res.image.detach().float().cpu().clamp(0, 1)
    ref = ctx.images[idx]
    scores = {"psnr": psnr(xhat, ref), "ssim": ssim(xhat, ref), "haarpsi": haarpsi(xhat, ref) if min(ref.shape[-2:]) >= HAARPSI_MIN_SIZE else None,
              "lpips": lpips(xhat, ref) if ctx.have_lpips else None}
    with torch.no_grad():
        resid = (measured.op_cpu.A(xhat) - y.cpu()).flatten(1).norm(dim=1).tolist()
    rows = []
    for b, c in enumerate(group):
        img_dir = ctx.root / "cache" / "images"
        save_png(xhat[b], img_dir / f"{c.key}.png")
        std_path = ""
        if res.std is not None:
            save_npy(res.std[b].detach().float().cpu().numpy(), img_dir / f"{c.key}_std.npy")
            std_path = f"cache/images/{c.key}_std.npy"
        rows.append(case_row(ctx, measured, c, res, b, scores, wall / len(group), mem, float(resid[b]), dev,
                             std_path))
    return rows


def case_row(ctx: Context, measured: Measured, c: Case, res, b: int, scores: Mapping[str, Any], seconds: float,
             mem: PeakMemory, residual: float, dev: torch.device, std_path: str) -> Dict[str, Any]:
    """The cache row of case ``c`` (item ``b`` of its group's result ``res``)."""
    p, m = ctx.p, c.spec
    lp = scores["lpips"]
    return dict(
        run=p["run"], key=c.key, image_set=str(p["images"]["set"]), image_index=c.index, image=c.image,
        class_label=c.class_label, task=c.task, method=m.label, method_name=m.name, settings=compact(m.settings),
        settings_full=compact(c.full), psnr=number(scores["psnr"][b]), ssim=number(scores["ssim"][b]),
        haarpsi=number(scores["haarpsi"][b]) if scores["haarpsi"] is not None else None, lpips=number(lp[b]) if lp is not None else None, seconds=seconds,
        transformer_evals=int(res.transformer_evals), decoder_evals=int(res.decoder_evals),
        denoiser_evals=int(res.denoiser_evals), network_evals=int(res.network_evals),
        peak_mem_mb=round(mem.peak_mb, 2), mem_kind=mem.kind, residual=residual, seed=p["seed"],
        noise_sigma=p["noise_sigma"], image_size=ctx.size,
        prior=str(p[m.method.prior]) if m.method.prior else "", prior_id=c.prior_id, device=str(dev),
        git_commit=ctx.commit, created=_dt.datetime.now().isoformat(timespec="seconds"),
        recon_path=f"cache/images/{c.key}.png", gt_path=measured.paths[c.index][0],
        measurement_path=measured.paths[c.index][1], std_path=std_path)


def finish(p: Mapping[str, Any], root: Path, cases: Sequence[Case]) -> pd.DataFrame:
    """The cached rows of ``cases`` in plan order; writes ``tables/cases.csv`` and ``summary.*``."""
    keys = [c.key for c in cases]
    backfill_haarpsi(root, set(keys))
    df = read_cache(root)
    df = df[df["key"].isin(set(keys))].copy()
    order = {k: n for n, k in enumerate(keys)}
    df = df.sort_values("key", key=lambda s: s.map(order)).reset_index(drop=True)
    write_tables(df, root, task_order=p["tasks"], method_order=[m["label"] for m in p["methods"]])
    return df


def backfill_haarpsi(root: Path, keys: Optional[set] = None) -> int:
    """Give the cached rows without a HaarPSI value (cached before the column existed) one, computed
    from their saved reconstruction and ground-truth PNGs; appends each as the key's newer row and
    returns how many. (The PNGs are 8-bit: on the study's images that moves HaarPSI by < 1e-3.)"""
    from ..metrics import HAARPSI_MIN_SIZE, haarpsi

    jsonl = root / "cache" / "cases.jsonl"
    latest = {r["key"]: r for r in read_run_rows(root)}
    todo = [r for k, r in latest.items() if r.get("haarpsi") is None and (keys is None or k in keys)
            and int(r.get("image_size") or 0) >= HAARPSI_MIN_SIZE
            and (root / str(r.get("recon_path", ""))).is_file() and (root / str(r.get("gt_path", ""))).is_file()]
    for r in todo:
        x, gt = (torch.from_numpy(read_png(root / r[c]))[None].float() for c in ("recon_path", "gt_path"))
        append_row(jsonl, {**r, "haarpsi": number(haarpsi(x, gt)[0])})
    return len(todo)


class MissingCasesError(RuntimeError):
    """The merge of a sharded run found cases that no shard has finished."""


def run_cases(p: Mapping[str, Any], root: Union[str, os.PathLike], limit: Optional[int] = None,
              progress: bool = False, name: Optional[str] = None, verbose: bool = True,
              shard: Optional[Shard] = None, merge: bool = False) -> pd.DataFrame:
    """Run (or resume) one benchmark pass of checked params ``p`` into ``root``; returns its rows.

    ``limit`` keeps the first N images (a smaller limit in the params wins); ``name`` labels the
    progress output (default ``p["run"]``). ``shard``: run only that shard's cases, appending to its
    own cache file, and write no tables (the merge does); returns the shard's rows. ``merge``: run
    nothing, build the tables from every case file, and raise :class:`MissingCasesError` (naming
    the missing cases and the shards that own them) when some case is in none."""
    from ..data import load_images
    from ..metrics import lpips_available

    root = Path(root)
    if not isinstance(p.get("use_labels"), bool):  # a list means several passes: run_benchmark's job
        raise ValueError(f"run_cases runs one pass (use_labels true or false), got use_labels={p.get('use_labels')!r}; "
                         "use run_benchmark, or benchmark_passes for the passes' params")
    if shard is not None and merge:
        raise ValueError("run_cases: give shard (run one shard) or merge (tables from every shard), not both")
    if limit is not None:
        old = p["images"]["limit"]
        p = {**p, "images": {**p["images"], "limit": int(limit) if old is None else min(int(limit), int(old))}}
    size = int(p["images"]["image_size"])
    images, labels, names = load_images(p["images"]["set"], size, limit=p["images"]["limit"], with_labels=True,
                                        with_names=True)
    names = [str(n) for n in names]
    cases = plan_cases(p, names, labels)
    units = unit_keys(cases, int(p["batch_size"]))
    mine = [c for c in cases if shard is None or shard.owns(units[c.key])]
    done = {r["key"] for r in read_run_rows(root)}
    todo = [c for c in mine if c.key not in done]
    if merge:
        if todo:
            raise MissingCasesError(missing_cases_message(root, todo, units, len(cases)))
        return finish(p, root, cases)
    jsonl = root / "cache" / (shard.cache_name if shard is not None else "cases.jsonl")
    label = (name or str(p["run"])) + (f" shard {shard}" if shard is not None else "")
    report = Progress(label, len(mine), len(todo), bar=progress, lines=verbose)
    try:
        if todo:
            device = _device(p["device"])
            ctx = Context(p=p, root=root, images=images, labels=labels, names=names,
                          models=load_models(p, todo, device), device=device, commit=git_commit(),
                          have_lpips=lpips_available()[0])
            for task in p["tasks"]:
                _run_task(ctx, task, [c for c in todo if c.task == task], report, jsonl)
    finally:
        report.close()
    if shard is None:
        return finish(p, root, cases)
    df = read_cache(root)
    keys = {c.key for c in mine}
    return df[df["key"].isin(keys)].reset_index(drop=True)


def missing_cases_message(root: Path, todo: Sequence[Case], units: Mapping[str, str], total: int) -> str:
    """What a merge tells when cases are missing: how many, per (task, method), and which shard owns
    them (the shard counts are read from the shard files present)."""
    from collections import Counter

    counts = sorted({s.count for s in (shard_of_file(f.name) for f in cache_files(root)) if s})
    lines = [f"{len(todo)} of {total} cases of {root} are in no cache file yet, so no tables were written:"]
    per = Counter((c.task, c.spec.label) for c in todo)
    lines += [f"  task={t} method={m}: {n} missing" for (t, m), n in list(per.items())[:12]]
    if len(per) > 12:
        lines.append(f"  ... and {len(per) - 12} more (task, method) pairs")
    for n in counts:
        owners = Counter(owner(units[c.key], n) for c in todo)
        lines.append(f"  with {n} shards: " + ", ".join(f"shard {i}/{n} lacks {k}" for i, k in sorted(owners.items()))
                     + f"; rerun those shards (varlib bench --params ... --shard i/{n}) and merge again")
    if not counts:
        lines.append("  no shard has written anything: run the shards (varlib bench --params ... --shards N) "
                     "or the whole benchmark without --merge")
    return "\n".join(lines)


def _run_task(ctx: Context, task: str, cases: Sequence[Case], report: Progress, jsonl: Path) -> None:
    if not cases:
        return
    measured = measure_task(ctx, task, cases)
    for spec in method_specs(ctx.p):
        mine = [c for c in cases if c.spec.label == spec.label]
        if not mine:
            continue
        groups, op, dev = method_groups(ctx, measured, spec, mine)
        for group in groups:
            t0 = time.perf_counter()
            for row in run_group(ctx, measured, spec, group, op, dev):
                append_row(jsonl, row)
            report.update(len(group), task, spec.label, time.perf_counter() - t0)


# ==================================================================================================
# the whole benchmark of a params file
# ==================================================================================================
def run_benchmark(params: ParamsLike, limit: Optional[int] = None, progress: bool = False,
                  results_dir: Optional[Union[str, os.PathLike]] = None, verbose: bool = True,
                  shard: Optional[Shard] = None, merge: bool = False) -> pd.DataFrame:
    """Run (or resume: finished cases come from the cache) the benchmark of ``params`` (a params
    file, a mapping, or :func:`load_params`'s result); returns the per-case table, one row per
    image x task x method.

    With ``use_labels: [false, true]`` the VAR methods run a second time with the images' class
    labels (into ``<run>/with-labels/``); those rows get the method label suffixed ``" +labels"`` and
    the combined table is written to ``<run>/tables/cases_all.csv``. ``results_dir`` replaces the
    results root (``$VARLIB_RESULTS_DIR`` or ``results/``). ``shard`` runs one shard of every pass
    (no tables); ``merge`` runs nothing and writes the tables once every shard has finished (see
    :func:`run_cases`)."""
    P = params if isinstance(params, Mapping) and "_source" in params else load_params(params)
    passes = benchmark_passes(P, results_dir)
    frames = []
    for pas in passes:
        name = P["run"] if pas.kind == "main" else f"{P['run']}/{pas.root.name}"
        df = run_cases(pas.params, pas.root, limit=limit, progress=progress, name=name, verbose=verbose,
                       shard=shard, merge=merge)
        if pas.suffix:
            df = _relabelled(df, pas)
        frames.append(df)
    if len(frames) == 1 or shard is not None:
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    both = pd.concat(frames, ignore_index=True)
    atomic_write_text(passes[0].root / "tables" / "cases_all.csv", both.to_csv(index=False))
    return both


def _relabelled(df: pd.DataFrame, pas: Pass) -> pd.DataFrame:
    """A sub-pass's rows as the main table shows them: suffixed labels, paths relative to ``<run>/``."""
    df = df.assign(method=df["method"] + pas.suffix)
    for col in ("recon_path", "gt_path", "measurement_path", "std_path"):
        if col in df.columns:
            df[col] = df[col].map(lambda v: f"{pas.root.name}/{v}" if isinstance(v, str) and v else v)
    return df


def load_cases(source: Union[Mapping[str, Any], str, os.PathLike]) -> pd.DataFrame:
    """The per-case table of a finished benchmark: ``tables/cases_all.csv`` when the run has
    class-label variants, else ``tables/cases.csv``. ``source``: the params, a run name or a run
    folder. (:func:`varlib.study.cache.read_cache` reads every cached row instead.)"""
    if isinstance(source, Mapping):
        root, both = study_paths(source).root, len(labels_modes(source)) > 1
    else:
        root = Path(source) if isinstance(source, os.PathLike) else study_paths(str(source)).root
        both = True
    names = ("cases_all.csv", "cases.csv") if both else ("cases.csv",)
    for name in names:
        path = root / "tables" / name
        if path.exists():
            return pd.read_csv(path)
    raise FileNotFoundError(f"no benchmark results in {root}: run notebooks/01_benchmark.ipynb first "
                            f"(make benchmark PARAMS=...)")
