"""Dask on Ray by node: placeholder graphs, their cut into per-node parts, and the scheduler that runs them."""
