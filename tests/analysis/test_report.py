"""The day report: hourly level shares against a NumPy reference, a self-contained page, and the page as a
real browser (headless Chromium) renders it. The browser tests skip when ``/usr/bin/chromium`` is absent
(``.ci/run`` installs it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ersam_ssl.analysis import Summary, WindowTable, summarize_windows
from ersam_ssl.analysis.report import SECTIONS, hourly_shares, render_report, write_report
from ersam_ssl.data import AmbianceLevels

CHROMIUM = Path("/usr/bin/chromium")
LEVELS = AmbianceLevels()


def day_table(hours: float = 2.5, seed: int = 0) -> WindowTable:
    """5 s windows over ``hours``: counts 0-5, some gated, some uncertain, one unreadable stretch."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600 / 5)
    start = np.arange(n) * 5.0
    count = rng.integers(0, 6, n)
    status = np.full(n, "analysed", dtype="<U10")
    status[rng.random(n) < 0.1] = "uncertain"
    status[100:160] = "unreadable"
    gated = (count == 0) & (rng.random(n) < 0.7) & (status == "analysed")
    status[gated] = "gated"
    count[(status == "uncertain") | (status == "unreadable")] = -1
    level = np.where(count < 0, -1, LEVELS.level(np.clip(count, 0, None)))
    confidence = np.where(status == "gated", np.nan, rng.uniform(0.3, 1.0, n))
    return WindowTable(start_s=start, end_s=start + 5.0, count=count, confidence=confidence, level=level,
                       gated=gated, status=status, active_frac=np.ones(n), rms_dbfs=np.full(n, -30.0),
                       corrupt_s=np.zeros(n), speech_share=rng.random(n))  # fmt: skip


def summary_of(table: WindowTable, model: dict | None = None) -> Summary:
    return Summary(
        input={"path": "/data/p01/day.flac", "duration_s": float(table.end_s[-1])},
        model=model
        or {"backend": "onnxruntime", "source": None, "config": {"name": "sam"}, "num_classes": 11},
        settings={"window_s": 5.0, "speech_vad": {"used": "silero"}},
        wall_time_s=1.0,
        real_time_factor=1000.0,
        outputs={},
        table=table,
        **summarize_windows(table, LEVELS, 11),
    )


def test_hourly_shares_match_numpy():
    t = day_table(2.5)
    shares = hourly_shares(t, LEVELS)
    hour = (t.start_s // 3600).astype(int)
    assert shares["level"].shape == (3, LEVELS.num_levels)
    for h in range(3):
        sel = hour == h
        for k in range(LEVELS.num_levels):
            assert shares["level"][h, k] == pytest.approx(5.0 * np.sum(sel & (t.level == k) & (t.count >= 0)))
        assert shares["uncertain"][h] == pytest.approx(5.0 * np.sum(sel & (t.status == "uncertain")))
        assert shares["unreadable"][h] == pytest.approx(5.0 * np.sum(sel & (t.status == "unreadable")))
        assert shares["gated"][h] == pytest.approx(5.0 * np.sum(sel & t.gated))
    total = shares["level"].sum(1) + shares["uncertain"] + shares["unreadable"]
    np.testing.assert_allclose(total, [3600, 3600, 1800])
    # a window across an hour boundary is split between the two hours
    s = np.array([3597.5])
    one = WindowTable(start_s=s, end_s=s + 5, count=np.array([2]), confidence=np.ones(1), level=np.array([2]),
                      gated=np.zeros(1, bool), status=np.array(["analysed"]), active_frac=np.ones(1),
                      rms_dbfs=np.zeros(1), corrupt_s=np.zeros(1))  # fmt: skip
    np.testing.assert_allclose(hourly_shares(one, LEVELS)["level"][:, 2], [2.5, 2.5])


def test_report_is_self_contained_and_complete(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "MODEL_CARD.md").write_text("# Counter v1\nTrained on <synthetic> speech.\n")
    model = {"backend": "onnxruntime", "source": str(model_dir / "m.onnx"), "config": {"name": "sam"},
             "num_classes": 11, "temperature": 1.8, "abstain_confidence": 0.5}  # fmt: skip
    page = render_report(summary_of(day_table(), model))
    assert page.count('class="hour-bar"') == 3
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    assert "data:image/png;base64," in page
    assert not re.search(r"<script|<link|<iframe|(src|href)=\"(https?:)?//|url\(", page, flags=re.I)
    assert str(model_dir / "MODEL_CARD.md") in page and "&lt;synthetic&gt;" in page  # escaped
    assert "1.8" in page and "0.5 confidence" in page
    bare = render_report(summary_of(day_table(0.2)))
    assert bare.count('class="hour-bar"') == 1 and "No MODEL_CARD.md" in bare and "never" in bare
    with pytest.raises(ValueError):
        render_report(Summary(**{**summary_of(day_table(0.1)).__dict__, "table": None}))


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_a_browser(tmp_path):
    from PIL import Image

    page = write_report(summary_of(day_table(2.5)), tmp_path / "report.html")
    url = page.resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    headings = re.findall(r"<h2>(.*?)</h2>", dom.stdout)
    assert headings == list(SECTIONS)
    assert len(re.findall(r'<g class="hour-bar"', dom.stdout)) == 3
    assert len(re.findall(r'<rect class="seg"', dom.stdout)) >= 3 * 3

    png = tmp_path / "shot.png"
    shot = _chromium(tmp_path, f"--screenshot={png}", "--window-size=1200,1600", "--hide-scrollbars", url)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert image.shape == (1600, 1200, 3)
    not_white = (image < 235).any(axis=2)
    assert 0.03 < not_white.mean() < 0.9, not_white.mean()  # text, bars and the plot drawn; not one block
    # The level colours of the hour bars are on screen (e.g. the "one-to-one" blue, #9ecae1).
    blue = (np.abs(image - [0x9E, 0xCA, 0xE1]).sum(axis=2) < 12).sum()
    assert blue > 500, blue


def test_cli_writes_the_report(tmp_path):
    import soundfile as sf
    import torch

    from ersam_ssl.checkpoint import save_model
    from ersam_ssl.cli import main
    from ersam_ssl.models import create_model

    rng = np.random.default_rng(0)
    x = (0.05 * rng.standard_normal(12 * 16000)).astype(np.float32)
    x[5 * 16000 : 10 * 16000] = 0.0
    sf.write(str(tmp_path / "r.wav"), x, 16000)
    torch.manual_seed(0)
    model = save_model(create_model("sam", num_classes=4).eval(), tmp_path / "m" / "sam.pt")
    (tmp_path / "m" / "MODEL_CARD.md").write_text("# test card\n")
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "r.wav"), "--model", str(model), "--out", str(out), "--quiet",
                 "--report", "--vad", "energy"]) == 0  # fmt: skip
    page = (out / "report.html").read_text()
    assert page.count('class="hour-bar"') == 1 and "test card" in page and "r.wav" in page
    import json

    assert json.loads((out / "summary.json").read_text())["outputs"]["report_html"] == str(
        out / "report.html"
    )
    assert main(["analyze", str(tmp_path / "r.wav"), "--model", str(model), "--out", str(tmp_path / "o2"),
                 "--quiet", "--vad", "energy"]) == 0  # fmt: skip
    assert not (tmp_path / "o2" / "report.html").exists()
