"""Every place visionlab leans on another library's internals (a name with a leading underscore), each with its reason.

Two kinds. Speed-ups, which `VL_NO_PATCHES=1` in the environment turns off: the libraries then
behave as released, only slower. And reads of internals that have no public equivalent (OmegaConf's
stored nodes, Optuna's trial ids, the Hydra Optuna sweeper's steps), which the switch leaves on: without
them there is no released behaviour to fall back on. tests/test_patches.py fails if a library changes
under any of them, and if a private name of another library is used anywhere else in src/.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn
from unittest import mock

import torch
from hydra._internal.hydra import Hydra
from hydra.types import RunMode
from torch.optim import optimizer as torch_optimizer  # its module, which torch.optim's namespace does not keep

if TYPE_CHECKING:
    from omegaconf import DictConfig

ENABLED = os.environ.get("VL_NO_PATCHES", "") in ("", "0")
_COMPOSE_FOR_MODE = Hydra.get_mode


@contextlib.contextmanager
def skip_hydra_mode_compose() -> Iterator[None]:
    """Hydra's `get_mode` composes the whole config once more just to read `hydra.mode`, at every start.

    conf/ never sets hydra.mode (tests/test_configs.py checks), so only a hydra.mode=... on the
    command line can; without one, -m or its absence decides, as in Hydra. Patched for the launch only,
    so that a notebook's process keeps Hydra as released.
    """
    if not ENABLED:
        yield
        return
    with mock.patch.object(Hydra, "get_mode", _mode_from_command_line):
        yield


def _mode_from_command_line(self: Hydra, config_name: str | None, overrides: list[str]) -> RunMode | None:
    if any(override.lstrip("+~").startswith("hydra.mode") for override in overrides):
        return _COMPOSE_FOR_MODE(self, config_name, overrides)
    return None


def exit_without_teardown(code: int | str | None, single_run: bool) -> NoReturn:
    """Exit as `sys.exit(code)` would, minus Python's teardown of every loaded module (long with torch loaded).

    The atexit handlers still run (logging's flush and close, the sweep report); the run's own
    files (checkpoints, metrics.json, TensorBoard events) are closed by then. Only a single run
    exits so: a sweep's launchers shut down pools and threads in the normal exit's order, and under a
    profiler, debugger or coverage tool the exit is the normal one, so that they can write results.
    """
    other_threads = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if not ENABLED or not single_run or other_threads or sys.getprofile() or sys.gettrace():
        sys.exit(code)
    if isinstance(code, str):
        print(code, file=sys.stderr)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if isinstance(code, str) else code or 0)


@contextlib.contextmanager
def unchecked_trace() -> Iterator[None]:
    """TensorBoard's add_graph traces with `check_trace=True`, which runs the model twice more to compare outputs:
    nearly all of the graph picture's cost, paid at every run's start (BENCHMARKS.md, "Speed"). A picture needs
    no check.
    """
    if not ENABLED:
        yield
        return
    with mock.patch.object(torch.jit, "trace", functools.partial(torch.jit.trace, check_trace=False)):
        yield


@contextlib.contextmanager
def no_exit_barrier() -> Iterator[None]:
    """torch's elastic agent, once its ranks have ended, waits at a barrier for every other node's agent
    (`_exit_barrier`, up to 5 minutes), which an agent stopped by a signal never reaches: a run stopped from node 1
    would end on node 0 5 minutes later, in C++ log lines of a store's timeout. A visionlab run's ranks agree on how
    it ends (training/distributed.py), so each node's agent ends with its own ranks, for the launch only. Left on
    by VL_NO_PATCHES: LaunchConfig has no setting for the barrier.
    """
    from torch.distributed.elastic.agent.server.api import SimpleElasticAgent

    with mock.patch.object(SimpleElasticAgent, "_exit_barrier", lambda agent: None):
        yield


# torch._compile's wrapper that keeps torch.compile out of a function, and the optimizers' step wrapper that sets
# the grad mode between graph breaks: each imports torch._dynamo at its first call (torch.optim.optimizer).
_DYNAMO_DISABLED = torch._disable_dynamo(lambda: None).__code__
_STEP_BETWEEN_GRAPH_BREAKS = torch_optimizer._use_grad_for_differentiable(lambda: None).__code__
_DISABLED_CACHE = "__dynamo_disable"  # where the wrapper keeps its disabled function after the first call


@contextlib.contextmanager
def eager_without_dynamo() -> Iterator[None]:
    """torch's optimizers (their construction, zero_grad, step, state_dict), its reference ops and dispatch modes (the
    FLOP counter of the memory check and the layer table) and DDP's forward import torch._dynamo at their first call,
    to keep torch.compile from tracing into them: seconds at the start of every run that trains, compiling or not.

    While torch._dynamo is not loaded nothing is being compiled, so inside this block they call what they wrap,
    with the grad mode torch's step sets; once anything loads it (`trainer.compile`, torchvision's models) they
    take torch's own path again. What is loaded when the block starts is covered (enter it again after importing
    more); on leaving it torch is as released.
    """
    if not ENABLED or "torch._dynamo" in sys.modules:
        yield
        return
    shimmed = [
        _called_directly_until_dynamo_loads(disabled)
        for disabled in gc.get_referrers(_DYNAMO_DISABLED)  # every function torch wrapped so, wherever it is kept
        if isinstance(disabled, types.FunctionType) and not hasattr(_closed_over(disabled, "fn"), _DISABLED_CACHE)
    ]
    with contextlib.ExitStack() as restore:
        for optimizer in _with_subclasses(torch.optim.Optimizer):
            if (between := _step_between_graph_breaks(vars(optimizer).get("step"))) is not None:
                restore.enter_context(mock.patch.object(optimizer, "step", _eager_step(between)))
        try:
            yield
        finally:
            for function, shim in shimmed:
                if getattr(function, _DISABLED_CACHE, None) is shim:
                    delattr(function, _DISABLED_CACHE)


def _with_subclasses(cls: type) -> list[type]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _with_subclasses(direct))]


def _called_directly_until_dynamo_loads(disabled: Callable[..., Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Puts a shim where torch's wrapper `disabled` looks for its cached disabled function: it calls the wrapped
    function directly while torch._dynamo is unloaded, and hands back to the wrapper once it is loaded."""
    function = _closed_over(disabled, "fn")

    def shim(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:
            return function(*args, **kwargs)
        if getattr(function, _DISABLED_CACHE, None) is shim:
            delattr(function, _DISABLED_CACHE)
        return disabled(*args, **kwargs)

    setattr(function, _DISABLED_CACHE, shim)
    return function, shim


def _closed_over(wrapper: Callable[..., Any], name: str) -> Any:
    """What torch's `wrapper` closes over as `name`: the function it wraps, which its `__wrapped__` does not always
    name (torch._refs' elementwise ops rename theirs)."""
    return wrapper.__closure__[wrapper.__code__.co_freevars.index(name)].cell_contents


def _step_between_graph_breaks(step: Any) -> Callable[..., Any] | None:
    """The optimizer's step as wrapped by `_use_grad_for_differentiable`, under torch's profiler hook if an
    optimizer of its class was built already; None for a step without it (ours, a subclass's own)."""
    while step is not None and getattr(step, "__code__", None) is not _STEP_BETWEEN_GRAPH_BREAKS:
        step = getattr(step, "__wrapped__", None)
    return step


def _eager_step(between: Callable[..., Any]) -> Callable[..., Any]:
    step = _closed_over(between, "func")

    @functools.wraps(step)
    def eager_step(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" in sys.modules:
            return between(self, *args, **kwargs)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return step(self, *args, **kwargs)

    return eager_step


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX): `trainer.precision=auto` asks.

    torch's only public answer is oneDNN's `_is_mkldnn_bf16_supported`, which also says yes for plain
    AVX-512, where bf16 is emulated and slower than float32 (docs/speed.md, "On a CPU: experiment=cifar10_fast").
    Off (VL_NO_PATCHES=1): no, so auto means float32.
    """
    return ENABLED and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def stored_node(node: DictConfig, key: Any) -> Any:
    """`node`'s child at `key` as stored, unresolved: what a walk over a config's nodes needs
    (config.check_arguments, checks.check_targets).

    `node[key]` resolves an interpolation (a `${hydra:...}` fails outside a run; `${other}` hands back the
    node it points to, which the walk reaches in its own place) and fails on a mandatory `???` value.
    OmegaConf's public accessors all resolve; its `_get_node` does not.
    """
    return node._get_node(key)


def optuna_trial(study: Any, number: int) -> Any:
    """Trial `number` of `study`, to report to and ask the pruner from a job that did not `ask()` for it.

    A search's job runs in its own process (a launcher's worker, a SLURM node) and knows its trial by
    number only (visionlab.trial_pruning); Optuna hands out `Trial` objects only from `ask()`. The
    study's storage maps the number to the trial's id, which needs the study's `_storage` and `_study_id`.
    """
    import optuna  # slow to import: only searches pay for it

    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


def stored_trial(trial: Any) -> Any:
    """`trial` as its study's storage holds it now (a `FrozenTrial`: state, reported values), whichever
    process wrote it: a job marks its own trial pruned, a later launch marks a stopped one failed.

    `Trial` keeps its storage id private (`_trial_id`); `study.trials` would read every trial.
    """
    return trial.storage.get_trial(trial._trial_id)


def enqueued_values(trial: Any) -> dict[str, Any]:
    """The parameter values `study.enqueue_trial` fixed for `trial` (none for a sampled trial), as the
    storage holds them: Optuna keeps them in the trial's system attribute `fixed_params`, by its private id."""
    return trial.storage.get_trial_system_attrs(trial._trial_id).get("fixed_params", {})


def distribution_holds(distribution: Any, value: Any) -> bool:
    """Whether an Optuna distribution can take `value` (an enqueued trial's, from a storage that may be
    someone else's). Distributions answer that only privately, `_contains` on their internal representation."""
    try:
        return distribution._contains(distribution.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def searched_parameters(search: Any, arguments: list[str]) -> set[str]:
    """The parameters a Hydra Optuna search samples: its config's `params` and the command line's sweeps
    (`x=interval(...)`, `x=choice(...)`, `x=a,b`). The sweeper (`search`, its `OptunaSweeperImpl`) parses
    both only privately: `_parse_sweeper_params_config` and `_impl.create_params_from_overrides`.
    """
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    return set(create_params_from_overrides([*search._parse_sweeper_params_config(), *arguments])[0])


def study_directions(search: Any) -> list[Any]:
    """The directions a Hydra Optuna search optimizes (`hydra.sweeper.direction`), as `optuna.create_study`
    takes them, for a study created before the sweeper's own loop starts; the sweeper computes them privately."""
    return search._get_directions()


def replace_trial_configuration(search: Any, replacement: Callable[..., Any]) -> Callable[..., Any]:
    """Put `replacement` in the place of the Hydra Optuna sweeper's `_configure_trials`, and return that.

    It is the step of the sweeper's loop between asking a batch of trials and launching their jobs,
    the one place that sees both the trials and the jobs' overrides: where a job learns its trial's number.
    """
    configure = search._configure_trials
    search._configure_trials = replacement
    return configure


def cpu_has_vnni() -> bool:
    """Whether this CPU has VNNI, the int8 dot-product instructions that make torch's int8 matrix product
    (`int8_matmul`) faster than a float32 one: kNN's search of 8-bit images asks (models/knn/).

    Without VNNI torch's CPU int8 product is a plain loop, far slower than a float32 matrix product
    (BENCHMARKS.md, "kNN"). torch answers only privately. Off (VL_NO_PATCHES=1): no, so the kNN search
    takes its float32 products, which give the same answers.
    """
    return ENABLED and torch.cpu._is_vnni_supported()


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b of int8 matrices `[m, d]` and `[d, n]`, exactly, as int32: torch's private `_int_mm` (cuBLAS's int8
    product on a GPU, VNNI on a CPU), its only int8 matrix product. Its shape rules are the caller's
    (models/knn/int8_codes.py). Off (VL_NO_PATCHES=1): float64 matrix products, as exact (each sum of
    int8 products is an integer far below 2^53) and slower.
    """
    if not ENABLED:
        return (a.double() @ b.double()).int()
    return torch._int_mm(a, b)
