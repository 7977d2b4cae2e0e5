"""Image sets: embedded photos offline, folders, resize/crop protocol, data-dir sets."""
import numpy as np
from pathlib import Path

import pytest
import torch
from PIL import Image

from varlib.data import EMBEDDED_IMAGES, IMAGE_SETS, data_dir, load_images, resize_center_crop, to_tensor

needs_tiny = pytest.mark.skipif(not (data_dir() / "tinyimagenet").exists(),
                                reason="needs VARLIB_DATA_DIR (../shared/data): Tiny ImageNet tars")
needs_kodak = pytest.mark.skipif(not (data_dir() / "Kodak24").exists(),
                                 reason="needs VARLIB_DATA_DIR (../shared/data): Kodak24 folder")


def test_embedded_offline():
    x, labels, names = load_images("embedded", 64, with_labels=True, with_names=True)
    assert tuple(x.shape) == (len(EMBEDDED_IMAGES), 3, 64, 64) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert names == list(EMBEDDED_IMAGES) and (labels == -1).all()
    assert torch.equal(x[:2], load_images("embedded", 64, limit=2))  # deterministic, limit keeps the order
    assert float(x.std()) > 0.1  # real photographs, not blanks


def test_resize_center_crop_protocol():
    # 120x60 image: left half 0, right half 255 -> centre crop of the resized 64x32... -> short side 32
    a = np.zeros((60, 120, 3), np.uint8)
    a[:, 60:] = 255
    a[:, 40:80, 1] = 128  # a band in the middle third
    out = resize_center_crop(Image.fromarray(a), 30)
    assert out.shape == (30, 30, 3) and out.dtype == np.uint8
    # the resized image is 60x30; the crop starts at column 15 and covers the middle band
    assert abs(int(out[15, 15, 1]) - 128) <= 2
    assert out[15, 0, 0] < 20 and out[15, -1, 0] > 235
    # greyscale inputs become RGB; an image already at size is unchanged
    g = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 256
    out = resize_center_crop(Image.fromarray(g.astype(np.uint8), mode="L"), 64)
    assert out.shape == (64, 64, 3) and np.array_equal(out[..., 0], g.astype(np.uint8))


def test_folder_flat_and_class_layout(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, v in [(10, 200), (2, 100), (1, 50)]:
        Image.fromarray(np.full((40, 50, 3), v, np.uint8)).save(flat / f"{i}.png")
    (flat / "notes.txt").write_text("ignored")
    x, names = load_images(str(flat), 32, with_names=True)
    assert names == ["1.png", "2.png", "10.png"]  # numbers sorted as numbers
    assert np.allclose(x[:, 0, 0, 0].numpy() * 255, [50, 100, 200])
    cls = tmp_path / "val"
    for c, n in [("b_class", 2), ("a_class", 1)]:
        (cls / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.zeros((20, 20), np.uint8)).save(cls / c / f"im{i}.jpg")
    x, labels, names = load_images(str(cls), 16, with_labels=True, with_names=True)
    assert x.shape == (3, 3, 16, 16)
    assert labels.tolist() == [0, 1, 1] and names[0] == "a_class/im0.jpg"


def _offline(*args, **kwargs):
    import urllib.error
    raise urllib.error.URLError("no network in this test")


def test_errors(tmp_path, monkeypatch):
    import urllib.request
    with pytest.raises(ValueError, match="embedded.*kodak24"):
        load_images("imagenet-21k", 64)
    monkeypatch.setenv("VARLIB_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    with pytest.raises(FileNotFoundError, match="(?s)Kodak24.*downloading.*failed.*VARLIB_DATA_DIR"):
        load_images("kodak24", 64)
    assert list(tmp_path.iterdir()) == []  # nothing half-downloaded is left behind
    assert "cbsd68" in IMAGE_SETS and "mcmaster" in IMAGE_SETS


def test_missing_folder_set_is_downloaded(tmp_path, monkeypatch):
    """The download path, served from the local copy (no network in tests)."""
    import io
    import urllib.request
    from varlib.data import FOLDER_FILES
    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "McMaster"
    if not src.is_dir():
        pytest.skip("needs ../shared/data/McMaster to serve the fake download")
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO((src / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setenv("VARLIB_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    x = load_images("mcmaster", 32, limit=3)
    assert x.shape == (3, 3, 32, 32)
    assert sorted(p.name for p in (tmp_path / "McMaster").iterdir()) == sorted(FOLDER_FILES["mcmaster"])
    assert all(u.startswith("https://") and "/McMaster/" in u for u in requested) and len(requested) == 18


def test_to_tensor_unchanged():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    a[0, 0, 0] = [255, 0, 51]
    t = to_tensor(a)
    assert tuple(t.shape) == (2, 3, 4, 4) and t[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])


@needs_tiny
@pytest.mark.data
def test_tinyimagenet_val():
    x, labels, names = load_images("tinyimagenet-val", 64, limit=4, with_labels=True, with_names=True)
    assert tuple(x.shape) == (4, 3, 64, 64)
    assert names == [f"val_{i}.JPEG" for i in range(4)]
    assert ((labels >= 0) & (labels < 1000)).all()


@needs_kodak
@pytest.mark.data
def test_kodak24():
    x, names = load_images("kodak24", 64, limit=2, with_names=True)
    assert tuple(x.shape) == (2, 3, 64, 64) and names == ["kodim01.png", "kodim02.png"]


def _fake_tinyimagenet(root: Path, per_shard: int = 7) -> Path:
    """A Tiny ImageNet folder in the shared layout: 3 training tars of small random JPEGs, 2 classes."""
    import io
    import tarfile
    folder = root / "tinyimagenet"
    folder.mkdir(parents=True)
    wnids = ["n00000001", "n00000002"]
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tclass {i}\n" for i, w in enumerate(wnids)))
    rng = np.random.default_rng(0)
    for s in range(3):
        with tarfile.open(folder / f"train-{s:03d}.tar", "w") as tf:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
                info = tarfile.TarInfo(f"{wnids[i % 2]}/{wnids[i % 2]}_{s * 100 + i}.JPEG")
                info.size = buf.tell()
                buf.seek(0)
                tf.addfile(info, buf)
    return root


def test_training_subset_carries_the_same_images(tmp_path, monkeypatch):
    """`every` keeps every N-th image of each shard in name order; write_train_subset copies that selection into
    one tar that reads back, as shard 0, to the same images and labels (in name order), and notes its origin."""
    from varlib.data import read_tinyimagenet, train_selection, write_train_subset
    monkeypatch.setenv("VARLIB_DATA_DIR", str(_fake_tinyimagenet(tmp_path / "full")))
    x_all, y_all, names_all = read_tinyimagenet("train")
    x, y, names = read_tinyimagenet("train", every=3, limit=7)
    shard_of = {n: int(Path(n).stem.split("_")[1]) // 100 for n in names_all}  # image s*100+i is in shard s
    per_shard = [sorted(n for n in names_all if shard_of[n] == s)[::3] for s in (0, 1, 2)]
    assert names == [n for shard in per_shard for n in shard][:7] and len(names) == 7
    assert np.array_equal(x[1], x_all[names_all.index(names[1])]) and y[1] == y_all[names_all.index(names[1])]
    with pytest.raises(ValueError, match="every=0"):
        read_tinyimagenet("train", every=0)
    with pytest.raises(ValueError, match="every=0"):
        write_train_subset(tmp_path / "refused", every=0)
    assert not (tmp_path / "refused").exists()
    write_train_subset(tmp_path / "sub", every=3, limit=7)
    monkeypatch.setenv("VARLIB_DATA_DIR", str(tmp_path / "sub"))
    x_sub, y_sub, names_sub = read_tinyimagenet("train", shards=[0])
    assert names_sub == sorted(names)  # one tar: name order across the shards it was cut from
    order = [names.index(n) for n in names_sub]
    assert np.array_equal(x_sub, x[order]) and np.array_equal(y_sub, y[order])
    assert train_selection([0]) == {"shards": [0], "every": 1, "limit": None,
                                    "subset_of": {"shards": [0, 1, 2], "every": 3, "limit": 7, "images": 7}}
