"""The guideline experiments G1-G4: equal FLOPs of every setting (counted by mindshuffle.research.analysis), channel
arithmetic, the paper's figures, and a tiny timed run."""
import pytest

from mindshuffle.research import guidelines as G


@pytest.mark.parametrize("widths", [G.DEFAULT_WIDTHS, G.GPU_WIDTHS], ids=["default", "gpu"])
@pytest.mark.parametrize("exp", G.EXPERIMENTS)
def test_every_setting_has_equal_flops(exp, widths):
    # depth 1 and a 4x4 map: FLOPs of these stride-1, same-padded networks scale with depth and h*w alike,
    # so the per-column spread is the one of the full-size runs
    items = G.settings(exp, widths[exp], depth=1)
    spreads = G.check_equal_flops(items, image_size=4)
    assert len(spreads) == 3 and max(spreads.values()) <= 0.01
    assert all(s.flops > 0 for s in items)
    if exp != "G4":  # G4 is the only one that keeps FLOPs equal by not changing convs; the rest change shapes
        assert len({s.channels for s in items if s.column == 0}) == len(G.ROWS[exp])


def test_unequal_flops_is_refused():
    # from the paper's Table 2 width 64 no multiple of 2 (90, 92) or 8 (176, 184) gives equal FLOPs within 1%
    items = G.settings("G2", (64, 128, 256), depth=1)
    with pytest.raises(G.UnequalFlopsError, match=r"differ by \d+\.\d% in FLOPs"):
        G.check_equal_flops(items, image_size=4)


def test_channel_arithmetic():
    for c in (32, 64, 68, 128, 256, 512):
        for r in (2, 6, 12):
            c1, c2 = G.g1_channels(c, r)
            assert abs(c1 * c2 - c * c) / (c * c) <= 0.01
            assert abs(c2 / c1 - r) / r < 0.12
        for g in (2, 4, 8):
            assert G.g2_channels(c, g) % g == 0
    assert G.g1_channels(128, 1) == (128, 128)
    assert G.g3_channels(68, "2-fragment-series") == 48 and G.g3_channels(68, "4-fragment-parallel") == 17
    with pytest.raises(ValueError):
        G.g3_channels(66, "4-fragment-parallel")


def test_g4_variants_differ_only_in_elementwise_mac():
    items = G.settings("G4", (8, 8, 8), depth=1)[:4]
    G.check_equal_flops(items, image_size=4)
    mac = {s.row: s.mac for s in items}
    full, no_relu, no_sc, none = (mac[r] for r in
                                  ("ReLU yes, short-cut yes", "ReLU no, short-cut yes", "ReLU yes, short-cut no",
                                   "ReLU no, short-cut no"))
    hw = 16
    assert full - no_relu == 2 * (2 * 8 * hw) + 2 * (32 * hw)  # two ReLUs on c, one on 4c
    assert full - no_sc == 3 * 32 * hw                         # the add reads two 4c maps, writes one
    assert none < no_relu < full and none < no_sc < full


def test_paper_figures_complete():
    for exp in G.EXPERIMENTS:
        for dev in ("gpu", "arm"):
            assert set(G.PAPER[exp][dev]) == set(G.ROWS[exp])
            assert all(len(v) == 3 for v in G.PAPER[exp][dev].values())
    assert G.PAPER["G1"]["gpu"]["1:1"] == (1480, 723, 232) and G.PAPER["G4"]["arm"]["ReLU no, short-cut no"][0] == 66.3


def test_tiny_run_and_tables():
    seen = []
    res = G.run_experiment("G3", widths=(68, 68), batch_size=1, image_size=4, warmup=0, repeats=1, depth=1,
                           progress=seen.append)
    assert len(seen) == 10 and all(s.result["img_per_s"] > 0 for s in res["settings"])
    text = G.format_table(res)
    assert "2446 / 1274 / 434" in text and "4-fragment-parallel" in text and "c=68, 4x17" in text
    md = G.format_table(res, markdown=True)
    assert md.count("\n|") == 2 + 5
    rows = G.to_csv_rows(res)
    assert len(rows) == 10 and rows[0]["ratio"] == 1.0 and rows[0]["paper_gpu_batches_per_s"] == 2446
    assert {r["width"] for r in rows} == {"x1", "x2"} and rows[-1]["paper_arm_img_per_s"] == 8.4


def test_unknown_experiment():
    with pytest.raises(ValueError, match="unknown experiment"):
        G.settings("G5")
