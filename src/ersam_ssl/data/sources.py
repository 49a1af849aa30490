"""Speech sources: index utterances by speaker without decoding audio.

Every source yields :class:`Utterance` records (path, speaker, duration from the header) and a
:class:`ScanReport` listing the files it could not use and why. Audio is decoded only when a
:class:`~ersam_ssl.data.bank.SpeakerBank` is built, and decoding failures are reported there.

Sources:
    * :class:`LibriSpeechSource` — LibriSpeech's layout ``[SUBSET/]SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac``
      (Panayotov et al., "LibriSpeech: an ASR corpus based on public domain audio books", ICASSP 2015).
    * :class:`LibriCountSource` — LibriCount files ``{k}_{...}.wav`` (+ optional JSON sidecar), a labeled
      evaluation set (Stöter et al., "LibriCount, a dataset for speaker count estimation", Zenodo 2018).
    * :class:`FolderSource` — any folder of audio (speaker = sub-folder) or a ``manifest.csv``.
    * :class:`~ersam_ssl.data.synth.SynthSpeechSource` — the embedded offline default (espeak-ng voices).

A source is added in the file that defines it: ``@SOURCES.register(name)`` on a :class:`Source` subclass
whose constructor takes ``root=`` (the corpus path) and keyword options. :meth:`Source.open` builds any of
them the same way, :meth:`Source.config_options` reads its options from a
:class:`~ersam_ssl.data.datamodule.DataConfig`, and the class attributes ``needs_root`` and
``speaker_pool`` tell configs and the command line how it may be used. Selecting a source by name, and
guessing one from a folder, live in :mod:`ersam_ssl.data.catalog`.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from ersam_ssl import audio
from ersam_ssl.registry import Registry

SOURCES: Registry[type] = Registry("source")


@dataclass(frozen=True)
class Utterance:
    """One speech file of one speaker (or one labeled mixture for LibriCount)."""

    path: str
    speaker: str
    duration: float
    subset: str = ""
    sex: str = ""
    count: int | None = None
    meta: dict | None = field(default=None, compare=False, hash=False)


@dataclass
class BadFile:
    path: str
    reason: str


@dataclass
class ScanReport:
    """What a scan found: usable files and the files it skipped (with reasons)."""

    n_files: int = 0
    bad: list[BadFile] = field(default_factory=list)

    def add_bad(self, path: str | Path, reason: str) -> None:
        self.bad.append(BadFile(str(path), reason))

    def extend(self, other: ScanReport) -> None:
        self.n_files += other.n_files
        self.bad.extend(other.bad)


class NoUsableAudioError(FileNotFoundError):
    """A corpus root without one usable file; ``report`` lists the files seen and why each is unusable."""

    def __init__(self, message: str, report: ScanReport) -> None:
        super().__init__(message)
        self.report = report


class Source:
    """Base of all sources: a list of utterances plus the report of skipped files."""

    name = "source"
    #: Whether opening needs a corpus root; ``False`` when the source makes or finds its own audio.
    needs_root: ClassVar[bool] = True
    #: Whether its utterances are single-speaker speech that mixtures can be made of (``False`` for
    #: labeled mixtures such as LibriCount), i.e. whether it can be a DataConfig's ``source``.
    speaker_pool: ClassVar[bool] = True

    def __init__(self, utterances: Sequence[Utterance], report: ScanReport) -> None:
        self.utterances: list[Utterance] = list(utterances)
        self.report = report

    @classmethod
    def open(cls, root: str | Path | None = None, **options: Any) -> Source:
        """Build the source from its root (if any) and its keyword options, the same way for every source.

        Raises:
            ValueError: ``root`` is missing and the source ``needs_root``.
        """
        if root is None:
            if cls.needs_root:
                raise ValueError(f"source {cls.name!r} needs a root path")
            return cls(**options)
        return cls(root=root, **options)

    @classmethod
    def config_options(cls, data: Any) -> dict[str, Any]:
        """The keyword options of :meth:`open` that a :class:`~ersam_ssl.data.datamodule.DataConfig`
        ``data`` sets for this source (none by default)."""
        return {}

    def speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.utterances})

    def by_speaker(self) -> dict[str, list[Utterance]]:
        out: dict[str, list[Utterance]] = defaultdict(list)
        for u in self.utterances:
            out[u.speaker].append(u)
        return dict(out)

    def hours(self) -> float:
        return sum(u.duration for u in self.utterances) / 3600.0

    def summary(self) -> dict:
        return {
            "source": self.name,
            "files": len(self.utterances),
            "speakers": len(self.speakers()),
            "hours": round(self.hours(), 4),
            "bad_files": len(self.report.bad),
        }

    def __len__(self) -> int:
        return len(self.utterances)


def _probe(path: Path, report: ScanReport) -> audio.AudioInfo | None:
    """Header check of one file; bad files go to the report instead of raising."""
    report.n_files += 1
    try:
        hdr = audio.info(path)
    except audio.AudioError as e:
        report.add_bad(path, e.reason)
        return None
    if hdr.duration < audio.MIN_DURATION:
        report.add_bad(path, f"too short ({hdr.frames} frames = {hdr.duration:.3f} s)")
        return None
    return hdr


def _audio_files(root: Path, report: ScanReport | None = None) -> list[Path]:
    """Audio files under ``root``; symlink loops and broken links go to ``report`` (see
    :func:`ersam_ssl.audio.list_files`)."""
    files, problems = audio.list_files(root)
    if report is not None:
        for path, reason in problems:
            report.n_files += 1
            report.add_bad(path, reason)
    return [p for p in files if audio.is_audio_file(p)]


#: A LibriSpeech file stem, ``SPEAKER-CHAPTER-UTT``.
LIBRISPEECH_STEM = re.compile(r"^(?P<spk>[^-/]+)-(?P<chap>[^-/]+)-(?P<utt>[^-/]+)$")


def _read_speakers_txt(path: Path) -> dict[str, str]:
    """LibriSpeech SPEAKERS.TXT: ``ID | SEX | SUBSET | MINUTES | NAME`` with ``;`` comments."""
    sexes: dict[str, str] = {}
    if not path.is_file():
        return sexes
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 2 and parts[0]:
            sexes[parts[0]] = parts[1].upper()[:1]
    return sexes


@SOURCES.register("librispeech")
class LibriSpeechSource(Source):
    """LibriSpeech-layout corpus: ``[SUBSET/]SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac``.

    Args:
        root: the corpus root (holding subset folders such as ``train-clean-100``), a single subset
            folder, or a ``LibriSpeech`` folder from the official archives.
        subsets: restrict to these subset folder names (default: all found).

    Speaker sex is read from ``SPEAKERS.TXT`` (in the root or its parent) when present. Indexing reads file
    headers only; no audio is decoded.
    """

    name = "librispeech"

    def __init__(self, root: str | Path, subsets: Iterable[str] | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"LibriSpeech root {root} is not a directory")
        sexes = _read_speakers_txt(root / "SPEAKERS.TXT") or _read_speakers_txt(root.parent / "SPEAKERS.TXT")
        wanted = set(subsets) if subsets else None
        report = ScanReport()
        utts: list[Utterance] = []
        for path in _audio_files(root, report):
            rel = path.relative_to(root).parts
            m = LIBRISPEECH_STEM.match(path.stem)
            if len(rel) < 3 or m is None or rel[-3] != m["spk"] or rel[-2] != m["chap"]:
                report.n_files += 1
                report.add_bad(path, "not in LibriSpeech layout SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT")
                continue
            subset = rel[-4] if len(rel) >= 4 else root.name
            if wanted is not None and subset not in wanted:
                continue
            hdr = _probe(path, report)
            if hdr is None:
                continue
            spk = m["spk"]
            utts.append(Utterance(str(path), spk, hdr.duration, subset=subset, sex=sexes.get(spk, "")))
        if not utts:
            raise NoUsableAudioError(
                f"no usable LibriSpeech utterances under {root} ({report.n_files} files seen, "
                f"{len(report.bad)} bad)",
                report,
            )
        super().__init__(utts, report)

    @classmethod
    def config_options(cls, data: Any) -> dict[str, Any]:
        return {"subsets": data.subsets or None}


#: A LibriCount file name, ``{k}_...`` with ``k`` the speaker count.
LIBRICOUNT_NAME = re.compile(r"^(?P<k>\d+)_")


@SOURCES.register("libricount")
class LibriCountSource(Source):
    """LibriCount-style labeled mixtures: ``{k}_{anything}.wav|flac`` where ``k`` is the speaker count.

    A JSON sidecar with the same stem (as in LibriCount and in :func:`~ersam_ssl.data.mixtures.materialize`)
    is attached as ``Utterance.meta``; if it holds ``speakers``, their count must agree with ``k``.
    Each utterance's ``speaker`` is the file stem (mixtures have no single speaker).
    """

    name = "libricount"
    speaker_pool = False

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"LibriCount root {root} is not a directory")
        report = ScanReport()
        utts: list[Utterance] = []
        for path in _audio_files(root, report):
            m = LIBRICOUNT_NAME.match(path.name)
            if m is None:
                report.n_files += 1
                report.add_bad(path, "name does not start with '<count>_'")
                continue
            hdr = _probe(path, report)
            if hdr is None:
                continue
            k = int(m["k"])
            meta = None
            sidecar = path.with_suffix(".json")
            if sidecar.is_file():
                try:
                    meta = json.loads(sidecar.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    report.add_bad(sidecar, f"unreadable JSON sidecar ({e}); using the file name's count")
                if isinstance(meta, dict) and "speakers" in meta and len(meta["speakers"]) != k:
                    report.add_bad(path, f"sidecar lists {len(meta['speakers'])} speakers but name says {k}")
                    continue
            utts.append(Utterance(str(path), path.stem, hdr.duration, count=k, meta=meta))
        if not utts:
            raise NoUsableAudioError(f"no usable LibriCount-style files under {root}", report)
        super().__init__(utts, report)

    def counts(self) -> list[int]:
        return [int(u.count) for u in self.utterances if u.count is not None]


@SOURCES.register("folder")
class FolderSource(Source):
    """Any folder of audio files (:data:`ersam_ssl.audio.AUDIO_EXTENSIONS`), or a ``manifest.csv``.

    Folder mode: the speaker is the first sub-folder under ``root`` (files directly in ``root`` get the
    speaker ``"<stem>"``). Manifest mode: a CSV with a ``path`` column (relative to the manifest or
    absolute) and a ``speaker`` column; optional ``sex`` and ``subset`` columns.
    """

    name = "folder"

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        report = ScanReport()
        utts: list[Utterance] = []
        if root.is_file() and root.suffix.lower() == ".csv":
            with open(root, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            if rows and not {"path", "speaker"} <= set(rows[0]):
                raise ValueError(f"{root}: manifest needs 'path' and 'speaker' columns, has {list(rows[0])}")
            for row in rows:
                path = Path(row["path"])
                path = path if path.is_absolute() else root.parent / path
                if not path.is_file():
                    report.n_files += 1
                    report.add_bad(path, "listed in manifest but missing")
                    continue
                hdr = _probe(path, report)
                if hdr is not None:
                    utts.append(
                        Utterance(
                            str(path),
                            str(row["speaker"]),
                            hdr.duration,
                            subset=row.get("subset", "") or "",
                            sex=(row.get("sex", "") or "").upper()[:1],
                        )
                    )
        elif root.is_dir():
            files, problems = audio.list_files(root)
            for path, reason in problems:
                report.n_files += 1
                report.add_bad(path, reason)
            for path in files:
                if not audio.is_audio_file(path):
                    if path.suffix.lower() not in (".txt", ".json", ".csv", ".md"):
                        report.n_files += 1
                        report.add_bad(path, f"not an audio file extension ({path.suffix or 'none'})")
                    continue
                hdr = _probe(path, report)
                if hdr is None:
                    continue
                rel = path.relative_to(root).parts
                speaker = rel[0] if len(rel) > 1 else path.stem
                utts.append(Utterance(str(path), speaker, hdr.duration))
        else:
            raise FileNotFoundError(f"{root} is neither a folder nor a manifest.csv")
        if not utts:
            raise NoUsableAudioError(f"no usable audio under {root} ({len(report.bad)} bad files)", report)
        super().__init__(utts, report)


class CombinedSource(Source):
    """Several corpora as one speaker pool; speaker ``s`` of corpus ``c`` becomes ``"c/s"``.

    Corpus names are the sources' names (``librispeech``, ``folder``, ``synth``), numbered when two
    sources share one (``folder``, ``folder2``). :meth:`corpus_of` maps a speaker back to its corpus, so
    splits can be reported (and test sets built) per corpus.
    """

    name = "combined"

    def __init__(self, sources: Sequence[Source]) -> None:
        report = ScanReport()
        utts: list[Utterance] = []
        self.corpora: list[str] = []
        for src in sources:
            tag = src.name
            i = 2
            while tag in self.corpora:
                tag, i = f"{src.name}{i}", i + 1
            self.corpora.append(tag)
            utts += [replace(u, speaker=f"{tag}/{u.speaker}") for u in src.utterances]
            report.extend(src.report)
        super().__init__(utts, report)

    @staticmethod
    def corpus_of(speaker: str) -> str:
        return speaker.split("/", 1)[0]
