"""The face data (celeba10k.tar), the face priors' configurations and training starts, and what the solver does
for a prior that can paint a hole (partial injection at every scale, the pixel step keeping the hole)."""
import json

import numpy as np
import pytest
import torch

from varlib.data import data_dir, load_images, read_celeba
from varlib.prior.loading import PACKAGE_WEIGHTS

HAS_FACES = (data_dir() / "celeba10k.tar").exists()
needs_faces = pytest.mark.skipif(not HAS_FACES, reason="needs celeba10k.tar in VARLIB_DATA_DIR (../shared/data); "
                                                       "runs in CI")
FACES64 = PACKAGE_WEIGHTS / "faces64"
needs_faces64 = pytest.mark.skipif(not (FACES64 / "SHA256SUMS").exists(),
                                   reason="faces64 is not exported (make prior-faces)")


@needs_faces
def test_face_splits_are_disjoint_cropped_and_ordered():
    val, val_names = read_celeba("val", limit=3)
    train, train_names = read_celeba("train", limit=2, every=1000)
    assert val.shape == (3, 64, 64, 3) and val.dtype == np.uint8
    assert val_names == ["009001.jpg", "009002.jpg", "009003.jpg"]
    assert train_names == ["000001.jpg", "001001.jpg"]  # every 1000th training file
    x, names = load_images("celeba-val", 32, limit=2, with_names=True)
    assert x.shape == (2, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert names == val_names[:2]
    # the crop is the face: the centre of the aligned faces is brighter and more varied than a border row
    faces = load_images("celeba-val", 64, limit=20)
    assert float(faces[..., 16:48, 16:48].std()) > 0.1


def test_missing_face_data_and_bad_splits_are_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("VARLIB_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="celeba10k.tar"):
        load_images("celeba-val", 64)
    with pytest.raises(ValueError, match="unknown CelebA split 'test'"):
        read_celeba("test")


def test_face_configurations_train_on_faces():
    from varlib.diffusion import named_diffusion_config
    from varlib.prior.configs import named_config, rebuild_command
    from varlib.training.common import load_train_images, training_data
    cfg = named_config("faces64")
    assert cfg.transformer.num_classes == 1 and cfg.tokenizer == named_config("tiny64").tokenizer
    assert training_data("faces64") == training_data("faces64-diffusion") == "celeba"
    assert training_data("tiny64") == "tinyimagenet"
    assert named_diffusion_config("faces64-diffusion").unet == named_diffusion_config("tiny64-diffusion").unet
    assert rebuild_command("faces64") == "make prior-faces"
    with pytest.raises(ValueError, match="unknown training dataset 'ffhq'"):
        load_train_images(limit=2, dataset="ffhq")


@needs_faces
def test_face_training_images_are_one_class():
    from varlib.training.common import load_train_images, load_val_images
    x, y = load_train_images(limit=4, dataset="celeba")
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.uint8 and y.tolist() == [0, 0, 0, 0]
    v, _ = load_val_images(2, dataset="celeba")
    assert not torch.equal(v, x[:2])


def test_transformer_fine_tuning_starts_from_the_shipped_null_class():
    from varlib.prior import build_prior, load_prior
    from varlib.training.transformer import init_from_shipped
    face = build_prior("faces64")
    init_from_shipped(face.transformer, "tiny64")
    shipped = load_prior("tiny64").transformer.state_dict()
    own = face.transformer.state_dict()
    for row in own["class_emb.weight"]:  # the face class and the null class both start unconditional
        assert torch.equal(row, shipped["class_emb.weight"][-1])
    others = [k for k in own if k != "class_emb.weight"]
    assert others and all(torch.equal(own[k], shipped[k]) for k in others)
    with pytest.raises(ValueError, match="not the same architecture"):
        init_from_shipped(build_prior("test").transformer, "tiny64")


def test_diffusion_fine_tuning_starts_from_the_shipped_weights(tmp_path):
    from varlib.diffusion import load_diffusion_prior, named_diffusion_config
    from varlib.training.diffusion import load_from_ckpt, train
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = named_diffusion_config("faces64-diffusion")
    train(tmp_path, cfg, steps=1, batch=2, lr=0.0, images=images, init_weights="tiny64-diffusion", progress=False)
    start = load_diffusion_prior("tiny64-diffusion").net.state_dict()
    got = load_from_ckpt(tmp_path).net.state_dict()  # the EMA weights, after one step at lr 0
    assert all(torch.allclose(got[k].float(), start[k].float()) for k in start)
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ck["hparams"]["init_weights"] == "tiny64-diffusion"


def test_pixel_step_can_keep_the_prior_in_the_hole():
    from varlib.operators import make_operator
    from varlib.solver import BASE_SETTINGS, pixel_anchor
    op = make_operator("inpaint_box", 64, seed=0)
    g = torch.Generator().manual_seed(0)
    prior_img, init_img = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    hole = ~op.observed_mask.bool().expand_as(prior_img)
    s = dict(BASE_SETTINGS, dc_pixel_prior_weight=0.25)
    blend = pixel_anchor(prior_img, init_img, op, dict(s, dc_pixel_hole="blend"))
    keep = pixel_anchor(prior_img, init_img, op, dict(s, dc_pixel_hole="prior"))
    assert torch.allclose(blend, 0.25 * prior_img + 0.75 * init_img)
    assert torch.equal(keep[hole], prior_img[hole]) and torch.allclose(keep[~hole], blend[~hole])
    assert hole.any() and (~hole).any()
    with pytest.raises(ValueError, match="dc_pixel_hole='smooth'"):
        pixel_anchor(prior_img, init_img, op, dict(s, dc_pixel_hole="smooth"))


def test_a_method_limited_to_the_first_images(tmp_path):
    from varlib.study.params import ParamsError, load_params
    from varlib.study.runner import plan_cases
    raw = {"run": "lim", "images": {"set": "embedded", "limit": 3}, "tasks": ["sr4"],
           "methods": ["init", {"name": "tv", "limit": 1}]}
    p = load_params(raw)
    cases = plan_cases(p, ["a", "b", "c"], [-1, -1, -1])
    assert [(c.spec.label, c.image) for c in cases] == [("init", "a"), ("init", "b"), ("init", "c"), ("tv", "a")]
    with pytest.raises(ParamsError, match="limit of method 'tv' must be null or a positive integer"):
        load_params({**raw, "methods": [{"name": "tv", "limit": 0}]})


@needs_faces64
def test_faces64_loads_offline_is_small_and_samples_faces_deterministically():
    from varlib.prior import load_prior
    total = sum(f.stat().st_size for f in FACES64.iterdir())
    assert total <= 25 * 2 ** 20
    prior = load_prior("faces64")
    assert prior.num_classes == 1 and prior.image_size == 64
    a = prior.sample([0, 0], cfg=1.5, top_p=0.9, generator=torch.Generator().manual_seed(0))
    b = prior.sample([0, 0], cfg=1.5, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (2, 3, 64, 64)


@needs_faces64
@needs_faces
def test_faces64_reconstruction_matches_its_card():
    from varlib.prior import load_prior
    from varlib.training import evaluate_tokenizer
    metrics = json.loads((FACES64 / "metrics.json").read_text())["tokenizer"]
    got = evaluate_tokenizer(load_prior("faces64"), 100)
    assert abs(got["psnr"] - metrics["psnr"]) < 0.5, (got["psnr"], metrics["psnr"])
    assert all(b > a for a, b in zip(got["psnr_per_scales"], got["psnr_per_scales"][1:]))


@needs_faces
def test_two_step_face_training_runs_and_resumes(tmp_path):
    from varlib.training.cli import main
    out = tmp_path / "faces"
    common = ["--out", str(out), "--config", "faces64", "--limit", "32", "--batch", "8", "--crop", "0"]
    main(["tokenizer", "--steps", "2", *common])
    ck = torch.load(out / "tokenizer_ckpt.pt", weights_only=False)
    assert ck["step"] == 2 and ck["init_weights"] == "tiny64"  # the recipe continues tiny64's tokenizer
    main(["tokenizer", "--steps", "3", *common])
    assert torch.load(out / "tokenizer_ckpt.pt", weights_only=False)["step"] == 3
    main(["tokenize", *common])
    assert np.load(out / "tokens_train.npz")["labels"].tolist() == [0] * 32
    main(["transformer", "--steps", "2", *common])
    tr = torch.load(out / "transformer_ckpt.pt", weights_only=False)
    assert tr["step"] == 2 and tr["init_weights"] == "tiny64"


@needs_faces64
def test_a_corrupted_faces64_names_its_make_target(tmp_path):
    import shutil

    from varlib.prior import load_prior
    d = tmp_path / "faces64"
    shutil.copytree(FACES64, d)
    raw = bytearray((d / "tokenizer.safetensors").read_bytes())
    raw[-10] ^= 0xFF
    (d / "tokenizer.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="tokenizer.safetensors.*make prior-faces"):
        load_prior(d)


@pytest.mark.skipif(not (PACKAGE_WEIGHTS / "faces64-diffusion" / "SHA256SUMS").exists(),
                    reason="faces64-diffusion is not exported (make diffusion-prior-faces)")
def test_faces64_diffusion_loads_offline_and_samples_deterministically():
    from varlib.diffusion import load_diffusion_prior
    folder = PACKAGE_WEIGHTS / "faces64-diffusion"
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 25 * 2 ** 20
    prior = load_diffusion_prior("faces64-diffusion")
    a, b = prior.sample(2, steps=5, generator=0), prior.sample(2, steps=5, generator=0)
    assert torch.equal(a, b) and a.shape == (2, 3, 64, 64)
    assert "celeba-train" in (folder / "MODEL_CARD.md").read_text()


def test_diffusion_weights_file_is_a_function_of_the_weights(tmp_path):
    """safetensors writes metadata keys in hash order, which changes per process: the export sorts them."""
    from safetensors.torch import save_file

    from varlib.diffusion.model import _sort_safetensors_metadata
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(3)}, str(path), metadata={"name": "x", "format": "varlib-diffusion", "b": "1"})
    size = path.stat().st_size
    _sort_safetensors_metadata(path)
    raw = path.read_bytes()
    assert path.stat().st_size == size
    assert raw[8:].startswith(b'{"__metadata__":{"b":"1","format":"varlib-diffusion","name":"x"},"a":')
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        assert torch.equal(f.get_tensor("a"), torch.ones(3))
