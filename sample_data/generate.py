"""Generate a synthetic, mixed-type e-commerce / payment transaction dataset.

The data is used by the README quickstart and the end-to-end tests.  Two files
are written:

``train.csv``
    Normal transactions only (default 3000 rows), no ``label`` column.
``new.csv``
    Fresh transactions from the same generator (default 1000 rows) with a
    small share of injected anomalies (default 6%) and a final ``label``
    column: 0 = normal, 1 = anomaly.

Columns of a normal record
--------------------------
transaction_id       text id, ``T000001``...; ids in new.csv start at ``T100001``
customer_age         int 18-90, right-skewed (most customers 25-55)
account_tenure_days  int, grows with age: an account is never older than the
                     customer's life since age 17, and is capped at 20 years
amount               float, heavy-tailed: n_items * unit_price * (1 + fees),
                     fees being 0-8%
n_items              int >= 1, 1 + Poisson with a category-dependent mean
unit_price           float, lognormal; median depends on merchant_category
                     and channel
session_minutes      float, gamma; longer for web and for large baskets;
                     always missing for ``pos`` (no online session)
hour_of_day          int 0-23, bimodal: daytime and evening peaks
distance_km          float, distance from the customer's home, lognormal;
                     some ``pos`` purchases happen while travelling (far away)
failed_logins_24h    int, almost always 0, rarely up to ~5
channel              web / mobile / pos
country              US, GB, DE, FR, CA, NL, ES, IT (skewed frequencies)
device               depends on channel: web -> desktop/tablet,
                     mobile -> ios/android, pos -> terminal
merchant_category    grocery, electronics, fashion, travel, restaurants,
                     digital_goods
is_member            True/False, more likely for long-standing accounts

About 2.5% of ``session_minutes`` and ``distance_km`` and 1% of ``device``
cells are missing (empty) at random.

Anomaly kinds injected into new.csv (roughly equal shares)
----------------------------------------------------------
extreme_amount        unit price (and thus amount) 20-100x the typical value
                      for the merchant category; the amount stays consistent
                      with n_items * unit_price.
broken_relationship   amount no longer matches n_items * unit_price (off by a
                      factor of 3-8 either way) although every single value is
                      plausible on its own.
impossible_category   a device that never occurs with the channel (e.g. pos
                      paid with ``ios``) or a country code never seen in
                      training (``ZZ``, ``XX``).
account_takeover      8-30 failed logins in 24h, at night (2-4 h), far from
                      home (800-9000 km), on an online channel.
age_tenure_mismatch   a young customer (18-24) whose account is older than
                      their adult life (4000-9000 days).
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

CHANNELS = ["web", "mobile", "pos"]
CHANNEL_P = [0.45, 0.40, 0.15]
CHANNEL_PRICE_FACTOR = {"web": 1.15, "mobile": 0.85, "pos": 1.0}
DEVICES = {"web": (["desktop", "tablet"], [0.7, 0.3]),
           "mobile": (["ios", "android"], [0.5, 0.5]),
           "pos": (["terminal"], [1.0])}
ALL_DEVICES = ["desktop", "tablet", "ios", "android", "terminal"]
COUNTRIES = ["US", "GB", "DE", "FR", "CA", "NL", "ES", "IT"]
COUNTRY_P = [0.38, 0.16, 0.13, 0.10, 0.08, 0.06, 0.05, 0.04]
UNSEEN_COUNTRIES = ["ZZ", "XX"]
# category: (probability, median unit price, mean of extra items)
CATEGORIES = {"grocery": (0.30, 6.0, 6.0),
              "electronics": (0.12, 180.0, 0.3),
              "fashion": (0.18, 45.0, 1.5),
              "travel": (0.08, 320.0, 0.5),
              "restaurants": (0.20, 22.0, 1.0),
              "digital_goods": (0.12, 9.0, 0.5)}
COLUMNS = ["transaction_id", "customer_age", "account_tenure_days", "amount",
           "n_items", "unit_price", "session_minutes", "hour_of_day",
           "distance_km", "failed_logins_24h", "channel", "country", "device",
           "merchant_category", "is_member"]
ANOMALY_KINDS = ["extreme_amount", "broken_relationship",
                 "impossible_category", "account_takeover",
                 "age_tenure_mismatch"]


def make_ids(start, n):
    """Text ids T000001, T000002, ... starting at ``start``."""
    return [f"T{i:06d}" for i in range(start, start + n)]


def sample_age_tenure(rng, n):
    """Right-skewed ages and tenures bounded by the customer's adult life."""
    age = np.clip(np.round(18 + rng.gamma(3.0, 8.0, n)), 18, 90).astype(int)
    max_tenure = np.minimum((age - 17) * 365, 20 * 365)
    tenure = np.maximum(1, np.round(rng.beta(1.3, 2.5, n) * max_tenure))
    return age, tenure.astype(int)


def sample_channel_device(rng, n):
    """Channel and a device that is compatible with it."""
    channel = rng.choice(CHANNELS, size=n, p=CHANNEL_P)
    device = np.empty(n, dtype=object)
    for ch, (names, p) in DEVICES.items():
        mask = channel == ch
        device[mask] = rng.choice(names, size=mask.sum(), p=p)
    return channel, device


def sample_basket(rng, category, channel):
    """n_items, unit_price and amount = n_items * unit_price * (1 + fees)."""
    n = len(category)
    median = np.array([CATEGORIES[c][1] for c in category])
    extra = np.array([CATEGORIES[c][2] for c in category])
    factor = np.array([CHANNEL_PRICE_FACTOR[c] for c in channel])
    n_items = 1 + rng.poisson(extra)
    unit_price = np.round(median * factor * rng.lognormal(0.0, 0.7, n), 2)
    unit_price = np.maximum(unit_price, 0.5)
    fees = rng.uniform(0.0, 0.08, n)
    amount = np.round(n_items * unit_price * (1 + fees), 2)
    return n_items, unit_price, amount


def sample_session_minutes(rng, channel, n_items):
    """Gamma session length; structurally missing for point-of-sale."""
    scale = np.where(channel == "web", 3.0, 2.0) + 0.3 * n_items
    minutes = np.round(rng.gamma(2.0, scale), 2)
    return np.where(channel == "pos", np.nan, minutes)


def sample_hour(rng, n):
    """Bimodal hour of day: a daytime and an evening peak."""
    daytime = rng.random(n) < 0.55
    hour = np.where(daytime, rng.normal(13.0, 2.5, n), rng.normal(20.0, 1.8, n))
    return np.mod(np.round(hour), 24).astype(int)


def sample_distance(rng, channel):
    """Distance from home; some pos purchases happen while travelling."""
    n = len(channel)
    local = rng.lognormal(np.log(4.0), 1.0, n)
    travelling = (channel == "pos") & (rng.random(n) < 0.2)
    far = rng.lognormal(np.log(400.0), 1.0, n)
    return np.round(np.where(travelling, far, local), 2)


def sample_failed_logins(rng, n):
    """Mostly zero; a few users mistype their password a couple of times."""
    clumsy = rng.random(n) < 0.04
    return rng.poisson(0.1, n) + np.where(clumsy, rng.poisson(1.5, n), 0)


def add_missing(rng, df):
    """Blank out a few cells at random (on top of structural missingness)."""
    for col, rate in [("session_minutes", 0.025), ("distance_km", 0.025),
                      ("device", 0.01)]:
        df.loc[rng.random(len(df)) < rate, col] = np.nan
    return df


def make_normal_records(rng, n, id_start=1):
    """``n`` normal transactions with ids starting at ``id_start``."""
    age, tenure = sample_age_tenure(rng, n)
    channel, device = sample_channel_device(rng, n)
    cat_names = list(CATEGORIES)
    category = rng.choice(cat_names, size=n,
                          p=[CATEGORIES[c][0] for c in cat_names])
    n_items, unit_price, amount = sample_basket(rng, category, channel)
    member_p = np.where(tenure > 2 * 365, 0.6, 0.2)
    df = pd.DataFrame({
        "transaction_id": make_ids(id_start, n),
        "customer_age": age,
        "account_tenure_days": tenure,
        "amount": amount,
        "n_items": n_items,
        "unit_price": unit_price,
        "session_minutes": sample_session_minutes(rng, channel, n_items),
        "hour_of_day": sample_hour(rng, n),
        "distance_km": sample_distance(rng, channel),
        "failed_logins_24h": sample_failed_logins(rng, n),
        "channel": channel,
        "country": rng.choice(COUNTRIES, size=n, p=COUNTRY_P),
        "device": device,
        "merchant_category": category,
        "is_member": rng.random(n) < member_p,
    })
    return add_missing(rng, df)[COLUMNS]


def recompute_amount(rng, df, idx):
    """Make amount consistent with n_items * unit_price again."""
    fees = rng.uniform(0.0, 0.08, len(idx))
    df.loc[idx, "amount"] = np.round(
        df.loc[idx, "n_items"] * df.loc[idx, "unit_price"] * (1 + fees), 2)


def inject_extreme_amount(rng, df, idx):
    """Unit price (and amount) 20-100x the category/channel median."""
    median = df.loc[idx, "merchant_category"].map(lambda c: CATEGORIES[c][1])
    factor = df.loc[idx, "channel"].map(CHANNEL_PRICE_FACTOR)
    mult = rng.uniform(20, 100, len(idx))
    df.loc[idx, "unit_price"] = np.round(median * factor * mult, 2)
    recompute_amount(rng, df, idx)


def inject_broken_relationship(rng, df, idx):
    """Unit price off by 3-8x (either way) relative to amount / n_items."""
    ratio = rng.uniform(3, 8, len(idx))
    ratio = np.where(rng.random(len(idx)) < 0.5, ratio, 1 / ratio)
    price = df.loc[idx, "amount"] / df.loc[idx, "n_items"] * ratio
    df.loc[idx, "unit_price"] = np.maximum(np.round(price, 2), 0.5)


def inject_impossible_category(rng, df, idx):
    """Device incompatible with channel, or a country never seen before."""
    for i in idx:
        if rng.random() < 0.5:
            allowed = DEVICES[df.at[i, "channel"]][0]
            wrong = [d for d in ALL_DEVICES if d not in allowed]
            df.at[i, "device"] = rng.choice(wrong)
        else:
            df.at[i, "country"] = rng.choice(UNSEEN_COUNTRIES)


def inject_account_takeover(rng, df, idx):
    """Many failed logins, at night, far from home, online channel."""
    n = len(idx)
    df.loc[idx, "failed_logins_24h"] = rng.integers(8, 31, n)
    df.loc[idx, "hour_of_day"] = rng.integers(2, 5, n)
    df.loc[idx, "distance_km"] = np.round(rng.uniform(800, 9000, n), 2)


def inject_age_tenure_mismatch(rng, df, idx):
    """Young customer with an account older than their adult life."""
    n = len(idx)
    df.loc[idx, "customer_age"] = rng.integers(18, 25, n)
    df.loc[idx, "account_tenure_days"] = rng.integers(4000, 9001, n)


INJECTORS = {"extreme_amount": inject_extreme_amount,
             "broken_relationship": inject_broken_relationship,
             "impossible_category": inject_impossible_category,
             "account_takeover": inject_account_takeover,
             "age_tenure_mismatch": inject_age_tenure_mismatch}


def inject_anomalies(rng, df, rate):
    """Turn round(rate * len(df)) rows into anomalies of rotating kinds.

    Returns the modified frame with a ``label`` column and a dict with the
    number of rows per anomaly kind.
    """
    df = df.copy()
    n_anom = int(round(rate * len(df)))
    sizes = np.bincount(np.arange(n_anom) % len(ANOMALY_KINDS),
                        minlength=len(ANOMALY_KINDS))
    online = df.index[df["channel"] != "pos"].to_numpy()
    n_ato = sizes[ANOMALY_KINDS.index("account_takeover")]
    chosen = {"account_takeover": rng.choice(online, n_ato, replace=False)}
    rest = rng.permutation(np.setdiff1d(df.index, chosen["account_takeover"]))
    start = 0
    for kind, size in zip(ANOMALY_KINDS, sizes):
        if kind != "account_takeover":
            chosen[kind] = rest[start:start + size]
            start += size
    for kind in ANOMALY_KINDS:
        if len(chosen[kind]):
            INJECTORS[kind](rng, df, chosen[kind])
    df["label"] = 0
    for idx in chosen.values():
        df.loc[idx, "label"] = 1
    return df, {k: len(chosen[k]) for k in ANOMALY_KINDS}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path,
                        default=Path(__file__).resolve().parent)
    parser.add_argument("--train-rows", type=int, default=3000)
    parser.add_argument("--new-rows", type=int, default=1000)
    parser.add_argument("--anomaly-rate", type=float, default=0.06)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args()


def main():
    args = parse_args()
    rng = np.random.default_rng(args.seed)
    train = make_normal_records(rng, args.train_rows, id_start=1)
    new = make_normal_records(rng, args.new_rows, id_start=100001)
    new, counts = inject_anomalies(rng, new, args.anomaly_rate)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    train.to_csv(args.out_dir / "train.csv", index=False)
    new.to_csv(args.out_dir / "new.csv", index=False)
    kinds = ", ".join(f"{k}={v}" for k, v in counts.items())
    print(f"wrote {len(train)} train rows and {len(new)} new rows "
          f"({int(new['label'].sum())} anomalies: {kinds}) to {args.out_dir}")


if __name__ == "__main__":
    main()
