"""The results table of a run (``results.parquet``, else ``results.csv``) as one pandas frame.

Both files have the columns ``analytic, step, time, value, file``, but say "no scalar" in
different ways: CSV with an empty cell (and ``nan`` for a NaN result), Parquet with a null
(and NaN for a NaN). The frame keeps the difference: a NaN result is a scalar, a missing one
is an array (or a text). pandas is imported when a table is read, never on import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doreisa.errors import DoreisaError
from doreisa.report._folder import CSV, PARQUET

FIELDS = ("analytic", "step", "time", "value", "file")


def read_table(folder: Path, notes: list[str]) -> Any:
    """The results as a ``pandas.DataFrame`` (None if the run wrote no table).

    Columns: ``analytic`` (str), ``step`` (int), ``time`` (float, NaN where unknown),
    ``number`` (float), ``scalar`` (a number was recorded: ``number`` is it, NaN included),
    ``has_value`` (something was recorded inline: a number or a text), ``file`` (str).
    A Parquet file that cannot be read (a run killed before it wrote its index) falls back to
    the CSV file, and says so in ``notes``.

    Raises
    ------
    DoreisaError
        For a table whose columns are not those of a results table.
    """
    if (folder / PARQUET).is_file():
        try:
            return _from_parquet(folder / PARQUET)
        except DoreisaError:
            raise
        except Exception as exc:
            if not (folder / CSV).is_file():
                raise DoreisaError(f"{folder / PARQUET}: cannot be read ({exc}) and there is no {CSV}") from exc
            notes.append(f"{PARQUET} cannot be read ({exc}; a killed run leaves it without its index): read {CSV}")
    if (folder / CSV).is_file():
        return _from_csv(folder / CSV)
    return None


def _check_columns(path: Path, columns: Any) -> None:
    missing = [c for c in FIELDS if c not in columns]
    if missing:
        raise DoreisaError(
            f"{path}: not a results table: no column {', '.join(missing)} (expected {', '.join(FIELDS)})"
        )


def _from_parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    _check_columns(path, table.column_names)
    frame = table.select(list(FIELDS)).to_pandas()
    frame["has_value"] = ~table.column("value").is_null().to_numpy(zero_copy_only=False)
    frame["scalar"] = frame["has_value"]
    frame["number"] = frame.pop("value").astype(float)
    frame["file"] = frame["file"].fillna("")
    return _tidy(frame)


def _from_csv(path: Path) -> Any:
    import pandas as pd

    try:  # text first: "" (no scalar) and "nan" (a NaN result) must stay apart
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")
    except pd.errors.EmptyDataError:  # a run killed before the header was written
        frame = pd.DataFrame({name: pd.Series(dtype=str) for name in FIELDS})
    _check_columns(path, frame.columns)
    text = frame.pop("value")
    frame["has_value"] = text != ""
    frame["number"] = pd.to_numeric(text.replace({"True": "1", "False": "0"}), errors="coerce")
    frame["scalar"] = frame["number"].notna() | text.str.lower().isin(("nan", "-nan"))
    frame["time"] = pd.to_numeric(frame["time"], errors="coerce")
    return _tidy(frame)


def _tidy(frame: Any) -> Any:
    """Drop rows without a step (a last line cut short by a killed run); steps as integers."""
    import pandas as pd

    frame["step"] = pd.to_numeric(frame["step"], errors="coerce")
    frame = frame.dropna(subset=["step"]).astype({"step": "int64", "analytic": str, "time": float})
    return frame.reset_index(drop=True)


def label_kinds(frame: Any) -> dict[str, str]:
    """Each analytic label of the table, in the order of their first result: ``scalar``, ``text`` or ``array``."""
    kinds: dict[str, str] = {}
    for label, rows in frame.groupby("analytic", sort=False):
        if rows["scalar"].any():
            kinds[str(label)] = "scalar"
        else:
            kinds[str(label)] = "text" if rows["has_value"].any() else "array"
    return kinds


def stored_paths(frame: Any, label: str) -> dict[int, list[str]]:
    """Where the store formats put each result of ``label``: step to paths relative to the run folder."""
    rows = frame[(frame["analytic"] == label) & (frame["file"] != "")]
    return {int(step): [p for p in str(f).split(";") if p] for step, f in zip(rows["step"], rows["file"], strict=True)}
