"""The plan a rank runs says what the contract says: compiled from every example, its names the models'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from pydantic import BaseModel

from doreisa.contract import (
    ArraySpec,
    Backpressure,
    Cadence,
    Contract,
    FeedbackPolicy,
    Monitor,
    Preprocess,
    Slice,
    Timeouts,
    Trigger,
    TriggerAction,
    load_contract,
    parse_contract,
)
from doreisa.runtime.plan import (
    ArrayPlan,
    BackpressurePlan,
    CadencePlan,
    FeedbackPlan,
    MonitorPlan,
    PreprocessPlan,
    RankPlan,
    SlicePlan,
    TimeoutsPlan,
    TriggerActionPlan,
    TriggerPlan,
    rank_plan,
)
from doreisa.runtime.protocol import Decision
from doreisa.runtime.rank.bridge import Bridge
from doreisa.runtime.rank.comm import SingleProcessComm
from doreisa.runtime.rank.inprocess import InProcessTransport
from doreisa.runtime.triggers import CadenceState

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples" / "contracts").glob("*.yaml"))
#: Each record of the plan and the model it is compiled from.
TWINS: list[tuple[type[msgspec.Struct], type[BaseModel]]] = [
    (SlicePlan, Slice),
    (CadencePlan, Cadence),
    (PreprocessPlan, Preprocess),
    (ArrayPlan, ArraySpec),
    (MonitorPlan, Monitor),
    (TriggerActionPlan, TriggerAction),
    (TriggerPlan, Trigger),
    (FeedbackPlan, FeedbackPolicy),
    (BackpressurePlan, Backpressure),
    (TimeoutsPlan, Timeouts),
    (RankPlan, Contract),
]
#: What the plan carries that is no field of the contract: the answers of its properties and methods.
DERIVED = {"views": "views", "uses_feedback": "uses_feedback", "in_simulation": "trigger_in_simulation"}


@pytest.mark.parametrize(("plan", "model"), TWINS, ids=lambda t: t.__name__)
def test_every_field_of_the_plan_is_the_models_with_its_default(plan: type[msgspec.Struct], model: Any) -> None:
    # rank_plan reads the models' attributes by the plan's names: a name that drifts would be a silent default
    fields = model.model_fields
    info = msgspec.inspect.type_info(plan)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        if field.name in DERIVED:
            assert hasattr(model, DERIVED[field.name]), field.name
            continue
        assert field.name in fields, f"{plan.__name__}.{field.name} is not a field of {model.__name__}"
        if field.default is not msgspec.NODEFAULT and not fields[field.name].is_required():
            assert field.default == fields[field.name].get_default(call_default_factory=True), field.name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_plan_of_each_example_answers_as_its_contract(path: Path) -> None:
    contract = load_contract(path)
    plan = rank_plan(contract)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(plan), type=RankPlan) == plan  # as the Welcome carries it
    for name, spec in contract.arrays.items():
        assert plan.cadence_of(name).plain() == contract.cadence_of(name).model_dump(exclude_none=True)
        assert plan.arrays[name].region == spec.region
        assert (plan.arrays[name].ndim, plan.arrays[name].dtype, plan.arrays[name].of) == (
            spec.ndim,
            spec.dtype,
            spec.of,
        )
    assert plan.views == {base: tuple(views) for base, views in contract.views.items()}
    assert plan.uses_feedback == contract.uses_feedback
    for trig in contract.triggers:
        assert plan.trigger_in_simulation(trig.name) == contract.trigger_in_simulation(trig.name)
        ours, theirs = plan.trigger_expressions[trig.name], contract.trigger_expressions[trig.name]
        assert [e and (e.reductions, e.history) for e in ours] == [e and (e.reductions, e.history) for e in theirs]
    assert [(m.array, m.reductions, m.every) for m in plan.monitors] == [
        (m.array, m.reductions, m.every) for m in contract.monitors
    ]


def test_a_cadence_decided_by_the_analytics_is_read_as_the_contract_would() -> None:
    plan = rank_plan(parse_contract("arrays: {t: {dtype: float64, shape: [4]}}\ncadence: {every: 10}"))
    state = CadenceState(plan)
    new = Cadence(every_time=0.5, start=1, stop=9).model_dump(exclude_none=True)  # as Feedback.set_cadence sends it
    (change,) = state.apply(Decision(1, 3, "feedback", cadence={"t": new}))
    assert (change.old, change.new) == (Cadence(every=10).model_dump(exclude_none=True), new)
    assert state.effective("t") == CadencePlan(every_time=0.5, start=1.0, stop=9.0)


def test_the_bridge_builds_the_contract_only_when_it_is_read() -> None:
    text = "arrays: {t: {dtype: float64, shape: [4], block: [4]}}\ncadence: {every: 2}"
    bridge = Bridge(SingleProcessComm(), transport=InProcessTransport(parse_contract(text)))
    assert bridge.publish("t", np.zeros(4), step=0)
    assert bridge._contract is None  # the point of the test: nothing built so far
    assert bridge.contract == parse_contract(text)
    assert bridge.contract is bridge.contract
