"""Modularity and explicitness (Ridgeway & Mozer 2018), as disentanglement_lib's
`modularity_explicitness.py`.

Modularity: per code h, with m_hk = I(z_h; y_k) on 20 bins and theta_h = max_k m_hk^2,
delta_h = (sum_k m_hk^2 - theta_h) / (theta_h (P - 1)); the score is mean_h (1 - delta_h),
a code carrying no information scoring 0. Explicitness: per factor, one-vs-rest
logistic regressions (scikit-learn's OneVsRestClassifier over LogisticRegression with
its defaults: disentanglement_lib's `LogisticRegression()` ran one-vs-rest, the
scikit-learn default of its time; 100 lbfgs iterations, convergence warnings silenced)
on all standardised codes, its ROC AUC
averaged over the factor's classes; the mean over factors. Classes that the test
points lack in either label are left out of that factor's average (disentanglement_lib
would fail on them; they occur with 20 bins of a Gaussian factor).
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.multiclass import OneVsRestClassifier

from trainables.metrics import discrete


def modularity(m: np.ndarray) -> float:
    """Ridgeway & Mozer's modularity from the MI matrix m [H, P]."""
    sq = np.square(m)
    theta = sq.max(axis=1)                                              # [H]
    delta = (sq.sum(axis=1) - theta) / np.where(theta > 0, theta * max(m.shape[1] - 1, 1), 1.0)
    return float(np.mean(np.where(theta > 0, 1.0 - delta, 0.0)))


def auc(clf, x: np.ndarray, labels: np.ndarray) -> float:
    """Mean one-vs-rest ROC AUC over the classes present with both outcomes in `labels`."""
    p = clf.predict_proba(x)                                            # [N, C]
    aucs = [roc_auc_score(labels == c, p[:, i]) for i, c in enumerate(clf.classes_)
            if 0 < (labels == c).sum() < len(labels)]
    return float(np.mean(aucs)) if aucs else 0.5


def explicitness(mu_tr, c_tr, mu_te, c_te) -> tuple[float, float]:
    """(train, test) explicitness from standardised codes and factor classes."""
    mean, sd = mu_tr.mean(0), mu_tr.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    x_tr, x_te = (mu_tr - mean) / sd, (mu_te - mean) / sd
    tr, te = [], []
    for k in range(c_tr.shape[1]):
        if len(np.unique(c_tr[:, k])) < 2:
            continue                                                    # a constant factor
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = OneVsRestClassifier(LogisticRegression()).fit(x_tr, c_tr[:, k])
        tr.append(auc(clf, x_tr, c_tr[:, k]))
        te.append(auc(clf, x_te, c_te[:, k]))
    return (float(np.mean(tr)), float(np.mean(te))) if tr else (0.5, 0.5)


def compute_modularity_explicitness(mu: np.ndarray, y: np.ndarray,
                                    random_state: np.random.Generator,
                                    bins: int = discrete.BINS,
                                    train_fraction: float = 0.8, explicit: bool = True) -> dict:
    """{"modularity", "explicitness" (held-out), "explicitness_train"} from mu [N, H], y [N, P].

    Modularity uses the training points (disentanglement_lib: num_train 10,000, num_test
    5,000 fresh points; here a random split of the stored ones)."""
    mu, y = discrete.check_inputs(mu, y)
    classes = discrete.factor_classes(y, bins)
    tr, te = discrete.split(len(mu), random_state, train_fraction)
    m = discrete.mutual_info(discrete.histogram_discretize(mu[tr], bins), classes[tr])
    if not explicit:                          # the search objective: modularity alone
        return {"modularity": modularity(m)}
    e_tr, e_te = explicitness(mu[tr], classes[tr], mu[te], classes[te])
    return {"modularity": modularity(m), "explicitness": e_te, "explicitness_train": e_tr}


def compute_explicitness(mu: np.ndarray, y: np.ndarray, random_state: np.random.Generator,
                         bins: int = discrete.BINS, train_fraction: float = 0.8) -> dict:
    """{"explicitness", "explicitness_train"} alone: a 20-class logistic regression per factor
    on all codes, the costly half (about a minute per trial at 1,000 x 128 here)."""
    mu, y = discrete.check_inputs(mu, y)
    classes = discrete.factor_classes(y, bins)
    tr, te = discrete.split(len(mu), random_state, train_fraction)
    e_tr, e_te = explicitness(mu[tr], classes[tr], mu[te], classes[te])
    return {"explicitness": e_te, "explicitness_train": e_tr}
