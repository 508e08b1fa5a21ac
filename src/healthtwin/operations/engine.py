"""Discrete-event engine for facility twins.

Why not SimPy: a SimPy model pays for a generator/process object, an event object and a
callback list per patient step; ``benchmarks/facility.py`` shows that overhead dominates for
queueing networks, so the engine here is a lean event-list simulator (one binary heap of
``(time, seq, kind, a, b)`` tuples, per-station priority queues, batched random draws). It
implements everything the facility spec declares: multi-server stations with shift
schedules, priorities with optional pre-emptive-resume, reneging (left without being seen),
blocking/boarding (``hold_until_next``), discharge windows, non-homogeneous Poisson arrivals
(thinning), surges and capacity disruptions, a warm-up, live start from a census and an
event log.

Common random numbers: every random source (arrival clock, class choice, each step's service
time, each routing decision, each class's patience) has its own generator seeded from
``(seed, replication, crc32(source name))``, so a scenario that changes one station does not
shift any other stream. Runs are exactly reproducible from ``seed``. All times in min.
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healthtwin.operations.spec import EXIT, Dist, FacilitySpec, SpecError

INF_SERVERS = 10**9
_BATCH = 512

# event kinds
_ARR, _DEP, _REN, _CAP, _SMP = 0, 1, 2, 3, 4
# event-log codes
LOG_CODES = ("arrive", "queue", "start", "end", "renege", "exit", "preempt", "board", "blocked")


class Stream:
    """Batched draws from one distribution with its own generator (min)."""

    __slots__ = ("_buf", "_dist", "_i", "_rng")

    def __init__(self, dist: Dist, rng: np.random.Generator) -> None:
        self._dist = dist
        self._rng = rng
        self._buf: list[float] = []
        self._i = 0

    def draw(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._dist.sample(self._rng, _BATCH).tolist()
            self._i = 0
        v = self._buf[self._i]
        self._i += 1
        return v


class Uniforms:
    """Batched U(0,1) / Exp(1) draws from one generator."""

    __slots__ = ("_e", "_ei", "_rng", "_u", "_ui")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._u: list[float] = []
        self._ui = 0
        self._e: list[float] = []
        self._ei = 0

    def u(self) -> float:
        if self._ui >= len(self._u):
            self._u = self._rng.random(_BATCH).tolist()
            self._ui = 0
        v = self._u[self._ui]
        self._ui += 1
        return v

    def e(self) -> float:
        if self._ei >= len(self._e):
            self._e = self._rng.standard_exponential(_BATCH).tolist()
            self._ei = 0
        v = self._e[self._ei]
        self._ei += 1
        return v


def stream_rng(seed: int, rep: int, name: str) -> np.random.Generator:
    """Generator for one named random source of one replication (common random numbers)."""
    return np.random.default_rng([int(seed), int(rep), zlib.crc32(name.encode())])


@dataclass
class InitialPatient:
    """A patient already present at run start (live start). Times in min relative to start."""

    cls: str
    step: str
    arrived: float = 0.0  # <= 0: when the patient arrived (min, relative to start)
    since: float = 0.0  # <= 0: when the current wait/service began
    in_service: bool = False


@dataclass
class RunOptions:
    """Per-run overrides: live-start patients, capacity overrides ``{station: (servers, until_min)}``."""

    initial: Sequence[InitialPatient] = ()
    capacity: dict[str, tuple[int, float]] = field(default_factory=dict)
    log: bool = False
    horizons: Sequence[float] = ()


@dataclass
class RepResult:
    """One replication. ``kpis`` are scalars (names carry UCUM units); arrays per station."""

    kpis: dict[str, float]
    stations: list[str]
    occupancy: np.ndarray  # (n_samples, n_stations) busy servers (at sample times)
    queue: np.ndarray  # (n_samples, n_stations) patients waiting
    sample_times: np.ndarray  # min
    class_time_in_system: dict[str, np.ndarray]
    waits: np.ndarray  # total queueing time per completed patient, min
    log: list[tuple[float, int, str, str, str]]
    horizon_stats: dict[float, dict[str, float]]


class _Compiled:
    """Spec compiled to index-based tables."""

    def __init__(self, spec: FacilitySpec) -> None:
        self.spec = spec
        self.st_names = list(spec.stations)
        self.st_index = {n: i for i, n in enumerate(self.st_names)}
        self.cls_names = list(spec.classes)
        self.cls_prio = [spec.classes[c].priority for c in self.cls_names]
        cum = np.cumsum([spec.classes[c].share for c in self.cls_names])
        self.cls_cum = (cum / cum[-1]).tolist()
        # per class: list of steps (station idx, dist, next targets, next cum probs)
        self.steps: list[list[tuple[int, Dist, list[int], list[float], list[int]]]] = []
        self.step_index: list[dict[str, int]] = []
        for c in self.cls_names:
            path = spec.classes[c].pathway
            idx = {s.name: i for i, s in enumerate(path)}
            rows = []
            for i, s in enumerate(path):
                if s.next is None:
                    tg, cp = [i + 1 if i + 1 < len(path) else -1], [1.0]
                else:
                    tg = [(-1 if k == EXIT else idx[k]) for k in s.next]
                    cp = np.cumsum(list(s.next.values())).tolist()
                    cp[-1] = 1.0
                aux = [self.st_index[x] for x in s.also]
                rows.append((self.st_index[s.station], s.service, tg, cp, aux))
            self.steps.append(rows)
            self.step_index.append(idx)


def _capacity_events(
    spec: FacilitySpec, names: list[str], horizon: float
) -> tuple[list[int], list[tuple[float, int, int]]]:
    """Initial servers per station and scheduled ``(time, station, servers)`` changes."""
    init: list[int] = []
    ev: list[tuple[float, int, int]] = []
    t0 = spec.start_hour * 60.0
    for si, n in enumerate(names):
        st = spec.stations[n]
        if st.infinite:
            init.append(INF_SERVERS)
            continue
        if not st.schedule:
            init.append(st.servers)
            continue
        blocks = st.schedule
        hour = spec.start_hour
        cur = blocks[-1].servers
        for b in blocks:
            if b.start_hour <= hour:
                cur = b.servers
        init.append(cur)
        day = 0
        while True:
            done = False
            for b in blocks:
                t = day * 1440.0 + b.start_hour * 60.0 - t0
                if t <= 0:
                    continue
                if t > horizon:
                    done = True
                    break
                ev.append((t, si, b.servers))
            if done or day > horizon / 1440.0 + 2:
                break
            day += 1
    return init, ev


def run_replication(
    spec: FacilitySpec, seed: int, rep: int = 0, options: RunOptions | None = None
) -> RepResult:
    """Simulate one replication of ``spec`` (all times in min; results are simulated)."""
    opt = options or RunOptions()
    cp = _Compiled(spec)
    horizon = float(spec.horizon)
    warm = float(spec.warmup)
    if not warm < horizon:  # model_copy(update=...) skips the spec's own validator
        raise SpecError(f"warmup ({warm:g} min) must be < horizon ({horizon:g} min)")
    n_st = len(cp.st_names)
    n_cls = len(cp.cls_names)
    pol = spec.policies
    target = pol.target_min

    # ---- random streams (one per source) ----
    arr_rng = Uniforms(stream_rng(seed, rep, "arrivals"))
    cls_rng = Uniforms(stream_rng(seed, rep, "class"))
    svc: list[list[Stream]] = []
    route: list[list[Uniforms]] = []
    for ci, c in enumerate(cp.cls_names):
        svc.append(
            [
                Stream(row[1], stream_rng(seed, rep, f"service/{c}/{s.name}"))
                for row, s in zip(cp.steps[ci], spec.classes[c].pathway, strict=True)
            ]
        )
        route.append(
            [
                Uniforms(stream_rng(seed, rep, f"route/{c}/{s.name}"))
                for s in spec.classes[c].pathway
            ]
        )
    patience: list[Stream | None] = []
    for c in cp.cls_names:
        pd_ = spec.classes[c].patience
        patience.append(
            None if pd_ is None else Stream(pd_, stream_rng(seed, rep, f"patience/{c}"))
        )

    # ---- arrivals (thinning) ----
    prof = spec.arrivals.profile
    period = spec.arrivals.period_min
    wk = spec.arrivals.weekday_factors or [1.0] * 7
    surges = [(d.start, d.end, d.factor) for d in spec.disruptions if d.kind == "surge"]
    offset = spec.start_hour * 60.0 + spec.start_weekday * 1440.0
    lam_max = max(prof) * max(wk) * max([1.0] + [f for _, _, f in surges]) / 60.0  # /min
    n_prof = len(prof)
    # constant rate: every candidate is accepted, so the thinning uniform is not drawn
    const_rate = len(set(prof)) == 1 and len(set(wk)) == 1 and not surges

    def rate(t: float) -> float:
        a = t + offset
        r = prof[int(a // period) % n_prof] * wk[int(a // 1440.0) % 7]
        for s0, s1, f in surges:
            if s0 <= t < s1:
                r *= f
        return r / 60.0

    # ---- state ----
    cap, cap_ev = _capacity_events(spec, cp.st_names, horizon)
    for sname, (servers, until) in opt.capacity.items():
        # census override: ``servers`` until ``until``, then what the schedule says by then
        si = cp.st_index[sname]
        restore = cap[si]
        for t_e, s_e, n_e in sorted(cap_ev):
            if s_e == si and t_e < until:
                restore = n_e
        cap[si] = servers
        cap_ev = [e for e in cap_ev if not (e[1] == si and e[0] < until)]
        if until < horizon:
            cap_ev.append((max(until, 0.0), si, restore))
    for d in spec.disruptions:
        if d.kind == "capacity" and d.station is not None:
            # encoded as -1e6 + delta (a relative change), see the _CAP branch
            cap_ev.append((d.start, cp.st_index[d.station], -(10**6) + d.delta))
            cap_ev.append((d.end, cp.st_index[d.station], -(10**6) - d.delta))
    busy = [0] * n_st
    qlen = [0] * n_st
    queues: list[list[tuple[int, int, int, int]]] = [[] for _ in range(n_st)]
    preempt = [spec.stations[n].preemptive for n in cp.st_names]
    hold = [spec.stations[n].hold_until_next for n in cp.st_names]
    maxq = [spec.stations[n].max_queue for n in cp.st_names]
    # joint holding ("also"): stations whose steps need other stations, and who depends on whom
    has_aux = [False] * n_st
    dependents: list[list[int]] = [[] for _ in range(n_st)]
    for rows_ in cp.steps:
        for row in rows_:
            for x in row[4]:
                has_aux[row[0]] = True
                if row[0] not in dependents[x]:
                    dependents[x].append(row[0])
    is_ward = [spec.stations[n].kind == "ward" for n in cp.st_names]
    dwin = pol.discharge_hours
    in_svc: list[dict[int, tuple[int, float, float]]] = [{} for _ in range(n_st)]
    busy_area = [0.0] * n_st
    cap_area = [0.0] * n_st
    last = [warm] * n_st

    p_cls: list[int] = []
    p_step: list[int] = []
    p_arr: list[float] = []
    p_q: list[float] = []
    p_tok: list[int] = []
    p_rem: dict[int, float] = {}  # remaining service of pre-empted patients (min)
    p_held: dict[int, int] = {}  # station whose server a boarding patient still holds
    p_wait: list[float] = []
    p_done: list[bool] = []
    p_edout: list[float] = []  # time the patient left the emergency area (ward start / exit)

    ev: list[tuple[float, int, int, int, int]] = []
    seq = 0
    log: list[tuple[float, int, str, str, str]] = []
    do_log = opt.log

    wait_sum = [0.0] * n_st
    wait_n = [0] * n_st
    wait_pos = [0] * n_st  # service starts that had waited (> 0 min)
    t_in_sys: list[list[float]] = [[] for _ in range(n_cls)]
    waits_done: list[float] = []
    n_arr = 0
    n_lwbs = 0
    n_blocked = 0
    n_exit = 0
    n_breach = 0
    board_total = 0.0
    now = 0.0

    def account(si: int, t: float) -> None:
        lo = last[si]
        if t > lo:
            dt = t - lo
            busy_area[si] += busy[si] * dt
            cap_area[si] += (cap[si] if cap[si] < INF_SERVERS else 0) * dt
            last[si] = t
        elif lo < warm:
            last[si] = warm

    def logev(pid: int, what: str, si: int) -> None:
        log.append((now, pid, cp.cls_names[p_cls[pid]], what, cp.st_names[si] if si >= 0 else ""))

    def start(pid: int, si: int, service: float) -> None:
        nonlocal seq, board_total, n_breach
        if is_ward[si] and p_edout[pid] == math.inf:
            p_edout[pid] = now
            if (p_arr[pid] >= warm or p_arr[pid] < 0) and now - p_arr[pid] > target:
                n_breach += 1
        if now > warm:
            account(si, now)
        busy[si] += 1
        for x in cp.steps[p_cls[pid]][p_step[pid]][4]:
            if now > warm:
                account(x, now)
            busy[x] += 1
        w = now - p_q[pid]
        p_wait[pid] += w
        if p_arr[pid] >= warm:
            wait_sum[si] += w
            wait_n[si] += 1
            if w > 0.0:
                wait_pos[si] += 1
        if p_held:
            h = p_held.pop(pid, -1)
            if h >= 0:
                if p_arr[pid] >= warm:
                    board_total += w
                release(h)
        tok = p_tok[pid]
        if preempt[si]:
            in_svc[si][pid] = (cp.cls_prio[p_cls[pid]], now, now + service)
        seq += 1
        heapq.heappush(ev, (now + service, seq, _DEP, pid, tok))
        if do_log:
            logev(pid, "start", si)

    def release(si: int) -> None:
        if now > warm:
            account(si, now)
        busy[si] -= 1
        pull(si)
        for d_ in dependents[si]:
            pull(d_)

    def aux_free(pid: int) -> bool:
        return all(busy[x] < cap[x] for x in cp.steps[p_cls[pid]][p_step[pid]][4])

    def pull(si: int) -> None:
        q = queues[si]
        while q and busy[si] < cap[si]:
            _, _, pid, tok = q[0]
            if p_tok[pid] != tok:
                heapq.heappop(q)
                continue
            if has_aux[si] and not aux_free(pid):
                break  # head of the line waits for its other resources
            heapq.heappop(q)
            qlen[si] -= 1
            p_tok[pid] += 1
            rem = p_rem.pop(pid, -1.0) if p_rem else -1.0
            if rem >= 0.0:
                start(pid, si, rem)
            else:
                ci = p_cls[pid]
                start(pid, si, svc[ci][p_step[pid]].draw())

    def join(pid: int, step: int) -> None:
        nonlocal seq, n_blocked
        ci = p_cls[pid]
        si = cp.steps[ci][step][0]
        p_step[pid] = step
        p_q[pid] = now
        if busy[si] < cap[si] and not queues[si] and (not has_aux[si] or aux_free(pid)):
            p_tok[pid] += 1
            start(pid, si, svc[ci][step].draw())
            return
        prio = cp.cls_prio[ci]
        if preempt[si] and busy[si] >= cap[si] and in_svc[si]:
            victim, vp, vs, vend = -1, prio, -1.0, 0.0
            for q_pid, (qp, qs, qe) in in_svc[si].items():
                if qp > vp or (qp == vp and victim >= 0 and qs > vs):
                    victim, vp, vs, vend = q_pid, qp, qs, qe
            if victim >= 0 and vp > prio:
                del in_svc[si][victim]
                p_tok[victim] += 1
                p_rem[victim] = vend - now
                p_q[victim] = now
                if now > warm:
                    account(si, now)
                busy[si] -= 1
                seq += 1
                heapq.heappush(queues[si], (vp, seq, victim, p_tok[victim]))
                qlen[si] += 1
                if do_log:
                    logev(victim, "preempt", si)
                p_tok[pid] += 1
                start(pid, si, svc[ci][step].draw())
                return
        mq = maxq[si]
        if mq is not None and qlen[si] >= mq and pid not in p_held:
            p_tok[pid] += 1
            p_done[pid] = True
            if p_arr[pid] >= warm:
                n_blocked += 1
            if do_log:
                logev(pid, "blocked", si)
            return
        seq += 1
        p_tok[pid] += 1
        heapq.heappush(queues[si], (prio, seq, pid, p_tok[pid]))
        qlen[si] += 1
        if do_log:
            logev(pid, "queue", si)
        pat = patience[ci]
        if pat is not None and pid not in p_held:
            seq += 1
            heapq.heappush(ev, (now + pat.draw(), seq, _REN, pid, p_tok[pid]))

    def new_patient(ci: int, arrived: float) -> int:
        pid = len(p_cls)
        p_cls.append(ci)
        p_step.append(0)
        p_arr.append(arrived)
        p_q.append(arrived)
        p_tok.append(0)
        p_wait.append(0.0)
        p_done.append(False)
        p_edout.append(math.inf)
        return pid

    def finish(pid: int) -> None:
        nonlocal n_exit, n_breach
        p_done[pid] = True
        counted = p_arr[pid] >= warm or p_arr[pid] < 0
        if p_edout[pid] == math.inf:
            p_edout[pid] = now
            if counted and now - p_arr[pid] > target:
                n_breach += 1
        if counted:
            t_in_sys[p_cls[pid]].append(now - p_arr[pid])
            waits_done.append(p_wait[pid])
            n_exit += 1
        if do_log:
            logev(pid, "exit", -1)

    # ---- initial events ----
    for t_c, s_c, n_c in cap_ev:
        seq += 1
        heapq.heappush(ev, (t_c, seq, _CAP, s_c, n_c))
    smp_times = np.arange(0.0, horizon + 1e-9, spec.sample_every)
    for t in smp_times:
        seq += 1
        heapq.heappush(ev, (float(t), seq, _SMP, 0, 0))
    hz = sorted(set(float(h) for h in opt.horizons if 0 < h <= horizon))
    for t in hz:
        seq += 1
        heapq.heappush(ev, (t, seq, _SMP, 1, 0))
    occ_rows: list[list[int]] = []
    q_rows: list[list[int]] = []
    horizon_stats: dict[float, dict[str, float]] = {}

    # live-start patients
    for ip in opt.initial:
        ci = cp.cls_names.index(ip.cls)
        step = cp.step_index[ci][ip.step]
        pid = new_patient(ci, ip.arrived)
        si = cp.steps[ci][step][0]
        p_step[pid] = step
        if ip.in_service:
            step_dist = cp.steps[ci][step][1]
            elapsed = -ip.since
            s = svc[ci][step].draw()
            for _ in range(50):
                if s > elapsed:
                    break
                s = svc[ci][step].draw()
            rem = s - elapsed if s > elapsed else step_dist.expected()
            p_q[pid] = ip.since
            p_wait[pid] = 0.0
            if is_ward[si]:
                p_edout[pid] = ip.since  # already admitted: left the emergency area
            busy[si] += 1
            for x in cp.steps[ci][step][4]:
                busy[x] += 1
            p_tok[pid] += 1
            if preempt[si]:
                in_svc[si][pid] = (cp.cls_prio[ci], ip.since, rem)
            seq += 1
            heapq.heappush(ev, (rem, seq, _DEP, pid, p_tok[pid]))
        else:
            p_q[pid] = ip.since
            seq += 1
            p_tok[pid] += 1
            heapq.heappush(queues[si], (cp.cls_prio[ci], seq, pid, p_tok[pid]))
            qlen[si] += 1

    for si in range(n_st):
        pull(si)  # live start: queued patients take free servers at t = 0

    # first arrival
    t_next = 0.0 if lam_max > 0 else horizon
    while t_next < horizon:
        t_next += arr_rng.e() / lam_max
        if const_rate or t_next >= horizon or arr_rng.u() * lam_max <= rate(t_next):
            break
    if t_next < horizon:
        seq += 1
        heapq.heappush(ev, (t_next, seq, _ARR, 0, 0))

    # ---- event loop ----
    pop = heapq.heappop
    push = heapq.heappush
    while ev:
        now, _, kind, a, b = pop(ev)
        if now > horizon:
            now = horizon
            break
        if kind == _DEP:
            pid = a
            if p_tok[pid] != b:
                continue
            ci = p_cls[pid]
            step = p_step[pid]
            si, _, tg, cpr, aux = cp.steps[ci][step]
            if dwin is not None and is_ward[si]:
                hod = ((now + spec.start_hour * 60.0) / 60.0) % 24.0
                lo, hi = dwin
                if not (lo <= hod < hi):
                    wait_h = (lo - hod) % 24.0
                    seq += 1
                    push(ev, (now + wait_h * 60.0, seq, _DEP, pid, b))
                    continue
            if preempt[si]:
                in_svc[si].pop(pid, None)
            if do_log:
                logev(pid, "end", si)
            nxt = tg[0]
            if len(tg) > 1:
                u = route[ci][step].u()
                for k, c_ in enumerate(cpr):
                    if u <= c_:
                        nxt = tg[k]
                        break
            for x in aux:  # other resources held with this step are freed at its end
                release(x)
            if nxt >= 0 and hold[si]:
                p_held[pid] = si
                join(pid, nxt)
                if pid in p_held and do_log:
                    logev(pid, "board", si)
                continue
            release(si)
            if nxt >= 0:
                join(pid, nxt)
            else:
                finish(pid)
        elif kind == _ARR:
            ci = 0
            if n_cls > 1:
                u = cls_rng.u()
                for k, c_ in enumerate(cp.cls_cum):
                    if u <= c_:
                        ci = k
                        break
            pid = new_patient(ci, now)
            if now >= warm:
                n_arr += 1
            if do_log:
                logev(pid, "arrive", -1)
            join(pid, 0)
            t_next = now
            while True:
                t_next += arr_rng.e() / lam_max
                if const_rate or t_next >= horizon or arr_rng.u() * lam_max <= rate(t_next):
                    break
            if t_next < horizon:
                seq += 1
                push(ev, (t_next, seq, _ARR, 0, 0))
        elif kind == _REN:
            pid = a
            if p_tok[pid] != b:
                continue
            si = cp.steps[p_cls[pid]][p_step[pid]][0]
            p_tok[pid] += 1
            qlen[si] -= 1
            p_done[pid] = True
            if p_arr[pid] >= warm:
                n_lwbs += 1
            if do_log:
                logev(pid, "renege", si)
        elif kind == _CAP:
            si = a
            if now > warm:
                account(si, now)
            if b <= -(10**5):
                cap[si] = max(0, cap[si] + (b + 10**6))
            else:
                cap[si] = b
            pull(si)
            for d_ in dependents[si]:
                pull(d_)
        else:  # sample
            if a == 0:
                occ_rows.append(list(busy))
                q_rows.append(list(qlen))
            else:
                present = [i for i in range(len(p_cls)) if not p_done[i]]
                in_ed = [i for i in present if p_edout[i] == math.inf]
                horizon_stats[now] = {
                    "patients_present[1]": float(len(present)),
                    "in_emergency_area[1]": float(len(in_ed)),
                    "over_target_present[1]": float(sum(now - p_arr[i] > target for i in in_ed)),
                    "boarding_now[1]": float(sum(i in p_held for i in present)),
                    "waiting_now[1]": float(sum(qlen)),
                    # cumulative since the start (live start: warm-up 0)
                    "wait_mean_so_far[min]": (sum(wait_sum) / sum(wait_n) if sum(wait_n) else 0.0),
                    "boarding_so_far[h]": board_total / 60.0,
                    "lwbs_so_far[1]": float(n_lwbs),
                }
    now = horizon
    for si in range(n_st):
        account(si, now)

    kpis: dict[str, float] = {}
    span = horizon - warm
    all_t = (
        np.concatenate([np.asarray(x, dtype=float) for x in t_in_sys]) if n_exit else np.zeros(0)
    )
    w = np.asarray(waits_done, dtype=float)
    kpis["arrivals[1]"] = float(n_arr)
    kpis["throughput[1]"] = float(n_exit)
    kpis["wait_mean[min]"] = float(w.mean()) if w.size else math.nan
    kpis["p_wait[1]"] = float(np.mean(w > 0.0)) if w.size else math.nan
    for qq in (50, 90, 95):
        kpis[f"wait_p{qq}[min]"] = float(np.percentile(w, qq)) if w.size else math.nan
    kpis["time_in_system_mean[min]"] = float(all_t.mean()) if all_t.size else math.nan
    kpis["time_in_system_p95[min]"] = float(np.percentile(all_t, 95)) if all_t.size else math.nan
    kpis["lwbs_fraction[1]"] = n_lwbs / n_arr if n_arr else math.nan
    kpis["blocked_fraction[1]"] = n_blocked / n_arr if n_arr else math.nan
    # share of patients (arrived after warm-up) whose emergency stay (arrival -> ward
    # admission or exit) exceeded the target; denominator: those who left the area.
    n_left = sum(
        1 for i in range(len(p_cls)) if p_edout[i] < math.inf and (p_arr[i] >= warm or p_arr[i] < 0)
    )
    kpis["target_breach_fraction[1]"] = n_breach / n_left if n_left else math.nan
    kpis["boarding_hours[h]"] = board_total / 60.0
    roles: dict[str, list[float]] = {}
    for si, n in enumerate(cp.st_names):
        kpis[f"wait_mean/{n}[min]"] = wait_sum[si] / wait_n[si] if wait_n[si] else math.nan
        kpis[f"p_wait/{n}[1]"] = wait_pos[si] / wait_n[si] if wait_n[si] else math.nan
        kpis[f"occupancy_mean/{n}[1]"] = busy_area[si] / span
        if cap_area[si] > 0:
            kpis[f"utilisation/{n}[1]"] = busy_area[si] / cap_area[si]
        role = spec.stations[n].role
        if role and cap_area[si] > 0:
            r = roles.setdefault(role, [0.0, 0.0])
            r[0] += busy_area[si]
            r[1] += cap_area[si]
    for role, (ba, ca) in roles.items():
        kpis[f"utilisation_role/{role}[1]"] = ba / ca
    for ci, c in enumerate(cp.cls_names):
        arr = np.asarray(t_in_sys[ci], dtype=float)
        kpis[f"time_in_system_mean/{c}[min]"] = float(arr.mean()) if arr.size else math.nan
    return RepResult(
        kpis=kpis,
        stations=cp.st_names,
        occupancy=np.asarray(occ_rows, dtype=float).reshape(-1, n_st),
        queue=np.asarray(q_rows, dtype=float).reshape(-1, n_st),
        sample_times=smp_times[: len(occ_rows)],
        class_time_in_system={c: np.asarray(t_in_sys[i]) for i, c in enumerate(cp.cls_names)},
        waits=w,
        log=log,
        horizon_stats=horizon_stats,
    )


def _worker(args: tuple[dict[str, Any], int, int, RunOptions | None]) -> RepResult:
    spec_d, seed, rep, opt = args
    return run_replication(FacilitySpec.model_validate(spec_d), seed, rep, opt)


def run_replications(
    spec: FacilitySpec,
    n_reps: int,
    seed: int = 0,
    workers: int = 1,
    options: RunOptions | None = None,
    first_rep: int = 0,
) -> list[RepResult]:
    """Run replications ``first_rep .. first_rep+n_reps-1``; in parallel when ``workers > 1``.

    Replication ``r`` uses the same streams whatever ``workers`` is, so results are identical
    across worker counts (and common across scenarios for the same ``seed``).
    """
    if n_reps < 1:
        raise ValueError(f"n_reps = {n_reps}: need at least 1 replication")
    reps = range(first_rep, first_rep + n_reps)
    if workers <= 1 or n_reps == 1:
        return [run_replication(spec, seed, r, options) for r in reps]
    from concurrent.futures import ProcessPoolExecutor

    d = spec.model_dump(mode="json")
    with ProcessPoolExecutor(max_workers=workers) as ex:
        chunk = max(1, n_reps // (4 * workers))  # fewer round trips for many short replications
        return list(ex.map(_worker, [(d, seed, r, options) for r in reps], chunksize=chunk))
