"""The contracts between the host and its plugins.

Everything a plugin author needs is importable from here: the hook marker, the specs a plugin
returns from its hooks, and the base classes for environments, behaviour policies, algorithms
and policies. The host never looks inside a plugin beyond these.

The helpers the built-in algorithms share are importable from here too (loaded on first use,
so an environment plugin never pays for torch): `FeedForwardPolicy` (a memoryless policy from a
logits function), `mask_logits` (unavailable actions out of the softmax), `ActionSampler` /
`select_actions` (argmax, or sampling with one random stream per episode, over the available
actions), `agent_one_hot` / `agent_inputs`
(agent ids for a network shared by the agents), `choice_mask` (steps where an agent had a
choice), `optimizer_step` (a clipped gradient step), `target_return` / `return_to_go_scale`
(return conditioning), `FixedNormalizer`, `mlp`, `soft_update`, and `validate_config` (checks
a config's numeric fields by their meaning; call it from the config's `__post_init__`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pluggy

from marlbench.spaces import EnvInfo  # re-exported: part of the plugin contract

if TYPE_CHECKING:  # imported lazily: env plugins should not pay for torch
    import torch

    from marlbench.data.dataset import OfflineDataset

hookimpl = pluggy.HookimplMarker("marlbench")

# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------


@dataclass
class Step:
    """What `MultiAgentEnv.step` returns. `truncated` marks a time limit (bootstrap), not an end."""

    obs: np.ndarray  # [n_agents, obs_dim] float32
    state: np.ndarray  # [state_dim] float32
    avail: np.ndarray  # [n_agents, n_actions] bool
    reward: float  # team reward, as the papers report it
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)  # e.g. {"won": True} at episode end


class MultiAgentEnv(abc.ABC):
    """One interface for every environment plugin (cooperative, discrete actions)."""

    info: EnvInfo

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start an episode; returns (obs [n, obs_dim], state [state_dim], avail [n, n_actions])."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> Step:
        """Apply one joint action (ints, shape [n_agents])."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


@dataclass(frozen=True)
class EnvSpec:
    """A named task an environment plugin offers."""

    name: str
    family: str  # groups tasks that share dataset recipes, e.g. "rware"
    info: EnvInfo
    factory: Callable[[], MultiAgentEnv]
    description: str = ""
    version: str = ""  # underlying simulator and version, recorded in datasets
    # When the global state is the concatenation of the agents' observations (RWARE), datasets
    # do not store it twice; loaders derive it.
    state_is_concat_obs: bool = False
    has_win_flag: bool = False
    default_dataset: str = "expert"
    # Extra named columns per evaluation episode, e.g. {"return_smac": 10.0} for a scaled return.
    return_scales: Mapping[str, float] = field(default_factory=dict)
    # Optional batched simulator for online training: n_envs -> VectorEnv. Without it,
    # `marlbench.vector.make_vector_env` steps `factory()` envs one after another.
    vector_factory: Callable[[int], VectorEnv] | None = None


@dataclass
class VectorStep:
    """What `VectorEnv.step` returns for B envs. Finished envs have already been reset: their
    obs/state/avail start the next episode, and `final_*` hold where the episode ended."""

    obs: np.ndarray  # [B, n_agents, obs_dim]
    state: np.ndarray  # [B, state_dim]
    avail: np.ndarray  # [B, n_agents, n_actions] bool
    reward: np.ndarray  # [B] team reward
    terminated: np.ndarray  # [B] bool
    truncated: np.ndarray  # [B] bool: time limit
    won: np.ndarray  # [B] bool: the episode that ended here was won (False elsewhere)
    final_obs: np.ndarray  # [B, n_agents, obs_dim]: obs reached by this step, before any reset
    final_state: np.ndarray  # [B, state_dim]
    # [B, n_agents, n_actions]: availability in the final state (who is alive there); None when
    # the simulator does not report it (callers then fall back to the last known masks)
    final_avail: np.ndarray | None = None


class VectorEnv(abc.ABC):
    """`n_envs` copies of one task stepped together, restarting episodes as they end."""

    info: EnvInfo
    n_envs: int

    @abc.abstractmethod
    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start every env; returns (obs [B, n, obs_dim], state [B, state_dim], avail)."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> VectorStep:
        """Apply one joint action per env (ints, shape [B, n_agents])."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


class BehaviourPolicy(abc.ABC):
    """A policy that generates a dataset. It may read the simulator's internals (privileged)."""

    @abc.abstractmethod
    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        """Called after every env reset; `rng` is the only source of randomness allowed."""

    @abc.abstractmethod
    def act(self, env: MultiAgentEnv, obs: np.ndarray, state: np.ndarray,
            avail: np.ndarray) -> np.ndarray:
        """Joint action (ints, shape [n_agents]) for the current step."""


@dataclass(frozen=True)
class DatasetRecipe:
    """How to generate a dataset of one quality for every env of a family."""

    family: str
    quality: str
    make_behaviour: Callable[[EnvSpec], BehaviourPolicy]
    description: str = ""
    default_episodes: int = 200


# ---------------------------------------------------------------------------------------------
# Algorithms
# ---------------------------------------------------------------------------------------------


class Policy(abc.ABC):
    """An acting policy over a batch of `n_envs` environments that run in lockstep.

    Recurrent or return-to-go state lives inside the policy: `reset` clears it, `act` advances it,
    `observe` feeds back the team reward of the step just taken.
    """

    @abc.abstractmethod
    def reset(self, n_envs: int) -> None: ...

    @abc.abstractmethod
    def act(self, obs: np.ndarray, state: np.ndarray, avail: np.ndarray) -> np.ndarray:
        """obs [B, n, obs_dim], state [B, state_dim], avail [B, n, A] -> actions [B, n] int."""

    def observe(self, rewards: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Team rewards [B] of the step just taken (return-conditioned policies use them)."""


class Algorithm(abc.ABC):
    """An algorithm. The runner owns the loop: `setup(data)`, then `update()` N times.

    Online algorithms (``AlgorithmSpec.offline=False``) get `setup_online(env)` instead of
    `setup(data)`; each `update()` then gathers its own experience in the environment.

    Subclasses set `Config` to a dataclass whose defaults are documented with their source.
    Networks are built in `__init__` (so a checkpoint loads without data); `setup` prepares
    training. All learnable state must live in `modules()` (saved to the checkpoint) plus the
    JSON-able `extra_state()`, so that a saved run reloads into identical actions.
    """

    Config: ClassVar[type]

    def __init__(self, config: Any, env: EnvInfo, device: torch.device, seed: int):
        self.config, self.env, self.device, self.seed = config, env, device, seed

    @abc.abstractmethod
    def setup(self, data: OfflineDataset) -> None:
        """Prepare for training on `data` (normalisers, target return, optimisers)."""

    def setup_online(self, env: EnvSpec) -> None:
        """Prepare for online training in `env` (algorithms whose spec has offline=False)."""
        raise NotImplementedError(f"{type(self).__name__} does not train online")

    @abc.abstractmethod
    def update(self) -> Mapping[str, float]:
        """One training step; returns scalar metrics (must include 'loss')."""

    @abc.abstractmethod
    def policy(self, greedy: bool = False, seed: int = 0) -> Policy:
        """A policy acting with the current parameters (evaluation mode).

        Actions are sampled from the masked action distribution with a generator seeded by
        `seed` (the MADS4 paper, §4.1: probabilities "sampled after applying the action
        availability masks"), or the most likely available action if `greedy`.
        """

    @abc.abstractmethod
    def modules(self) -> Mapping[str, torch.nn.Module]:
        """The networks whose parameters make up the checkpoint."""

    def extra_state(self) -> dict[str, Any]:
        """JSON-able state besides parameters. A return-conditioned policy keeps its
        evaluation target here as ``"target_return"`` (the env's return units), so that
        `marlbench evaluate --target-return` can ask it for other returns."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:  # noqa: B027
        """Inverse of `extra_state`."""


ExecutionMode = Literal["centralised", "sequential", "decentralised"]


@dataclass(frozen=True)
class AlgorithmSpec:
    """A named algorithm an algorithm plugin offers."""

    name: str
    cls: type[Algorithm]
    description: str = ""
    paper: str = ""
    execution: ExecutionMode = "decentralised"
    uses_global_state: bool = False  # with the default config; see `state_option`
    # The config's bool field that switches the global state on or off (`--set use_state=...`);
    # when the config has it, its value decides `uses_state(config)`. None: always
    # `uses_global_state`.
    state_option: str | None = "use_state"
    action_space: Literal["discrete", "continuous"] = "discrete"
    # Fixed config overrides applied before the user's (variants of one class, e.g. ids4).
    preset: Mapping[str, Any] = field(default_factory=dict)
    # False: trains by interacting with the env (`setup_online`), no dataset (e.g. MAPPO).
    offline: bool = True
    # A second stage: the offline algorithm whose runs this one continues (`marlbench finetune
    # --from`), and whether it starts from a random init instead (the from-scratch baseline).
    continues: str | None = None
    from_scratch: bool = False

    @property
    def config_cls(self) -> type:
        return self.cls.Config

    def uses_state(self, config: Any) -> bool:
        """Whether a run with `config` gives the policy or its training the global state."""
        if self.state_option is not None and hasattr(config, self.state_option):
            return bool(getattr(config, self.state_option))
        return self.uses_global_state


# ---------------------------------------------------------------------------------------------
# Lifecycle (what loggers receive)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggerSpec:
    """An experiment tracker selectable with ``--log NAME``.

    The plugin that offers it also implements the lifecycle hooks and acts on a run only when
    its name is selected (`marlbench.loggers.selected`). `requires` are the modules it imports;
    when one is missing, ``--log NAME`` fails before any work with one line naming `extra`.
    """

    name: str
    description: str
    requires: tuple[str, ...] = ()
    extra: str | None = None  # the pip extra that installs `requires` (marlbench[EXTRA])


@dataclass(frozen=True)
class RunContext:
    """Read-only view of a run passed to lifecycle hooks (the runner builds it)."""

    algo: str
    env: str
    dataset: str
    seed: int
    out_dir: Any  # pathlib.Path of the run's (staging) folder
    config: Mapping[str, Any]


# ---------------------------------------------------------------------------------------------
# Helpers for algorithm plugins (torch), imported on first use: by name, so that this module
# imports none of the modules that build on it (marlbench.policies subclasses Policy)
# ---------------------------------------------------------------------------------------------

_HELPERS = {
    **dict.fromkeys(("ActionSampler", "FixedNormalizer", "agent_inputs", "agent_one_hot",
                     "choice_mask", "mask_logits", "mlp", "optimizer_step",
                     "return_to_go_scale", "select_actions", "target_return"), "marlbench.nn"),
    **dict.fromkeys(("FeedForwardPolicy", "soft_update"), "marlbench.policies"),
    "validate_config": "marlbench.config",
}


def __getattr__(name: str) -> Any:
    if name not in _HELPERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_HELPERS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HELPERS})
