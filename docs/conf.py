"""Sphinx configuration of skconvae's documentation.

Build with ``make -C docs html`` (runs the example gallery) or ``make -C docs html-noplot``
(gallery pages without running the examples, as CI does). Warnings are errors.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(DOCS))  # _gallery.py

import skconvae  # noqa: E402

project = "skconvae"
author = "the skconvae developers"
copyright = "2026, the skconvae developers"
release = skconvae.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build"]
default_role = "literal"

# -- API reference -------------------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Every public docstring must have these sections; numpydoc turns a miss into a warning,
# which -W makes an error.
numpydoc_validation_checks = {"PR01", "PR02", "RT01", "GL08", "SA04", "EX01"}
numpydoc_validation_exclude = {
    r"\.__init__$",
    r"\.set_output$",
    r"\.set_params$",
    r"\.get_params$",
    r"\.get_metadata_routing$",
    r"\.set_fit_request$",
    r"\.set_partial_fit_request$",
    r"\.set_score_request$",
    r"\.set_transform_request$",
    r"\.set_inverse_transform_request$",
    r"\.fit_transform$",
    r"\.get_feature_names_out$",
}

# -- Cross-references to other projects ----------------------------------------------
# Intersphinx needs each project's objects.inv from the network. The build must work
# offline, so a project whose inventory cannot be fetched quickly is left out (its names
# then render as plain code instead of links) rather than failing the build.
_INVENTORIES = {
    "python": "https://docs.python.org/3/",
    "numpy": "https://numpy.org/doc/stable/",
    "sklearn": "https://scikit-learn.org/stable/",
    "torch": "https://docs.pytorch.org/docs/stable/",
    "skorch": "https://skorch.readthedocs.io/en/stable/",
    "matplotlib": "https://matplotlib.org/stable/",
    "dask": "https://docs.dask.org/en/stable/",
}


def _reachable(url: str) -> bool:
    if os.environ.get("SKCONVAE_DOCS_OFFLINE"):
        return False
    try:
        with urllib.request.urlopen(url + "objects.inv", timeout=3):
            return True
    except Exception:  # any failure: build without this link target
        return False


intersphinx_mapping = {name: (url, None) for name, url in _INVENTORIES.items() if _reachable(url)}
intersphinx_timeout = 5

# -- Example gallery -----------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "reset_argv": "_gallery.example_argv",
    "matplotlib_animations": False,
    "min_reported_time": 5,
    # "Examples using X" on each API page (the minigallery of the autosummary templates).
    "doc_module": ("skconvae",),
    "backreferences_dir": "generated",
    "reference_url": {"skconvae": None},
}
# The examples read SKCONVAE_EXAMPLES_QUICK and train on less for fewer epochs, so a full
# build stays within minutes; run directly, they keep their full settings.
os.environ.setdefault("SKCONVAE_EXAMPLES_QUICK", "1")
# The MNIST examples read the file SKCONVAE_MNIST names before ../shared/data (relative
# to the working directory, which the gallery sets to examples/) and OpenML: point it
# at the project's copy beside the repository when there is one, so the build is offline.
_MNIST = ROOT.parent / "shared" / "data" / "mnist_test10k.npz"
if _MNIST.exists():
    os.environ.setdefault("SKCONVAE_MNIST", str(_MNIST))

# -- HTML ----------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skconvae {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "github_url": "https://github.com/skconvae/skconvae",
    "navbar_end": ["navbar-icon-links"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_show_sourcelink = False
# "On this page" lists methods as fit() rather than ConvAutoencoderTransformer.fit(),
# which overflowed the narrow right-hand column.
toc_object_entries_show_parents = "hide"


# scikit-learn's metadata-routing helpers (set_fit_request, ...) are generated methods whose
# docs live in scikit-learn's; skorch's training hooks are documented by skorch.
_SKIPPED = {
    "get_metadata_routing",
    "set_output",
    "fit_loop",
    "get_dataset",
    "get_iterator",
    "initialize_module",
    "torch_compile",
    "train_step_single",
    "validation_step",
    "on_batch_end",
    "on_epoch_end",
    "on_train_end",
}


def _skip_member(app, what, name, obj, skip, options):
    if name in _SKIPPED or (name.startswith("set_") and name.endswith("_request")):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
