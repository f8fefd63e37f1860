"""DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018),
as disentanglement_lib's `dci.py`.

One predictor per factor; R [H, P] holds the importance of each code for each
factor. Disentanglement: 1 - H_P(R_h.) per code, weighted by the code's share of all
importance; completeness: 1 - H_H(R_.k) per factor, weighted likewise;
informativeness: how well the predictors do on held-out points.

`importance` picks the predictor (Eastwood & Williams leave it open; they use lasso
and random forests); each is its own metric with its own columns (`METRICS`):
- `"gbt"` (`dci_gbt`, opt-in): disentanglement_lib's GradientBoostingClassifier
  (scikit-learn defaults) on every code, predicting the factor's class (discrete
  factors by value, continuous ones in 20 bins: `discrete.factor_classes`);
  informativeness is its held-out accuracy. Comparable with published numbers, but
  20 classes x 100 stages make 2,000 trees per factor: minutes per trial on 128 codes.
- `"lasso"` (`dci_lasso`, the report's default): Eastwood & Williams' linear choice, a
  Lasso (alpha 0.02) of the standardised factor on the standardised codes, R = |W|;
  informativeness is the held-out R^2 (clipped at 0). Milliseconds; treats a factor's
  values as numbers, so for categorical factors (dSprites' shape) prefer "gbt". Not
  disentanglement_lib's numbers. A factor whose held-out prediction is no better than
  chance (its correlation with the factor below the one-sided 1% critical value of zero
  correlation, 2.33 / sqrt(test points)) has no importances: the Lasso's small weights
  on noise would make D and C anything from 0 to 1 (issue 21: 0.91 on pure noise).
  Where no factor is predicted above chance, D and C are None (nothing to attribute).
"""
from __future__ import annotations

import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import Lasso

from trainables.metrics import discrete

IMPORTANCES = ("gbt", "lasso")
LASSO_ALPHA = 0.02
CHANCE_Z = 2.33             # one-sided 1% normal quantile: a correlation above chance


def gbt_importance(x_tr, c_tr, x_te, c_te, seed: int):
    """(R [D, P], train accuracy, test accuracy): one gradient-boosted classifier per factor."""
    R = np.zeros((x_tr.shape[1], c_tr.shape[1]))
    acc_tr, acc_te = [], []
    for k in range(c_tr.shape[1]):
        if len(np.unique(c_tr[:, k])) < 2:                              # a constant factor
            acc_tr.append(1.0)
            acc_te.append(1.0)
            continue
        model = GradientBoostingClassifier(random_state=seed).fit(x_tr, c_tr[:, k])
        R[:, k] = np.abs(model.feature_importances_)
        acc_tr.append(np.mean(model.predict(x_tr) == c_tr[:, k]))
        acc_te.append(np.mean(model.predict(x_te) == c_te[:, k]))
    return R, float(np.mean(acc_tr)), float(np.mean(acc_te))


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return (train - mean) / sd, (test - mean) / sd


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Held-out R^2 of one standardised factor, clipped at 0 (worse than its mean)."""
    ss = np.sum((y - y.mean()) ** 2)
    return max(0.0, 1.0 - float(np.sum((y - pred) ** 2) / ss)) if ss > 0 else 1.0


def above_chance(y: np.ndarray, pred: np.ndarray) -> bool:
    """Held-out prediction correlated with the factor beyond chance (one-sided 1%)."""
    if pred.std() == 0 or y.std() == 0:
        return False
    return float(np.corrcoef(y, pred)[0, 1]) > CHANCE_Z / np.sqrt(len(y))


def lasso_importance(x_tr, y_tr, x_te, y_te):
    """(R = |W| [D, P], train R^2, test R^2): one Lasso per standardised factor; the
    column of a factor predicted no better than chance is 0."""
    x_tr, x_te = standardise(x_tr, x_te)
    y_tr, y_te = standardise(y_tr, y_te)
    R = np.zeros((x_tr.shape[1], y_tr.shape[1]))
    fit_tr, fit_te = [], []
    for k in range(y_tr.shape[1]):
        model = Lasso(alpha=LASSO_ALPHA).fit(x_tr, y_tr[:, k])
        pred = model.predict(x_te)
        R[:, k] = np.abs(model.coef_) if above_chance(y_te[:, k], pred) else 0.0
        fit_tr.append(r2(y_tr[:, k], model.predict(x_tr)))
        fit_te.append(r2(y_te[:, k], pred))
    return R, float(np.mean(fit_tr)), float(np.mean(fit_te))


def disentanglement(R: np.ndarray) -> float:
    """sum_h rho_h (1 - H_P(R_h.)) with rho_h = sum_k R_hk / sum R (Eastwood & Williams Eq. 2);
    an all-zero R (disentanglement_lib's) weighs every code alike."""
    per_code = 1.0 - scipy.stats.entropy(R.T + 1e-11, base=R.shape[1])   # [H]
    w = R if R.sum() > 0 else np.ones_like(R)
    return float(np.sum(per_code * w.sum(1) / w.sum()))


def completeness(R: np.ndarray) -> float:
    """sum_k rho_k (1 - H_H(R_.k)) (Eastwood & Williams Eq. 3)."""
    per_factor = 1.0 - scipy.stats.entropy(R + 1e-11, base=R.shape[0])   # [P]
    w = R if R.sum() > 0 else np.ones_like(R)
    return float(np.sum(per_factor * w.sum(0) / w.sum()))


def compute_dci(mu: np.ndarray, y: np.ndarray, random_state: np.random.Generator,
                importance: str = "gbt", bins: int = discrete.BINS,
                train_fraction: float = 0.8) -> dict:
    """{"dci_disentanglement", "dci_completeness" (None where the Lasso predicts no factor
    above chance), "dci_informativeness" (held-out accuracy or R^2),
    "dci_informativeness_train"} from codes mu [N, H] and factors y [N, P]."""
    if importance not in IMPORTANCES:
        raise ValueError(f"importance: got {importance!r}; allowed: {', '.join(IMPORTANCES)}")
    mu, y = discrete.check_inputs(mu, y)
    tr, te = discrete.split(len(mu), random_state, train_fraction)
    seed = int(random_state.integers(2 ** 31))
    if importance == "gbt":
        classes = discrete.factor_classes(y, bins)
        R, acc_tr, acc_te = gbt_importance(mu[tr], classes[tr], mu[te], classes[te], seed)
        d, c = disentanglement(R), completeness(R)
    else:
        R, acc_tr, acc_te = lasso_importance(mu[tr], y[tr], mu[te], y[te])
        informative = R.sum(0) > 0                                      # [P]
        d = disentanglement(R) if informative.any() else None
        c = completeness(R[:, informative]) if informative.any() else None
    return {"dci_disentanglement": d, "dci_completeness": c,
            "dci_informativeness": acc_te, "dci_informativeness_train": acc_tr}
