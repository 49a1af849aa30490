"""Select a speech source: by registry name, or by guessing the layout of a folder.

Importing this module registers every built-in source in :data:`~ersam_ssl.data.sources.SOURCES` (those
of :mod:`ersam_ssl.data.sources` and the synthesized corpus of :mod:`ersam_ssl.data.synth`), so the
sources themselves need no import-for-registration. Configs and the command line take their choices from
:func:`pool_source_names`; a source registered in the file that defines it is valid there at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ersam_ssl import audio
from ersam_ssl.data import synth  # noqa: F401  (registers "synth")
from ersam_ssl.data.sources import (
    LIBRICOUNT_NAME,
    LIBRISPEECH_STEM,
    SOURCES,
    FolderSource,
    LibriCountSource,
    LibriSpeechSource,
    Source,
)


def pool_source_names() -> list[str]:
    """Registered sources of single-speaker speech: the valid ``DataConfig.source`` values (sorted)."""
    return [name for name in SOURCES if SOURCES.get(name).speaker_pool]


def open_source(kind: str, root: str | Path | None = None, **options: Any) -> Source:
    """Open the source registered as ``kind`` (e.g. ``synth``, ``librispeech``, ``libricount``, ``folder``).

    Raises:
        KeyError: no source is registered as ``kind``.
        ValueError: ``root`` is missing and the source needs one.
    """
    return SOURCES.get(kind).open(root, **options)


def detect_source(root: str | Path) -> Source:
    """Guess the layout of ``root`` (LibriSpeech, LibriCount, manifest or plain folder) and open it."""
    root = Path(root)
    if root.is_file():
        return FolderSource(root)
    files = [p for p in audio.list_files(root)[0] if audio.is_audio_file(p)][:200]
    if files and all(LIBRICOUNT_NAME.match(p.name) for p in files):
        return LibriCountSource(root)
    if files and sum(bool(LIBRISPEECH_STEM.match(p.stem)) for p in files) > 0.8 * len(files):
        try:
            return LibriSpeechSource(root)
        except FileNotFoundError:
            pass
    return FolderSource(root)
