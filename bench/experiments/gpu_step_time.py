"""Milliseconds per training step on a GPU, for ways of running the same step:

    python bench/experiments/gpu_step_time.py TRAIN_CSV [MODE ...]

MODE: eager (the product's GPU step before CudaGraphStep), fused (eager, fused Adam),
graph (the whole step - forward, backward, clipping, Adam - captured once as a CUDA
graph and replayed, as CudaGraphStep now does), compile (torch.compile of the loss,
fused Adam), eager4096 / graph4096 (batch 4,096 instead of 512). Default: all. Each mode trains the same network
from the same start for WARM + TIMED steps; the loss after them is printed so the
modes can be seen to compute the same thing.
"""
import sys
import time

import pyarrow.csv as pc
import torch

from vae_anomaly.model import TabularVAE, VAEConfig, negative_elbo
from vae_anomaly.preprocessing import Preprocessor
from vae_anomaly.training import Tensors

WARM, TIMED = (30, 300) if torch.cuda.is_available() else (3, 10)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
table = pc.read_csv(sys.argv[1])
pre = Preprocessor().fit(table, exclude=["id"])
enc = pre.transform(table)
lay = pre.layout
cfg = VAEConfig.sized_for(lay.n_numeric, lay.n_indicators, lay.category_sizes)
data = Tensors(torch.from_numpy(enc.numeric).to(device),
               torch.from_numpy(enc.indicators).to(device),
               torch.from_numpy(enc.categories).to(device))


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def loss_of(model, batch, eps):
    reconstruction, kl = negative_elbo(model, batch.numeric, batch.indicators, batch.codes, eps)
    return reconstruction.mean() + 0.5 * kl.mean()


def run(mode: str, bs: int):
    torch.manual_seed(0)
    model = TabularVAE(cfg).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    order = torch.randperm(len(data), generator=gen, device=device)
    n_batches = len(data) // bs
    index_of = lambda i: order[(i % n_batches) * bs:(i % n_batches + 1) * bs]  # noqa: E731
    graph = mode.startswith("graph")
    options = {"capturable": True, "foreach": True} if graph else (
        {"fused": True} if mode in ("fused", "compile") else {})
    opt = torch.optim.Adam(model.parameters(),
                           lr=torch.tensor(2e-3, device=device) if graph else 2e-3, **options)
    loss_fn = torch.compile(loss_of) if mode == "compile" else loss_of

    def step(index, eps):
        loss = loss_fn(model, data.rows(index), eps)
        opt.zero_grad(set_to_none=not graph)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        return loss.detach()

    static_index = index_of(0).clone()
    static_eps = torch.randn(1, bs, cfg.latent_dim, generator=gen, device=device)
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):      # warm-up on a side stream, as capture needs
            for i in range(3):
                static_index.copy_(index_of(i))
                static_loss = step(static_index, static_eps)
        torch.cuda.current_stream().wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            static_loss = step(static_index, static_eps)

    def one(i):
        eps = torch.randn(1, bs, cfg.latent_dim, generator=gen, device=device)
        if graph:
            static_index.copy_(index_of(i))
            static_eps.copy_(eps)
            cuda_graph.replay()
            return static_loss
        return step(index_of(i), eps)

    started = time.perf_counter()
    for i in range(WARM):
        one(i)
    sync()
    warm_s = time.perf_counter() - started
    started = time.perf_counter()
    total = torch.zeros((), device=device)
    for i in range(WARM, WARM + TIMED):
        total += one(i)
    sync()
    per_step = (time.perf_counter() - started) / TIMED
    epoch = per_step * (len(data) * 0.9) / bs
    print(f"{mode:>10} bs={bs:5d}: {per_step * 1e3:6.2f} ms/step, {epoch:6.2f} s per "
          f"{int(len(data) * 0.9):,}-row epoch; warm-up {warm_s:5.1f} s; "
          f"mean loss of timed steps {total.item() / TIMED:.4f}", flush=True)


modes = sys.argv[2:] or ["eager", "fused", "graph", "compile", "eager4096", "graph4096"]
for mode in modes:
    batch = 4096 if mode.endswith("4096") else 512
    try:
        run(mode.removesuffix("4096"), batch)
    except Exception as error:  # one mode failing must not lose the others' numbers
        print(f"{mode:>10}: failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
