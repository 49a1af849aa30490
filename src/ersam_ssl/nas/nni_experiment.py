"""Running an NNI ``NasExperiment`` inside a run's own folder, in this process or on a training service.

:func:`experiment_config` builds the ``NasExperimentConfig`` (``sequential`` in this process, or NNI's
``local`` / ``remote`` training service), :func:`experiment_home` keeps NNI's experiment manifest under the
run's folder and :func:`run_experiment` runs an experiment to completion and always stops it. The
strategies (:mod:`ersam_ssl.nas.strategies`) and the training-service engine (:mod:`ersam_ssl.nas.trial`)
both run their experiments through it.

NNI is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ersam_ssl.nas.config import StrategyConfig


def remote_machines(machines: Sequence[Mapping[str, Any]]) -> list[Any]:
    """NNI ``RemoteMachineConfig`` objects of ``search.machines`` (``~`` expanded in key paths)."""
    from nni.experiment.config import RemoteMachineConfig

    out = []
    for machine in machines:
        fields = dict(machine)
        if fields.get("ssh_key_file"):
            fields["ssh_key_file"] = str(Path(fields["ssh_key_file"]).expanduser())
        out.append(RemoteMachineConfig(**fields))
    return out


def _service(search: StrategyConfig | None) -> str:
    return "sequential" if search is None else search.training_service


def experiment_config(
    directory: str | Path, max_trials: int | None, search: StrategyConfig | None = None
) -> Any:
    """The ``NasExperimentConfig`` of a search in this process (``search`` None or ``sequential``: raw
    models, trials one after the other) or on ``search.training_service`` (``local`` or ``remote``).

    Training-service trials run ``python -m nni.nas.execution.training_service trial``: with this
    interpreter locally, with ``python3`` from each machine's ``PATH`` (after its ``python_path``) remotely.
    """
    from nni.nas.experiment import NasExperimentConfig

    service = _service(search)
    if service == "sequential":
        config = NasExperimentConfig("sequential", "raw")
    elif service in ("local", "remote"):
        assert search is not None
        if service == "local":
            config = NasExperimentConfig("ts", "simplified", "local")
        else:
            from nni.experiment.config import RemoteConfig

            machines = remote_machines(search.machines)
            config = NasExperimentConfig(
                "ts", "simplified", training_service=RemoteConfig(machine_list=machines)
            )
            config._trial_command_params = {"python": "python3"}
        config.trial_concurrency = search.trial_concurrency
        if search.nni_manager_ip is not None:
            config.nni_manager_ip = search.nni_manager_ip
    else:
        raise ValueError(f"no NNI training service for {service!r}")
    config.experiment_working_directory = str(directory)
    if max_trials is not None:
        config.max_trial_number = max_trials
    return config


@contextlib.contextmanager
def experiment_home(directory: Path, *, manager: bool = False) -> Iterator[Path]:
    """Keep NNI's experiment manifest (``~/nni-experiments/.experiment``) under ``directory``; yields the
    folder that holds it.

    Python-side NNI records every run in that manifest through ``Experiments()``, whose default folder is
    fixed to the user's home when NNI is imported; a run should only write into its own output folder. In
    this process (``manager=False``) the manifest is ``directory/.experiment``. With the Node.js NNI manager
    of a training service (``manager=True``), which keeps it in ``$HOME/nni-experiments``, both sides must
    name the same file: the manager (and its local trials) run with ``HOME=directory`` and the Python side
    uses ``directory/nni-experiments``.
    """
    import nni.nas.experiment.experiment as nas_experiment
    from nni.tools.nnictl.config_utils import Experiments

    modules: tuple[Any, ...] = (nas_experiment,)
    home = directory
    launcher: Any = None
    if manager:
        import nni.experiment.experiment as base_experiment
        import nni.experiment.launcher as launcher

        modules = (nas_experiment, launcher, base_experiment)
        home = directory / "nni-experiments"
    home.mkdir(parents=True, exist_ok=True)
    originals = [module.Experiments for module in modules]
    original_popen = launcher.Popen if manager else None
    for module in modules:
        module.Experiments = functools.partial(Experiments, home_dir=str(home))
    if manager:
        launcher.Popen = functools.partial(subprocess.Popen, env={**os.environ, "HOME": str(directory)})
    try:
        yield home
    finally:
        for module, original in zip(modules, originals):
            module.Experiments = original
        if manager:
            launcher.Popen = original_popen


def run_experiment(
    model_space: Any,
    evaluator: Any,
    strategy: Any,
    directory: Path,
    max_trials: int | None,
    search: StrategyConfig | None = None,
    port: int = 8080,
) -> list[Any]:
    """Run ``strategy`` over ``model_space`` to completion with the :func:`experiment_config` of
    ``search`` in ``directory`` (manifest in :func:`experiment_home`), and stop the experiment even when
    it fails.

    Returns:
        The NNI manager's trial jobs on a training service (listed while the manager runs); ``[]`` in this
        process.
    """
    from nni.nas.experiment import NasExperiment

    config = experiment_config(directory, max_trials, search)
    manager = _service(search) != "sequential"
    with experiment_home(directory, manager=manager):
        exp = NasExperiment(model_space, evaluator, strategy, config)
        try:
            exp.run(port=port)
            return exp.list_trial_jobs() if manager else []  # only while the manager runs
        finally:
            exp.stop()
