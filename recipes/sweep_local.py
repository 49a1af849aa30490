#!/usr/bin/env python
"""Run a wandb sweep YAML's combinations locally through the same entry point (no wandb server needed).

    python recipes/sweep_local.py recipes/sweeps/few_label.yaml --dry-run     # list the runs
    python recipes/sweep_local.py recipes/sweeps/few_label.yaml --max-runs 4 --config recipes/configs/tiny.yaml

With a wandb account the same YAML works unchanged:  ``wandb sweep recipes/sweeps/few_label.yaml`` then
``wandb agent <id>``.
"""

import sys

from ersam_ssl.sweep import main

if __name__ == "__main__":
    sys.exit(main())
