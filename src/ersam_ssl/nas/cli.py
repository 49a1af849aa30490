"""``ersam-ssl search [--config FILE] [key=value ...]``: hardware-aware NAS into ``out_dir``.

Examples::

    ersam-ssl search out_dir=runs/nas init=runs/ssl/finetune/model.pt budget.max_latency_ms=5
    ersam-ssl search --config recipes/configs/search.yaml search.strategy=proxyless data.labels_per_class=5
    ersam-ssl search supernet_checkpoint=runs/nas/supernet.pt search.trials=300   # search again, no training
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from ersam_ssl.cli import add_debug_flag, config_parser, run_config_command


def build_parser() -> argparse.ArgumentParser:
    p = config_parser(
        "ersam-ssl search",
        __doc__,
        config_help="YAML with values that differ from SearchConfig's defaults",
        example="budget.max_energy_mw=0.8",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_debug_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_config_command(build_parser, _main, argv)


def _main(args: argparse.Namespace) -> int:
    from ersam_ssl import config as config_io
    from ersam_ssl.nas.config import SearchConfig

    cfg = config_io.load(SearchConfig, args.config, args.overrides)
    cfg.validate()
    if args.print_config:
        print(json.dumps(config_io.to_dict(cfg), indent=1, default=str))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ersam_ssl.nas.search import run_search

    summary = run_search(cfg)
    test, cost = summary["test"], summary["cost"]
    print(f"\nchosen arch -> {cfg.out_dir}/arch.json")
    print(f"test: error rate {test['error_rate']:.4f}, MAE {test['mae']:.4f}")
    print(
        f"cost: {cost['macs'] / 1e6:.2f} MMACs, {cost['params']:,d} params, "
        f"latency {cost['latency_ms'] if cost['latency_ms'] is not None else float('nan'):.2f} ms, "
        f"{cost['avg_power_mw']:.3f} mW modelled ({cfg.budget.profile})"
    )
    if "export" in summary:
        lat = summary["export"]["latency_1_thread"]
        print("latency (1 thread): " + ", ".join(f"{k} {v:.3f}" for k, v in lat.items()))
    print(f"timings: {summary['timings_s']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
