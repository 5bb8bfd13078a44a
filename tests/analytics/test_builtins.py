"""The built-in analytics give the numpy answer, lazily, on small dask arrays (no Ray)."""

from __future__ import annotations

from collections.abc import Iterator

import dask
import dask.array as da
import numpy as np
import pytest

from doreisa.analytics import bind_analytics, default_registry
from doreisa.contract import Contract

RNG = np.random.default_rng(0)
DATA = RNG.normal(300.0, 20.0, size=(12, 10))
LATER = DATA + RNG.normal(1.0, 0.5, size=DATA.shape)


@pytest.fixture(autouse=True)
def sync_scheduler() -> Iterator[None]:
    with dask.config.set(scheduler="sync"):
        yield


def _lazy(values: np.ndarray) -> da.Array:
    return da.from_array(values, chunks=(4, 5))


def _call(name: str, *arrays: object, **params: object) -> object:
    return default_registry.get(name).fn(*arrays, **params)


@pytest.mark.parametrize(
    ("name", "reference"),
    [("mean", np.mean), ("min", np.min), ("max", np.max), ("sum", np.sum), ("std", np.std)],
)
def test_reductions_match_numpy(name: str, reference) -> None:
    result = _call(name, _lazy(DATA))
    assert isinstance(result, da.Array)  # lazy until computed
    np.testing.assert_allclose(result.compute(), reference(DATA))


def test_histogram_matches_numpy() -> None:
    result = _call("histogram", _lazy(DATA), bins=8, lo=250.0, hi=350.0)
    expected, _ = np.histogram(DATA, bins=8, range=(250.0, 350.0))
    np.testing.assert_array_equal(result.compute(), expected)


def test_histogram_defaults() -> None:
    unit = RNG.random((6, 6))
    expected, _ = np.histogram(unit, bins=10, range=(0.0, 1.0))
    np.testing.assert_array_equal(_call("histogram", _lazy(unit)).compute(), expected)


def test_time_derivative_uses_time() -> None:
    result = _call("time_derivative", [_lazy(DATA), _lazy(LATER)], times=[1.0, 1.5], steps=[10, 20])
    np.testing.assert_allclose(result.compute(), np.mean(LATER - DATA) / 0.5)


def test_time_derivative_falls_back_to_steps() -> None:
    result = _call("time_derivative", [_lazy(DATA), _lazy(LATER)], times=[None, None], steps=[10, 20])
    np.testing.assert_allclose(result.compute(), np.mean(LATER - DATA) / 10)


def test_builtins_through_binding() -> None:
    contract = Contract.model_validate(
        {
            "arrays": {"t": {"dtype": "float64", "shape": [12, 10], "window": 2}},
            "analytics": [
                {"function": "mean", "arrays": ["t"]},
                {"function": "histogram", "arrays": ["t"], "params": {"bins": 4, "lo": 250.0, "hi": 350.0}},
                {"function": "time_derivative", "arrays": ["t"]},
            ],
        }
    )
    mean, hist, rate = bind_analytics(contract, default_registry)
    assert rate.window == 2
    np.testing.assert_allclose(mean.call({"t": _lazy(DATA)}, steps=[0], times=[None]).compute(), DATA.mean())
    np.testing.assert_array_equal(
        hist.call({"t": _lazy(DATA)}, steps=[0], times=[None]).compute(),
        np.histogram(DATA, bins=4, range=(250.0, 350.0))[0],
    )
    value = rate.call({"t": [_lazy(DATA), _lazy(LATER)]}, steps=[0, 10], times=[0.0, 2.0])
    np.testing.assert_allclose(value.compute(), np.mean(LATER - DATA) / 2.0)


def test_builtins_stay_lazy() -> None:
    computed: list[object] = []

    def counting_get(dsk, keys, **kwargs):  # a scheduler that records every compute
        computed.append(keys)
        return dask.get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=counting_get):
        for name in ("mean", "min", "max", "sum", "std", "histogram"):
            _call(name, _lazy(DATA))
        _call("time_derivative", [_lazy(DATA), _lazy(LATER)], times=[0.0, 1.0], steps=[0, 1])
        assert computed == []
        _call("mean", _lazy(DATA)).compute()
        assert len(computed) == 1


def test_histogram_keeps_its_bin_edges() -> None:
    result = _call("histogram", _lazy(DATA), bins=4, lo=250.0, hi=350.0).compute()
    assert result.dims == ("bin",)
    np.testing.assert_array_equal(result["bin_lo"], [250.0, 275.0, 300.0, 325.0])
    np.testing.assert_array_equal(result["bin_hi"], [275.0, 300.0, 325.0, 350.0])
    np.testing.assert_array_equal(result, np.histogram(DATA, bins=4, range=(250.0, 350.0))[0])
