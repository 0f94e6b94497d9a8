import sys, time, torch, numpy as np, pyarrow.csv as pc
from vae_anomaly.preprocessing import Preprocessor
from vae_anomaly.model import TabularVAE, VAEConfig, negative_elbo
from vae_anomaly.training import Tensors
torch.manual_seed(0); import os; torch.set_num_threads(int(os.environ.get("T", "2")))
table = pc.read_csv("/tmp/vae-speed/train_200000.csv")
pre = Preprocessor().fit(table, exclude=["id"])
enc = pre.transform(table)
lay = pre.layout
cfg = VAEConfig.sized_for(lay.n_numeric, lay.n_indicators, lay.category_sizes)
print(cfg)
model = TabularVAE(cfg)
data = Tensors(torch.from_numpy(enc.numeric), torch.from_numpy(enc.indicators), torch.from_numpy(enc.categories))
bs = int(sys.argv[1]) if len(sys.argv) > 1 else 512
fused = len(sys.argv) > 2 and sys.argv[2] == "fused"
opt = torch.optim.Adam(model.parameters(), lr=2e-3, **({"fused": True} if fused else {}))
g = torch.Generator().manual_seed(0)
def step(batch):
    eps = torch.randn(1, len(batch), cfg.latent_dim, generator=g)
    r, kl = negative_elbo(model, batch.numeric, batch.indicators, batch.codes, eps)
    loss = r.mean() + 0.5 * kl.mean()
    opt.zero_grad(set_to_none=True); loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0); opt.step()
order = torch.randperm(len(data), generator=g)
n = 200
for i in range(20): step(data.rows(order[i*bs:(i+1)*bs]))
t = time.perf_counter()
for i in range(n): step(data.rows(order[(i % 300)*bs:((i % 300)+1)*bs]))
dt = (time.perf_counter() - t) / n
print(f"bs={bs} fused={fused} {dt*1e3:.2f} ms/step -> epoch(180k) {dt*180000/bs:.2f} s")
if "prof" in sys.argv:
    from torch.profiler import profile
    with profile() as p:
        for i in range(50): step(data.rows(order[i*bs:(i+1)*bs]))
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
