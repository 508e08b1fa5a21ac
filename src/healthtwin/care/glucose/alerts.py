"""Alerts: predicted hypoglycaemia / hyperglycaemia from a twin, sensor gaps and failures.

* Predicted hypoglycaemia: at each CGM reading, P(min CGM over the next ``horizon`` min
  < 70 mg/dL) from the twin's predictive samples; alert when ≥ ``p_threshold`` (and no alert
  of that kind in the previous ``refractory`` min).
* Predicted hyperglycaemia: same with P(max > 250 mg/dL).
* Sensor gap: no reading for more than ``gap_min`` min; sensor failure: a reading outside
  the sensor range or a rate of change above ``max_rate`` mg/dL/min.

Evaluation on simulated data: a hypoglycaemic event is an episode of true glucose < 70 mg/dL
(onset = first minute); an alert is a true positive if an onset follows within
``horizon`` min (or the patient is already below 70 when it fires); recall = detected
episodes / episodes; lead time = onset − alert time (min).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from healthtwin.care.glucose.personalize import GlucoseEnKF

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class AlertEvent:
    """One alert: patient index, time (min), kind, probability (1), detail text."""

    patient: int
    time_min: float
    kind: str  # "hypo-predicted" | "hyper-predicted" | "sensor-gap" | "sensor-failure"
    probability: float
    detail: str


def predictive_alerts(
    twin: GlucoseEnKF,
    cgm: F64,
    insulin: F64,
    cho: F64,
    body_weight_kg: F64,
    basal_u_min: F64,
    *,
    horizon: int = 30,
    p_threshold: float = 0.3,
    refractory: int = 30,
    hypo_mg_dl: float = 70.0,
    hyper_mg_dl: float = 250.0,
) -> list[AlertEvent]:
    """Run the twin through (N, T) minute-grid records and raise predicted alerts."""
    cgm = np.atleast_2d(np.asarray(cgm, dtype=float))
    n, t_len = cgm.shape
    fin = np.isfinite(cgm)
    first = np.where(fin.any(axis=1), cgm[np.arange(n), np.argmax(fin, axis=1)], 140.0)
    twin.start(body_weight_kg, basal_u_min, glucose0=np.nan_to_num(first, nan=140.0))
    ub = np.broadcast_to(np.asarray(basal_u_min, dtype=float), (n,))
    last = {"hypo-predicted": np.full(n, -np.inf), "hyper-predicted": np.full(n, -np.inf)}
    events: list[AlertEvent] = []
    for k in range(t_len):
        if k > 0:
            twin.step(insulin[:, k - 1], cho[:, k - 1])
        if not fin[:, k].any():
            continue
        twin.assimilate(cgm[:, k])
        future_i = np.repeat(ub[:, None], horizon, axis=1)
        known = min(horizon, t_len - k)
        future_i[:, :known] = insulin[:, k : k + known]
        future_c = np.zeros((n, horizon))
        future_c[:, :known] = cho[:, k : k + known]
        s = twin.forecast(horizon, future_i, future_c, include_sensor_noise=False)
        p_hypo = (s.min(axis=2) < hypo_mg_dl).mean(axis=1)
        p_hyper = (s.max(axis=2) > hyper_mg_dl).mean(axis=1)
        for kind, prob in (("hypo-predicted", p_hypo), ("hyper-predicted", p_hyper)):
            fire = fin[:, k] & (prob >= p_threshold) & (k - last[kind] > refractory)
            for i in np.flatnonzero(fire):
                events.append(
                    AlertEvent(int(i), float(k), kind, float(prob[i]),
                               f"P({'<' if kind.startswith('hypo') else '>'} "
                               f"{hypo_mg_dl if kind.startswith('hypo') else hyper_mg_dl:g} mg/dL"
                               f" within {horizon} min) = {prob[i]:.2f} (simulated forecast)")
                )  # fmt: skip
            last[kind] = np.where(fire, k, last[kind])
    return events


def sensor_alerts(
    t_min: F64,
    cgm: F64,
    *,
    gap_min: float = 15.0,
    low: float = 39.0,
    high: float = 400.0,
    max_rate: float = 10.0,
) -> list[AlertEvent]:
    """Sensor gap / failure events for one patient's readings (times in min, values mg/dL)."""
    t = np.asarray(t_min, dtype=float)
    y = np.asarray(cgm, dtype=float)
    if t.shape != y.shape:
        raise ValueError(f"t_min {t.shape} and cgm {y.shape} must have the same shape")
    if np.any(np.diff(t) <= 0):
        raise ValueError("t_min: reading times must be strictly increasing")
    ok = np.isfinite(y)
    tv, yv = t[ok], y[ok]
    events = []
    for j in np.flatnonzero(np.diff(tv) > gap_min):
        events.append(
            AlertEvent(0, float(tv[j] + gap_min), "sensor-gap", 1.0,
                       f"no CGM reading for {tv[j + 1] - tv[j]:g} min after t = {tv[j]:g} min")
        )  # fmt: skip
    bad = (yv <= low) | (yv >= high)
    rate = np.abs(np.diff(yv)) / np.diff(tv) if tv.size > 1 else np.zeros(0)
    bad[1:] |= rate > max_rate
    for j in np.flatnonzero(bad):
        events.append(
            AlertEvent(0, float(tv[j]), "sensor-failure", 1.0,
                       f"implausible CGM {yv[j]:g} mg/dL (range [{low:g}, {high:g}] mg/dL, "
                       f"max rate {max_rate:g} mg/dL/min)")
        )  # fmt: skip
    return sorted(events, key=lambda e: e.time_min)


def episodes(g: F64, threshold: float = 70.0, below: bool = True) -> list[tuple[int, int]]:
    """(patient, onset minute) of each episode of ``g`` (N, T) crossing below the threshold."""
    gg = np.atleast_2d(np.asarray(g, dtype=float))
    flag = gg < threshold if below else gg > threshold
    prev = np.concatenate([np.zeros((gg.shape[0], 1), dtype=bool), flag[:, :-1]], axis=1)
    onset = flag & ~prev
    return [(int(i), int(k)) for i, k in zip(*np.nonzero(onset), strict=True)]


@dataclass
class AlertScores:
    """Precision (1), recall (1) and median lead time (min) of one alert kind."""

    precision: float
    recall: float
    median_lead_min: float
    n_alerts: int
    n_events: int


def score_alerts(
    events: list[AlertEvent], truth: F64, kind: str = "hypo-predicted", horizon: int = 30,
    threshold: float = 70.0,
) -> AlertScores:  # fmt: skip
    """Precision/recall of ``kind`` alerts against episodes of true glucose ``truth`` (N, T)."""
    below = kind.startswith("hypo")
    truth = np.atleast_2d(np.asarray(truth, dtype=float))
    eps = episodes(truth, threshold, below)
    alerts = [e for e in events if e.kind == kind]
    tp = 0
    detected: set[tuple[int, int]] = set()
    leads = []
    for a in alerts:
        i, t0 = a.patient, int(a.time_min)
        in_event = truth[i, t0] < threshold if below else truth[i, t0] > threshold
        hits = [(p, o) for p, o in eps if p == i and t0 <= o <= t0 + horizon]
        if hits or in_event:
            tp += 1
        for h in hits:
            if h not in detected:
                detected.add(h)
                leads.append(h[1] - t0)
    precision = tp / len(alerts) if alerts else float("nan")
    recall = len(detected) / len(eps) if eps else float("nan")
    lead = float(np.median(leads)) if leads else float("nan")
    return AlertScores(precision, recall, lead, len(alerts), len(eps))
