"""SMAC environment plugin: tasks ``smac-<map>`` on the real StarCraft II (oxwhirl SMAC).

Active only where oxwhirl SMAC is importable and SC2PATH points at a StarCraft II install;
elsewhere every ``smac-*`` task fails with the reason (SMAC missing, the unrelated SMAC3 in
its place, or no game). With SMAC present, shapes come from SMAC itself (default settings, as
the MADT datasets used); without it they are unknown and recorded as 0.

Team reward and win flag are SMAC's own; ``return_smac`` equals the return (SMAC's scale).
The CPU-only stand-in is SMAX (``smax-<map>``).
"""

from __future__ import annotations

import functools

from marlbench.api import EnvInfo, EnvSpec, hookimpl

from .env import SmacEnv, smac_problem

# SMAC's maps (smac/env/starcraft2/maps/smac_maps.py): name -> (agents, enemies, step limit).
MAPS = {
    "3m": (3, 3, 60), "8m": (8, 8, 120), "25m": (25, 25, 150), "5m_vs_6m": (5, 6, 70),
    "8m_vs_9m": (8, 9, 120), "10m_vs_11m": (10, 11, 150), "27m_vs_30m": (27, 30, 180),
    "MMM": (10, 10, 150), "MMM2": (10, 12, 180), "2s3z": (5, 5, 120), "3s5z": (8, 8, 150),
    "3s5z_vs_3s6z": (8, 9, 170), "3s_vs_3z": (3, 3, 150), "3s_vs_4z": (3, 4, 200),
    "3s_vs_5z": (3, 5, 250), "2m_vs_1z": (2, 1, 150), "corridor": (6, 24, 400),
    "6h_vs_8z": (6, 8, 150), "2s_vs_1sc": (2, 1, 300), "so_many_baneling": (7, 32, 100),
    "bane_vs_bane": (24, 24, 200), "2c_vs_64zg": (2, 64, 400),
}
PAPER_MAPS = ("5m_vs_6m", "2c_vs_64zg", "6h_vs_8z", "corridor")  # MADS4 Table 2
NO_ATTACK_ACTIONS = 6  # no-op, stop, 4 moves; one attack action per enemy follows


def _info(name: str, smac_ready: bool) -> EnvInfo:
    n_agents, n_enemies, limit = MAPS[name]
    obs = state = 0
    if smac_ready:
        from smac.env import StarCraft2Env

        got = StarCraft2Env(map_name=name).get_env_info()  # reads map params; no game launch
        obs, state = got["obs_shape"], got["state_shape"]
    return EnvInfo(name=f"smac-{name}", n_agents=n_agents, obs_dim=obs, state_dim=state,
                   n_actions=NO_ATTACK_ACTIONS + n_enemies, episode_limit=limit)


@hookimpl
def marlbench_environments() -> list[EnvSpec]:
    specs, ready = [], smac_problem() is None
    for name in MAPS:
        info = _info(name, ready)
        paper = " (paper task)" if name in PAPER_MAPS else ""
        specs.append(EnvSpec(
            name=info.name, family="smac", info=info,
            factory=functools.partial(SmacEnv, name, info),
            description=f"StarCraft II SMAC {name}{paper}: needs oxwhirl SMAC and SC2PATH",
            version="oxwhirl SMAC / StarCraft II", has_win_flag=True,
            default_dataset="good", return_scales={"return_smac": 1.0}))
    return specs
