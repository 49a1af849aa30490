"""Configuration of a hardware-aware search run (``ersam-ssl search``): one frozen dataclass tree.

Every field has its default here; a YAML preset holds only differences and ``key=value`` overrides use
dotted paths (``budget.max_latency_ms=5``, ``data.labels_per_class=5``, ``supernet.steps=100``).

Scaling the multi-trial search out is a config change only (:class:`StrategyConfig`)::

    ersam-ssl search search.training_service=local search.trial_concurrency=2
    ersam-ssl search --config search.yaml   # with, in search.yaml:
        search:
          training_service: remote
          trial_concurrency: 4
          trial_dir: /shared/nas/trial_inputs      # a path every machine sees (e.g. NFS)
          machines:
            - {host: 10.0.0.5, user: alice, ssh_key_file: ~/.ssh/id_ed25519, python_path: /opt/venv/bin}
            - {host: 10.0.0.6, user: alice, ssh_key_file: ~/.ssh/id_ed25519, python_path: /opt/venv/bin}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ersam_ssl.data import DataConfig
from ersam_ssl.models import SAMSpace
from ersam_ssl.ssl.distill import DistillConfig
from ersam_ssl.trainer import TrainerConfig

STRATEGIES = ("evolution", "random", "proxyless")
TRAINING_SERVICES = ("sequential", "local", "remote")
# The fields of NNI's RemoteMachineConfig (kept here: this module must not import NNI).
MACHINE_KEYS = (
    "host",
    "port",
    "user",
    "password",
    "ssh_key_file",
    "ssh_passphrase",
    "python_path",
    "use_active_gpu",
    "max_trial_number_per_gpu",
    "gpu_indices",
)


@dataclass(frozen=True)
class SupernetConfig:
    """Sandwich-rule supernet training (BigNAS): see :class:`~ersam_ssl.nas.supernet.SupernetModule`.

    Attributes:
        steps: optimizer steps (0: use the initial weights as they are).
        num_random_subnets: random members per step besides the largest and the smallest.
        ce_weight / kd_weight / kd_temperature: the members' label loss and in-place distillation (from the
            largest member).
        distill: distillation of the largest member from the external teacher (``SearchConfig.teacher``):
            the :class:`~ersam_ssl.ssl.DistillConfig` of the ``distill`` training method (temperature, label
            and KD weights, the uncertainty policy: the teacher's entropy as in ERSAM, MC dropout or none).
        lr / weight_decay / warmup_frac: AdamW with linear warm-up and cosine decay.
        batch_size / unlabeled_batch_size: clips per step (0: the data config's sizes).
        labeled_view / unlabeled_view: augmentation views of the two loaders (``data="pool"``).
        data: ``"stream"`` trains (and fine-tunes the chosen member) on fresh randomized-domain mixtures
            with exact counts (:mod:`ersam_ssl.data.stream`), so the searched model keeps the teacher's
            robustness across domains; ``"pool"`` on the few-label pool (labeled + unlabeled clinical clips).
        val_every_steps: validate the largest member every N steps (0: at the end only).
        calib_batches: recent training batches used to recalibrate BatchNorm before validation.
    """

    steps: int = 300
    num_random_subnets: int = 2
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    distill: DistillConfig = field(default_factory=DistillConfig)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.05
    batch_size: int = 16
    unlabeled_batch_size: int = 32
    labeled_view: str = "weak"
    unlabeled_view: str = "identity"
    data: str = "stream"
    val_every_steps: int = 0
    calib_batches: int = 4


@dataclass(frozen=True)
class BudgetConfig:
    """Hardware budgets and how costs are computed (:class:`~ersam_ssl.hw.CostModel`).

    Attributes:
        profile: device profile for energy (``avg_power_mw``: ERSAM's mW·12 h).
        latency: ``"lut"`` (per-op table measured on this CPU, corrected by a fit on measured members;
            kept per machine and reused, :func:`~ersam_ssl.hw.sam_latency_predictor`), ``"measure"``
            (time every member) or ``"none"``.
        max_latency_ms / max_energy_mw / max_macs: budgets (``None``: unconstrained). The default energy
            budget, 0.75 mW on the Pixel 3 model (one 5 s window every 5 s), admits about 14 M MACs per
            window, of which the log-mel frontend takes 10 M; the largest member needs 1.0 mW.
        num_samples: samples per inference window (80000 = 5 s at 16 kHz).
        threads / warmup / repeats: latency measurement settings.
    """

    profile: str = "pixel3"
    latency: str = "lut"
    max_latency_ms: float | None = None
    max_energy_mw: float | None = 0.75
    max_macs: float | None = None
    num_samples: int = 80000
    threads: int = 1
    warmup: int = 3
    repeats: int = 10

    def limits(self) -> dict[str, float | None]:
        """``{cost metric: budget}`` (``None``: unconstrained); metrics are keys of ``CostModel.cost``.

        The one place that says which cost each budget limits.
        """
        return {"latency_ms": self.max_latency_ms, "avg_power_mw": self.max_energy_mw, "macs": self.max_macs}

    def validate(self) -> None:
        if self.latency not in ("lut", "measure", "none"):
            raise ValueError(f"budget.latency={self.latency!r}: choose lut, measure or none")
        if self.max_latency_ms is not None and self.latency == "none":
            raise ValueError("budget.max_latency_ms needs budget.latency=lut or measure")


# The costs a budget can limit (and the proxyless penalty can use), in BudgetConfig.limits' order.
COST_METRICS = tuple(BudgetConfig().limits())


@dataclass(frozen=True)
class StrategyConfig:
    """Multi-trial search with inherited weights (NNI ``RegularizedEvolution`` or ``Random``).

    Attributes:
        strategy: ``evolution``, ``random`` or ``proxyless`` (one-shot, :class:`ProxylessConfig`).
        trials: members evaluated (over-budget members are filtered before evaluation and not counted).
        population_size / sample_size / mutation_prob: regularized (aging) evolution, Real et al. 2019.
        calib_batches / calib_batch_size: training clips for BatchNorm recalibration of every member.
        mae_weight: the search maximises ``accuracy - mae_weight * MAE`` on the validation set.
        max_filtered: stop after this many consecutive over-budget candidates.
        training_service: where trials run (:mod:`ersam_ssl.nas.trial`): ``sequential`` (in this process,
            one after another), ``local`` (NNI's local training service: every trial is a separate process
            on this machine, managed by the NNI manager) or ``remote`` (NNI's remote training service:
            trials run over SSH on ``machines``). A member gets the same metrics everywhere; with
            ``trial_concurrency > 1`` evolution may visit other members (results arrive in another order).
        trial_concurrency: trials running at once (``local`` / ``remote`` only).
        trial_dir: where trial processes read their inputs (supernet weights, feature batches);
            ``None``: ``<out_dir>/trial_inputs``. For ``remote`` it must be a path that every machine sees
            (a shared file system mounted at the same path).
        machines: remote machines, each a mapping of NNI ``RemoteMachineConfig`` fields (``host``, ``user``,
            ``port``, ``ssh_key_file``, ``python_path``, ...). Trials run ``python3`` found on the machine's
            ``PATH`` after ``python_path``; that environment needs ``ersam_ssl`` with its ``nas`` extras.
            Prefer SSH keys: the resolved config (``config.yaml``) holds these mappings as given.
        nni_port: port of the NNI manager (``remote`` also uses the next one); ``None``: a free port.
        nni_manager_ip: address remote machines use to reach this one (``None``: NNI detects it).
    """

    strategy: str = "evolution"
    trials: int = 100
    population_size: int = 20
    sample_size: int = 5
    mutation_prob: float = 0.15
    calib_batches: int = 4
    calib_batch_size: int = 32
    mae_weight: float = 0.1
    max_filtered: int = 2000
    training_service: str = "sequential"
    trial_concurrency: int = 1
    trial_dir: str | None = None
    machines: tuple[dict, ...] = ()
    nni_port: int | None = None
    nni_manager_ip: str | None = None

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"search.strategy={self.strategy!r}: choose one of {STRATEGIES}")
        if self.training_service not in TRAINING_SERVICES:
            raise ValueError(
                f"search.training_service={self.training_service!r}: choose one of {TRAINING_SERVICES}"
            )
        if self.trial_concurrency < 1:
            raise ValueError(f"search.trial_concurrency={self.trial_concurrency}: must be at least 1")
        if self.training_service == "sequential" and self.trial_concurrency != 1:
            raise ValueError(
                f"search.trial_concurrency={self.trial_concurrency} needs search.training_service=local or "
                "remote: the sequential engine runs one trial at a time"
            )
        if self.strategy == "proxyless" and self.training_service != "sequential":
            raise ValueError(
                "search.strategy=proxyless is one-shot and trains in this process: "
                "use search.training_service=sequential"
            )
        if self.training_service == "remote" and not self.machines:
            raise ValueError("search.training_service=remote needs search.machines (host, user, ...)")
        if self.machines and self.training_service != "remote":
            raise ValueError("search.machines is only used with search.training_service=remote")
        for i, machine in enumerate(self.machines):
            if not isinstance(machine, dict):
                raise ValueError(f"search.machines[{i}]: expected a mapping, got {machine!r}")
            unknown = sorted(set(machine) - set(MACHINE_KEYS))
            if unknown:
                raise ValueError(f"search.machines[{i}]: unknown keys {unknown}; known: {list(MACHINE_KEYS)}")
            for key in ("host", "user"):
                if not isinstance(machine.get(key), str) or not machine[key]:
                    raise ValueError(f"search.machines[{i}].{key}: required (a non-empty string)")
        if self.nni_port is not None and not 0 < self.nni_port < 65535:
            raise ValueError(f"search.nni_port={self.nni_port}: choose a port in 1..65534")


@dataclass(frozen=True)
class ProxylessConfig:
    """One-shot search with NNI ``Proxyless`` and an expected-hardware-cost penalty.

    Attributes:
        steps: training steps (each: one architecture step on a validation batch, one weight step).
        arc_lr / weight_lr: learning rates of the architecture weights and of the supernet weights.
        penalty_metric: cost in the penalty (``latency_ms``, ``avg_power_mw``, ``macs``).
        penalty_scale: weight of the penalty; ``penalty_baseline`` (``None``: that metric's budget).
        samples: members drawn from the learned distribution and evaluated besides the most likely one.
        batch_size: clips per step.
    """

    steps: int = 200
    arc_lr: float = 0.05
    weight_lr: float = 1e-4
    penalty_metric: str = "avg_power_mw"
    penalty_scale: float = 1.0
    penalty_baseline: float | None = None
    samples: int = 8
    batch_size: int = 32

    def validate(self) -> None:
        if self.penalty_metric not in COST_METRICS:
            raise ValueError(
                f"proxyless.penalty_metric={self.penalty_metric!r}: choose one of {COST_METRICS}"
            )


@dataclass(frozen=True)
class SubnetFinetuneConfig:
    """Short supervised fine-tuning of the chosen member (inherited weights) on the labeled clips.

    The fine-tuned weights are kept only if they do not lower the validation score. (Not to be confused
    with :class:`ersam_ssl.ssl.FinetuneConfig`, the schedule of the ``finetune`` training method.)
    """

    steps: int = 100
    lr: float = 3e-4
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export of the chosen member, int8 quantization and checks against PyTorch.

    Attributes:
        enabled: export at all.
        quantize: ``dynamic`` (int8 weights, activations quantized at run time), ``static`` (QDQ with
            calibration on training clips) or ``none``.
        calib_clips: training clips for static calibration.
        quantize_frontend: also quantize the STFT/mel frontend (default: it stays fp32).
        max_abs_diff: largest allowed |ONNX fp32 - PyTorch| of the raw outputs on the test set.
        repeats: latency repeats (one thread) for PyTorch, and rounds of the interleaved ONNX Runtime timing.
    """

    enabled: bool = True
    quantize: str = "dynamic"
    calib_clips: int = 64
    quantize_frontend: bool = False
    max_abs_diff: float = 1e-3
    repeats: int = 30

    def validate(self) -> None:
        if self.quantize not in ("dynamic", "static", "none"):
            raise ValueError(f"export.quantize={self.quantize!r}: choose dynamic, static or none")


@dataclass(frozen=True)
class SearchConfig:
    """A whole search run: data, space, supernet training, search, fine-tuning and export.

    Attributes:
        out_dir: every output goes here (also NNI's experiment directory).
        init: checkpoint / model file of a trained largest-arch counter to initialise the supernet from
            (e.g. the fine-tuned result of semi-supervised training); ``None``: random initialisation.
        teacher: checkpoint / model file of an external teacher for uncertainty-weighted distillation.
        supernet_checkpoint: a trained supernet (``supernet.pt``) to search directly (skips training).
        space: fields of :class:`~ersam_ssl.models.SAMSpace` that differ from its defaults, e.g.
            ``space.kernels=[3,5]``; :attr:`sam_space` is the resulting space.
        head / n_mels / level_norm: count head, mel bands and input level normalisation of every member
            (see :func:`~ersam_ssl.models.build_model`).
    """

    out_dir: str = "runs/search"
    seed: int = 0
    init: str | None = None
    teacher: str | None = None
    supernet_checkpoint: str | None = None
    head: str = "classify"
    n_mels: int = 64
    level_norm: str = "clip"
    data: DataConfig = field(default_factory=DataConfig)
    space: dict = field(default_factory=dict)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    search: StrategyConfig = field(default_factory=StrategyConfig)
    proxyless: ProxylessConfig = field(default_factory=ProxylessConfig)
    finetune: SubnetFinetuneConfig = field(default_factory=SubnetFinetuneConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(checkpoint_every_steps=50))

    @property
    def sam_space(self) -> SAMSpace:
        return SAMSpace.from_dict({**SAMSpace().to_dict(), **self.space})

    def validate(self) -> None:
        try:
            self.sam_space  # noqa: B018 - builds (and so checks) the space
        except TypeError as e:
            raise ValueError(f"space: {e}") from e
        self.data.validate()
        self.budget.validate()
        self.search.validate()
        self.proxyless.validate()
        self.export.validate()
        try:
            self.supernet.distill.validate()
        except ValueError as e:
            raise ValueError(f"supernet.distill.{e}") from e
        if self.supernet.data not in ("stream", "pool"):
            raise ValueError(f"supernet.data={self.supernet.data!r}: choose stream or pool")
