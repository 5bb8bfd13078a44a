"""Views (``of:``) and ``cadence: {never: true}``: checked when the contract loads."""

from __future__ import annotations

import pytest

from doreisa.contract import parse_contract
from doreisa.errors import ContractError

BASE = "arrays:\n  t: {dtype: float32, shape: [8, 6], block: [4, 6], dims: [y, x]}\n"


def test_a_view_takes_the_layout_of_the_array_it_views() -> None:
    contract = parse_contract(BASE + "  z: {of: t, select: {y: {start: 2, stop: 6}}, cadence: {never: true}}\n")
    zoom = contract.arrays["z"]
    assert (zoom.dtype, zoom.shape, zoom.block, zoom.dims) == ("float32", (8, 6), (4, 6), ("y", "x"))
    assert zoom.region == ((2, 6, 1), (0, 6, 1)) and zoom.cadence is not None and zoom.cadence.never
    assert contract.views == {"t": ["z"]}
    again = type(contract).from_plain(contract.to_plain())  # as a rank receives it
    assert again.arrays["z"] == zoom


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("  z: {of: nope}\n", "arrays.z.of: unknown array 'nope'; known arrays: t, z"),
        ("  z: {of: t}\n  w: {of: z}\n", "arrays.w.of: 'z' is itself a view of 't': view that instead"),
        (
            "  z: {of: t, dtype: float64}\n",
            "arrays.z.dtype: a view has the dtype of the array it views ('t'): leave dtype out",
        ),
        ("  z: {of: t, shape: [4, 6]}\n", "arrays.z.shape: a view has the shape of the array it views"),
    ],
)
def test_bad_views_are_refused_naming_the_key(extra: str, says: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_contract(BASE + extra)
    assert says in str(info.value)


def test_never_stands_alone() -> None:
    with pytest.raises(ContractError, match="'never' copies no step: give it alone"):
        parse_contract(BASE + "cadence: {every: 2, never: true}\n")
    assert parse_contract(BASE + "cadence: {never: true}\n").cadence.never
