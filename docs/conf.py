"""Sphinx configuration of shieldwall's documentation site.

Build: ``sphinx-build -W --keep-going -b html docs site`` (what ``.ci/run`` runs). The API and
config reference under ``reference/`` is generated from the code by ``_ext/shieldwall_reference``
(with its two generators beside it, ``reference_families`` and ``reference_config``).
Every page is read from this folder: a new ``docs/*.md`` page joins the navigation by itself.
Math is rendered by MathJax 3 copied from the ``sphinx-mathjax-offline`` package into the site,
so nothing is fetched from the network at build or view time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # import this checkout's shieldwall
os.environ.setdefault("OMP_NUM_THREADS", "1")

project = "shieldwall"
author = "the shieldwall developers"
copyright = "the shieldwall developers"  # noqa: A001

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 files shipped in the wheel, copied into the site
    "shieldwall_reference",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "matrix/README.md", "_ext"]

# Markdown pages: $…$ and $$…$$ math, ::: fences, heading anchors for #links.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True
# Heading levels that skip one (# then ###) are style, not errors: pages added by anyone must
# not break the strict build for that. Broken links and references still do.
suppress_warnings = ["myst.header"]

# Docstrings are Google style (Args:/Returns:) with reST inside (.. math::, :math:, :func:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
add_module_names = False

html_theme = "furo"
html_title = "shieldwall"
html_static_path = ["_static"]
html_css_files = ["shieldwall.css"]
html_show_sourcelink = False
html_theme_options = {"navigation_with_keys": True}

# No external requests: MathJax is served from _static/mathjax (see above).
mathjax3_config = {"tex": {"tags": "none"}}
