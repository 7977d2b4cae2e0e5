"""Image sets as (N, 3, H, W) float tensors in [0, 1], in a deterministic order."""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from .io import atomic_dir, atomic_path


def data_dir() -> Path:
    """The data directory: ``$VARLIB_DATA_DIR``, else ``../shared/data`` beside the project if present."""
    env = os.environ.get("VARLIB_DATA_DIR")
    if env:
        return Path(env)
    guess = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return guess


def _tiny_dir() -> Path:
    d = data_dir() / "tinyimagenet"
    if not (d / "wnids.txt").exists():
        raise FileNotFoundError(
            f"Tiny ImageNet not found in {d}. Put train-000.tar, train-001.tar, train-002.tar, val.tar, wnids.txt "
            "and words.txt there (see the README, section Data) and set VARLIB_DATA_DIR to their parent folder.")
    return d


def tinyimagenet_classes() -> List[str]:
    """The WNIDs in label order (label k = line k of wnids.txt)."""
    return (_tiny_dir() / "wnids.txt").read_text().split()


def _decode(raw: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.uint8)


def _check_every(every: int) -> None:
    if every < 1:
        raise ValueError(f"every={every}: pass 1 for every image, or N > 1 for every N-th")


def _selected_train_members(d: Path, shards: Optional[List[int]], every: int, limit: Optional[int]):
    """(open shard tar, member) for each selected training image, in read order: each shard's images in
    name order, every ``every``-th of them, the first ``limit`` in all."""
    n = 0
    for s in (shards if shards is not None else [0, 1, 2]):
        with tarfile.open(d / f"train-{s:03d}.tar") as tf:
            members = sorted((m for m in tf.getmembers() if m.isfile() and m.name.lower().endswith(".jpeg")),
                             key=lambda m: m.name)
            for m in members[::every]:
                if limit is not None and n >= limit:
                    return
                yield tf, m
                n += 1


def read_tinyimagenet(split: str, shards: Optional[List[int]] = None, limit: Optional[int] = None,
                      every: int = 1) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Read Tiny ImageNet straight from its tar files.

    Returns (uint8 images (N, 64, 64, 3), int64 labels (N,), member names). ``split`` is
    ``"train"`` (shards 0..2, members sorted by name; ``every``: only every ``every``-th member of each
    shard) or ``"val"`` (sorted by image index). ``limit`` keeps the first ``limit`` images.
    """
    _check_every(every)
    d = _tiny_dir()
    wnid_to_label = {w: i for i, w in enumerate(tinyimagenet_classes())}
    images, labels, names = [], [], []
    if split == "train":
        for tf, m in _selected_train_members(d, shards, every, limit):
            images.append(_decode(tf.extractfile(m).read()))
            labels.append(wnid_to_label[Path(m.name).parent.name])
            names.append(m.name)
    elif split == "val":
        with tarfile.open(d / "val.tar") as tf:
            ann = {}
            for m in tf.getmembers():
                if m.name.endswith("val_annotations.txt"):
                    for line in tf.extractfile(m).read().decode().splitlines():
                        parts = line.split("\t")
                        if len(parts) >= 2:
                            ann[parts[0]] = parts[1]
            members = [m for m in tf.getmembers() if m.isfile() and m.name.lower().endswith(".jpeg")]
            members.sort(key=lambda m: int(Path(m.name).stem.split("_")[-1]))
            for m in members:
                if limit is not None and len(images) >= limit:
                    break
                images.append(_decode(tf.extractfile(m).read()))
                labels.append(wnid_to_label[ann[Path(m.name).name]])
                names.append(Path(m.name).name)
    else:
        raise ValueError(f"unknown Tiny ImageNet split {split!r}; use 'train' or 'val'")
    return np.stack(images), np.asarray(labels, dtype=np.int64), names


#: CelebA aligned faces (``celeba10k.tar``): files 000001-009000 train, 009001-010000 held out.
CELEBA_TAR = "celeba10k.tar"
CELEBA_TRAIN_LAST = 9000
#: The square face crop (rows, columns) of an 89x109 aligned CelebA image, before resizing: 74x74 around
#: the face, the usual 64 px CelebA protocol.
CELEBA_CROP = (slice(20, 94), slice(7, 81))


def read_celeba(split: str, limit: Optional[int] = None, image_size: int = 64,
                every: int = 1) -> Tuple[np.ndarray, List[str]]:
    """Read the CelebA faces of ``data_dir()/celeba10k.tar``: the 74x74 crop :data:`CELEBA_CROP` of each
    aligned face, resized to ``image_size`` with PIL bicubic (anti-aliased).

    ``split``: ``"train"`` (files 000001-009000) or ``"val"`` (009001-010000, held out: never trained or
    tuned on), in file-number order; ``every``: only every ``every``-th file; ``limit``: the first ``limit``.
    Returns (uint8 images (N, image_size, image_size, 3), file names)."""
    _check_every(every)
    if split not in ("train", "val"):
        raise ValueError(f"unknown CelebA split {split!r}; use 'train' or 'val'")
    path = data_dir() / CELEBA_TAR
    if not path.exists():
        raise FileNotFoundError(
            f"CelebA faces not found: expected {path} (the first 10,000 aligned CelebA images, 000001.jpg .. "
            "010000.jpg, as one tar; see the README, section Data) and VARLIB_DATA_DIR set to its folder.")
    images, names = [], []
    with tarfile.open(path) as tf:
        members = sorted((m for m in tf.getmembers() if m.isfile() and m.name.lower().endswith(".jpg")),
                         key=lambda m: int(Path(m.name).stem))
        members = [m for m in members if (int(Path(m.name).stem) <= CELEBA_TRAIN_LAST) == (split == "train")]
        for m in members[::every]:
            if limit is not None and len(images) >= limit:
                break
            face = Image.fromarray(_decode(tf.extractfile(m).read())[CELEBA_CROP])
            images.append(np.asarray(face.resize((image_size, image_size), resample=Image.BICUBIC), dtype=np.uint8))
            names.append(Path(m.name).name)
    if not images:
        raise ValueError(f"no CelebA {split} images selected (limit={limit}, every={every})")
    return np.stack(images), names


#: Written beside a carried training subset (``write_train_subset``): the selection it holds.
SUBSET_NOTE = "subset.json"


def train_selection(shards: Optional[List[int]] = None, every: int = 1, limit: Optional[int] = None) -> dict:
    """Which training images a run reads, as a run records it: shards, ``every``, ``limit`` and, when the
    data folder is a subset written by :func:`write_train_subset`, the selection that subset holds."""
    sel = {"shards": list(shards) if shards is not None else [0, 1, 2], "every": every, "limit": limit}
    note = _tiny_dir() / SUBSET_NOTE
    if note.exists():
        sel["subset_of"] = json.loads(note.read_text())
    return sel


def write_train_subset(dest: Path, shards: Optional[List[int]] = None, every: int = 1,
                       limit: Optional[int] = None) -> Path:
    """Copy a selection of the training split (as :func:`read_tinyimagenet` makes it) into
    ``dest/tinyimagenet/train-000.tar``, the JPEG bytes unchanged, with the class lists and a
    ``subset.json`` note. For a transfer of at most 64 MiB to a GPU machine: 10,000 images are 27 MB,
    a whole shard 55 MB. Read it back with ``VARLIB_DATA_DIR=dest`` and ``shards=[0]``: the same images,
    in name order across the selected shards (``make prior-gpu`` trains from this tar on any machine, so
    the order is the same everywhere)."""
    _check_every(every)
    src, folder = _tiny_dir(), Path(dest) / "tinyimagenet"
    n = 0
    with atomic_path(folder / "train-000.tar") as tmp, tarfile.open(tmp, "w") as out:
        for tf, m in _selected_train_members(src, shards, every, limit):
            out.addfile(m, tf.extractfile(m))
            n += 1
    for name in ("wnids.txt", "words.txt"):
        shutil.copyfile(src / name, folder / name)
    sel = {**train_selection(shards, every, limit), "images": n}
    (folder / SUBSET_NOTE).write_text(json.dumps(sel, indent=1))
    return folder / "train-000.tar"


def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div(255)


# ----------------------------------------------------------------------------------------------
# evaluation image sets
# ----------------------------------------------------------------------------------------------
#: Natural colour photographs shipped inside scikit-image (no download), in this fixed order.
#: ``motorcycle`` is the left view of ``skimage.data.stereo_motorcycle()``.
EMBEDDED_IMAGES: Tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle")

#: Named folder sets: name -> (folder inside data_dir(), where it comes from).
FOLDER_SETS = {
    "kodak24": ("Kodak24", "24 Kodak PhotoCD PNGs, e.g. cszn/FFDNet testsets/Kodak24"),
    "cbsd68": ("CBSD68", "68 colour BSD PNGs, e.g. cszn/FFDNet testsets/CBSD68"),
    "mcmaster": ("McMaster", "18 McMaster TIF/PNGs, e.g. cszn/FFDNet testsets/McMaster"),
}

#: image domains whose baselines have their own tuned settings (``varlib/tuned_baselines.json``): the
#: domain of an image set, and the training set those settings were searched on
DOMAIN_TRAIN_SETS: Dict[str, str] = {"celeba": "celeba-train"}


def image_domain(image_set: Optional[str]) -> Optional[str]:
    """The domain of an image set with its own tuned baseline settings (``"celeba"`` for
    ``celeba-train`` / ``celeba-val``), None for the others (they use the Tiny ImageNet tuning)."""
    head = str(image_set or "").split("-")[0]
    return head if head in DOMAIN_TRAIN_SETS else None


IMAGE_SETS: Tuple[str, ...] = ("embedded", "tinyimagenet-train", "tinyimagenet-val", "celeba-train", "celeba-val",
                                *FOLDER_SETS)

#: Public copies of the folder sets (cszn/FFDNet at a fixed commit), fetched when missing and online.
FFDNET_RAW = "https://raw.githubusercontent.com/cszn/FFDNet/e787f46df2f374ff3591186706229cb9a0591fea/testsets"
FOLDER_FILES = {
    "kodak24": [f"kodim{i:02d}.png" for i in range(1, 25)],
    "mcmaster": [f"{i}.tif" for i in range(1, 19)],
    "cbsd68": ['101085.png', '101087.png', '102061.png', '103070.png', '105025.png', '106024.png', '108005.png', '108070.png', '108082.png', '109053.png', '119082.png', '12084.png', '123074.png', '126007.png', '130026.png', '134035.png', '14037.png', '143090.png', '145086.png', '147091.png', '148026.png', '148089.png', '157055.png', '159008.png', '160068.png', '16077.png', '163085.png', '167062.png', '167083.png', '170057.png', '175032.png', '175043.png', '182053.png', '189080.png', '19021.png', '196073.png', '197017.png', '208001.png', '210088.png', '21077.png', '216081.png', '219090.png', '220075.png', '223061.png', '227092.png', '229036.png', '236037.png', '24077.png', '241004.png', '241048.png', '253027.png', '253055.png', '260058.png', '271035.png', '285079.png', '291000.png', '295087.png', '296007.png', '296059.png', '299086.png', '300091.png', '302008.png', '304034.png', '304074.png', '306005.png', '3096.png', '33039.png', '351093.png'],
}


def fetch_folder_set(key: str, folder: Path, timeout: float = 10.0) -> Path:
    """Download a folder set into ``folder`` (all files into a temporary folder, then renamed into
    place, so an interrupted download leaves nothing half-written). Raises OSError when offline."""
    import urllib.request

    sub, _ = FOLDER_SETS[key]
    with atomic_dir(folder) as tmp:
        for fname in FOLDER_FILES[key]:
            with urllib.request.urlopen(f"{FFDNET_RAW}/{sub}/{fname}", timeout=timeout) as r:
                (tmp / fname).write_bytes(r.read())
    return folder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def _natural_key(s: str):
    """Sort key that orders embedded numbers numerically ("2.tif" before "10.tif")."""
    import re
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", s) if t != ""]


def resize_center_crop(image: Image.Image, image_size: int) -> np.ndarray:
    """The evaluation protocol: resize the short side to ``image_size`` (PIL bicubic, which
    anti-aliases when reducing), then take the centre ``image_size x image_size`` crop.
    Returns uint8 (image_size, image_size, 3)."""
    image = image.convert("RGB")
    w, h = image.size
    if min(w, h) != image_size:
        scale = image_size / min(w, h)
        nw, nh = max(image_size, int(round(w * scale))), max(image_size, int(round(h * scale)))
        image = image.resize((nw, nh), resample=Image.BICUBIC)
        w, h = image.size
    left, top = (w - image_size) // 2, (h - image_size) // 2
    image = image.crop((left, top, left + image_size, top + image_size))
    return np.asarray(image, dtype=np.uint8)


def _embedded_arrays() -> List[Tuple[str, np.ndarray]]:
    import skimage.data as skd
    out = []
    for name in EMBEDDED_IMAGES:
        if name == "motorcycle":
            arr = skd.stereo_motorcycle()[0]
        else:
            arr = getattr(skd, name)()
        out.append((name, np.asarray(arr)[..., :3]))
    return out


def _folder_images(folder: Path, limit: Optional[int]) -> Tuple[List[Path], List[int], List[str]]:
    """Image files of a folder: flat (sorted by name, labels -1), or ImageNet-val layout
    (class sub-folders, no images at the top; label = index of the sorted sub-folder name)."""
    def is_image(p: Path) -> bool:
        return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS

    top = sorted((p for p in folder.iterdir() if is_image(p)), key=lambda p: _natural_key(p.name))
    if top:
        files, labels = top, [-1] * len(top)
        names = [p.name for p in top]
    else:
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        files, labels, names = [], [], []
        for k, c in enumerate(classes):
            for p in sorted((q for q in (folder / c).iterdir() if is_image(q)), key=lambda q: _natural_key(q.name)):
                files.append(p)
                labels.append(k)
                names.append(f"{c}/{p.name}")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder} or its class sub-folders")
    if limit is not None:
        files, labels, names = files[:limit], labels[:limit], names[:limit]
    return files, labels, names


def load_images(name_or_folder: str, image_size: int, limit: Optional[int] = None,
                with_labels: bool = False, with_names: bool = False):
    """Load an image set as a ``(N, 3, image_size, image_size)`` float tensor in [0, 1].

    ``name_or_folder`` is one of :data:`IMAGE_SETS` or a folder of images:

    * ``embedded``: the natural colour photos of :data:`EMBEDDED_IMAGES`, shipped with
      scikit-image (always available offline);
    * ``tinyimagenet-train`` / ``tinyimagenet-val``: Tiny ImageNet from ``data_dir()/tinyimagenet``
      (order of :func:`read_tinyimagenet`; labels are the wnids.txt indices);
    * ``celeba-train`` / ``celeba-val``: aligned CelebA faces from ``data_dir()/celeba10k.tar``, the
      74x74 face crop resized to ``image_size`` (:func:`read_celeba`; train 000001-009000, val 009001-010000);
    * ``kodak24``, ``cbsd68``, ``mcmaster``: the folders ``Kodak24``, ``CBSD68``, ``McMaster`` in
      ``data_dir()`` (``$VARLIB_DATA_DIR``). Nothing is downloaded: when a folder is missing a
      ``FileNotFoundError`` says what to put where;
    * any other string is a folder path: its images sorted by name (numbers compared as numbers),
      or, with class sub-folders and no images at the top (ImageNet val layout), all images of the
      sorted sub-folders with label = sub-folder index.

    Every other image is resized so its short side is ``image_size`` (PIL bicubic, anti-aliased) and
    centre-cropped (:func:`resize_center_crop`). ``limit`` keeps the first ``limit`` images.
    Returns the tensor, or a tuple ``(images, labels, names)`` trimmed to what was asked for
    (``labels``: int64 array, -1 where the set has no labels; ``names``: list of str).
    """
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    key = str(name_or_folder).lower()
    if key == "embedded":
        items = _embedded_arrays()[:limit] if limit is not None else _embedded_arrays()
        arrays = [resize_center_crop(Image.fromarray(a), image_size) for _, a in items]
        labels = [-1] * len(arrays)
        names = [n for n, _ in items]
    elif key in ("tinyimagenet-train", "tinyimagenet-val"):
        raw, lab, names = read_tinyimagenet(key.split("-")[1], limit=limit)
        arrays = [a if a.shape[0] == image_size else resize_center_crop(Image.fromarray(a), image_size) for a in raw]
        labels = lab.tolist()
    elif key in ("celeba-train", "celeba-val"):
        raw, names = read_celeba(key.split("-")[1], limit=limit, image_size=image_size)
        arrays, labels = list(raw), [-1] * len(raw)
    elif key in FOLDER_SETS:
        sub, origin = FOLDER_SETS[key]
        folder = data_dir() / sub
        if not folder.is_dir():
            try:
                fetch_folder_set(key, folder)
            except OSError as e:  # offline, or the source is unreachable
                raise FileNotFoundError(
                    f"image set {key!r} not found: expected the folder {folder} ({origin}); downloading it from "
                    f"{FFDNET_RAW}/{sub} failed ({type(e).__name__}: {e}). Put the images there and set "
                    f"VARLIB_DATA_DIR to its parent folder (now {data_dir()}), or pass a folder path instead.") from e
        files, labels, names = _folder_images(folder, limit)
        arrays = [resize_center_crop(Image.open(f), image_size) for f in files]
    else:
        folder = Path(name_or_folder).expanduser()
        if not folder.is_dir():
            raise ValueError(f"unknown image set {name_or_folder!r}: use one of {', '.join(IMAGE_SETS)} "
                             "or the path of an existing folder of images")
        files, labels, names = _folder_images(folder, limit)
        arrays = [resize_center_crop(Image.open(f), image_size) for f in files]
    if not arrays:
        raise ValueError(f"no images selected from {name_or_folder!r} (limit={limit})")
    images = to_tensor(np.stack(arrays))
    if not (with_labels or with_names):
        return images
    out = [images]
    if with_labels:
        out.append(np.asarray(labels, dtype=np.int64))
    if with_names:
        out.append(list(names))
    return tuple(out)
