"""Tests of the VAR prior (varlib.prior): checkpoint parity, save/load, tokenizer, transformer, sampling.

All models are the 16 px ``test`` configuration with random weights (see conftest.make_prior), on the
CPU with fixed seeds; the official sizes are only ever built on the ``meta`` device.
"""
from __future__ import annotations

import json
import socket
import time

import pytest
import torch
import torch.nn.functional as F

from conftest import SPEC_DIR, make_prior
from varlib.prior import (KNOWN_PRIORS, build_prior, filter_logits, load_prior, sample_tokens, save_official,
                          save_prior)
from varlib.prior import configs as prior_configs

OFFICIAL_NAMES = ("var-d16", "var-d20", "var-d24", "var-d30")


def _tr_inputs(prior, images):
    tokens = prior.encode(images)
    labels = torch.arange(images.shape[0]) % prior.num_classes
    return tokens, labels


def _full_logits(prior, labels, tokens):
    with torch.no_grad():
        return prior.transformer(labels, prior.teacher_input(tokens))


def _stepper_logits(prior, labels, tokens, cfg=0.0, use_kv_cache=True, raw=False):
    """Walk a stepper over all scales committing ``tokens``; concatenated per-scale logits (B, L, V)."""
    out = []
    with torch.no_grad():
        st = prior.stepper(labels, cfg=cfg, use_kv_cache=use_kv_cache)
        for si in range(prior.num_scales):
            out.append(st.raw_logits() if raw else st.logits())
            st.commit(tokens[si])
        assert st.done
    return torch.cat(out, dim=1)


# ------------------------------------------------------------------------------------------------
# 1. key / shape / dtype parity with the official checkpoints
# ------------------------------------------------------------------------------------------------
def _describe(module):
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
            for k, v in module.state_dict().items()}


@pytest.mark.skipif(not SPEC_DIR.is_dir(), reason=f"official key spec not found at {SPEC_DIR} "
                    "(a fresh clone without ../shared/spec)")
@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_official_state_dict_parity(name):
    depth = int(name[len("var-d"):])
    prior = build_prior(name, device="meta")
    for module, fname in ((prior.tokenizer, "keys_vae_ch160v4096z32.json"),
                          (prior.transformer, f"keys_var_d{depth}.json")):
        spec = json.loads((SPEC_DIR / fname).read_text())
        got, want = _describe(module), spec["keys"]
        missing = sorted(set(want) - set(got))
        unexpected = sorted(set(got) - set(want))
        wrong = sorted(k for k in set(got) & set(want) if got[k] != want[k])
        assert not missing and not unexpected and not wrong, (
            f"{fname}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape/dtype {[(k, got[k], want[k]) for k in wrong[:5]]}")
        assert sum(p.numel() for p in module.parameters()) == spec["params"], fname


# ------------------------------------------------------------------------------------------------
# 2. save / load round trips and refusal of broken checkpoints
# ------------------------------------------------------------------------------------------------
def test_official_format_round_trip(prior, images, tmp_path):
    save_official(prior, tmp_path)
    loaded = load_prior(tmp_path)
    assert loaded.metadata["format"] == "official"
    assert torch.equal(prior.reconstruct(images), loaded.reconstruct(images))
    tokens, labels = _tr_inputs(prior, images)
    assert torch.equal(_full_logits(prior, labels, tokens), _full_logits(loaded, labels, tokens))


def test_our_format_round_trip_fp32_exact(prior, images, tmp_path):
    save_prior(prior, tmp_path / "p")
    loaded = load_prior(tmp_path / "p")
    assert loaded.metadata["format"] == "varlib"
    for a, b in ((prior.tokenizer, loaded.tokenizer), (prior.transformer, loaded.transformer)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    assert torch.equal(prior.reconstruct(images), loaded.reconstruct(images))
    tokens, labels = _tr_inputs(prior, images)
    assert torch.equal(_full_logits(prior, labels, tokens), _full_logits(loaded, labels, tokens))


def test_our_format_round_trip_half_close(prior, images, tmp_path):
    save_prior(prior, tmp_path / "p", half=True)
    loaded = load_prior(tmp_path / "p")
    # stored in fp16, loaded back as fp32 parameters
    assert all(p.dtype == torch.float32 for p in loaded.transformer.parameters())
    assert loaded.transformer.lvl_1L.dtype == torch.int64
    torch.testing.assert_close(loaded.reconstruct(images), prior.reconstruct(images), atol=2e-2, rtol=0)
    tokens, labels = _tr_inputs(prior, images)
    ref = _full_logits(prior, labels, tokens)
    got = _full_logits(loaded, labels, tokens)
    torch.testing.assert_close(got, ref, atol=2e-2 * float(ref.abs().max()), rtol=0)
    assert not torch.equal(got, ref)  # really went through fp16


def test_checkpoint_with_wrong_shape_or_missing_key_is_refused(prior, tmp_path):
    save_official(prior, tmp_path)
    vae = tmp_path / "vae_ch160v4096z32.pth"
    state = torch.load(vae, weights_only=True)
    del state["quant_conv.bias"]
    state["post_quant_conv.weight"] = torch.zeros(3, 3)
    torch.save(state, vae)
    with pytest.raises(ValueError) as e:
        load_prior(tmp_path)
    assert "quant_conv.bias" in str(e.value) and "post_quant_conv.weight" in str(e.value)

    save_official(prior, tmp_path)  # restore the tokenizer, break the transformer
    var = tmp_path / f"var_d{prior.config.transformer.depth}.pth"
    state = torch.load(var, weights_only=True)
    state["head.weight"] = state["head.weight"][:, :-1]
    torch.save(state, var)
    with pytest.raises(ValueError, match=r"head\.weight"):
        load_prior(tmp_path)


def test_corrupted_safetensors_file_is_refused(prior, tmp_path):
    path = save_prior(prior, tmp_path / "p")
    target = path / "transformer.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        load_prior(path)
    assert "corrupted" in str(e.value) and "transformer.safetensors" in str(e.value)


@pytest.mark.parametrize("fname", ["tokenizer.safetensors", "transformer.safetensors"])
def test_missing_safetensors_file_is_named(prior, tmp_path, fname):
    path = save_prior(prior, tmp_path / "p")
    (path / fname).unlink()
    with pytest.raises(FileNotFoundError, match=fname.replace(".", r"\.")):
        load_prior(path)


# ------------------------------------------------------------------------------------------------
# 3. encode -> decode
# ------------------------------------------------------------------------------------------------
def test_encode_decode_shapes_ranges_determinism(prior, images):
    B = images.shape[0]
    tokens = prior.encode(images)
    assert len(tokens) == prior.num_scales
    for t, pn in zip(tokens, prior.patch_nums):
        assert t.shape == (B, pn, pn) and t.dtype == torch.long
        assert int(t.min()) >= 0 and int(t.max()) < prior.config.tokenizer.vocab_size
    assert all(torch.equal(a, b) for a, b in zip(tokens, prior.encode(images)))
    for out in (prior.decode(tokens), prior.reconstruct(images), prior.decode(tokens, num_scales=1)):
        assert out.shape == (B, 3, prior.image_size, prior.image_size) and out.dtype == torch.float32
        assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(prior.decode(tokens), prior.decode(tokens))
    assert torch.equal(prior.reconstruct(images), prior.reconstruct(images))
    assert torch.equal(prior.reconstruct(images), prior.decode(tokens))


# ------------------------------------------------------------------------------------------------
# 4. multi-scale residual quantisation
# ------------------------------------------------------------------------------------------------
def _codebook_from_latents(prior, seed=0):
    """Replace the codebook by latent vectors of random images (at every scale; half of them shrunk,
    so that small residuals have close codes): quantisation becomes non-trivial without training."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(16, 3, 4, 4, generator=g), size=(16, 16), mode="bilinear")
    q = prior.tokenizer.quantize
    with torch.no_grad():
        f = prior.tokenizer.encode_latent(x * 2 - 1)
        pool = torch.cat([F.interpolate(f, size=(pn, pn), mode="area").permute(0, 2, 3, 1).reshape(-1, q.Cvae)
                          for pn in prior.patch_nums])
        V = q.vocab_size
        cb = pool[torch.randperm(pool.shape[0], generator=g)[:V]].clone()
        cb[V // 2:] *= 0.3
        q.embedding.weight.copy_(cb)
    return f[:4]


def test_tokens_to_fhat_matches_training_quantizer(prior):
    f = _codebook_from_latents(prior)
    q = prior.tokenizer.quantize
    with torch.no_grad():
        tokens = q.f_to_tokens(f)
        f_hat_train, _, hits = q(f)
        f_hat_tokens = q.tokens_to_fhat(tokens)
    assert torch.cat([t.flatten() for t in tokens]).unique().numel() > 4  # non-trivial quantisation
    torch.testing.assert_close(f_hat_tokens, f_hat_train, atol=1e-5, rtol=0)
    # the codes used per scale agree with the token maps
    for t, h in zip(tokens, hits):
        assert torch.equal(t.flatten().bincount(minlength=q.vocab_size), h)


def test_training_quantizer_straight_through_gradient(prior):
    f = _codebook_from_latents(prior).clone().requires_grad_(True)
    f_hat, vq_loss, _ = prior.tokenizer.quantize(f)
    (f_hat * torch.arange(f_hat.numel()).view_as(f_hat)).sum().backward()
    assert torch.equal(f.grad, torch.arange(f.numel(), dtype=f.dtype).view_as(f))
    assert vq_loss.ndim == 0 and float(vq_loss.detach()) > 0


def test_scale_contribution_is_phi_of_bicubic_upsampling(prior):
    """Scale k adds phi_k(bicubic_up(codes_k)) to f_hat (no up-sampling at the last scale), with
    phi(h) = (1 - r) h + r conv3x3(h), r = 0.5, as in the official quantiser."""
    q = prior.tokenizer.quantize
    g = torch.Generator().manual_seed(3)
    tokens = [torch.randint(0, q.vocab_size, (2, pn, pn), generator=g) for pn in prior.patch_nums]
    HW, SN = prior.patch_nums[-1], prior.num_scales

    def phi(conv, h):
        return 0.5 * h + 0.5 * F.conv2d(h, conv.weight, conv.bias, padding=1)

    with torch.no_grad():
        prev = torch.zeros(2, q.Cvae, HW, HW)
        for si in range(SN):
            codes = q.embedding(tokens[si]).permute(0, 3, 1, 2)
            if si < SN - 1:
                codes = F.interpolate(codes, size=(HW, HW), mode="bicubic")
            cur = q.tokens_to_fhat(tokens, si + 1)
            conv = q.quant_resi.qresi_ls[(0, 2, 3)[si]]  # official ticks for 3 scales (ratios 0, .5, 1)
            torch.testing.assert_close(cur - prev, phi(conv, codes), atol=1e-6, rtol=0)
            prev = cur


def test_phi_schedule_of_the_official_scales():
    """Which of the 4 shared phi convolutions each of the 10 official scales uses (official ticks)."""
    from varlib.prior.tokenizer import MultiScaleQuantizer
    q = MultiScaleQuantizer(16, 4, prior_configs.official_config(16).tokenizer.patch_nums)
    used = [next(i for i, m in enumerate(q.quant_resi.qresi_ls) if m is q.phi(si)) for si in range(10)]
    assert used == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_residual_decreases_over_scales(prior):
    f = _codebook_from_latents(prior)
    q = prior.tokenizer.quantize
    with torch.no_grad():
        tokens = q.f_to_tokens(f)
        norms = [float((f - q.tokens_to_fhat(tokens, k)).norm()) for k in range(prior.num_scales + 1)]
    assert all(b < a for a, b in zip(norms, norms[1:])), norms
    assert norms[-1] < 0.9 * norms[0], norms


# ------------------------------------------------------------------------------------------------
# 5. teacher-forcing input
# ------------------------------------------------------------------------------------------------
def test_teacher_input_segments(prior_any, images):
    prior = prior_any
    tokens = prior.encode(images)
    B, tr = images.shape[0], prior.transformer
    x = prior.teacher_input(tokens)
    assert x.shape == (B, tr.L - tr.first_l, prior.config.tokenizer.Cvae)
    pn = prior.patch_nums
    for k in range(prior.num_scales - 1):
        b, e = tr.begin_ends[k + 1]
        want = F.interpolate(prior.tokens_to_fhat(tokens, k + 1), size=(pn[k + 1], pn[k + 1]), mode="area")
        got = x[:, b - tr.first_l:e - tr.first_l].transpose(1, 2).reshape(B, -1, pn[k + 1], pn[k + 1])
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # also accepts flattened (B, pn*pn) token maps, as the official code uses
    assert torch.equal(prior.teacher_input([t.flatten(1) for t in tokens]), x)


# ------------------------------------------------------------------------------------------------
# 6. KV cache, no-cache stepper and block-causal mask
# ------------------------------------------------------------------------------------------------
def test_kv_cached_logits_equal_full_forward(prior_any, images):
    prior = prior_any
    tokens, labels = _tr_inputs(prior, images)
    full = _full_logits(prior, labels, tokens)
    assert full.shape == (images.shape[0], prior.transformer.L, prior.config.tokenizer.vocab_size)
    assert float(full.std()) > 0.1  # the perturbed weights give non-trivial logits
    cached = _stepper_logits(prior, labels, tokens, cfg=0.0, use_kv_cache=True)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)
    uncached = _stepper_logits(prior, labels, tokens, cfg=0.0, use_kv_cache=False)
    torch.testing.assert_close(uncached, full, atol=1e-5, rtol=0)
    # the stepper leaves no cache switched on
    assert not any(b.attn.caching for b in prior.transformer.blocks)


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_commit_without_reading_logits(prior_any, images, use_kv_cache):
    """A solver may inject tokens at a scale without looking at its logits: later logits must not change."""
    prior = prior_any
    tokens, labels = _tr_inputs(prior, images)
    full = _full_logits(prior, labels, tokens)
    with torch.no_grad():
        st = prior.stepper(labels, cfg=0.0, use_kv_cache=use_kv_cache)
        for si in range(prior.num_scales - 1):
            st.commit(tokens[si])
        b, e = prior.transformer.begin_ends[-1]
        torch.testing.assert_close(st.logits(), full[:, b:e], atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_commit_codes_continuous(prior, images, use_kv_cache):
    """Committing the code vectors of tokens is the same as committing the tokens."""
    tokens, labels = _tr_inputs(prior, images)
    emb = prior.tokenizer.quantize.embedding
    with torch.no_grad():
        a = prior.stepper(labels, cfg=1.0, use_kv_cache=use_kv_cache)
        b = prior.stepper(labels, cfg=1.0, use_kv_cache=False)
        for si in range(prior.num_scales):
            torch.testing.assert_close(a.logits(), b.logits(), atol=1e-5, rtol=0)
            a.commit_codes(emb(tokens[si]).permute(0, 3, 1, 2))
            b.commit(tokens[si])
    torch.testing.assert_close(a.f_hat, prior.tokens_to_fhat(tokens), atol=1e-6, rtol=0)
    assert torch.equal(b.f_hat, a.f_hat)


def test_steppers_and_full_forward_interleave(prior, images):
    """The KV cache belongs to the stepper: two steppers and full forwards can alternate on one transformer."""
    tokens, labels = _tr_inputs(prior, images)
    full = _full_logits(prior, labels, tokens)
    with torch.no_grad():
        a, b = prior.stepper(labels, cfg=0.0), prior.stepper(labels, cfg=0.0)
        for si in range(prior.num_scales):
            beg, end = prior.transformer.begin_ends[si]
            la = a.logits()
            assert torch.equal(_full_logits(prior, labels, tokens), full)
            lb = b.logits()
            torch.testing.assert_close(la, full[:, beg:end], atol=1e-5, rtol=0)
            torch.testing.assert_close(lb, full[:, beg:end], atol=1e-5, rtol=0)
            a.commit(tokens[si])
            b.commit(tokens[si])
    # an abandoned stepper does not disturb later use
    with torch.no_grad():
        c = prior.stepper(labels, cfg=0.0)
        c.logits()
        c.commit(tokens[0])
        c.logits()
    assert torch.equal(_full_logits(prior, labels, tokens), full)
    torch.testing.assert_close(_stepper_logits(prior, labels, tokens), full, atol=1e-5, rtol=0)


def test_block_causal_mask(prior_any, images):
    prior = prior_any
    tokens, labels = _tr_inputs(prior, images)
    base = _full_logits(prior, labels, tokens)
    V = prior.config.tokenizer.vocab_size
    for k in range(prior.num_scales - 1):
        changed = [t.clone() for t in tokens]
        changed[k] = (changed[k] + 1 + torch.arange(changed[k].numel()).view_as(changed[k])) % V
        out = _full_logits(prior, labels, changed)
        end_k = prior.transformer.begin_ends[k][1]
        assert torch.equal(out[:, :end_k], base[:, :end_k]), f"scale {k} change leaked into scales <= {k}"
        assert not torch.allclose(out[:, end_k:], base[:, end_k:]), f"scale {k} change had no effect after it"


# ------------------------------------------------------------------------------------------------
# 7. sampling
# ------------------------------------------------------------------------------------------------
def _sample(prior, seed, **kw):
    kw = {"class_labels": [0, 3], "cfg": 1.5, "top_k": 20, "top_p": 0.95, **kw}
    return prior.sample(generator=torch.Generator().manual_seed(seed), return_tokens=True, **kw)


def test_sampling_seeded_determinism(prior):
    img1, tok1 = _sample(prior, 7)
    img2, tok2 = _sample(prior, 7)
    assert img1.shape == (2, 3, prior.image_size, prior.image_size)
    assert float(img1.min()) >= 0 and float(img1.max()) <= 1
    assert torch.equal(img1, img2) and all(torch.equal(a, b) for a, b in zip(tok1, tok2))
    img3, tok3 = _sample(prior, 8)
    assert not torch.equal(torch.cat([t.flatten() for t in tok1]), torch.cat([t.flatten() for t in tok3]))
    assert not torch.equal(img1, img3)
    # the cache does not change what is sampled
    img4, tok4 = _sample(prior, 7, use_kv_cache=False)
    assert all(torch.equal(a, b) for a, b in zip(tok1, tok4))
    torch.testing.assert_close(img4, img1, atol=1e-5, rtol=0)


def test_cfg_zero_is_conditional_only(prior_any, images):
    prior = prior_any
    tokens, labels = _tr_inputs(prior, images)
    B = labels.shape[0]
    plain = _stepper_logits(prior, labels, tokens, cfg=0.0)
    raw = _stepper_logits(prior, labels, tokens, cfg=3.0, raw=True)
    assert raw.shape[0] == 2 * B
    torch.testing.assert_close(plain, raw[:B], atol=1e-5, rtol=0)
    # the second half is the class-agnostic (null class) model on the same inputs
    null = torch.full_like(labels, prior.num_classes)
    torch.testing.assert_close(raw[B:], _full_logits(prior, null, tokens), atol=1e-5, rtol=0)
    assert not torch.allclose(raw[B:], raw[:B], atol=1e-3)
    # label -1 asks for the null class
    torch.testing.assert_close(_stepper_logits(prior, torch.full_like(labels, -1), tokens), raw[B:], atol=1e-5, rtol=0)
    guided = _stepper_logits(prior, labels, tokens, cfg=3.0)
    tr = prior.transformer
    b0, e0 = tr.begin_ends[0]
    # guidance ramps from 0 at the first scale ...
    torch.testing.assert_close(guided[:, b0:e0], plain[:, b0:e0], atol=1e-5, rtol=0)
    # ... to cfg at the last: (1 + cfg) * cond - cfg * uncond
    b, e = tr.begin_ends[-1]
    assert not torch.allclose(guided[:, b:e], plain[:, b:e], atol=1e-3)
    torch.testing.assert_close(guided[:, b:e], 4.0 * raw[:B, b:e] - 3.0 * raw[B:, b:e], atol=1e-5, rtol=1e-5)


def test_top_k_one_is_argmax(prior, images):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 10, 50, generator=g)
    assert torch.equal(sample_tokens(logits, top_k=1, generator=g), logits.argmax(-1))
    # and whole-image sampling with top_k=1 is greedy decoding
    _, tokens = _sample(prior, 1, top_k=1, top_p=0.0)
    labels = torch.tensor([0, 3])
    with torch.no_grad():
        st = prior.stepper(labels, cfg=1.5)
        for si in range(prior.num_scales):
            greedy = st.logits().argmax(-1).view_as(tokens[si])
            assert torch.equal(tokens[si], greedy), f"scale {si}"
            st.commit(greedy)


@pytest.mark.parametrize("p", [0.3, 0.6, 0.9, 0.99])
def test_top_p_keeps_smallest_sufficient_set(p):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 6, 40, generator=g) * 2
    out = filter_logits(logits, top_p=p)
    probs = logits.softmax(-1)
    kept = torch.isfinite(out)
    assert torch.equal(out[kept], logits[kept])  # kept logits are untouched
    for row_p, row_keep in zip(probs.view(-1, 40), kept.view(-1, 40)):
        mass = float(row_p[row_keep].sum())
        assert mass >= p - 1e-6
        # it is the top of the distribution ...
        if (~row_keep).any():
            assert float(row_p[row_keep].min()) >= float(row_p[~row_keep].max())
        # ... and the smallest such set: dropping its least likely member falls below p
        assert mass - float(row_p[row_keep].min()) < p
    # top-k then top-p, and temperature
    both = filter_logits(logits, top_k=5, top_p=0.5)
    assert int(torch.isfinite(both).sum(-1).max()) <= 5
    torch.testing.assert_close(filter_logits(logits, temperature=2.0), logits / 2)
    with pytest.raises(ValueError, match="temperature"):
        filter_logits(logits, temperature=0)


# ------------------------------------------------------------------------------------------------
# 8. clear errors
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, expected", [
    (torch.rand(2, 3, 32, 32), r"16x16"),
    (torch.rand(2, 3, 16, 16) * 2 - 1, r"\[0, 1\]"),
    (torch.rand(2, 3, 16, 16) * 255, r"\[0, 1\]"),
    (torch.rand(2, 1, 16, 16), r"\(B, 3, H, W\)"),
    (torch.rand(3, 16, 16), r"\(B, 3, H, W\)"),
    (torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8), r"float"),
    (torch.randint(0, 2, (2, 3, 16, 16)), r"float"),
])
def test_bad_images_raise_clear_errors(prior, bad, expected):
    for fn in (prior.encode, prior.reconstruct):
        with pytest.raises(ValueError, match=expected):
            fn(bad)


def test_out_of_range_class_label_is_refused(prior):
    with pytest.raises(ValueError, match="out of range"):
        prior.stepper([prior.num_classes + 1])
    with pytest.raises(ValueError, match="out of range"):
        prior.sample(class_labels=[0, 99])


def test_unknown_prior_name_lists_known_names():
    for call in (lambda: build_prior("var-d17"), lambda: load_prior("var-d17"),
                 lambda: prior_configs.named_config("nope")):
        with pytest.raises(ValueError) as e:
            call()
        for known in KNOWN_PRIORS:
            assert known in str(e.value)


def test_missing_official_weights_offline_is_clear(monkeypatch, tmp_path):
    """No network: offline hub, an empty cache, and any socket connection is refused and recorded."""
    monkeypatch.delenv("VARLIB_VAR_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as hf_constants
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network access attempted in a test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError) as e:
        load_prior("var-d16")
    elapsed = time.perf_counter() - t0
    msg = str(e.value)
    for needle in ("vae_ch160v4096z32.pth", "var_d16.pth", "FoundationVision/var", "VARLIB_VAR_DIR"):
        assert needle in msg
    assert attempts == []
    assert elapsed < 5, f"took {elapsed:.1f} s"
    assert not any((tmp_path / "hf").rglob("*.pth"))


# ------------------------------------------------------------------------------------------------
# 9. official-format directories
# ------------------------------------------------------------------------------------------------
def test_official_named_files_with_config_load(prior, images, tmp_path):
    save_official(prior, tmp_path, depth=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "vae_ch160v4096z32.pth", "var_d16.pth"]
    loaded = load_prior(tmp_path)
    assert loaded.config == prior.config
    tokens, labels = _tr_inputs(prior, images)
    assert torch.equal(_full_logits(prior, labels, tokens), _full_logits(loaded, labels, tokens))
    assert torch.equal(prior.reconstruct(images), loaded.reconstruct(images))


def test_official_dir_with_two_transformers_and_no_config_is_refused(prior, tmp_path):
    save_official(prior, tmp_path, depth=16)
    save_official(prior, tmp_path, depth=20)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError) as e:
        load_prior(tmp_path)
    assert "var_d16.pth" in str(e.value) and "var_d20.pth" in str(e.value)


def test_official_dir_with_several_transformers_picks_the_configured_depth(prior, images, tmp_path):
    other = make_prior(5)
    save_official(other, tmp_path, depth=10)  # sorts before var_d2.pth
    save_official(prior, tmp_path)  # var_d2.pth (the test config has depth 2) + its config.json
    tokens, labels = _tr_inputs(prior, images)
    ref = _full_logits(prior, labels, tokens)
    # with the config.json in the directory
    assert torch.equal(_full_logits(load_prior(tmp_path), labels, tokens), ref)
    # with an explicit config and no config.json
    (tmp_path / "config.json").unlink()
    assert torch.equal(_full_logits(load_prior(tmp_path, config=prior.config), labels, tokens), ref)


def test_official_name_uses_varlib_var_dir(prior, images, monkeypatch, tmp_path):
    save_official(make_prior(5), tmp_path, depth=16)  # sorts first
    save_official(prior, tmp_path, depth=20)  # also overwrites the tokenizer file with prior's
    (tmp_path / "config.json").unlink()
    monkeypatch.setenv("VARLIB_VAR_DIR", str(tmp_path))
    loaded = load_prior("var-d20", config=prior.config)
    tokens, labels = _tr_inputs(prior, images)
    assert torch.equal(_full_logits(loaded, labels, tokens), _full_logits(prior, labels, tokens))
