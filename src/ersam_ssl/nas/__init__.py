"""Hardware-aware neural architecture search over the SAM space (ERSAM, Li et al., ICASSP 2023).

- :mod:`ersam_ssl.nas.supernet` — the once-for-all supernet :class:`ElasticSAM` and its sandwich-rule
  training (:class:`SupernetModule`, BigNAS);
- :mod:`ersam_ssl.nas.search` — :func:`run_search`: supernet training, NNI multi-trial (regularized
  evolution / random) or one-shot (Proxyless) search under latency / energy / MAC budgets, Pareto fronts,
  fine-tuning and ONNX export;
- :mod:`ersam_ssl.nas.nni_space` — the space as an NNI ``ModelSpace`` and hardware-cost profilers (imports
  NNI; nothing here imports it until a search runs);
- :mod:`ersam_ssl.nas.config` — :class:`SearchConfig`.
"""

from ersam_ssl.nas.config import SearchConfig
from ersam_ssl.nas.search import SubnetEvaluator, pareto_front, run_search
from ersam_ssl.nas.supernet import ElasticSAM, SupernetModule, recalibrate_bn

__all__ = [
    "ElasticSAM",
    "SearchConfig",
    "SubnetEvaluator",
    "SupernetModule",
    "pareto_front",
    "recalibrate_bn",
    "run_search",
]
