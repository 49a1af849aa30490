"""The model registry is complete however the package is first imported (no import back into the package)."""

from __future__ import annotations

import subprocess
import sys


def test_every_builtin_model_is_registered_when_only_base_is_imported() -> None:
    code = (
        "from ersam_ssl.models.base import MODELS, CountModel, create_model\n"
        "model = create_model('sam')\n"
        "assert CountModel.from_config(model.config()).config() == model.config()\n"
        "print(' '.join(MODELS.names()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["crnn", "sam"]
