import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from adedge.metrics import auroc, average_ranks, quantile_threshold, rates_at

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(size=500) + labels * 0.7, 1)  # rounding makes ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_average_ranks_match_scipy_with_ties_and_infinities(seed):
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(size=400), 1)  # many ties
    values[rng.choice(400, 6, replace=False)] = [np.inf, np.inf, np.inf, -np.inf, -np.inf, 0.0]
    np.testing.assert_array_equal(average_ranks(values), rankdata(values, method="average"))
    grid = values.reshape(20, 20)  # any shape ranks as its flattened values
    np.testing.assert_array_equal(average_ranks(grid), rankdata(values, method="average"))


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError):
        auroc(np.zeros(4), np.arange(4.0))


def test_rates_at_threshold():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.9, 0.8, 0.3])
    rates = rates_at(labels, scores, 0.5)
    assert rates["tpr"] == 0.5
    assert rates["tnr"] == pytest.approx(2 / 3)
    assert quantile_threshold(np.arange(101.0), 0.99) == pytest.approx(99.0)
