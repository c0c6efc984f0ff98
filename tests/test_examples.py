"""Every example runs to the end and saves its PNG (slow: about 4 minutes on 2 cores)."""

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import MNIST_PATH

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NEEDS_MNIST = {"plot_anomalies.py", "plot_denoising_mnist.py", "plot_generated_digits.py"}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("plot_*.py")))
def test_example_runs_and_saves_its_figure(script, tmp_path):
    pytest.importorskip("matplotlib")
    args = [sys.executable, str(EXAMPLES / script), "--out", str(tmp_path / "out.png")]
    if script in NEEDS_MNIST:
        if not MNIST_PATH.exists():
            pytest.skip(f"MNIST test set not found at {MNIST_PATH}")
        args += ["--data", str(MNIST_PATH)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"saved {tmp_path / 'out.png'}" in done.stdout
    png = (tmp_path / "out.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
