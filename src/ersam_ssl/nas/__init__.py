"""Hardware-aware neural architecture search over the SAM space (ERSAM, Li et al., ICASSP 2023).

- :mod:`ersam_ssl.nas.supernet` — the once-for-all supernet :class:`ElasticSAM` and its sandwich-rule
  training (:class:`SupernetModule`, BigNAS);
- :mod:`ersam_ssl.nas.search` — :func:`run_search`, the whole recipe: supernet training, search,
  fine-tuning and ONNX export of the chosen member;
- :mod:`ersam_ssl.nas.strategies` — NNI multi-trial (regularized evolution / random) or one-shot (Proxyless)
  search under latency / energy / MAC budgets (:mod:`ersam_ssl.nas.trial`: trials in separate processes);
- :mod:`ersam_ssl.nas.evaluate` — :class:`SubnetEvaluator`: members scored with inherited weights;
- :mod:`ersam_ssl.nas.results` — budget checks, candidates, the choice and Pareto fronts;
- :mod:`ersam_ssl.nas.nni_space` — the space as an NNI ``ModelSpace`` and hardware-cost profilers (imports
  NNI; nothing here imports it until a search runs);
- :mod:`ersam_ssl.nas.config` — :class:`SearchConfig`.
"""

from ersam_ssl.nas.config import SearchConfig
from ersam_ssl.nas.evaluate import SubnetEvaluator
from ersam_ssl.nas.results import pareto_front
from ersam_ssl.nas.search import run_search
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
