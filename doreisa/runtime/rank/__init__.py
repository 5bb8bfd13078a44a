"""The simulation side: what runs inside every MPI rank.

Imports numpy, msgspec, the plan compiled from the contract (:mod:`doreisa.runtime.plan`) and
the standard library only; never Ray, Dask, pydantic or YAML, and never
:mod:`doreisa.runtime.cluster` (tests check it): a rank starts fast and stays small, whatever
the analytics load.
"""
