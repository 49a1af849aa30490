"""wandb sweep YAMLs: validation and a local runner that needs no wandb server.

A sweep file follows wandb's schema (``program``, ``method`` grid/random, ``parameters`` with ``value``,
``values`` or a ``distribution`` with ``min``/``max``, ``command`` with ``${args_no_hyphens}``). Its
parameter names are dotted keys of :class:`~ersam_ssl.pipeline.RunConfig`, so ``wandb agent`` and
:func:`expand` drive the same entry point with the same ``key=value`` overrides.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

DISTRIBUTIONS = ("uniform", "int_uniform", "log_uniform_values", "categorical", "constant")


def load_sweep(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        spec = yaml.safe_load(fh)
    validate(spec, source=str(path))
    return spec


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def validate(spec: dict, source: str = "<sweep>") -> None:
    """Schema checks plus: every combination's overrides build a valid :class:`RunConfig`."""
    from ersam_ssl.pipeline import load_config

    for key in ("program", "method", "parameters", "metric"):
        if key not in spec:
            raise ValueError(f"{source}: missing '{key}'")
    if spec["method"] not in ("grid", "random"):
        raise ValueError(f"{source}: method {spec['method']!r} not supported locally (grid, random)")
    if "${args_no_hyphens}" not in spec.get("command", ["${args_no_hyphens}"]):
        raise ValueError(f"{source}: command must pass ${{args_no_hyphens}} (key=value overrides)")
    for name, p in spec["parameters"].items():
        if not isinstance(p, dict) or not ({"value", "values", "distribution", "min"} & set(p)):
            raise ValueError(f"{source}: parameter {name!r} needs value, values or a distribution")
        dist = p.get("distribution")
        if dist is not None and dist not in DISTRIBUTIONS:
            raise ValueError(f"{source}: parameter {name!r}: unsupported distribution {dist!r}")
        if spec["method"] == "grid" and "values" not in p and "value" not in p:
            raise ValueError(f"{source}: grid parameter {name!r} needs value/values")
    for overrides in expand(spec, max_runs=64, seed=0):
        load_config(None, overrides)


def _sample(p: dict, rng: random.Random) -> Any:
    if "value" in p:
        return p["value"]
    if "values" in p:
        return rng.choice(p["values"])
    dist = p.get(
        "distribution",
        "int_uniform" if isinstance(p["min"], int) and isinstance(p["max"], int) else "uniform",
    )
    lo, hi = p["min"], p["max"]
    if dist == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if dist == "log_uniform_values":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return rng.uniform(lo, hi)


def expand(spec: dict, max_runs: int | None = None, seed: int = 0) -> list[list[str]]:
    """The sweep's runs as lists of ``key=value`` overrides (grid: all combinations; random: ``run_cap``)."""
    params = spec["parameters"]
    names = list(params)
    runs: list[list[str]] = []
    if spec["method"] == "grid":
        grids = [[params[n]["value"]] if "value" in params[n] else params[n]["values"] for n in names]
        for combo in itertools.product(*grids):
            runs.append([f"{n}={_format(v)}" for n, v in zip(names, combo)])
    else:
        rng = random.Random(seed)
        n_runs = spec.get("run_cap", 10)
        for _ in range(n_runs if max_runs is None else min(n_runs, max_runs)):
            runs.append([f"{n}={_format(_sample(params[n], rng))}" for n in names])
    return runs if max_runs is None else runs[:max_runs]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", help="sweep YAML")
    ap.add_argument("--dry-run", action="store_true", help="print the runs and exit")
    ap.add_argument("--max-runs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="seed of random-search sampling")
    ap.add_argument(
        "--config", default=None, help="preset passed to every run (e.g. recipes/configs/tiny.yaml)"
    )
    ap.add_argument("--prefix", default=None, help="run-name prefix (default: the sweep's name)")
    ap.add_argument("extra", nargs="*", help="key=value overrides added to every run")
    args = ap.parse_args(list(sys.argv[1:] if argv is None else argv))
    spec = load_sweep(args.sweep)
    runs = expand(spec, args.max_runs, args.seed)
    prefix = args.prefix or spec.get("name", Path(args.sweep).stem)
    program = spec["program"]
    failed = 0
    for i, overrides in enumerate(runs):
        cmd = [sys.executable, program, *(["--config", args.config] if args.config else []),
               f"name={prefix}-{i:03d}", *overrides, *args.extra]  # fmt: skip
        print(" ".join(cmd), flush=True)
        if not args.dry_run:
            failed += subprocess.run(cmd, check=False).returncode != 0
    if failed:
        print(f"{failed} of {len(runs)} runs failed", file=sys.stderr)
    return 1 if failed else 0
