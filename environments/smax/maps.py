"""The SMAX maps marlbench offers, and their shapes, known without importing JAX.

SMAX (jaxmarl) re-implements SMAC's unit micromanagement on an open 32x32 map without terrain.
The table mirrors jaxmarl 0.2's `MAP_NAME_TO_SCENARIO` (a test checks it against the installed
jaxmarl), so `marlbench plugins` lists the tasks and a missing extra is reported by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from marlbench.api import EnvInfo

UNIT_TYPES = ("marine", "marauder", "stalker", "zealot", "zergling", "hydralisk")  # SMAX order
M, S, Z, ZG, H = 0, 2, 3, 4, 5
UNIT_FEATURES = 7 + len(UNIT_TYPES)  # health, x, y, last move x/y, last targeted, cooldown, type
OWN_FEATURES = 4 + len(UNIT_TYPES)  # health, x, y, cooldown, type
MOVE_ACTIONS = 5  # 4 directions + stop; attack actions follow, one per enemy
STOP = 4
EPISODE_LIMIT = 100  # SMAX max_steps
SMAC_SCALE = 10.0  # SMAX's maximum return is 2 (damage 1 + win 1); SMAC normalises to 20


@dataclass(frozen=True)
class SmaxMap:
    name: str
    allies: tuple[int, ...]  # unit type per ally (SMAX indices); () for random (SMACv2)
    enemies: tuple[int, ...]
    n_allies: int
    n_enemies: int
    note: str = ""
    approximation: bool = False  # not a SMAX scenario: built here, labelled everywhere

    @property
    def task(self) -> str:
        return f"smax-{self.name}"

    @property
    def randomised(self) -> bool:
        return not self.allies

    def info(self) -> EnvInfo:
        obs = UNIT_FEATURES * (self.n_allies - 1 + self.n_enemies) + OWN_FEATURES
        state = (OWN_FEATURES + 2) * (self.n_allies + self.n_enemies)  # + team, type per unit
        return EnvInfo(name=self.task, n_agents=self.n_allies, obs_dim=obs, state_dim=state,
                       n_actions=MOVE_ACTIONS + self.n_enemies, episode_limit=EPISODE_LIMIT)

    def units(self) -> tuple[int, ...]:
        return self.allies + self.enemies


def _fixed(name: str, allies: tuple[int, ...], enemies: tuple[int, ...], **kw) -> SmaxMap:
    return SmaxMap(name, allies, enemies, len(allies), len(enemies), **kw)


def _random(name: str, n: int) -> SmaxMap:
    return SmaxMap(name, (), (), n, n, note="SMACv2-style: random unit types and positions")


MAPS: dict[str, SmaxMap] = {m.name: m for m in (
    _fixed("3m", (M,) * 3, (M,) * 3),
    _fixed("2s3z", (S, S, Z, Z, Z), (S, S, Z, Z, Z)),
    _fixed("25m", (M,) * 25, (M,) * 25),
    _fixed("3s5z", (S,) * 3 + (Z,) * 5, (S,) * 3 + (Z,) * 5),
    _fixed("8m", (M,) * 8, (M,) * 8),
    _fixed("5m_vs_6m", (M,) * 5, (M,) * 6, note="paper task (hard)"),
    _fixed("10m_vs_11m", (M,) * 10, (M,) * 11),
    _fixed("27m_vs_30m", (M,) * 27, (M,) * 30),
    _fixed("3s5z_vs_3s6z", (S,) * 3 + (Z,) * 5, (S,) * 3 + (Z,) * 6),
    _fixed("3s_vs_5z", (S,) * 3, (Z,) * 5),
    _fixed("6h_vs_8z", (H,) * 6, (Z,) * 8, note="paper task (super hard)"),
    _random("smacv2_5_units", 5),
    _random("smacv2_10_units", 10),
    _random("smacv2_20_units", 20),
    _fixed("corridor-like", (Z,) * 6, (ZG,) * 24, approximation=True,
           note="APPROXIMATION of SMAC corridor: its units (6 zealots vs 24 zerglings) on "
                "SMAX's open map, without the corridor terrain; not comparable to corridor"),
)}

# SMAC maps SMAX cannot express: asking for them fails with the reason.
UNSUPPORTED: dict[str, str] = {
    "2c_vs_64zg": "SMAX has no colossus unit (and no cliffs, which this map relies on)",
    "corridor": "SMAX has no terrain, so there is no corridor; smax-corridor-like is an "
                "open-map approximation with the same units, labelled as such",
}
