"""2-D heat diffusion with MPI domain decomposition, coupled to doreisa.

Each rank owns a block of a ``size x size`` grid (any number of ranks: ``MPI.Compute_dims``
splits the grid, unevenly if needed) with one ghost cell on each side, exchanges halos with
its neighbours every step, and publishes its block through a :class:`doreisa.Bridge`. The
contract decides which steps are copied; the others cost a function call.

Run it through doreisa::

    doreisa run examples/heat/contract.yaml --np 4 --output out/heat \\
        --analytics examples/heat/analytics.py -- python examples/heat/simulation.py --steps 200
"""

from __future__ import annotations

import argparse

import numpy as np
from mpi4py import MPI

import doreisa

AMBIENT = 300.0  # K, fixed boundary temperature
ALPHA = 1.0


def split(n: int, parts: int, index: int) -> tuple[int, int]:
    """Start and length of part ``index`` of ``n`` cells cut into ``parts`` nearly equal parts."""
    base, extra = divmod(n, parts)
    return index * base + min(index, extra), base + (1 if index < extra else 0)


def initial(y: np.ndarray, x: np.ndarray, size: int, spot: float) -> np.ndarray:
    """Ambient temperature with a hot Gaussian spot off-centre."""
    cy, cx, width = 0.4 * size, 0.6 * size, 0.08 * size
    return AMBIENT + spot * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="global grid is size x size")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--spot", type=float, default=150.0, help="initial hot spot amplitude (K above ambient)")
    parser.add_argument("--source", default="", help="START:STOP: a heat source is on for steps [START, STOP)")
    parser.add_argument("--source-rate", type=float, default=10.0, help="heating rate at the source centre (K/time)")
    args = parser.parse_args()

    world = MPI.COMM_WORLD
    dims = MPI.Compute_dims(world.Get_size(), 2)
    cart = world.Create_cart(dims, periods=[False, False])
    py, px = cart.Get_coords(cart.Get_rank())
    (y0, ny), (x0, nx) = split(args.size, dims[0], py), split(args.size, dims[1], px)

    u = np.full((ny + 2, nx + 2), AMBIENT)
    yy, xx = np.meshgrid(np.arange(y0, y0 + ny), np.arange(x0, x0 + nx), indexing="ij")
    u[1:-1, 1:-1] = initial(yy, xx, args.size, args.spot)
    dt = 0.2 / ALPHA  # stable explicit step for dx = 1
    source = np.exp(-((yy - 0.7 * args.size) ** 2 + (xx - 0.3 * args.size) ** 2) / (2 * (0.04 * args.size) ** 2))
    on, off = (int(v) for v in args.source.split(":")) if args.source else (-1, -1)

    bridge = doreisa.Bridge(cart)
    time = 0.0
    for step in range(args.steps):
        bridge.publish("temperature", u[1:-1, 1:-1], step=step, time=time, offset=(y0, x0))
        exchange_halos(cart, u)
        lap = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * u[1:-1, 1:-1]
        u[1:-1, 1:-1] += ALPHA * dt * lap
        if on <= step < off:
            u[1:-1, 1:-1] += dt * args.source_rate * source
        time += dt
    summary = bridge.close()
    if cart.Get_rank() == 0:
        print(f"simulation done: {args.steps} steps; rank 0 copied {summary['published']} blocks", flush=True)


def exchange_halos(cart: MPI.Cartcomm, u: np.ndarray) -> None:
    """Fill the ghost cells from the neighbours; the outer boundary stays at AMBIENT."""
    for axis in (0, 1):
        low, high = cart.Shift(axis, 1)
        inner = [slice(1, -1), slice(1, -1)]
        for send_idx, recv_idx, dest, source in ((-2, 0, high, low), (1, -1, low, high)):
            send = [*inner]
            recv = [*inner]
            send[axis], recv[axis] = send_idx, recv_idx
            buf = np.ascontiguousarray(u[tuple(send)])
            out = np.empty_like(buf)
            cart.Sendrecv(buf, dest=dest, recvbuf=out, source=source)
            if source != MPI.PROC_NULL:
                u[tuple(recv)] = out


if __name__ == "__main__":
    main()
