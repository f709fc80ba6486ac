"""Every variant of the C++ fused kernel against a float64 reference, on odd shapes.

Variants: each ISA level this CPU runs (generic, avx2, avx512) x gather rows / permute pack /
tiled / chunk-blocked tiled (2, 4 or 8 accumulators) / nm (N:M layers) x serial / parallel; permute
packs of every geometry the SIMD kernels run, plus odd ones (and the AVX-512 geometries) through
the portable emulation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from backend_cases import Case, constant_fan_in_layer, error_bound

import backends
from backends.condensed import condense_layer
from backends.kernels import ops
from backends.nm import nm_mask

OK, WHY = ops.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"C++ fused kernel unavailable: {WHY}")

CASES = [
    Case("odd_sizes_some_ablated", 37, 23, 5, 19, ()),
    Case("fan_in_1", 33, 17, 1, 17, ()),
    Case("fan_in_equals_in", 19, 11, 19, 11, ()),
    Case("one_active_neuron", 64, 9, 8, 1, ()),
    Case("all_ablated", 20, 5, 3, 0, ()),
    Case("not_multiples_of_16_32_64", 101, 67, 13, 60, ()),
    Case("one_input", 1, 7, 1, 7, ()),
    Case("mlp_like", 300, 130, 30, 130, ()),
]
BATCHES = [0, 1, 2, 7, 17, 197, 256]
# (lanes, block) or (lanes, block, windows: 1 block-aligned, 2 sliding; default 0 fewer steps)
ODD_GEOMETRIES = [(5, 7), (16, 32), (16, 16), (3, 2), (16, 32, 1), (8, 16, 2), (5, 7, 1)]


def _geometries(isa: int) -> list[tuple[int, int]]:
    geos = [(0, 0)]
    for level in range(1, isa + 1):
        geos += ops.perm_geometries(level)
    return geos + ODD_GEOMETRIES


def all_variants(blob: torch.Tensor) -> list[int]:
    """Every variant code that runs on this CPU for this pack."""
    o = ops.load()
    codes = []
    for isa in range(int(o.fused_isa()) + 1):
        for family in range(len(ops.FAMILIES)):
            for wide in ops.WIDTHS:
                for par in (0, 1):
                    code = isa * 1000 + family * 100 + wide * 10 + par
                    if (family in (2, 3) or wide == 0) and o.fused_runs_here(blob, code):
                        codes.append(code)
    return codes


def _pack(weight, mask, bias, geometry):
    parts = condense_layer(weight, mask, bias)
    in_f = weight.shape[1]
    return ops.load().fused_pack(
        parts["values"], parts["indices"], parts["active"], parts["bias"], in_f, *geometry
    )


def _check(y, x, weight, mask, bias, k, what):
    ref, bound = error_bound(x, weight, mask, bias, k)
    assert y.shape == ref.shape, what
    err = (y.double() - ref).abs()
    assert bool((err <= bound).all()), f"{what}: max error {err.max().item():.3g}"


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_variant_matches_float64_reference(case, batch):
    weight, mask, bias = constant_fan_in_layer(case, 7)
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, case.in_features, generator=g)
    o = ops.load()
    geometries = _geometries(int(o.fused_isa()))
    for geometry in geometries:
        blob = _pack(weight, mask, bias, geometry)
        for code in all_variants(blob):
            # the pool split is the same for every pack: parallel on the first two only
            if code % 10 == 1 and geometry not in geometries[:2]:
                continue
            what = f"{ops.variant_name(code, geometry[1], geometry[0])} pack {geometry}"
            y = o.fused_linear_variant(x, blob, code, case.out_features, False)
            _check(y, x, weight, mask, bias, case.k, what)
            yt = o.fused_linear_variant(x.T.contiguous(), blob, code, case.out_features, True)
            _check(yt.T, x, weight, mask, bias, case.k, what + " transposed")


@pytest.mark.parametrize("in_features,idx_bytes", [(32767, 2), (32768, 4)])
def test_int16_indices_below_32768_inputs_int32_from_32768_every_variant(in_features, idx_bytes):
    case = Case("width", in_features, 21, 9, 19, ())
    weight, mask, bias = constant_fan_in_layer(case, 3)
    mask[:, -1] = False  # the last column kept by the first active neuron: the top index
    row = int(mask.any(dim=1).nonzero()[0])
    drop = int(mask[row].nonzero()[0])
    mask[row, drop], mask[row, -1] = False, True
    o = ops.load()
    x = torch.randn(5, in_features)
    for geometry in [(0, 0), *ops.perm_geometries(int(o.fused_isa())), (5, 7)]:
        blob = _pack(weight, mask, bias, geometry)
        assert list(o.fused_pack_info(blob))[4] == idx_bytes
        for code in all_variants(blob):
            y = o.fused_linear_variant(x, blob, code, case.out_features, False)
            _check(y, x, weight, mask, bias, case.k, f"{code} {geometry}")


def test_strided_and_batched_inputs_match_contiguous_ones():
    case = CASES[5]
    weight, mask, bias = constant_fan_in_layer(case, 1)
    blob = _pack(weight, mask, bias, (5, 7))
    o = ops.load()
    big = torch.randn(9, 2 * case.in_features)
    strided = big[:, ::2]  # column stride 2
    rows = torch.randn(18, case.in_features)[::2]  # row stride 2 * in
    lead = torch.randn(2, 3, 4, case.in_features)
    for code in all_variants(blob):
        for x in (strided, rows, lead):
            y = o.fused_linear_variant(x, blob, code, case.out_features, False)
            ref = o.fused_linear_variant(x.contiguous(), blob, code, case.out_features, False)
            assert y.shape == (*x.shape[:-1], case.out_features)
            torch.testing.assert_close(y, ref, rtol=0, atol=0)


@pytest.mark.parametrize("batch", [16, 83, 130, 161, 197])
def test_tiled_variants_straddling_the_simd_transpose_blocks_match_reference(batch):
    """The tiled kernels transpose x into tiles and their results back into y in SIMD
    (VL x VL) blocks: inputs, batch columns and neurons that are not multiples of 8 or 16, rows
    of x with a stride larger than in, and all neurons active (the vector write); batches past
    full tiles end in narrower tail tiles (161, 197: a 128-column tile, then 32 and 64)."""
    case = Case("straddle", 130, 50, 11, 50, ())
    weight, mask, bias = constant_fan_in_layer(case, 4)
    o = ops.load()
    blob = _pack(weight, mask, bias, (0, 0))
    x = torch.randn(batch, 200)[:, 3 : 3 + case.in_features]  # row stride 200
    tiled = [c for c in all_variants(blob) if ops.decode(c).family in (2, 3)]
    assert tiled
    for code in tiled:
        what = ops.variant_name(code)
        _check(
            o.fused_linear_variant(x, blob, code, case.out_features, False),
            x,
            weight,
            mask,
            bias,
            case.k,
            what,
        )
        yt = o.fused_linear_variant(x.T.contiguous(), blob, code, case.out_features, True)
        _check(yt.T, x, weight, mask, bias, case.k, what + " transposed")


def test_nonfinite_inputs_in_kept_columns_propagate_like_masked_dense():
    """inf/NaN in a column: the neurons that keep it give what F.linear gives; the others
    (masked dense: 0 * inf = NaN) give the finite sum of their kept terms."""
    case = Case("nonfinite", 70, 40, 9, 40, ())
    weight, mask, bias = constant_fan_in_layer(case, 5)
    o = ops.load()
    x = torch.randn(3, case.in_features)
    x[0, 3], x[1, 40], x[2, 69] = float("inf"), float("nan"), float("-inf")
    dense = F.linear(x.double(), weight.double() * mask, bias.double())
    keeps = torch.stack([mask[:, 3], mask[:, 40], mask[:, 69]])  # [3 rows, out]
    for geometry in _geometries(int(o.fused_isa())):
        blob = _pack(weight, mask, bias, geometry)
        for code in all_variants(blob):
            y = o.fused_linear_variant(x, blob, code, case.out_features, False).double()
            what = f"{ops.variant_name(code)} {geometry}"
            kept, ref = y[keeps], dense[keeps]
            assert torch.equal(torch.isnan(kept), torch.isnan(ref)), what
            assert torch.equal(kept[~torch.isnan(kept)], ref[~torch.isnan(ref)]), what
            assert bool(torch.isfinite(y[~keeps]).all()), what


def test_unknown_or_foreign_variant_is_refused_with_the_reason():
    weight, mask, bias = constant_fan_in_layer(CASES[0], 0)
    blob = _pack(weight, mask, bias, (0, 0))
    o = ops.load()
    x = torch.randn(2, CASES[0].in_features)
    with pytest.raises(RuntimeError, match="cannot run here"):
        o.fused_linear_variant(x, blob, 1100 + 10, CASES[0].out_features, False)  # perm, no pack
    with pytest.raises(RuntimeError, match="cannot run here"):
        o.fused_linear_variant(x, blob, 9001, CASES[0].out_features, False)
    with pytest.raises(RuntimeError, match="not a packed fused layer"):
        o.fused_linear_variant(x, torch.zeros(512, dtype=torch.uint8), 1, 23, False)
    with pytest.raises(RuntimeError, match=r"expected input \[\.\.\., 37\]"):
        o.fused_linear_variant(torch.randn(2, 36), blob, 1, 23, False)


def test_pack_rejects_indices_out_of_range():
    parts = condense_layer(*constant_fan_in_layer(CASES[0], 0))
    with pytest.raises(RuntimeError, match="outside"):
        ops.load().fused_pack(
            parts["values"], parts["indices"], parts["active"], parts["bias"], 30, 8, 8
        )


def test_every_simd_level_of_this_cpu_passed_the_load_time_self_check():
    """ops.load() compares each SIMD level's variants with the portable kernel and switches a
    failing level off (users get correct results); here a failure must fail loudly."""
    assert ops.self_check_failures() == []
    o = ops.load()
    assert int(o.fused_isa()) == int(o.fused_detected_isa())


def test_self_check_switches_off_a_simd_level_whose_variants_disagree(monkeypatch, caplog):
    o = ops.load()
    top = int(o.fused_detected_isa())
    if top == 0:
        pytest.skip("this CPU has no SIMD level to check")

    class Broken:  # the real operators, with the top level's results off by one
        capped: list[int] = []

        def __getattr__(self, name):
            return getattr(o, name)

        def fused_linear_variant(self, x, blob, code, out_f, transposed):
            y = o.fused_linear_variant(x, blob, code, out_f, transposed)
            return y + 1 if code // 1000 == top else y

        def fused_cap_isa(self, cap):
            self.capped.append(cap)
            return cap

    monkeypatch.setattr(ops, "_failures", [])
    broken = Broken()
    ops._self_check(broken)
    assert broken.capped == [top - 1]
    assert ops.self_check_failures() and all(
        f.startswith(ops.ISAS[top]) for f in ops.self_check_failures()
    )
    assert "disagree with the portable kernel" in caplog.text


# (n, m, in, out, active): N dividing the SIMD width (gathers) and not (3:8: the scalar form),
# k not a multiple of the vector width (tails), ablated neurons
NM_CASES = [
    (2, 4, 64, 23, 19),
    (1, 4, 36, 17, 17),
    (1, 8, 104, 13, 10),
    (4, 8, 40, 9, 9),
    (3, 8, 48, 11, 11),
    (1, 16, 160, 7, 7),
    (8, 16, 32, 5, 5),
    (1, 2, 70, 9, 4),
]
NM_IDS = [f"{n}of{m}_in{i}" for n, m, i, _, _ in NM_CASES]
NM_FAMILY = ops.FAMILIES.index("nm")


def nm_layer(case, seed: int):
    """(weight, mask, bias) of an N:M layer with ``active`` non-ablated neurons."""
    n, m, in_f, out_f, active = case
    g = torch.Generator().manual_seed(seed)
    weight, bias = torch.randn(out_f, in_f, generator=g), torch.randn(out_f, generator=g)
    mask = nm_mask((out_f, in_f), n, m, generator=g)
    mask[torch.randperm(out_f, generator=g)[: out_f - active]] = False
    return weight, mask, bias


@pytest.mark.parametrize("batch", [0, 1, 2, 5, 17, 70])
@pytest.mark.parametrize("case", NM_CASES, ids=NM_IDS)
def test_every_variant_matches_float64_reference_on_nm_layers(case, batch):
    """The N:M pack is found and its nm variant of every ISA level runs, as every other variant
    of the same blob, against float64."""
    n, m, in_f, out_f, _ = case
    weight, mask, bias = nm_layer(case, batch)
    x = torch.randn(batch, in_f, generator=torch.Generator().manual_seed(batch))
    o = ops.load()
    for geometry in [(0, 0), *ops.perm_geometries(int(o.fused_isa()))]:
        blob = _pack(weight, mask, bias, geometry)
        assert list(o.fused_pack_info(blob))[13:15] == [n, m]
        codes = all_variants(blob)
        assert {ops.decode(c).isa for c in codes if ops.decode(c).family == NM_FAMILY} == set(
            range(int(o.fused_isa()) + 1)
        )
        for code in codes:
            what = f"{ops.variant_name(code, geometry[1], geometry[0])} pack {geometry}"
            y = o.fused_linear_variant(x, blob, code, out_f, False)
            _check(y, x, weight, mask, bias, n * in_f // m, what)
            yt = o.fused_linear_variant(x.T.contiguous(), blob, code, out_f, True)
            _check(yt.T, x, weight, mask, bias, n * in_f // m, what + " transposed")


def test_nm_variants_run_only_on_nm_packs_and_strided_inputs_match():
    o = ops.load()
    weight, mask, bias = constant_fan_in_layer(CASES[5], 2)  # random constant fan-in
    blob = _pack(weight, mask, bias, (0, 0))
    assert list(o.fused_pack_info(blob))[13:15] == [0, 0]
    nm_code = ops.encode("generic", "nm", parallel=False)
    assert not o.fused_runs_here(blob, nm_code)
    with pytest.raises(RuntimeError, match="cannot run here.*N:M 0:0"):
        o.fused_linear_variant(torch.randn(2, 101), blob, nm_code, CASES[5].out_features, False)
    case = NM_CASES[0]
    weight, mask, bias = nm_layer(case, 0)
    blob = _pack(weight, mask, bias, (0, 0))
    assert not o.fused_runs_here(blob, ops.encode("generic", "nm", wide=True, parallel=False))
    lead = torch.randn(2, 3, case[2])
    strided = torch.randn(4, 2 * case[2])[:, ::2]
    for code in all_variants(blob):
        if ops.decode(code).family != NM_FAMILY:
            continue
        for x in (lead, strided):
            y = o.fused_linear_variant(x, blob, code, case[3], False)
            ref = o.fused_linear_variant(x.contiguous(), blob, 0, case[3], False)
            torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_nm_pack_needs_ascending_rows_and_a_whole_pattern():
    """Rows not ascending, or one row off the pattern: no N:M pack (the other families run)."""
    o = ops.load()
    weight, mask, bias = nm_layer(NM_CASES[0], 1)
    parts = condense_layer(weight, mask, bias)
    args = (parts["active"], parts["bias"], 64, 0, 0)
    flipped = o.fused_pack(parts["values"].flip(1), parts["indices"].flip(1), *args)
    assert list(o.fused_pack_info(flipped))[13:15] == [0, 0]
    idx = parts["indices"].clone()
    idx[0] = torch.arange(idx.shape[1])  # row 0 keeps the first half: no M of 2..16 fits
    bad = o.fused_pack(parts["values"], idx, *args)
    assert list(o.fused_pack_info(bad))[13:15] == [0, 0]


def test_static_rule_never_picks_the_nm_family():
    """SRIGL_TUNE=off or an untuned bucket: the documented static rule, as for any layer."""
    o = ops.load()
    weight, mask, bias = nm_layer(NM_CASES[0], 3)
    for geometry in [(0, 0), *ops.perm_geometries(int(o.fused_isa()))]:
        blob = _pack(weight, mask, bias, geometry)
        for batch in (1, 4, 8, 9, 256):
            for threads in (1, 2):
                code = int(o.fused_resolve(blob, torch.empty(0, dtype=torch.int32), batch, threads))
                assert ops.decode(code).family != NM_FAMILY, (geometry, batch, threads)


@pytest.mark.parametrize("case", [NM_CASES[1], NM_CASES[2]], ids=NM_IDS[1:3])
def test_nm_offsets_take_half_a_byte_per_kept_weight(case):
    """An N:M pack adds n x ceil(k/2) bytes (64-byte aligned) to the blob of the same layer
    shape without the pattern: 4 bits per kept weight, against 16 or 32 for an index."""
    n, m, in_f, out_f, active = case
    k = n * in_f // m
    weight, mask, bias = nm_layer(case, 4)
    g = torch.Generator().manual_seed(4)
    plain = torch.zeros_like(mask)
    for r in mask.any(dim=1).nonzero().flatten().tolist():
        plain[r, torch.randperm(in_f, generator=g)[:k]] = True
    o = ops.load()
    sizes = []
    for msk in (mask, plain):
        info = list(o.fused_pack_info(_pack(weight, msk, bias, (0, 0))))
        sizes.append(info[11])
    assert info[13:15] == [0, 0]  # the random one has no pattern
    assert sizes[0] - sizes[1] == (active * ((k + 1) // 2) + 63) // 64 * 64


def _aligned_steps(mask: torch.Tensor, lanes: int, block: int) -> int:
    """Steps of the block-aligned permute pack: per group of ``lanes`` active rows and per
    block of block - 1 inputs, the most kept inputs any row of the group has there."""
    rows = mask[mask.any(1)]
    span = block - 1
    nb = -(-rows.shape[1] // span)
    padded = torch.zeros(rows.shape[0], nb * span, dtype=torch.long)
    padded[:, : rows.shape[1]] = rows.long()
    per_block = padded.view(rows.shape[0], nb, span).sum(2)  # [rows, nb]
    total = 0
    for g in range(0, rows.shape[0], lanes):
        total += int(per_block[g : g + lanes].max(0).values.sum())
    return total


@pytest.mark.parametrize("lanes,block", [(16, 32), (16, 16), (8, 8), (8, 16), (5, 7)])
def test_sliding_permute_windows_take_fewer_steps_and_stay_exact(lanes, block):
    # uniform 90% rows, as a ViT MLP layer: windows that start at the group's next input fill
    # more lanes than block-aligned ones; inf/NaN in x still reach only the neurons keeping them
    case = Case("vit_like", 768, 96, 77, 96, (3,))
    weight, mask, bias = constant_fan_in_layer(case, 4)
    o = ops.load()
    blob = _pack(weight, mask, bias, (lanes, block))
    nsteps = list(o.fused_pack_info(blob))[10]
    assert nsteps < _aligned_steps(mask, lanes, block)
    x = torch.randn(3, case.in_features)
    x[1, 5] = float("nan")
    keeps = mask[:, 5]
    for code in all_variants(blob):
        if (code // 100) % 10 != 1:  # the permute family
            continue
        y = o.fused_linear_variant(x, blob, code, case.out_features, False)
        assert torch.isnan(y[1, keeps]).all() and not torch.isnan(y[1, ~keeps]).any(), code
        clean = torch.tensor([0, 2])
        _check(y[clean], x[clean], weight, mask, bias, case.k, str(code))


def test_the_narrow_tile_width_is_a_variant_of_its_own_and_not_of_rows_or_perm():
    o = ops.load()
    g = torch.Generator().manual_seed(5)
    w = torch.randn(40, 96, generator=g)
    mask = torch.zeros(40, 96, dtype=torch.bool)
    mask[:, ::3] = True
    layer = backends.create("fused", w, mask, torch.randn(40, generator=g))
    blob = layer.kernel_blob
    x = torch.randn(70, 96, generator=g)
    want = F.linear(x, w * mask, layer.bias)
    isa = ops.ISAS[int(o.fused_isa())]
    for family in ("tiled", "tiledkb"):
        code = ops.encode(isa, family, 2, True)
        assert ops.variant_name(code).startswith(f"{isa}/{family}")
        got = o.fused_linear_variant(x, blob, code, 40, False)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for family in ("rows", "perm"):
        assert not o.fused_runs_here(blob, ops.encode(isa, family, 2, True))
    with pytest.raises(ValueError, match="wide=3"):
        ops.encode(isa, "tiled", 3)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_permute_variants_pad_x_afresh_on_every_call_and_thread(threads):
    # each thread pads x into its own buffer once per call: x changed in place between calls,
    # and two layers of different widths called in turn on the same threads, never read a
    # stale or foreign copy
    o = ops.load()
    layers = []
    for n, case in enumerate([Case("a", 301, 203, 29, 203, ()), Case("b", 77, 40, 9, 40, ())]):
        weight, mask, bias = constant_fan_in_layer(case, 20 + n)
        geo = ops.perm_geometries(int(o.fused_isa()))[:1] or [(5, 7)]
        blob = _pack(weight, mask, bias, geo[0])
        codes = [c for c in all_variants(blob) if (c // 100) % 10 == 1]
        assert codes, "no permute variant runs on this pack"
        layers.append((case, weight, mask, bias, blob, codes))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(7)
        xs = [torch.randn(3, case.in_features, generator=g) for case, *_ in layers]
        for round_ in range(3):
            for (case, weight, mask, bias, blob, codes), x in zip(layers, xs):
                x.copy_(torch.randn(x.shape, generator=g))  # same storage, new values
                for code in codes:
                    y = o.fused_linear_variant(x, blob, code, case.out_features, False)
                    _check(y, x, weight, mask, bias, case.k, f"{case.name} {code} {round_}")
    finally:
        torch.set_num_threads(before)


def test_window_layouts_pack_differently_and_fewer_steps_picks_one_of_them():
    """windows 1 (block-aligned) and 2 (sliding) give different packs of a sparse layer; 0 is
    whichever has fewer steps; another value is refused, naming the allowed ones."""
    case = Case("windows", 300, 64, 3, 64, ())
    weight, mask, bias = constant_fan_in_layer(case, 2)
    o = ops.load()
    info = {w: list(o.fused_pack_info(_pack(weight, mask, bias, (16, 32, w)))) for w in (0, 1, 2)}
    blocks_steps = {w: (i[9], i[10]) for w, i in info.items()}  # windows, steps
    assert blocks_steps[1] != blocks_steps[2]
    assert blocks_steps[0] == min(blocks_steps[1], blocks_steps[2], key=lambda bs: bs[1])
    with pytest.raises(RuntimeError, match="windows must be 0 .* 1 .* or 2"):
        _pack(weight, mask, bias, (16, 32, 3))


@pytest.mark.parametrize("batch", [0, 1, 7, 197])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_variant_applies_the_relu_and_residual_epilogue(case, batch):
    """``fused_linear_epilogue``: relu(y + residual) from every variant, both layouts (ablated
    neurons hold relu(bias + residual)); NaN in the residual stays NaN through the ReLU; a
    residual of another shape is refused."""
    weight, mask, bias = constant_fan_in_layer(case, 5)
    g = torch.Generator().manual_seed(100 + batch)
    x = torch.randn(batch, case.in_features, generator=g)
    o = ops.load()
    blob = _pack(weight, mask, bias, (0, 0))
    ref, bound = error_bound(x, weight, mask, bias, case.k)
    res = torch.randn(ref.shape, generator=g)
    if res.numel():
        res.view(-1)[-1] = float("nan")
    for relu in (False, True):
        want = ref + res.double()
        want = torch.relu(want) if relu else want
        for code in [-1, *all_variants(blob)]:
            what = f"{ops.variant_name(code) if code >= 0 else 'tuned'} relu={relu}"
            y = o.fused_linear_epilogue(
                x, blob, torch.empty(0), code, case.out_features, False, res, relu
            )
            torch.testing.assert_close(
                y.double(),
                want,
                rtol=0,
                atol=bound.max().item() + 1e-6 if bound.numel() else 0.0,
                equal_nan=True,
                msg=what,
            )
            yt = o.fused_linear_epilogue(
                x.T.contiguous(),
                blob,
                torch.empty(0),
                code,
                case.out_features,
                True,
                res.T.contiguous(),
                relu,
            )
            torch.testing.assert_close(
                yt.T.double(),
                want,
                rtol=0,
                atol=bound.max().item() + 1e-6 if bound.numel() else 0.0,
                equal_nan=True,
                msg=what + " transposed",
            )
    with pytest.raises(RuntimeError, match="residual must be"):
        o.fused_linear_epilogue(
            x,
            blob,
            torch.empty(0),
            -1,
            case.out_features,
            False,
            res[:, :-1] if case.out_features > 1 else res[:0],
            True,
        )


def test_a_1x1_conv_at_batch_1_runs_its_epilogue_in_the_linear_kernel(monkeypatch):
    """The fused linear candidate of a 1x1 conv passes its ReLU and skip add to the kernel."""
    import backends.fused_conv as fc

    monkeypatch.setattr(fc, "best_variant", lambda *a, **kw: fc.LINEAR_VARIANT)
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 16, 1, 1, generator=g)
    mask = torch.rand(24, 16, generator=g).argsort(1) < 5
    conv = backends.create(
        "fused", weight, mask.reshape(24, 16, 1, 1), torch.randn(24, generator=g)
    )
    conv.epilogue_relu = True
    x, res = torch.randn(1, 16, 7, 9, generator=g), torch.randn(1, 24, 7, 9, generator=g)
    calls = []
    real = torch.ops.srigl.fused_linear_epilogue
    monkeypatch.setattr(
        torch.ops.srigl,
        "fused_linear_epilogue",
        lambda *a: calls.append((a[-2] is not None, a[-1])) or real(*a),
        raising=False,
    )
    with torch.no_grad():
        y = conv(x, residual=res)
    want = torch.relu(F.conv2d(x, weight * mask.reshape(24, 16, 1, 1), conv.bias) + res)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert calls == [(True, True)]  # the residual and the ReLU both reached the kernel
