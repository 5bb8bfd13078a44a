"""placement.device: the contract key, the check against the cluster's resources, and GPU parts (no Ray, no GPU)."""

from __future__ import annotations

import operator
import sys
from typing import Any

import numpy as np
import pytest

from doreisa.contract import parse_contract
from doreisa.errors import AnalyticsError, ContractError
from doreisa.runtime.cluster.preflight import check_devices, gpu_keys
from doreisa.runtime.scheduling import gpu
from doreisa.runtime.scheduling._dask import Task, TaskRef
from doreisa.runtime.scheduling.parts import run_part

CPU_ONLY = {"CPU": 16.0, "memory": 1e10, "object_store_memory": 1e9, "node:127.0.0.1": 1.0}
ONE_GPU = {**CPU_ONLY, "GPU": 1.0}


def _contract(top: str = "", field: str = "", other: str = "") -> Any:
    return parse_contract(
        f"""
arrays:
  field: {{dtype: float64, shape: [4], {field}}}
  other: {{dtype: float64, shape: [4], {other}}}
{top}
"""
    )


def test_the_default_device_is_cpu() -> None:
    contract = _contract()
    assert contract.placement.device == "cpu" and contract.placement_of("field").device == "cpu"
    assert gpu_keys(contract) == []
    check_devices(contract, CPU_ONLY, cupy=False)  # nothing asked: nothing checked


def test_an_unknown_device_lists_the_valid_ones() -> None:
    with pytest.raises(ContractError, match=r"placement\.device.*'cpu' or 'gpu'"):
        _contract("placement: {device: tpu}")


def test_gpu_on_a_cpu_only_cluster_names_the_key_and_the_fix() -> None:
    contract = _contract("placement: {device: gpu}")
    assert gpu_keys(contract) == ["placement.device"]
    with pytest.raises(
        ContractError, match=r"^placement\.device: gpu: .* the Ray cluster has no GPU \(CPU: 16, GPU: 0\).*device: cpu"
    ):
        check_devices(contract, CPU_ONLY, cupy=True)


def test_an_arrays_own_gpu_placement_is_named_by_its_key() -> None:
    contract = _contract(field="placement: {device: gpu}")
    assert contract.placement_of("field").device == "gpu" and contract.placement_of("other").device == "cpu"
    with pytest.raises(ContractError, match=r"^arrays\.field\.placement\.device: gpu: "):
        check_devices(contract, {}, cupy=True)
    both = _contract("placement: {device: gpu}", other="placement: {device: gpu}")
    assert gpu_keys(both) == ["placement.device", "arrays.other.placement.device"]


def test_gpu_needs_cupy_in_the_driver() -> None:
    contract = _contract("placement: {device: gpu}")
    with pytest.raises(ContractError, match=r"CuPy, which is not installed: pip install 'doreisa\[gpu\]'"):
        check_devices(contract, ONE_GPU, cupy=False)
    check_devices(contract, ONE_GPU, cupy=True)


# -- a part on a GPU, with a stand-in for CuPy ----------------------------------------------------


class _Device:
    """A stand-in device array: numpy underneath, and the calls that reach it are counted."""

    def __init__(self, data: np.ndarray[Any, Any]) -> None:
        self.data = data

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raw = [a.data if isinstance(a, _Device) else a for a in args]
        return _Device(np.asarray(func(*raw, **kwargs)))

    def __mul__(self, other: Any) -> _Device:
        return _Device(self.data * other)


class _FakeCupy:
    ndarray = _Device

    @staticmethod
    def asarray(x: np.ndarray[Any, Any]) -> _Device:
        return _Device(x)

    @staticmethod
    def asnumpy(x: _Device) -> np.ndarray[Any, Any]:
        return x.data


def test_blocks_go_to_the_device_and_results_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("doreisa.runtime.scheduling.parts.array_module", _FakeCupy)
    seen: list[type] = []

    def total(x: Any) -> Any:
        seen.append(type(x))
        return np.sum(x)  # NEP 18: dispatched to the device array

    tasks = {
        "double": Task("double", operator.mul, TaskRef("block"), 2),
        "total": Task("total", total, TaskRef("double")),
    }
    out = run_part(tasks, ("block",), ("double", "total"), np.arange(4.0), device="gpu")
    assert seen == [_Device]
    assert isinstance(out, tuple) and all(isinstance(v, np.ndarray) for v in out)
    np.testing.assert_array_equal(out[0], [0.0, 2.0, 4.0, 6.0])
    assert float(out[1]) == 12.0


def test_blocks_stored_together_go_to_the_device_by_position(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("doreisa.runtime.scheduling.parts.array_module", _FakeCupy)
    tasks = {"s": Task("s", np.sum, TaskRef("b"))}
    out = run_part(tasks, ("b",), ("s",), [np.ones(2), np.full(3, 2.0)], positions={"b": 1}, device="gpu")
    assert float(out) == 6.0 and isinstance(out, np.ndarray)


def test_to_host_walks_containers() -> None:
    value = {"a": (_Device(np.ones(2)), [3, _Device(np.zeros(1))])}
    host = gpu.to_host(value, _FakeCupy)
    assert isinstance(host["a"][0], np.ndarray) and isinstance(host["a"][1][1], np.ndarray) and host["a"][1][0] == 3
    assert gpu.to_device("label", _FakeCupy) == "label"


def test_a_gpu_part_without_cupy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(AnalyticsError, match=r"cannot import CuPy.*pip install 'doreisa\[gpu\]'"):
        run_part({}, (), ("x",), device="gpu")
