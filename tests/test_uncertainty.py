"""The uncertainty check: correlation of the samples' per-pixel std with the error of their mean."""
import numpy as np
import pytest

from varlib.uncertainty import DECILES, std_error_correlation


def test_informative_map_correlates_and_its_deciles_rise():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 1, (3, 32, 32))
    std = rng.uniform(0.01, 0.2, target.shape)
    mean = target + std * rng.standard_normal(target.shape)  # errors drawn with that std
    c = std_error_correlation(mean, std, target)
    assert 0.4 < c["pearson"] < 1 and 0.4 < c["spearman"] < 1
    d = c["error_by_decile"]
    assert len(d) == DECILES and d[-1] > 3 * d[0]
    # the expected |error| in a decile is sqrt(2/pi) times its mean std
    assert d[-1] == pytest.approx(np.sqrt(2 / np.pi) * np.sort(std.ravel())[-std.size // 10:].mean(), rel=0.15)


def test_uninformative_map_does_not_correlate():
    rng = np.random.default_rng(1)
    target = rng.uniform(0, 1, (3, 32, 32))
    mean = target + 0.05 * rng.standard_normal(target.shape)
    std = rng.uniform(0.01, 0.2, target.shape)  # unrelated to the error
    c = std_error_correlation(mean, std, target)
    assert abs(c["pearson"]) < 0.1 and abs(c["spearman"]) < 0.1


def test_constant_map_and_bad_shapes():
    t = np.zeros((3, 8, 8))
    c = std_error_correlation(t + 0.1, np.full(t.shape, 0.2), t)
    assert np.isnan(c["pearson"]) and np.isnan(c["spearman"])
    with pytest.raises(ValueError, match="same number of values"):
        std_error_correlation(t, np.zeros((3, 4, 4)), t)
