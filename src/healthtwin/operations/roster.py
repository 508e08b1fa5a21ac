"""Shift roster with OR-Tools CP-SAT.

Given required staff per hour of a week ``req[d, h]`` (e.g. from the Erlang screen), choose
how many staff start each allowed shift (start hour, length h) on each day, so that every
hour is covered, at minimum total paid hours; then assign named staff to shifts with at most
one shift a day, at most ``max_shifts`` a week and at least ``min_rest_h`` hours of rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model


class RosterError(ValueError):
    """No roster satisfies the constraints (names which)."""


@dataclass
class Roster:
    """``counts[(day, start, length)]`` staff; ``assignment[person] = [(day, start, length)]``."""

    counts: dict[tuple[int, int, int], int]
    coverage: np.ndarray  # (7, 24) staff on duty
    required: np.ndarray  # (7, 24)
    paid_hours: float  # h
    assignment: dict[int, list[tuple[int, int, int]]]
    status: str


def build_roster(
    required: np.ndarray,
    shifts: Sequence[tuple[int, int]] = ((7, 8), (15, 8), (23, 8), (8, 12), (20, 12)),
    n_staff: int | None = None,
    max_shifts: int = 5,
    min_rest_h: int = 11,
    time_limit_s: float = 10.0,
) -> Roster:
    """Cover ``required`` (shape (7, 24) or (24,), staff/h) with shifts ``(start_hour, hours)``."""
    req = np.asarray(required, dtype=int)
    if req.shape == (24,):
        req = np.tile(req, (7, 1))
    if req.shape != (7, 24) or req.min() < 0:
        raise RosterError(f"required: shape {req.shape}, need (7, 24) or (24,) of counts >= 0")
    m = cp_model.CpModel()
    big = int(req.max()) + 1
    x = {(d, s, L): m.new_int_var(0, big, f"x{d}_{s}_{L}") for d in range(7) for s, L in shifts}
    cover: list[list[list[cp_model.IntVar]]] = [[[] for _ in range(24)] for _ in range(7)]
    for (d, s, L), v in x.items():
        for k in range(L):
            hh = s + k
            cover[(d + hh // 24) % 7][hh % 24].append(v)
    for d in range(7):
        for h in range(24):
            m.add(sum(cover[d][h]) >= int(req[d, h]))
    m.minimize(sum(L * v for (d, s, L), v in x.items()))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    st = solver.solve(m)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RosterError(f"roster: coverage model is {solver.status_name(st)}")
    counts = {k: int(solver.value(v)) for k, v in x.items() if solver.value(v) > 0}
    cov = np.zeros((7, 24), int)
    for (d, s, L), c in counts.items():
        for k in range(L):
            hh = s + k
            cov[(d + hh // 24) % 7, hh % 24] += c
    paid = float(sum(L * c for (d, s, L), c in counts.items()))
    assignment = _assign(counts, n_staff, max_shifts, min_rest_h, time_limit_s)
    return Roster(counts, cov, req, paid, assignment, solver.status_name(st))


def _assign(
    counts: dict[tuple[int, int, int], int],
    n_staff: int | None,
    max_shifts: int,
    min_rest_h: int,
    time_limit_s: float,
) -> dict[int, list[tuple[int, int, int]]]:
    slots = [k for k, c in counts.items() for _ in range(c)]
    if not slots:
        return {}
    need = -(-len(slots) // max_shifts)
    n = max(n_staff or 0, need)
    m = cp_model.CpModel()
    y = {(p, i): m.new_bool_var(f"y{p}_{i}") for p in range(n) for i in range(len(slots))}
    for i in range(len(slots)):
        m.add_exactly_one(y[p, i] for p in range(n))
    for p in range(n):
        m.add(sum(y[p, i] for i in range(len(slots))) <= max_shifts)
        for i, (d1, s1, l1) in enumerate(slots):
            a1, e1 = d1 * 24 + s1, d1 * 24 + s1 + l1
            for j in range(i + 1, len(slots)):
                d2, s2, l2 = slots[j]
                a2, e2 = d2 * 24 + s2, d2 * 24 + s2 + l2
                # rest between shifts (week wraps around)
                gap = min((a2 - e1) % 168, (a1 - e2) % 168)
                overlap = a1 < e2 and a2 < e1
                if overlap or gap < min_rest_h or d1 == d2:
                    m.add_bool_or([y[p, i].Not(), y[p, j].Not()])
    # symmetry breaking: staff p works at least as many shifts as p+1
    for p in range(n - 1):
        m.add(
            sum(y[p, i] for i in range(len(slots))) >= sum(y[p + 1, i] for i in range(len(slots)))
        )
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    st = solver.solve(m)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RosterError(
            f"roster: cannot assign {len(slots)} shifts to {n} staff with <= {max_shifts} "
            f"shifts/week and >= {min_rest_h} h rest ({solver.status_name(st)}); add staff"
        )
    out: dict[int, list[tuple[int, int, int]]] = {}
    for (p, i), v in y.items():
        if solver.value(v):
            out.setdefault(p, []).append(slots[i])
    return {p: sorted(v) for p, v in sorted(out.items())}
