"""The documentation site: the API reference lists the public API; the gallery builds.

The fast test reads ``docs/api.rst``. The slow one builds the whole site, running every
example of the gallery (about 3 minutes on 2 cores), in a temporary copy of ``docs/`` and
``examples/`` so that the checkout stays clean.
"""

import os
import shutil
import subprocess
import sys

import pytest

import skconvae
import skconvae.nn
import skconvae.plotting
import skconvae.preprocessing

from .conftest import MNIST_PATH, ROOT

DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
# What a build leaves in docs/, never copied into the temporary tree.
BUILD_OUTPUTS = ("_build", "generated", "auto_examples", "sg_execution_times.rst", "__pycache__")


@pytest.mark.parametrize(
    "module", [skconvae, skconvae.nn, skconvae.plotting, skconvae.preprocessing]
)
def test_api_reference_lists_every_public_name(module):
    api = (DOCS / "api.rst").read_text()
    listed = {line.strip() for line in api.splitlines()}
    missing = [name for name in module.__all__ if not name.startswith("__") and name not in listed]
    assert not missing, f"{module.__name__}.__all__ names missing from docs/api.rst: {missing}"


@pytest.mark.slow
def test_full_site_builds_with_a_figure_for_every_example(tmp_path):
    pytest.importorskip("sphinx_gallery")
    pytest.importorskip("numpydoc")
    pytest.importorskip("pydata_sphinx_theme")
    env = dict(os.environ, SKCONVAE_DOCS_OFFLINE="1")
    if "SKCONVAE_MNIST" not in env:
        # The MNIST examples would otherwise download MNIST from OpenML.
        if not MNIST_PATH.exists():
            pytest.skip(f"MNIST test set not found at {MNIST_PATH}; set SKCONVAE_MNIST")
        env["SKCONVAE_MNIST"] = str(MNIST_PATH)
    # conf.py puts its parent (the temporary tree) first on sys.path, then PYTHONPATH:
    # the package documented is this checkout's.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns(*BUILD_OUTPUTS))
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    html = docs / "_build" / "html"
    args = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", docs, html]
    done = subprocess.run(
        args, cwd=docs, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]

    scripts = sorted(EXAMPLES.glob("plot_*.py"))
    assert scripts
    for script in scripts:
        name = script.stem
        page = html / "auto_examples" / f"{name}.html"
        assert page.exists(), f"no gallery page for {script.name}"
        image = f"sphx_glr_{name}_001.png"
        assert (docs / "auto_examples" / "images" / image).exists(), f"{script.name}: no figure"
        assert image in page.read_text(), f"{script.name}: its page shows no figure"
