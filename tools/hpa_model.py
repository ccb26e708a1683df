"""The Kubernetes HorizontalPodAutoscaler's decision (autoscaling/v2), for one Pods metric with an
AverageValue target, written from the Kubernetes documentation ("Horizontal Pod Autoscaling",
algorithm details and configurable scaling behavior) and the controller's documented rules:

- every sync period: desired = ceil(current_replicas * current_average / target), unless the
  ratio current_average / target is within the tolerance (0.1) of 1, which keeps the current
  count; clamped to [minReplicas, maxReplicas];
- stabilisation: the recommendation is the highest one of the last scaleDown window when scaling
  down (so a dip does not remove pods), the lowest one of the last scaleUp window when scaling up;
- scaling policies limit the change per period: for each policy, the replica count at the start
  of its period (now minus the changes made within periodSeconds) plus `value` pods or `value`
  percent (rounded up; down for removals); selectPolicy Max takes the policy that allows the
  largest change, Min the smallest, Disabled none.

Not modelled: pods that are not ready or lack metrics (the controller's extra conservatism for
them), and more than one metric. Used by tools/hpa_trace.py and tested by
tests/e2e/test_hpa_model.py.
"""
from __future__ import annotations

import dataclasses
import math

TOLERANCE = 0.1
SYNC_PERIOD_S = 15.0


@dataclasses.dataclass(frozen=True)
class Policy:
    kind: str  # "Pods" or "Percent"
    value: int
    period_s: float


@dataclasses.dataclass(frozen=True)
class Rules:
    stabilization_window_s: float
    select_policy: str  # "Max", "Min" or "Disabled"
    policies: tuple


@dataclasses.dataclass(frozen=True)
class Spec:
    min_replicas: int
    max_replicas: int
    target_average: float
    scale_up: Rules
    scale_down: Rules


def _quantity(value) -> float:
    """A Kubernetes quantity such as 8, "8", "500m" or "1.5k" as a number."""
    text = str(value)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    if text and text[-1] in suffixes:
        return float(text[:-1]) * suffixes[text[-1]]
    return float(text)


def spec_from_manifest(hpa: dict) -> Spec:
    """The Spec of an autoscaling/v2 HPA manifest with one Pods metric (AverageValue)."""
    spec = hpa["spec"]
    [metric] = spec["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue", metric

    def rules(section: dict, default_window: float) -> Rules:
        return Rules(
            stabilization_window_s=float(section.get("stabilizationWindowSeconds", default_window)),
            select_policy=section.get("selectPolicy", "Max"),
            policies=tuple(Policy(p["type"], int(p["value"]), float(p["periodSeconds"]))
                           for p in section.get("policies", [])))

    behavior = spec.get("behavior", {})
    return Spec(min_replicas=int(spec.get("minReplicas", 1)),
                max_replicas=int(spec["maxReplicas"]),
                target_average=_quantity(metric["pods"]["target"]["averageValue"]),
                scale_up=rules(behavior.get("scaleUp", {}), 0),
                scale_down=rules(behavior.get("scaleDown", {}), 300))


class Autoscaler:
    """Replays the controller: call sync(now_s, per_pod_values) once per sync period."""

    def __init__(self, spec: Spec, replicas: int):
        self.spec = spec
        self.replicas = replicas
        self._recommendations = []  # (time_s, recommended replicas), every sync.
        self._changes = []          # (time_s, replicas added (> 0) or removed (< 0)).

    def _raw_desired(self, values) -> int:
        current_average = sum(values) / len(values) if values else 0.0
        ratio = current_average / self.spec.target_average
        if abs(ratio - 1.0) <= TOLERANCE:
            return self.replicas
        return math.ceil(self.replicas * ratio - 1e-9)

    def _changed_within(self, now_s: float, period_s: float, sign: int) -> int:
        return sum(abs(c) for t, c in self._changes if now_s - t < period_s and c * sign > 0)

    def _limit(self, now_s: float, rules: Rules, up: bool) -> int | None:
        if rules.select_policy == "Disabled":
            return self.replicas
        limits = []
        for policy in rules.policies:
            if up:
                start = self.replicas - self._changed_within(now_s, policy.period_s, +1)
                limits.append(start + policy.value if policy.kind == "Pods"
                              else math.ceil(start * (1 + policy.value / 100)))
            else:
                start = self.replicas + self._changed_within(now_s, policy.period_s, -1)
                # The controller truncates here (int32 of the product), so 10% of 9 pods is 1.
                limits.append(start - policy.value if policy.kind == "Pods"
                              else int(start * (1 - policy.value / 100)))
        if not limits:
            return None
        # Max: the policy allowing the largest change (the highest limit going up, the lowest
        # going down); Min: the smallest.
        return max(limits) if (rules.select_policy == "Max") == up else min(limits)

    def sync(self, now_s: float, values) -> int:
        desired = min(max(self._raw_desired(values), self.spec.min_replicas),
                      self.spec.max_replicas)
        self._recommendations.append((now_s, desired))
        up_window = [r for t, r in self._recommendations
                     if now_s - t <= self.spec.scale_up.stabilization_window_s]
        down_window = [r for t, r in self._recommendations
                       if now_s - t <= self.spec.scale_down.stabilization_window_s]
        # Scale up only as far as every recommendation of the up window allows, down only as
        # far as every one of the down window allows.
        stabilized = self.replicas
        if min(up_window) > self.replicas:
            stabilized = min(up_window)
        elif max(down_window) < self.replicas:
            stabilized = max(down_window)
        new = stabilized
        if new > self.replicas:
            limit = self._limit(now_s, self.spec.scale_up, up=True)
            if limit is not None:
                new = min(new, limit)
        elif new < self.replicas:
            limit = self._limit(now_s, self.spec.scale_down, up=False)
            if limit is not None:
                new = max(new, limit)
        new = min(max(new, self.spec.min_replicas), self.spec.max_replicas)
        if new != self.replicas:
            self._changes.append((now_s, new - self.replicas))
            self.replicas = new
        return self.replicas
