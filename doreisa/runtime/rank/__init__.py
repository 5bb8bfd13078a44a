"""The simulation side: what runs inside every MPI rank.

Imports numpy, the contract and the standard library only; never Ray or Dask, and never
:mod:`doreisa.runtime.cluster` (a test checks it): a rank starts fast and stays small,
whatever the analytics load.
"""
