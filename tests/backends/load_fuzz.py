"""Fuzz the load paths of every backend with corrupted saved layers (run as a script).

Each example saves a small layer of one backend, corrupts the saved state (values, shapes,
dtypes, indices, neurons, extra state, garbage buffers, truncated file), loads it with
``torch.load(weights_only=True)`` through ``from_state_dict`` and ``load_state_dict`` and runs a
forward. A corruption that must be refused has to raise a clear error (an allowed type, with a
message); one that may leave a valid layer either loads and computes an output of the right
shape, or is refused the same way. A crash (segfault, heap corruption) kills this process: the
test that starts it (``test_load_validation.py``) then sees a signal instead of exit 0.

    python tests/backends/load_fuzz.py --examples 200

The last line printed is ``fuzz ok: N examples, M refused, K loaded; kinds: ...``.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import sys
import tempfile

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backends
from backends.state_checks import LayerStateError

IN, OUT, K = 24, 10, 5
#: corruptions that always describe an invalid layer (or an unreadable file)
MUST_FAIL = {"index_out_of_range", "index_negative", "active_out_of_range", "active_repeated",
             "shape", "garbage", "truncate", "missing"}  # fmt: skip
#: corruptions that may leave a valid layer (then it must load and compute)
MAY_PASS = {"values", "dtype", "extra"}
KINDS = sorted(MUST_FAIL | MAY_PASS)


def fuzzable_backends() -> list[str]:
    """Backends that run float32 on this CPU."""
    return [n for n in backends.names() if backends.get(n).supports("cpu", torch.float32)[0]]


def make_layer(name: str, seed: int) -> backends.Backend:
    """A layer IN -> OUT of backend ``name``: constant fan-in K, two neurons ablated."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(OUT, IN, generator=g)
    mask = torch.zeros(OUT, IN, dtype=torch.bool)
    for r in range(2, OUT):
        mask[r, torch.randperm(IN, generator=g)[:K]] = True
    return backends.create(name, weight, mask, torch.randn(OUT, generator=g), layer_name="fc")


def corrupt(sd: dict, kind: str, data: st.DataObject) -> dict | bytes:
    """A corrupted copy of state dict ``sd`` (or, for 'truncate', the truncated file bytes)."""
    sd = dict(sd)
    tensors = sorted(k for k, v in sd.items() if isinstance(v, torch.Tensor))
    key = data.draw(st.sampled_from(tensors), label="buffer")
    t = sd[key]
    idx_key = "indices" if "indices" in sd else None
    if kind == "index_out_of_range" and idx_key:
        width = sd["_extra_state"]["in_features"]
        sd[idx_key] = sd[idx_key] + data.draw(st.sampled_from([width, 1000, 100_000, 2**30]))
    elif kind == "index_negative" and idx_key:
        bad = sd[idx_key].clone()
        bad.view(-1)[data.draw(st.integers(0, bad.numel() - 1))] = -data.draw(st.integers(1, 2**14))
        sd[idx_key] = bad
    elif kind in ("active_out_of_range", "active_repeated") and "active" in sd:
        bad = sd["active"].clone()
        if kind == "active_out_of_range":
            bad[data.draw(st.integers(0, bad.numel() - 1))] += data.draw(
                st.sampled_from([OUT, 1000, 2**40])
            )
        else:
            bad[1] = bad[0]
        sd["active"] = bad
    elif kind == "shape" or kind in MUST_FAIL - {"garbage", "truncate", "missing"}:
        # the layout has no such buffer (e.g. 'dense' has no indices): break a shape instead
        dim = data.draw(st.integers(0, t.dim() - 1)) if t.dim() else 0
        grow = data.draw(st.booleans())
        if t.dim() == 0:
            sd[key] = t.reshape(1, 1)
        elif grow:
            sd[key] = torch.cat([t, t.narrow(dim, 0, 1)], dim)
        elif t.shape[dim] > 0:
            sd[key] = t.narrow(dim, 0, t.shape[dim] - 1)
        else:
            sd[key] = t.unsqueeze(0)
    elif kind == "garbage":
        sd[key] = data.draw(
            st.sampled_from(
                [
                    torch.tensor(3.0),
                    torch.zeros(0),
                    t.to_sparse() if t.dim() else torch.ones(2).to_sparse(),
                    t.unsqueeze(0),
                ]
            )
        )
    elif kind == "missing":
        del sd[key]
    elif kind == "values":
        special = st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, 1e30])
        bad = t.clone()
        if bad.is_floating_point() and bad.numel():
            bad.view(-1)[data.draw(st.integers(0, bad.numel() - 1))] = data.draw(special)
        sd[key] = bad
    elif kind == "dtype":
        dtypes = [torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16,
                  torch.int32, torch.int64, torch.bool, torch.uint8]  # fmt: skip
        sd[key] = t.to(data.draw(st.sampled_from(dtypes)))
    elif kind == "extra":
        extra = dict(sd["_extra_state"])
        field = data.draw(st.sampled_from(["in_features", "out_features"]))
        extra[field] = data.draw(
            st.one_of(
                st.integers(-5, 3 * IN),
                st.sampled_from([2**31, 2**62, "24", 24.0, None, True]),
            )
        )
        sd["_extra_state"] = extra
    elif kind == "truncate":
        buf = io.BytesIO()
        torch.save(sd, buf)
        raw = buf.getvalue()
        return raw[: data.draw(st.integers(0, len(raw) - 1))]
    return sd


def _load_and_run(name: str, path: str, fresh: backends.Backend) -> list[torch.Tensor]:
    """Load the file at ``path`` both ways and run a forward; returns the outputs."""
    outs = []
    for how in ("load", "load_state_dict"):
        if how == "load":
            layer = backends.get(name).load(path, layer_name="fc")
        else:
            layer = fresh
            layer.load_state_dict(torch.load(path, weights_only=True))
        if getattr(type(layer), "slow_to_build", False):
            continue  # compiles per module: loading is what is under test
        x = torch.randn(3, layer.in_features, dtype=layer.dtype)
        with torch.no_grad():
            outs.append(layer(x))
    return outs


def run_example(name: str, kind: str, data: st.DataObject, tally: collections.Counter) -> None:
    """One corrupted file of backend ``name``: check it is refused clearly, or loads and runs."""
    layer = make_layer(name, data.draw(st.integers(0, 3), label="seed"))
    bad = corrupt(layer.state_dict(), kind, data)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.pt")
        if isinstance(bad, bytes):
            with open(path, "wb") as f:
                f.write(bad)
        else:
            torch.save(bad, path)
        try:
            outs = _load_and_run(name, path, make_layer(name, 9))
        except LayerStateError as err:
            # every refusal of a file (Backend.load comes first) names the file and says why
            assert path in str(err), f"{name}/{kind}: {err}"
            tally[(kind, "refused")] += 1
            return
        except RuntimeError as err:  # load_state_dict's own report of missing keys
            assert kind == "missing" and "Missing key" in str(err), f"{name}/{kind}: {err!r}"
            tally[(kind, "refused")] += 1
            return
    assert kind in MAY_PASS, f"{name}/{kind}: a corrupted layer loaded and ran"
    for y in outs:
        assert y.shape[-1] == bad["_extra_state"]["out_features"], (name, kind, y.shape)
    tally[(kind, "loaded")] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = fuzzable_backends()
    tally: collections.Counter = collections.Counter()

    @settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(names), st.sampled_from(KINDS), st.data())
    def fuzz(name, kind, data):
        run_example(name, kind, data, tally)

    fuzz()
    refused = sum(v for (_, how), v in tally.items() if how == "refused")
    loaded = sum(v for (_, how), v in tally.items() if how == "loaded")
    kinds = ",".join(sorted({k for k, _ in tally}))
    print(f"backends: {','.join(names)}")
    print(
        f"fuzz ok: {refused + loaded} examples, {refused} refused, {loaded} loaded; kinds: {kinds}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
