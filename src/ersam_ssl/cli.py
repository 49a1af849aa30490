"""The ``ersam-ssl`` command line.

Sub-commands:
    ersam-ssl data check PATH [--decode]        (exit 1 when it finds bad files)
    ersam-ssl data make [--source SOURCE] [--root PATH] --out DIR --n N --max-speakers K
                        --seed S [--scenario clean|clinical] [--split test]
                        (SOURCE: a registered speech source, synth by default)
    ersam-ssl analyze RECORDING|FOLDER --model MODEL --out DIR
    ersam-ssl search [--config FILE] [key=value ...]
    ersam-ssl run [--config FILE] [--stages ...] [--resume] [key=value ...]

Errors are one line, ``error: <message>`` on stderr, with a non-zero exit code; ``--debug`` (or the
environment variable ERSAM_SSL_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence

#: Environment variable that, set to anything but ``0``, shows tracebacks instead of one-line errors.
DEBUG_ENV = "ERSAM_SSL_DEBUG"
#: Exit code of an error in the input, the configuration or the file system (the user can fix it).
EXIT_ERROR = 2
#: Exit code of an unexpected error (a bug: please report it with the ``--debug`` traceback).
EXIT_INTERNAL = 1
#: Exit code of ``data check`` when it found bad files (so scripts can gate on it).
EXIT_BAD_DATA = 1


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--debug`` option every entry point accepts (:func:`run_command` acts on it)."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error instead of one line (or set {DEBUG_ENV}=1)")  # fmt: skip


def debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "0") not in ("", "0")


def _is_user_error(e: BaseException) -> bool:
    from ersam_ssl.audio import AudioError

    return isinstance(e, (ValueError, OSError, AudioError))


def error_message(e: BaseException) -> str:
    """One line describing ``e``; unexpected exception types are named, with a pointer to ``--debug``."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        msg = f"{e.filename}: {e.strerror}"
    else:
        text = str(e).strip()
        msg = text.splitlines()[0].strip() if text else type(e).__name__
    if _is_user_error(e):
        return msg
    return f"unexpected {type(e).__name__}: {msg} (rerun with --debug or {DEBUG_ENV}=1 for the traceback)"


def run_command(command: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run an entry point's ``command(argv)``; an exception becomes ``error: <one line>`` on stderr.

    Users of a command line want to know what to fix, not where in the library it was noticed; the
    traceback is one flag away (``--debug`` or ``ERSAM_SSL_DEBUG=1``), which re-raises everything.

    Returns:
        The command's exit code; :data:`EXIT_ERROR` for errors of input, configuration or files
        (``ValueError``, ``OSError``, ``AudioError``), :data:`EXIT_INTERNAL` for anything else, 130 when
        interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if debug_requested(argv):
        return int(command(argv) or 0)
    try:
        return int(command(argv) or 0)
    except KeyboardInterrupt:
        print("\nerror: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        print(f"error: {error_message(e)}", file=sys.stderr)
        return EXIT_ERROR if _is_user_error(e) else EXIT_INTERNAL


def config_parser(
    prog: str, description: str | None, *, config_help: str, example: str
) -> argparse.ArgumentParser:
    """The parser of a command configured by YAML and dotted overrides: ``[--config FILE] [key=value ...]``.

    The command adds its own options, then :func:`add_debug_flag`; :func:`run_config_command` runs it.

    Args:
        config_help: help of ``--config``.
        example: an override shown in the help of the positional ``overrides``, e.g. ``data.seed=1``.
    """
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--config", default=None, help=config_help)
    p.add_argument("overrides", nargs="*", help=f"dotted key=value overrides, e.g. {example}")
    return p


def run_config_command(
    build_parser: Callable[[], argparse.ArgumentParser],
    command: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
) -> int:
    """:func:`run_command` of ``command(args)``, ``args`` parsed by ``build_parser()`` with options and
    ``key=value`` overrides in any order (``parse_intermixed_args``)."""
    return run_command(lambda args: command(build_parser().parse_intermixed_args(args)), argv)


def _data_check(args: argparse.Namespace) -> int:
    from ersam_ssl import audio
    from ersam_ssl.data.bank import SpeakerBank
    from ersam_ssl.data.catalog import detect_source
    from ersam_ssl.data.sources import NoUsableAudioError, Source

    try:
        src = detect_source(args.path)
    except NoUsableAudioError as e:
        if not e.report.bad:  # no audio file at all
            print(f"error: {e}", file=sys.stderr)
            return EXIT_ERROR
        src = Source([], e.report)  # audio files, none usable: list them like any bad files
        print(f"warning: {e}", file=sys.stderr)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    summary = src.summary()
    bad = list(src.report.bad)
    if args.decode and src.name == "libricount":
        for u in src.utterances:  # labeled mixtures: no speakers to pool, decode each file
            try:
                audio.load(u.path)
            except audio.AudioError as e:
                src.report.add_bad(e.path, e.reason)
                bad.append(src.report.bad[-1])
    elif args.decode:
        bank = SpeakerBank(src.utterances, max_seconds_per_speaker=float("inf"), min_seconds_per_speaker=0.0,
                           allow_empty=True)  # fmt: skip
        bad += bank.report.bad
        summary["usable_speakers"] = len(bank.speakers)
    summary["bad_files"] = len(bad)
    summary["checked"] = "decoded" if args.decode else "headers"
    if args.json:
        print(json.dumps({**summary, "bad": [{"path": b.path, "reason": b.reason} for b in bad]}, indent=1))
    else:
        for k, v in summary.items():
            print(f"{k:>16}: {v}")
        if not args.decode:
            print("\nchecked file headers only: pass --decode to also decode every file (finds truncated, "
                  "corrupt and NaN/Inf audio)")  # fmt: skip
        if bad:
            print(f"\n{len(bad)} bad file(s):")
            for b in bad:
                print(f"  {b.path}: {b.reason}")
    return EXIT_BAD_DATA if bad else 0


class _SourceChoices:
    """The ``--source`` choices: the registered speech sources, looked up only when argparse needs them
    (a value to check, ``--help``), as importing the registry loads the whole data package."""

    @staticmethod
    def _names() -> list[str]:
        from ersam_ssl.data.catalog import pool_source_names

        return pool_source_names()

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


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
    add_debug_flag(p)
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect or generate data").add_subparsers(
        dest="data_command", required=True
    )
    chk = data.add_parser(
        "check",
        help="summarise a corpus folder and list bad files with reasons",
        description="Summarise a corpus and list its bad files with reasons. Without --decode only file "
        "headers are read. Exit status: 0 no bad file found, 1 bad files found, 2 error.",
    )
    chk.add_argument("path", help="LibriSpeech/LibriCount folder, any audio folder, or manifest.csv")
    chk.add_argument("--decode", action="store_true",
                     help="also decode every file (finds truncated, corrupt and NaN/Inf audio)")  # fmt: skip
    chk.add_argument("--json", action="store_true", help="print JSON")
    add_debug_flag(chk)
    chk.set_defaults(func=_data_check)

    mk = data.add_parser("make", help="write LibriCount-style mixtures (+ JSON + manifest.csv)")
    mk.add_argument("--source", choices=_SourceChoices(), metavar="SOURCE", default="synth",
                    help="a registered speech source: %(choices)s (default: %(default)s)")  # fmt: skip
    mk.add_argument("--root", default=None)
    mk.add_argument("--out", required=True)
    mk.add_argument("--n", type=int, required=True)
    mk.add_argument("--max-speakers", type=int, default=10)
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--scenario", default="clean", help="clean, clinical, noisy, reverberant")
    mk.add_argument("--split", default="test", choices=["train", "val", "test"])
    mk.add_argument("--synth-speakers", type=int, default=120)
    add_debug_flag(mk)
    mk.set_defaults(func=_data_make)

    # Listed for `ersam-ssl --help` only: main() hands their arguments to their own parsers (DELEGATES).
    for name, help_ in (("analyze", "count speakers over a long recording"), ("search", "hardware-aware NAS"),
                        ("run", "the whole pipeline")):  # fmt: skip
        sub.add_parser(name, help=help_, add_help=False)
    return p


DELEGATES = {"analyze": "ersam_ssl.analysis.cli", "search": "ersam_ssl.nas.cli", "run": "ersam_ssl.pipeline"}


def _main(argv: list[str]) -> int:
    if argv[:1] == ["--debug"] and argv[1:2] and argv[1] in DELEGATES:
        argv = [*argv[1:], "--debug"]  # `ersam-ssl --debug analyze ...`
    if argv and argv[0] in DELEGATES:
        # Hand every remaining argument (including --help) to the sub-command's own parser.
        import importlib

        return int(importlib.import_module(DELEGATES[argv[0]]).main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
