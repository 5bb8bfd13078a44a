"""The private Dask API doreisa uses, in one place: the task classes of ``dask._task_spec``.

Dask graphs hold :class:`Task`, :class:`DataNode` and :class:`Alias` objects since Dask
2024.12; :func:`convert_legacy_graph` turns older tuple tasks into them. doreisa walks these
objects to swap placeholders for blocks (``graphs.substitute``) and to cut graphs by node
(``scheduler``), reading ``Task.func``, ``Task.args``, ``Task.kwargs``, ``.dependencies`` and
``DataNode.value``, and cloning a task with ``copy.copy`` before setting its ``args``.

None of this is public. pyproject.toml bounds Dask's version above, and
``tests/runtime/unit/test_dask_api.py`` checks every name and attribute used here, so that a
Dask release that changes them fails that test by name instead of the analytics at run time.
"""

from __future__ import annotations

from dask._task_spec import Alias, DataNode, Task, TaskRef, convert_legacy_graph

__all__ = ["Alias", "DataNode", "Task", "TaskRef", "convert_legacy_graph"]
