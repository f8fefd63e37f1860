"""Where the Monte-Carlo estimates of `trainables.indicators.estimates` stop meaning what
their names say; torch-free, so the analysis applies the same rule to stored rows.

The I(x;z) estimate is a lower bound capped at log N (N points in the aggregate
posterior); KL(q(z)||p(z)) and the total correlation absorb what it misses. They are
reported only where the bound is more than SATURATION_MARGIN below its cap.
"""
from __future__ import annotations

import math

ESTIMATE_POINTS = 1000            # the aggregate posterior's points for the MC estimates
SATURATION_MARGIN = 3.0           # nats below log N under which KL and TC are estimated


def saturated(mi_est: float, points: int, margin: float = SATURATION_MARGIN) -> bool:
    """Whether the MI lower bound is within `margin` nats of its cap log(points)."""
    return mi_est > math.log(points) - margin
