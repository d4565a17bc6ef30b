"""Scripted RWARE behaviour policy: a planner over precomputed distance fields.

Each agent's task is one of: fetch a claimed requested shelf (unloaded), carry a requested
shelf to the nearest goal (loaded), return a delivered shelf to a claimed empty slot (loaded),
or park off the highways when there is nothing to do. Claims are global, so no two agents
chase the same shelf or slot.

Motion is planned on (cell, heading) states with RWARE's kinematics (FORWARD moves one cell
in the heading, LEFT/RIGHT turn in place). For every target cell a reverse breadth-first
search gives the number of actions to reach it from every state, once per layout and target,
cached per process; acting is then a table lookup. Loaded agents route over highways only,
since shelves at rest never stand on a highway, which makes their fields valid whatever the
shelf arrangement. Unloaded agents may pass under shelves.

Conflicts: an agent about to drive into an agent that is not going anywhere asks it to yield
if it is idle; head-on pairs are broken by the lower-priority agent side-stepping; an agent
that has not moved for `patience` steps despite trying takes a random turn or step (the only
use of randomness, so the expert is deterministic given its rng).

Quality levels mix the expert with uniformly random actions at a per-agent, per-step rate
`epsilon` (see ``QUALITIES``).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from marlbench.api import BehaviourPolicy, MultiAgentEnv

NOOP, FORWARD, LEFT, RIGHT, TOGGLE = range(5)
UP, DOWN, LEFT_DIR, RIGHT_DIR = range(4)  # rware.warehouse.Direction values
_STEP = {UP: (0, -1), DOWN: (0, 1), LEFT_DIR: (-1, 0), RIGHT_DIR: (1, 0)}  # (dx, dy)
# rware turns through [UP, RIGHT, DOWN, LEFT]: LEFT is counter-clockwise, RIGHT clockwise.
_TURN_LEFT = {UP: LEFT_DIR, LEFT_DIR: DOWN, DOWN: RIGHT_DIR, RIGHT_DIR: UP}
_TURN_RIGHT = {UP: RIGHT_DIR, RIGHT_DIR: DOWN, DOWN: LEFT_DIR, LEFT_DIR: UP}
_SHELF_LAYER, _AGENT_LAYER = 1, 0
_INF = 1 << 30
_DETOUR_STEPS = 4  # a side-step is followed through for at most this many steps

# Per-agent, per-step probability of replacing the expert's action by a uniformly random one.
# Chosen so that returns fall by roughly half per level on rware-tiny-2ag (measured figures
# are printed by `bench/expert_speed.py` and recorded in each dataset card).
QUALITIES = {"expert": 0.0, "medium": 0.3, "poor": 0.6, "random": 1.0}


class _Layout:
    """Kinematics and cached distance fields of one warehouse layout (shared process-wide)."""

    _cache: dict[tuple, _Layout] = {}

    @classmethod
    def of(cls, highways: np.ndarray) -> _Layout:
        key = (highways.shape, highways.tobytes())
        if key not in cls._cache:
            cls._cache[key] = cls(highways)
        return cls._cache[key]

    def __init__(self, highways: np.ndarray):
        self.height, self.width = highways.shape
        self.highway = [bool(v) for v in highways.reshape(-1)]
        n_cells = self.height * self.width
        # succ[a][s] for a in FORWARD, LEFT, RIGHT; state s = cell * 4 + heading.
        self.succ = [[0] * (n_cells * 4) for _ in range(3)]
        for cell in range(n_cells):
            x, y = cell % self.width, cell // self.width
            for d in range(4):
                s = cell * 4 + d
                dx, dy = _STEP[d]
                nx = min(max(x + dx, 0), self.width - 1)
                ny = min(max(y + dy, 0), self.height - 1)
                self.succ[0][s] = (ny * self.width + nx) * 4 + d
                self.succ[1][s] = cell * 4 + _TURN_LEFT[d]
                self.succ[2][s] = cell * 4 + _TURN_RIGHT[d]
        self.pred: list[list[int]] = [[] for _ in range(n_cells * 4)]
        for a in range(3):
            for s, t in enumerate(self.succ[a]):
                if t != s:
                    self.pred[t].append(s)
        self._dist: dict[tuple[bool, int], list[int]] = {}

    def dist(self, loaded: bool, target: int) -> list[int]:
        """Actions needed to stand on cell `target` from every state (loaded: highways only)."""
        key = (loaded, target)
        field = self._dist.get(key)
        if field is None:
            field = self._dist[key] = self._bfs(loaded, target)
        return field

    def _bfs(self, loaded: bool, target: int) -> list[int]:
        dist = [_INF] * len(self.pred)
        queue = deque()
        for d in range(4):
            dist[target * 4 + d] = 0
            queue.append(target * 4 + d)
        hw = self.highway
        while queue:
            s = queue.popleft()
            nd = dist[s] + 1
            # Loaded paths may start on a shelf cell (turn there, then leave onto a highway)
            # but never enter one on the way: from such a state only turns lead back.
            passable = not loaded or hw[s >> 2] or (s >> 2) == target
            for p in self.pred[s]:
                if dist[p] == _INF and (passable or (p >> 2) == (s >> 2)):
                    dist[p] = nd
                    queue.append(p)
        return dist

    def best_action(self, loaded: bool, target: int, s: int) -> int:
        """The move (FORWARD before turns on ties) that brings state `s` closest to `target`."""
        field = self.dist(loaded, target)
        succ = self.succ
        best, best_d = NOOP, _INF
        for a, move in ((0, FORWARD), (1, LEFT), (2, RIGHT)):
            t = succ[a][s]
            if t != s and field[t] < best_d:
                best, best_d = move, field[t]
        return best


class RwareExpert(BehaviourPolicy):
    """Planner-based expert mixed with random actions at rate `epsilon`."""

    def __init__(self, epsilon: float = 0.0, patience: int = 3):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon, self.patience = epsilon, patience

    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        wh = env.warehouse  # type: ignore[attr-defined]
        self.rng = rng
        self.layout = _Layout.of(np.asarray(wh.highways))
        n = wh.n_agents
        self.claim_shelf: list[object | None] = [None] * n
        self.claim_slot: list[int | None] = [None] * n
        self.last_cell: list[int] = [-1] * n
        self.last_action: list[int] = [NOOP] * n
        self.stuck: list[int] = [0] * n
        self.detour: list[tuple[int, int] | None] = [None] * n
        w = self.layout.width
        self.goal_cells = [gy * w + gx for gx, gy in wh.goals]

    # -- task assignment ------------------------------------------------------------------------

    def _assign(self, wh, cells: list[int], states: list[int]) -> None:
        lay, agents = self.layout, wh.agents
        requested = {s.id: s for s in wh.request_queue}
        carried = {a.carrying_shelf.id for a in agents if a.carrying_shelf is not None}
        w = lay.width
        for i, a in enumerate(agents):
            if a.carrying_shelf is not None:
                self.claim_shelf[i] = None
            else:
                self.claim_slot[i] = None
                c = self.claim_shelf[i]
                if c is not None and (c.id not in requested or c.id in carried):
                    self.claim_shelf[i] = None
        # Greedy global matching of free unloaded agents to unclaimed, uncarried requests.
        free = [i for i, a in enumerate(agents)
                if a.carrying_shelf is None and self.claim_shelf[i] is None]
        claimed = {c.id for c in self.claim_shelf if c is not None}
        open_req = [s for sid, s in requested.items() if sid not in claimed and sid not in carried]
        if free and open_req:
            pairs = sorted((lay.dist(False, s.y * w + s.x)[states[i]], i, s.id)
                           for i in free for s in open_req)
            taken_a, taken_s = set(), set()
            for _, i, sid in pairs:
                if i not in taken_a and sid not in taken_s:
                    self.claim_shelf[i] = requested[sid]
                    taken_a.add(i)
                    taken_s.add(sid)
        # Return slots for agents carrying a shelf nobody requests.
        need = [i for i, a in enumerate(agents) if a.carrying_shelf is not None
                and a.carrying_shelf.id not in requested]
        if need:
            grid = wh.grid
            taken = {c for j, c in enumerate(self.claim_slot) if c is not None and j not in need}
            for i in need:
                c = self.claim_slot[i]
                if c is not None and not grid[_SHELF_LAYER, c // w, c % w] and c not in taken:
                    taken.add(c)
                    continue
                if not lay.highway[cells[i]] and cells[i] not in taken:
                    best = cells[i]  # standing on an empty slot already: drop here
                else:
                    empty = np.flatnonzero((grid[_SHELF_LAYER].reshape(-1) == 0)
                                           & ~np.asarray(lay.highway))
                    options = [int(c) for c in empty if int(c) not in taken]
                    best = min(options, key=lambda c: lay.dist(True, c)[states[i]],
                               default=None)
                self.claim_slot[i] = best
                if best is not None:
                    taken.add(best)

    # -- acting ---------------------------------------------------------------------------------

    def _intent(self, wh, i: int, a, cell: int, s: int) -> tuple[int, bool]:
        """(action, idle) for agent i ignoring the others."""
        lay = self.layout
        if a.carrying_shelf is not None:
            if any(r.id == a.carrying_shelf.id for r in wh.request_queue):
                goal = min(self.goal_cells, key=lambda g: lay.dist(True, g)[s])
                return lay.best_action(True, goal, s), False
            slot = self.claim_slot[i]
            if slot is None:
                return NOOP, True
            if slot == cell:
                return TOGGLE, False
            return lay.best_action(True, slot, s), False
        shelf = self.claim_shelf[i]
        if shelf is not None:
            target = shelf.y * lay.width + shelf.x
            if target == cell:
                return TOGGLE, False
            return lay.best_action(False, target, s), False
        if lay.highway[cell]:  # nothing to do: get off the highway
            return self._park_action(wh, s), True
        return NOOP, True

    def _park_action(self, wh, s: int) -> int:
        lay = self.layout
        grid, w, cell = wh.grid, lay.width, s >> 2
        requested = {(r.y * w + r.x) for r in wh.request_queue}
        best, best_d = NOOP, _INF
        # Search the 5x5 neighbourhood for a shelf cell nobody needs; cheap and local.
        x0, y0 = cell % w, cell // w
        for y in range(max(0, y0 - 2), min(lay.height, y0 + 3)):
            for x in range(max(0, x0 - 2), min(w, x0 + 3)):
                c = y * w + x
                if (not lay.highway[c] and grid[_SHELF_LAYER, y, x] and c not in requested
                        and not grid[_AGENT_LAYER, y, x]):
                    d = lay.dist(False, c)[s]
                    if d < best_d:
                        best, best_d = lay.best_action(False, c, s), d
        return best

    def _forward_cell(self, s: int) -> int:
        return self.layout.succ[0][s] >> 2

    def act(self, env, obs, state, avail) -> np.ndarray:
        wh = env.warehouse
        lay, agents = self.layout, wh.agents
        w = lay.width
        cells = [int(a.y) * w + int(a.x) for a in agents]
        states = [c * 4 + a.dir.value for c, a in zip(cells, agents)]
        self._assign(wh, cells, states)
        n = len(agents)
        actions, idle = [NOOP] * n, [False] * n
        for i, a in enumerate(agents):
            actions[i], idle[i] = self._intent(wh, i, a, cells[i], states[i])
            if self.detour[i] is not None:  # finish a committed side-step first
                target, ttl = self.detour[i]
                if target == cells[i] or ttl == 0:
                    self.detour[i] = None
                else:
                    self.detour[i] = (target, ttl - 1)
                    actions[i], idle[i] = lay.best_action(False, target, states[i]), False
        occupant = {c: i for i, c in enumerate(cells)}
        nxt = [self._forward_cell(states[i]) if actions[i] == FORWARD else cells[i]
               for i in range(n)]
        for i in range(n):
            if actions[i] != FORWARD or nxt[i] == cells[i]:
                continue
            j = occupant.get(nxt[i])
            if j is None or nxt[j] != cells[j]:
                if j is not None and nxt[j] == cells[i] and i > j:  # head-on: i gives way,
                    actions[i] = self._sidestep(wh, i, states[i], cells, avoid=cells[j])
                    if actions[i] == NOOP:  # or j does if i is boxed in
                        actions[j] = self._sidestep(wh, j, states[j], cells, avoid=cells[i])
                continue
            if idle[j]:  # j sits in i's way with nothing to do: j yields
                actions[j] = self._sidestep(wh, j, states[j], cells, avoid=cells[i])
        # Deadlock breaker: an agent with a task that has not moved for `patience` steps while
        # trying to (or waiting) takes a random free detour.
        for i in range(n):
            waiting = self.last_action[i] in (FORWARD, NOOP) and not idle[i]
            self.stuck[i] = self.stuck[i] + 1 if cells[i] == self.last_cell[i] and waiting else 0
            if self.stuck[i] >= self.patience:
                actions[i] = self._sidestep(wh, i, states[i], cells, avoid=-1, shuffle=True)
                self.stuck[i] = 0
            self.last_cell[i], self.last_action[i] = cells[i], actions[i]
        if self.epsilon > 0.0:
            mask = self.rng.random(n) < self.epsilon
            rand = self.rng.integers(0, 5, size=n)
            actions = [int(rand[i]) if mask[i] else actions[i] for i in range(n)]
        return np.asarray(actions, dtype=np.int64)

    def _sidestep(self, wh, i: int, s: int, cells: list[int], avoid: int,
                  shuffle: bool = False) -> int:
        """Commit agent i to a detour via a free neighbouring cell other than `avoid`."""
        lay = self.layout
        loaded = wh.agents[i].carrying_shelf is not None
        occupied = set(cells)
        grid, w = wh.grid, lay.width
        cell, d = s >> 2, s & 3
        # Neighbours in order of how cheap they are to reach: ahead, then left/right, behind.
        headings = [d, _TURN_LEFT[d], _TURN_RIGHT[d], _TURN_LEFT[_TURN_LEFT[d]]]
        if shuffle:
            self.rng.shuffle(headings)
        for heading in headings:
            t = lay.succ[0][cell * 4 + heading] >> 2
            if t == cell or t == avoid or t in occupied:
                continue
            if loaded and grid[_SHELF_LAYER, t // w, t % w]:
                continue
            self.detour[i] = (t, _DETOUR_STEPS)
            return lay.best_action(False, t, s)
        return NOOP
