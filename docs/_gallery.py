"""Helpers of the example gallery, importable by name from ``conf.py``.

sphinx-gallery takes its callables as ``"module.function"`` strings, which Sphinx can
cache, unlike function objects in ``conf.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def example_argv(gallery_conf, script_vars) -> list[str]:
    """Command-line arguments of an example run by the gallery.

    Every example saves its figure to ``--out``; the gallery shows the figures it
    scrapes from matplotlib, so the file goes to the temporary directory rather than
    into ``examples/``.
    """
    name = Path(script_vars["src_file"]).stem
    return ["--out", str(Path(tempfile.gettempdir()) / f"skconvae-gallery-{name}.png")]
