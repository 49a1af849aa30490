import json

import pytest
import torch

pytest.importorskip("nni")

from conftest import tiny_space  # noqa: E402
from ersam_ssl import config as config_io  # noqa: E402
from ersam_ssl.hw import count_macs  # noqa: E402
from ersam_ssl.models import build_model  # noqa: E402
from ersam_ssl.nas.config import BudgetConfig, SearchConfig, StrategyConfig  # noqa: E402
from ersam_ssl.nas.evaluate import SubnetEvaluator, calibration_indices, feature_batches  # noqa: E402
from ersam_ssl.nas.nni_space import build_model_space, label_choices, sample_to_arch  # noqa: E402
from ersam_ssl.nas.search import make_cost_model  # noqa: E402
from ersam_ssl.nas.strategies import run_multi_trial  # noqa: E402
from ersam_ssl.nas.supernet import ElasticSAM  # noqa: E402

pytestmark = pytest.mark.nas

TINY = tiny_space()
NUM_SAMPLES = 8000


def _macs(arch: dict, num_classes: int) -> int:
    return count_macs(build_model(arch, num_classes=num_classes, space=TINY), NUM_SAMPLES).macs


@pytest.fixture
def search_parts(small_engine):
    """A random-weight supernet of the tiny space, its evaluator and a MAC budget between the extremes."""
    torch.manual_seed(0)
    num_classes = small_engine.num_classes
    supernet = ElasticSAM(TINY, num_classes=num_classes).eval()
    calibration = [
        f
        for f, _ in feature_batches(
            supernet.frontend, small_engine.pool, calibration_indices(small_engine, 8, 0), 8
        )
    ]
    validation = feature_batches(supernet.frontend, small_engine.val, batch_size=4)
    evaluator = SubnetEvaluator(supernet, calibration, validation, levels=small_engine.levels, mae_weight=0.1)
    budget = (_macs(TINY.smallest(), num_classes) + _macs(TINY.largest(), num_classes)) / 2
    return supernet, evaluator, budget


def _config(out_dir, budget, **search) -> SearchConfig:
    return SearchConfig(
        out_dir=str(out_dir),
        space=TINY.to_dict(),
        budget=BudgetConfig(latency="none", num_samples=NUM_SAMPLES, max_energy_mw=None, max_macs=budget),
        search=StrategyConfig(trials=3, population_size=2, sample_size=1, **search),
    )


def _without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("eval_s", "index")}


def test_local_training_service_gives_the_sequential_engines_records(tmp_path, small_engine, search_parts):
    supernet, evaluator, budget = search_parts
    local_cfg = _config(tmp_path / "local", budget, training_service="local", trial_concurrency=2)
    cost_model = make_cost_model(local_cfg, small_engine.num_classes)
    local, local_rejected = run_multi_trial(supernet, evaluator, cost_model, local_cfg, tmp_path / "local")

    sequential_cfg = _config(tmp_path / "sequential", budget)
    sequential, _ = run_multi_trial(supernet, evaluator, cost_model, sequential_cfg, tmp_path / "sequential")

    assert len(local) == 3 and [r["index"] for r in local] == [0, 1, 2]
    assert all(r["source"] == "evolution" and r["within_budget"] and r["macs"] <= budget for r in local)
    assert all(r["macs"] > budget for r in local_rejected)
    assert {tuple(r) for r in local} == {tuple(r) for r in sequential}  # the same keys in the same order
    # Same seed, same space order: the random initial population (submitted first) is the same members.
    assert [r["arch"] for r in local[:2]] == [r["arch"] for r in sequential[:2]]
    by_arch = {json.dumps(r["arch"], sort_keys=True): r for r in sequential}
    for record in local:
        reference = by_arch.get(json.dumps(record["arch"], sort_keys=True))
        if reference is not None:  # evaluated in a trial process and in this one: identical
            assert _without_timing(record) == _without_timing(reference)
        # and what this process's evaluator gives for the member (cached or not)
        direct = evaluator(record["arch"])
        assert {k: record[k] for k in direct if k != "eval_s"} == {
            k: v for k, v in direct.items() if k != "eval_s"
        }
        assert record["eval_s"] > 0

    nni_dir = tmp_path / "local" / "nni"
    manifest = json.loads((nni_dir / "nni-experiments" / ".experiment").read_text())
    assert [e["status"] for e in manifest.values()] == ["STOPPED"]
    inputs = tmp_path / "local" / "trial_inputs"
    assert {p.name for p in inputs.iterdir()} == {"supernet.pt", "features.pt", "evaluator.json"}


def test_trial_inputs_rebuild_the_evaluator_and_the_trial_reports_its_metrics(
    tmp_path, monkeypatch, search_parts
):
    from ersam_ssl.nas import trial

    supernet, evaluator, _ = search_parts
    trial.write_trial_inputs(evaluator, tmp_path)
    rebuilt = trial.load_trial_evaluator(str(tmp_path))
    assert rebuilt.levels == evaluator.levels and rebuilt.mae_weight == evaluator.mae_weight
    for a, b in zip(rebuilt.validation, evaluator.validation):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

    choices = trial.choices_of(build_model_space(supernet))
    assert {k: sorted(v) for k, v in choices.items()} == {
        k: sorted(v) for k, v in label_choices(TINY).items()
    }
    space = trial.ChoiceSpace(choices)
    assert trial.choices_of(space) == choices  # same labels, choices and order as the real space
    sample = {label: values[-1] for label, values in choices.items()}
    reported = []
    monkeypatch.setattr(trial.nni, "report_final_result", reported.append)
    trial.evaluate_trial(trial.FrozenSample(sample), str(tmp_path))
    expected = evaluator(sample_to_arch(sample, TINY))
    (report,) = reported
    assert report["default"] == expected["score"]
    assert {k: v for k, v in report.items() if k not in ("default", "eval_s")} == {
        k: v for k, v in expected.items() if k != "eval_s"
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"training_service": "slurm"}, "search.training_service='slurm'"),
        ({"trial_concurrency": 0}, "must be at least 1"),
        ({"trial_concurrency": 2}, "needs search.training_service=local or remote"),
        ({"strategy": "proxyless", "training_service": "local"}, "one-shot"),
        ({"training_service": "remote"}, "needs search.machines"),
        ({"machines": ({"host": "a", "user": "b"},)}, "only used with search.training_service=remote"),
        ({"training_service": "remote", "machines": ({"host": "a"},)}, r"machines\[0\].user: required"),
        (
            {"training_service": "remote", "machines": ({"host": "a", "user": "b", "pasword": "x"},)},
            r"unknown keys \['pasword'\]",
        ),
        ({"training_service": "remote", "machines": ("a",)}, "expected a mapping"),
        ({"training_service": "local", "nni_port": 70000}, "search.nni_port=70000"),
    ],
)
def test_invalid_training_service_settings_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        StrategyConfig(**fields).validate()


def test_training_service_is_chosen_by_overrides_only(tmp_path):
    preset = tmp_path / "search.yaml"
    preset.write_text(
        "search:\n  training_service: remote\n  machines:\n    - {host: 10.0.0.5, user: alice, port: 2222}\n"
    )
    cfg = config_io.load(SearchConfig, preset, ["search.trial_concurrency=3"])
    cfg.validate()
    assert cfg.search.machines == ({"host": "10.0.0.5", "user": "alice", "port": 2222},)
    assert cfg.search.trial_concurrency == 3
    local = config_io.load(
        SearchConfig, None, ["search.training_service=local", "search.trial_concurrency=2"]
    )
    assert (local.search.training_service, local.search.trial_concurrency) == ("local", 2)
    with pytest.raises(ValueError, match="needs search.training_service"):
        config_io.load(SearchConfig, None, ["search.trial_concurrency=2"])
    assert SearchConfig().search.training_service == "sequential"  # the default stays in-process


def test_remote_machines_become_an_nni_remote_config(tmp_path, monkeypatch):
    # Only the construction is tested: running remote trials needs a second machine reachable over SSH.
    from nni.experiment.config import RemoteConfig

    from ersam_ssl.nas.nni_experiment import experiment_config

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    key = tmp_path / ".ssh" / "id_ed25519"
    key.write_text("not a real key")
    search = StrategyConfig(
        training_service="remote",
        trial_concurrency=3,
        machines=(
            {
                "host": "10.0.0.5",
                "user": "alice",
                "ssh_key_file": "~/.ssh/id_ed25519",
                "python_path": "/opt/v/bin",
            },
            {"host": "10.0.0.6", "user": "bob", "port": 2222, "password": "secret"},
        ),
        nni_manager_ip="10.0.0.1",
    )
    search.validate()
    config = experiment_config(tmp_path / "nni", 7, search)
    with pytest.warns(UserWarning, match="SSH password"):  # NNI's own validation (key file must exist, ...)
        canonical = config.canonical_copy()
    service = canonical.training_service
    assert isinstance(service, RemoteConfig)
    first, second = service.machine_list
    assert (first.host, first.user, first.port, first.python_path) == ("10.0.0.5", "alice", 22, "/opt/v/bin")
    assert first.ssh_key_file == str(key)
    assert (second.host, second.user, second.port, second.password) == ("10.0.0.6", "bob", 2222, "secret")
    assert second.ssh_key_file is None  # a password replaces the key
    assert canonical.trial_command == "python3 -m nni.nas.execution.training_service trial"
    assert canonical.execution_engine.name == "ts" and canonical.model_format.name == "simplified"
    assert (canonical.trial_concurrency, canonical.max_trial_number) == (3, 7)
    assert service.nni_manager_ip == "10.0.0.1"
    assert canonical.experiment_working_directory == str(tmp_path / "nni")

    local = experiment_config(
        tmp_path / "nni", 3, StrategyConfig(training_service="local", trial_concurrency=2)
    )
    canonical = local.canonical_copy()
    assert canonical.training_service.platform == "local" and canonical.trial_concurrency == 2
    assert canonical.trial_command.endswith("-m nni.nas.execution.training_service trial")


def test_reports_are_matched_to_samples_by_the_reported_parameter_id():
    # NNI 3.0's local training service can list a job with another job's parameters when trials run
    # concurrently (microsoft/nni#5693): the parameter id a trial reports under is what identifies the member.
    import nni
    from nni.experiment.data import TrialJob
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.space import SimplifiedModelSpace

    from ersam_ssl.nas import trial

    choices = {"a": ["x", "y"], "b": ["1", "2", "3"]}
    space = SimplifiedModelSpace.from_model(
        trial.ChoiceSpace(choices), FunctionalEvaluator(trial.evaluate_trial, inputs="unused")
    )
    samples = [{"a": "x", "b": "3"}, {"a": "y", "b": "1"}, {"a": "y", "b": "2"}]

    def job(job_id, status, listed_parameter, reported_parameter, score):
        listed = {
            "parameter_id": listed_parameter,
            "parameter_source": "algorithm",
            "parameters": json.loads(nni.dump(space.freeze(samples[listed_parameter]))),
            "parameter_index": 0,
        }
        finals = []
        if reported_parameter is not None:
            report = {"default": score, "score": score, "accuracy": score / 2}
            finals.append(
                {
                    "timestamp": 0,
                    "trialJobId": job_id,
                    "parameterId": str(reported_parameter),
                    "type": "FINAL",
                    "sequence": 0,
                    "data": json.dumps(json.dumps(report)),
                }
            )
        return TrialJob(
            job_id, status, 0, listed_parameter, hyperParameters=[json.dumps(listed)], finalMetricData=finals
        )

    jobs = [
        job("J1", "SUCCEEDED", 1, 0, 0.5),
        job("J0", "SUCCEEDED", 0, 1, 0.25),
        job("J2", "FAILED", 2, None, 0),
    ]
    reports, silent = trial.trial_reports(jobs)
    assert reports == [
        (samples[0], {"score": 0.5, "accuracy": 0.25}),
        (samples[1], {"score": 0.25, "accuracy": 0.125}),
    ]
    assert [j.trialJobId for j in silent] == ["J2"]
