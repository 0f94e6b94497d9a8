"""Milliseconds per training step on a CSV (e.g. bench/speed.py's training file):
    T=THREADS python bench/experiments/train_step_time.py TRAIN_CSV [BATCH] [fused] [prof]"""
import os, sys, time, torch, numpy as np, pyarrow.csv as pc
from vae_anomaly.preprocessing import Preprocessor
from vae_anomaly.model import TabularVAE, VAEConfig, negative_elbo
from vae_anomaly.training import Tensors
torch.manual_seed(0)
torch.set_num_threads(int(os.environ.get("T", "2")))
table = pc.read_csv(sys.argv[1])
pre = Preprocessor().fit(table, exclude=["id"])
enc = pre.transform(table)
lay = pre.layout
cfg = VAEConfig.sized_for(lay.n_numeric, lay.n_indicators, lay.category_sizes)
print(cfg)
model = TabularVAE(cfg)
data = Tensors(torch.from_numpy(enc.numeric), torch.from_numpy(enc.indicators), torch.from_numpy(enc.categories))
bs = int(sys.argv[2]) if len(sys.argv) > 2 else 512
fused = "fused" in sys.argv[3:]
opt = torch.optim.Adam(model.parameters(), lr=2e-3, **({"fused": True} if fused else {}))
g = torch.Generator().manual_seed(0)
def step(batch):
    eps = torch.randn(1, len(batch), cfg.latent_dim, generator=g)
    r, kl = negative_elbo(model, batch.numeric, batch.indicators, batch.codes, eps)
    loss = r.mean() + 0.5 * kl.mean()
    opt.zero_grad(set_to_none=True); loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0); opt.step()
order = torch.randperm(len(data), generator=g)
n, full_batches = 200, max(1, len(data) // bs)
batch = lambda i: data.rows(order[(i % full_batches) * bs:(i % full_batches + 1) * bs])  # noqa: E731
for i in range(20): step(batch(i))
t = time.perf_counter()
for i in range(n): step(batch(i))
dt = (time.perf_counter() - t) / n
print(f"bs={bs} fused={fused} {dt*1e3:.2f} ms/step -> epoch(180k) {dt*180000/bs:.2f} s")
if "prof" in sys.argv:
    from torch.profiler import profile
    with profile() as p:
        for i in range(50): step(batch(i))
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
