"""Looking at a finished run: :func:`open_run` for notebooks, :func:`write_report` for ``doreisa report``.

Both read only what ``doreisa run --output`` left in its folder (``summary.json``,
``provenance.jsonl``, the results table and stores, the copy of the contract): no Ray, no
simulation. Importing this package is light; xarray and pandas load when a run is opened,
matplotlib when a page is drawn (``pip install 'doreisa[plot]'``).
"""

from __future__ import annotations

from doreisa.report._command import report_from_cli, write_report
from doreisa.report._dataset import open_run

__all__ = ["open_run", "report_from_cli", "write_report"]
