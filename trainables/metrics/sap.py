"""SAP, the separated attribute predictability (Kumar et al. 2018), as disentanglement_lib's
`sap_score.py`.

Score matrix S [H, P]: for a continuous factor, the R^2 of a linear fit of y_k on
the single code z_h, cov(z_h, y_k)^2 / (var z_h var y_k) (0 for a code of variance
below 1e-12); for a discrete factor, the held-out accuracy of a linear SVM
(C = 0.01, balanced classes) on z_h alone. SAP = mean over factors of the gap
between the two largest entries of the factor's column. As disentanglement_lib
(`continuous_factors`, one flag per data set), the choice is made for the whole
data set: discrete where every factor has at most `discrete.DISCRETE_LIMIT`
distinct values (dSprites), else continuous (intrinsic's Gaussian factors; a
data set mixing both is scored as continuous, its discrete factors as numbers).
"""
from __future__ import annotations

import numpy as np
from sklearn.svm import LinearSVC

from trainables.metrics import discrete


def r2_column(mu: np.ndarray, yk: np.ndarray) -> np.ndarray:
    """R^2 of y_k on each single code [H] (ddof 1, as np.cov)."""
    zc, yc = mu - mu.mean(0), yk - yk.mean()
    n1 = max(len(yk) - 1, 1)
    cov = zc.T @ yc / n1                                                # [H]
    var_z, var_y = (zc ** 2).sum(0) / n1, (yc ** 2).sum() / n1
    ok = (var_z > 1e-12) & (var_y > 0)
    return np.where(ok, cov ** 2 / np.where(ok, var_z * var_y, 1.0), 0.0)


def svm_column(mu_tr, yk_tr, mu_te, yk_te) -> np.ndarray:
    """Held-out accuracy of a linear SVM on each single code [H]."""
    out = np.zeros(mu_tr.shape[1])
    if len(np.unique(yk_tr)) < 2:
        return out
    for h in range(mu_tr.shape[1]):
        clf = LinearSVC(C=0.01, class_weight="balanced").fit(mu_tr[:, [h]], yk_tr)
        out[h] = np.mean(clf.predict(mu_te[:, [h]]) == yk_te)
    return out


def top_two_gap(s: np.ndarray) -> float:
    srt = np.sort(s, axis=0)                                            # [H, P] ascending
    second = srt[-2] if len(srt) > 1 else np.zeros(s.shape[1])
    return float(np.mean(srt[-1] - second))


def compute_sap(mu: np.ndarray, y: np.ndarray, random_state: np.random.Generator,
                bins: int = discrete.BINS, train_fraction: float = 0.8) -> dict:
    """{"sap": float} from codes mu [N, H] and factors y [N, P]."""
    mu, y = discrete.check_inputs(mu, y)
    classes = discrete.factor_classes(y) if discrete.is_discrete(y).all() else None
    tr, te = discrete.split(len(mu), random_state, train_fraction)
    cols = []
    for k in range(y.shape[1]):
        if classes is not None:                                         # per data set
            cols.append(svm_column(mu[tr], classes[tr, k], mu[te], classes[te, k]))
        else:
            cols.append(r2_column(mu, y[:, k]))
    return {"sap": top_two_gap(np.stack(cols, axis=1))}
