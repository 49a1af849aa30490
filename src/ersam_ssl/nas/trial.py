"""Multi-trial search on NNI's ``local`` or ``remote`` training service: trials in separate processes.

The sequential engine (:func:`ersam_ssl.nas.strategies.run_multi_trial`) evaluates members in this process with
a closure over the supernet and the cached feature batches. A trial process of the NNI manager sees none of
that: it receives the NNI trial parameters (the frozen sample and the evaluator's small arguments; the
manager's payload limit is about 64 KB). So the main process first writes the trial inputs
(:func:`write_trial_inputs`: supernet weights, BatchNorm-calibration and validation feature batches,
scoring settings), every trial rebuilds the same :class:`~ersam_ssl.nas.evaluate.SubnetEvaluator` from them
(:func:`load_trial_evaluator`) and reports ``{"default": score, **metrics}``
(:func:`evaluate_trial`), and the main process collects the reports from the NNI manager
(:func:`run_on_training_service`). The metrics are those of the sequential engine for the same member.

The strategy samples :class:`ChoiceSpace`, a traceable model space with exactly the labels and choices (in
the same order) of :class:`~ersam_ssl.nas.nni_space.SAMModelSpace`, rebuilt in a trial from its labels
alone; its frozen member is just the sample.

Usage (config only; :class:`~ersam_ssl.nas.config.StrategyConfig`)::

    ersam-ssl search search.training_service=local search.trial_concurrency=2

Remote trials read the trial inputs from ``search.trial_dir``, which must be on a file system every
machine mounts at the same path. NNI also copies the folder the search is started from (its trial code
directory, which NAS fixes to the working directory) to every machine and refuses more than 2000 files
or 300 MB there (``.nniignore`` excludes files): start a remote search from a small folder.

The NNI manager's experiment manifest (which NNI keeps in ``~/nni-experiments``) is kept in the run's NNI
folder, ``<out_dir>/nni/nni-experiments/.experiment``, so a run writes only into its own output folder.
This module imports NNI; :mod:`ersam_ssl.nas.strategies` imports it only when a training service is used.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nni
import torch
from nni.nas.nn.pytorch import ModelSpace

from ersam_ssl.checkpoint import atomic_torch_save
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.fileio import write_json
from ersam_ssl.nas.config import StrategyConfig
from ersam_ssl.nas.evaluate import SubnetEvaluator
from ersam_ssl.nas.nni_experiment import run_experiment
from ersam_ssl.nas.nni_space import sample_to_arch
from ersam_ssl.nas.supernet import ElasticSAM

log = logging.getLogger(__name__)

SUPERNET_FILE = "supernet.pt"
FEATURES_FILE = "features.pt"
EVALUATOR_FILE = "evaluator.json"


# -- trial inputs ----------------------------------------------------------------------------------


def write_trial_inputs(evaluator: SubnetEvaluator, directory: str | Path) -> Path:
    """Write what a trial needs to rebuild ``evaluator``: supernet, feature batches, scoring settings."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    evaluator.supernet.save(directory / SUPERNET_FILE)
    atomic_torch_save(
        {
            "calibration": list(evaluator.calibration),
            "validation": [(features, counts) for features, counts in evaluator.validation],
        },
        directory / FEATURES_FILE,
    )
    levels = evaluator.levels
    settings = {
        "mae_weight": evaluator.mae_weight,
        "levels": None
        if levels is None
        else {"lower_bounds": list(levels.lower_bounds), "names": list(levels.names)},
    }
    write_json(directory / EVALUATOR_FILE, settings)
    return directory


@functools.lru_cache(maxsize=2)
def load_trial_evaluator(directory: str) -> SubnetEvaluator:
    """The :class:`SubnetEvaluator` that :func:`write_trial_inputs` wrote (cached per process)."""
    path = Path(directory)
    supernet = ElasticSAM.load(path / SUPERNET_FILE)
    features = torch.load(path / FEATURES_FILE, map_location="cpu", weights_only=True)
    settings = json.loads((path / EVALUATOR_FILE).read_text())
    levels = settings["levels"]
    return SubnetEvaluator(
        supernet,
        features["calibration"],
        [tuple(batch) for batch in features["validation"]],
        levels=None
        if levels is None
        else AmbianceLevels(tuple(levels["lower_bounds"]), tuple(levels["names"])),
        mae_weight=settings["mae_weight"],
    )


# -- the space the strategy samples and the trial function -----------------------------------------


class FrozenSample:
    """A frozen member of :class:`ChoiceSpace`: only its sample (the weights live in the trial inputs)."""

    def __init__(self, sample: Mapping[str, Any]) -> None:
        self.sample = dict(sample)


class ChoiceSpace(ModelSpace):
    """A traceable NNI model space of labelled categorical choices, rebuilt in a trial from ``choices``.

    Args:
        choices: ``{label: [choice, ...]}`` in the order of the model space it stands for, e.g.
            :func:`choices_of` a :class:`~ersam_ssl.nas.nni_space.SAMModelSpace` (same order: the same
            seed gives a strategy the same samples).
    """

    def __init__(self, choices: dict[str, list]) -> None:
        super().__init__()
        for label, values in choices.items():
            self.add_mutable(nni.choice(label, list(values)))

    @classmethod
    def create_fixed_module(cls, sample: dict, *args: Any, **kwargs: Any) -> FrozenSample:
        # NNI calls this when the space is built inside a trial's model context: the member is its sample.
        return FrozenSample(sample)

    def forward(self, x: Any) -> Any:
        raise RuntimeError("ChoiceSpace only describes choices; evaluate members with evaluate_trial")


def choices_of(model_space: Any) -> dict[str, list]:
    """``{label: choices}`` of a model space whose mutables are all categorical, in NNI's order."""
    from nni.mutable import Categorical

    out = {}
    for label, mutable in model_space.simplify().items():
        if not isinstance(mutable, Categorical):
            raise TypeError(f"{label}: {type(mutable).__name__} is not categorical")
        out[label] = list(mutable.values)
    return out


def evaluate_trial(model: FrozenSample, inputs: str) -> None:
    """NNI trial function: evaluate the member ``model.sample`` and report its metrics.

    Reports ``{"default": score, **metrics}`` (``default`` is what the strategy ranks by).
    """
    evaluator = load_trial_evaluator(inputs)
    arch = sample_to_arch(model.sample, evaluator.supernet.space)
    metrics = evaluator(arch)
    nni.report_final_result({"default": metrics["score"], **metrics})


# -- NNI experiment ----------------------------------------------------------------------------------


def free_port(consecutive: int = 2) -> int:
    """A port that is free here together with the next ``consecutive - 1`` (remote also needs port + 1)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        if port + consecutive > 65536:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for offset in range(1, consecutive):
                    other = stack.enter_context(socket.socket())
                    other.bind(("", port + offset))
        except OSError:
            continue
        return port
    raise RuntimeError("found no free port for the NNI manager")


def trial_reports(jobs: Sequence[Any]) -> tuple[list[tuple[dict, dict]], list[Any]]:
    """``([(sample, metrics)] by parameter id, jobs without a final report)`` of the NNI manager's trial jobs.

    A report is matched to its sample through the parameter id the trial reported it under, not through the
    job that ran it: with several trials at once NNI 3.0's local training service may record a job with
    another job's parameters (microsoft/nni#5693, #5726), while a trial reports the id of the parameters it
    actually received, which is also what NNI's execution engine relies on.
    """
    parameters = {hp.parameter_id: hp.parameters for job in jobs for hp in job.hyperParameters}
    reports: dict[int, dict] = {}
    silent = []
    for job in jobs:
        finals = [m for m in job.finalMetricData if m.type == "FINAL"]
        if job.status != "SUCCEEDED" or not finals:
            silent.append(job)
        for metric in finals:
            if not isinstance(metric.data, dict) or "default" not in metric.data:
                raise RuntimeError(f"trial {job.trialJobId} reported {metric.data!r}, not evaluate_trial's")
            reports[int(metric.parameterId)] = metric.data
    out = []
    for parameter_id in sorted(reports):
        # NNI's own way back from stored trial parameters to the submitted (frozen) model space.
        model = nni.load(nni.dump(parameters[parameter_id]))
        metrics = {k: v for k, v in reports[parameter_id].items() if k != "default"}
        out.append((dict(model.sample), metrics))
    return out, silent


def run_on_training_service(
    supernet: ElasticSAM,
    evaluator: SubnetEvaluator,
    strategy: Any,
    search: StrategyConfig,
    out_dir: Path,
) -> list[tuple[dict, dict]]:
    """Run ``strategy`` with trials on ``search.training_service``; ``[(arch, metrics)]`` by submission.

    ``evaluator`` is written to the trial inputs (``search.trial_dir`` or ``out_dir/trial_inputs``) and
    every trial rebuilds it, so the metrics are the ones ``evaluator(arch)`` gives in this process.
    Failed trials are logged (with their log folders) and left out; if none succeeded this raises.
    """
    from nni.nas.evaluator import FunctionalEvaluator

    from ersam_ssl.nas.nni_space import build_model_space

    inputs = write_trial_inputs(evaluator, search.trial_dir or out_dir / "trial_inputs")
    model_space = ChoiceSpace(choices_of(build_model_space(supernet)))
    trial_evaluator = FunctionalEvaluator(evaluate_trial, inputs=str(inputs.resolve()))
    port = search.nni_port or free_port(2 if search.training_service == "remote" else 1)
    jobs = run_experiment(
        model_space, trial_evaluator, strategy, out_dir / "nni", search.trials, search, port
    )
    reports, failed = trial_reports(jobs)
    for job in failed:
        log.warning("trial %s ended %s without metrics; logs: %s", job.trialJobId, job.status, job.logPath)
    if failed and not reports:
        raise RuntimeError(f"all {len(failed)} trials failed; see the trial logs, e.g. {failed[0].logPath}")
    return [(sample_to_arch(sample, supernet.space), metrics) for sample, metrics in reports]
