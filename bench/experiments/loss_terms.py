"""Where two models' losses differ, term by term, on the same rows:
    python bench/experiments/loss_terms.py CSV ROWS MODEL [MODEL ...]
Prints each numeric column's mean reconstruction NLL (and the decoder's
log-variance for it), the missing indicators' and categorical columns' summed
NLL, and the KL, for one draw of eps per row."""
import sys

import pyarrow.csv as pc
import torch

from vae_anomaly.detector import load
from vae_anomaly.model import gaussian_kl, reconstruction_nll, reparameterize

path, rows, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
table = pc.read_csv(path).slice(0, rows)
for model_path in models:
    detector = load(model_path)
    encoded = detector.preprocessor_.transform(table)
    model = detector.model_.eval()
    numeric, indicators, codes = (torch.from_numpy(x) for x in
                                  (encoded.numeric, encoded.indicators, encoded.categories))
    with torch.no_grad():
        mu, logvar = model.encode(model.inputs(numeric, indicators, codes))
        eps = torch.randn(1, *mu.shape, generator=torch.Generator().manual_seed(0))
        out = model.decode(reparameterize(mu, logvar, eps))
        terms = reconstruction_nll(out, numeric, indicators, codes, model.config.category_sizes)
    per_column = " ".join(f"{nll:.2f}({lv:.1f})" for nll, lv in
                          zip(terms.numeric.mean((0, 1)).tolist(),
                              out.numeric_logvar[0, 0].tolist()))
    print(f"{model_path}\n  numeric NLL(log-variance): {per_column}\n"
          f"  indicators {terms.indicators.sum(-1).mean():.3f}  categories "
          f"{terms.categories.sum(-1).mean():.3f}  KL {gaussian_kl(mu, logvar).mean():.3f}")
