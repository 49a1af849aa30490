"""The ``ersam-ssl`` command line.

Sub-commands:
    ersam-ssl data check PATH
    ersam-ssl data make --source {synth,librispeech,folder} [--root PATH] --out DIR --n N --max-speakers K
                        --seed S [--scenario clean|clinical] [--split test]
    ersam-ssl analyze RECORDING|FOLDER --model MODEL --out DIR
    ersam-ssl search [--config FILE] [key=value ...]
    ersam-ssl run [--config FILE] [--stages ...] [--resume] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _data_check(args: argparse.Namespace) -> int:
    from ersam_ssl.data.bank import SpeakerBank
    from ersam_ssl.data.sources import detect_source

    try:
        src = detect_source(args.path)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = src.summary()
    bad = list(src.report.bad)
    if args.decode and src.name != "libricount":
        bank = SpeakerBank(src.utterances, max_seconds_per_speaker=float("inf"), min_seconds_per_speaker=0.0,
                           allow_empty=True)  # fmt: skip
        bad += bank.report.bad
        summary["usable_speakers"] = len(bank.speakers)
    summary["bad_files"] = len(bad)
    if args.json:
        print(json.dumps({**summary, "bad": [{"path": b.path, "reason": b.reason} for b in bad]}, indent=1))
    else:
        for k, v in summary.items():
            print(f"{k:>16}: {v}")
        if bad:
            print(f"\n{len(bad)} bad file(s):")
            for b in bad:
                print(f"  {b.path}: {b.reason}")
    return 0


def _data_make(args: argparse.Namespace) -> int:
    from ersam_ssl.data.datamodule import DataConfig, DataEngine
    from ersam_ssl.data.mixtures import MixtureConfig, materialize

    cfg = DataConfig(
        source=args.source,
        root=args.root,
        mixture=MixtureConfig(max_speakers=args.max_speakers),
        seed=args.seed,
        synth_speakers=args.synth_speakers,
    )
    engine = DataEngine(cfg)
    ds = engine.mixtures(args.split, args.n, args.scenario)
    manifest = materialize(ds, args.out)
    n_bad = len(engine.bank.report.bad)
    print(f"wrote {args.n} mixtures ({args.scenario}, split {args.split}, speakers "
          f"{len(engine.splits[args.split])}) to {manifest.parent}; {n_bad} bad input file(s) skipped")  # fmt: skip
    for b in engine.bank.report.bad:
        print(f"  skipped {b.path}: {b.reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ersam-ssl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect or generate data").add_subparsers(
        dest="data_command", required=True
    )
    chk = data.add_parser("check", help="summarise a corpus folder and list bad files with reasons")
    chk.add_argument("path", help="LibriSpeech/LibriCount folder, any audio folder, or manifest.csv")
    chk.add_argument("--decode", action="store_true", help="also decode every file (finds NaN/corrupt data)")
    chk.add_argument("--json", action="store_true", help="print JSON")
    chk.set_defaults(func=_data_check)

    mk = data.add_parser("make", help="write LibriCount-style mixtures (+ JSON + manifest.csv)")
    mk.add_argument("--source", choices=["synth", "librispeech", "folder"], default="synth")
    mk.add_argument("--root", default=None)
    mk.add_argument("--out", required=True)
    mk.add_argument("--n", type=int, required=True)
    mk.add_argument("--max-speakers", type=int, default=10)
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--scenario", default="clean", help="clean, clinical, noisy, reverberant")
    mk.add_argument("--split", default="test", choices=["train", "val", "test"])
    mk.add_argument("--synth-speakers", type=int, default=120)
    mk.set_defaults(func=_data_make)

    # Listed for `ersam-ssl --help` only: main() hands their arguments to their own parsers (DELEGATES).
    for name, help_ in (("analyze", "count speakers over a long recording"), ("search", "hardware-aware NAS"),
                        ("run", "the whole pipeline")):  # fmt: skip
        sub.add_parser(name, help=help_, add_help=False)
    return p


DELEGATES = {"analyze": "ersam_ssl.analysis.cli", "search": "ersam_ssl.nas.cli", "run": "ersam_ssl.pipeline"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATES:
        # Hand every remaining argument (including --help) to the sub-command's own parser.
        import importlib

        return int(importlib.import_module(DELEGATES[argv[0]]).main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
