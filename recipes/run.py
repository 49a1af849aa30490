#!/usr/bin/env python
"""Run the whole ERSAM-SSL pipeline on the embedded default corpus (or any configured data).

    python recipes/run.py                                   # everything, embedded default, runs/default/
    python recipes/run.py --config recipes/configs/tiny.yaml name=smoke
    python recipes/run.py data.source=librispeech data.root=/data/LibriSpeech name=libri
    python recipes/run.py --resume                          # continue an interrupted run
    python recipes/run.py --stages data,pretrain,teacher    # a subset of the stages

See ``ersam_ssl.pipeline`` for the stages and ``recipes/configs/*.yaml`` for presets.
"""

import sys

from ersam_ssl.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
