"""The heat simulation of ``simulation.py`` on a GPU: the grid lives in CuPy arrays, and the rank
publishes its device block as it is. doreisa checks it from its ``__cuda_array_interface__``,
and copies a wanted step once, device to host, straight into the ring slot; the unwanted steps
cost a function call, as on the CPU. Monitors and ``stats``/``downsample``/``cast`` run on the
device (docs/gpu.md).

Same arguments, same initial field and same arithmetic as ``simulation.py``: the initial field
and the heat source are computed by its numpy functions and moved to the device, so both runs
publish the same values. The halos go through host buffers, so any MPI works (a CUDA-aware MPI
could take the device buffers directly).

Needs CuPy (``pip install 'doreisa[gpu]'``) and a CUDA device; run it through doreisa::

    doreisa run examples/heat/contract.yaml --np 4 --output out/heat-gpu \\
        --analytics examples/heat/analytics.py -- python examples/heat/simulation_gpu.py --steps 200
"""

from __future__ import annotations

import argparse

import cupy as cp
import numpy as np
from mpi4py import MPI
from simulation import ALPHA, AMBIENT, initial, split

import doreisa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="global grid is size x size")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--spot", type=float, default=150.0, help="initial hot spot amplitude (K above ambient)")
    parser.add_argument("--source", default="", help="START:STOP: a heat source is on for steps [START, STOP)")
    parser.add_argument("--source-rate", type=float, default=10.0, help="heating rate at the source centre (K/time)")
    parser.add_argument("--device", type=int, default=-1, help="CUDA device; default: local rank modulo the devices")
    args = parser.parse_args()

    world = MPI.COMM_WORLD
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    cp.cuda.Device(args.device if args.device >= 0 else local.Get_rank() % cp.cuda.runtime.getDeviceCount()).use()
    dims = MPI.Compute_dims(world.Get_size(), 2)
    cart = world.Create_cart(dims, periods=[False, False])
    py, px = cart.Get_coords(cart.Get_rank())
    (y0, ny), (x0, nx) = split(args.size, dims[0], py), split(args.size, dims[1], px)

    host = np.full((ny + 2, nx + 2), AMBIENT)
    yy, xx = np.meshgrid(np.arange(y0, y0 + ny), np.arange(x0, x0 + nx), indexing="ij")
    host[1:-1, 1:-1] = initial(yy, xx, args.size, args.spot)
    u = cp.asarray(host)
    dt = 0.2 / ALPHA  # stable explicit step for dx = 1
    source = np.exp(-((yy - 0.7 * args.size) ** 2 + (xx - 0.3 * args.size) ** 2) / (2 * (0.04 * args.size) ** 2))
    source = cp.asarray(source)
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
        print(
            f"simulation done: {args.steps} steps on the GPU; rank 0 copied {summary['published']} blocks", flush=True
        )


def exchange_halos(cart: MPI.Cartcomm, u: cp.ndarray) -> None:
    """Fill the ghost cells from the neighbours through host buffers; the outer boundary stays at AMBIENT."""
    for axis in (0, 1):
        low, high = cart.Shift(axis, 1)
        inner = [slice(1, -1), slice(1, -1)]
        for send_idx, recv_idx, dest, source in ((-2, 0, high, low), (1, -1, low, high)):
            send = [*inner]
            recv = [*inner]
            send[axis], recv[axis] = send_idx, recv_idx
            buf = cp.asnumpy(u[tuple(send)])
            out = np.empty_like(buf)
            cart.Sendrecv(buf, dest=dest, recvbuf=out, source=source)
            if source != MPI.PROC_NULL:
                u[tuple(recv)] = cp.asarray(out)


if __name__ == "__main__":
    main()
