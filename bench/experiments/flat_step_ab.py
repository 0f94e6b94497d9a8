"""Milliseconds per CPU training step: the per-parameter step with fused Adam (the
code before commit 16c20da) against FlatStep, alternating blocks of 100 steps in
one process on the same batches and draws, so the machine's swings hit both alike:
    python bench/experiments/flat_step_ab.py TRAIN_CSV [BLOCKS]
TRAIN_CSV: e.g. bench/speed.py's training file (its `id` column is left out)."""
import sys, torch, pyarrow.csv as pc, time, statistics
from vae_anomaly.preprocessing import Preprocessor
from vae_anomaly.model import TabularVAE, VAEConfig
from vae_anomaly.training import Tensors, TrainingConfig, TrainingStep, FlatStep
torch.set_num_threads(2)
table = pc.read_csv(sys.argv[1]); pre = Preprocessor().fit(table, exclude=["id"]); enc = pre.transform(table)
lay = pre.layout
cfg = VAEConfig.sized_for(lay.n_numeric, lay.n_indicators, lay.category_sizes)
data = Tensors(torch.from_numpy(enc.numeric), torch.from_numpy(enc.indicators), torch.from_numpy(enc.categories))
dev = torch.device("cpu"); conf = TrainingConfig()
torch.manual_seed(0); m_old = TabularVAE(cfg)
old = TrainingStep(m_old, torch.optim.Adam(m_old.parameters(), lr=0.0, fused=True), conf, dev)
torch.manual_seed(0); m_new = TabularVAE(cfg); new = FlatStep(m_new, conf, dev)
for s in (old, new):
    s.optimiser.param_groups[0]["lr"] = 1e-3; s.start_epoch(0.5)
g = torch.Generator().manual_seed(0); order = torch.randperm(len(data), generator=g)
eps_all = torch.randn(300, 1, 512, cfg.latent_dim, generator=g)
def block(step, start, n=100):
    t = time.perf_counter()
    for i in range(start, start + n):
        step.run(data, order[(i % 300)*512:(i % 300+1)*512], eps_all[i % 300])
    return (time.perf_counter() - t) / n * 1e3
block(old, 0, 30); block(new, 0, 30)
ratios, to, tn = [], [], []
for rep in range(int(sys.argv[2]) if len(sys.argv) > 2 else 20):
    a = block(old, rep * 100); b = block(new, rep * 100)
    to.append(a); tn.append(b); ratios.append(b / a)
print(f"old median {statistics.median(to):.3f} ms, flat median {statistics.median(tn):.3f} ms, "
      f"median ratio flat/old {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
new.finish()
print("max param diff after", 30 + 100 * len(ratios), "steps:",
      max((a - b).abs().max().item() for a, b in zip(m_old.parameters(), m_new.parameters())))
