import numpy as np
import pytest

from distgan.config import NOISE_KINDS, NoiseConfig
from distgan.noise import (
    N_PARAMS, NoiseSpecError, SpecArrays, add_noise, draw_specs, parse_spec, params_of, sample_spec,
    sample_specs,
)

GREY = np.full((256, 256, 3), 0.5, np.float32)


@pytest.mark.parametrize(
    "text",
    ["gaussian:25", "gaussian:25:unclipped", "poisson:30", "speckle:0.02", "s&p:0.05",
     "salt:0.02", "pepper:0.02", "camera:1600", "mix:gaussian:15+s&p:0.02",
     "mix:gaussian:5+poisson:50+speckle:0.01", "random"],
)
def test_parse_round_trips(text):
    spec = parse_spec(text)
    assert parse_spec(str(spec)) == spec


@pytest.mark.parametrize(
    "text", ["", "gauss:25", "gaussian", "gaussian:-1", "s&p:2", "mix:gaussian:5",
             "gaussian:5+s&p:0.1", "poisson:0", "mix:a:1+b:2+c:3+d:4"],
)
def test_bad_specs_are_clear_errors(text):
    with pytest.raises(NoiseSpecError, match="accepted|must be|mix"):
        parse_spec(text)


@pytest.mark.parametrize("text", ["gaussian:25", "s&p:0.1", "camera:3200", "random",
                                  "mix:speckle:0.05+pepper:0.1"])
def test_same_seed_same_output(text):
    a = add_noise(GREY, text, np.random.default_rng(7))
    b = add_noise(GREY, text, np.random.default_rng(7))
    c = add_noise(GREY, text, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_output_types_and_range():
    for kind in ["gaussian:50", "poisson:3", "speckle:0.2", "camera:25600", "s&p:0.3"]:
        noisy, params = add_noise(GREY, kind, np.random.default_rng(0))
        assert noisy.dtype == np.float32 and noisy.shape == GREY.shape
        assert 0.0 <= noisy.min() and noisy.max() <= 1.0
        assert params.dtype == np.float32 and params.shape == (N_PARAMS,)
        assert np.all((params >= 0) & (params <= 1))


@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_gaussian_sigma_recovered_within_3_percent(sigma):
    # Unclipped, so the mid-grey image sees the full distribution.
    noisy, _ = add_noise(GREY, f"gaussian:{sigma}:unclipped", np.random.default_rng(1))
    est = float(np.std(noisy - GREY)) * 255
    assert abs(est - sigma) / sigma < 0.03


def test_unclipped_gaussian_leaves_the_range_clipped_does_not():
    dark = np.full((64, 64, 3), 0.02, np.float32)
    un, _ = add_noise(dark, "gaussian:25:unclipped", np.random.default_rng(0))
    cl, _ = add_noise(dark, "gaussian:25", np.random.default_rng(0))
    assert un.min() < 0 and cl.min() >= 0


@pytest.mark.parametrize("amount", [0.01, 0.05, 0.2])
def test_salt_and_pepper_fraction_within_10_percent(amount):
    noisy, _ = add_noise(GREY, f"s&p:{amount}", np.random.default_rng(2))
    frac = float(np.mean(noisy != GREY))
    assert abs(frac - amount) / amount < 0.10
    vals = np.unique(noisy[noisy != GREY])
    assert set(vals.tolist()) <= {0.0, 1.0}


def test_poisson_variance_proportional_to_mean():
    peak = 40.0
    ratios = []
    for level in (0.1, 0.3, 0.6):
        img = np.full((256, 256, 3), level, np.float32)
        noisy, _ = add_noise(img, f"poisson:{peak}", np.random.default_rng(3))
        ratios.append(float(np.var(noisy)) / level)
    # var(x) = mean / peak for shot noise
    assert np.allclose(ratios, 1 / peak, rtol=0.05)


def test_camera_noise_grows_with_iso_and_is_heteroscedastic():
    ramp = np.tile(np.linspace(0.05, 0.95, 256, dtype=np.float32)[None, :, None], (256, 1, 3))
    stds = []
    for iso in (200, 1600, 12800):
        noisy, _ = add_noise(ramp, f"camera:{iso}", np.random.default_rng(4))
        stds.append(float(np.std(noisy - ramp)))
    assert stds[0] < stds[1] < stds[2]
    noisy, _ = add_noise(ramp, "camera:6400", np.random.default_rng(4))
    err = noisy - ramp
    assert np.std(err[:, :32]) != pytest.approx(np.std(err[:, -32:]), rel=0.1)


def test_params_slots_follow_kind_order():
    p = params_of(parse_spec("mix:gaussian:25+s&p:0.05"))
    assert p[NOISE_KINDS.index("gaussian")] == pytest.approx(0.25)
    assert p[NOISE_KINDS.index("s&p")] == pytest.approx(0.05)
    assert np.count_nonzero(p) == 2


def test_params_normalise_every_kind_and_take_the_larger_of_a_repeat():
    want = {"gaussian:150": ("gaussian", 1.0), "poisson:16": ("poisson", 0.25),
            "speckle:0.04": ("speckle", 0.2), "camera:1600": ("camera", 0.5), "salt:0.3": ("salt", 0.3),
            "camera:10": ("camera", 0.0), "mix:gaussian:10+gaussian:40": ("gaussian", 0.4)}
    table = SpecArrays.of([parse_spec(s) for s in want])
    for row, (kind, v) in zip(table.params(), want.values()):
        assert row[NOISE_KINDS.index(kind)] == pytest.approx(v) and np.count_nonzero(row) == (v > 0)
    assert table.labels().tolist() == ["gaussian", "poisson", "speckle", "camera", "salt", "camera", "mix"]


def test_spec_arrays_hold_the_specs_drawn():
    cfg = NoiseConfig(mix_prob=0.5)
    table = draw_specs(cfg, np.random.default_rng(3), 400)
    specs = table.specs()
    assert specs == sample_specs(cfg, np.random.default_rng(3), 400)
    again = SpecArrays.of(specs)
    assert all(np.array_equal(a, b) for a, b in ((again.kinds, table.kinds), (again.levels, table.levels),
                                                  (again.clip, table.clip)))
    assert np.array_equal(table.params(), np.stack([params_of(s) for s in specs]))
    assert {len(s.parts) for s in specs} == {1, 2, 3}
    order = np.argsort(table.kinds[:, 0], kind="stable")
    assert table.take(order).specs() == [specs[i] for i in order]


def test_sample_spec_stays_in_configured_ranges():
    cfg = NoiseConfig(kinds=("gaussian", "poisson", "s&p"), mix_prob=0.5,
                      gaussian_sigma=(10, 20), poisson_peak=(50, 60), amount=(0.01, 0.02))
    rng = np.random.default_rng(5)
    sizes = set()
    for _ in range(300):
        spec = sample_spec(cfg, rng)
        sizes.add(len(spec.parts))
        for kind, level in spec.parts:
            lo, hi = {"gaussian": (10, 20), "poisson": (50, 60), "s&p": (0.01, 0.02)}[kind]
            assert lo <= level <= hi
        assert len({k for k, _ in spec.parts}) == len(spec.parts)
    assert sizes == {1, 2, 3}


def test_integer_images_are_refused():
    with pytest.raises(TypeError, match="float image"):
        add_noise(np.zeros((4, 4, 3), np.uint8), "gaussian:5", np.random.default_rng(0))


def test_draw_specs_takes_a_config_built_in_code_with_lists():
    """The per-kind tables are cached by config; a config with a list in it can't be a
    cache key and is drawn from all the same, with the same values."""
    listed = NoiseConfig(kinds=["gaussian", "camera"], gaussian_sigma=[2.0, 9.0])
    tupled = NoiseConfig(kinds=("gaussian", "camera"), gaussian_sigma=(2.0, 9.0))
    a = draw_specs(listed, np.random.default_rng(3), 50)
    b = draw_specs(tupled, np.random.default_rng(3), 50)
    assert np.array_equal(a.kinds, b.kinds) and np.array_equal(a.levels, b.levels)


def test_kind_weights_set_how_often_each_kind_is_drawn():
    """Singles follow the weights within 2 %, mixes still hold distinct kinds, both ways of
    drawing agree, and no weights is the uniform draw it always was."""
    kinds = ("gaussian", "poisson", "camera")
    cfg = NoiseConfig(kinds=kinds, kind_weights=(6.0, 1.0, 3.0), mix_prob=0.0)
    table = draw_specs(cfg, np.random.default_rng(0), 20_000)
    share = np.bincount(table.kinds[:, 0], minlength=7)[[NOISE_KINDS.index(k) for k in kinds]]
    assert np.allclose(share / 20_000, [0.6, 0.1, 0.3], atol=0.02)
    one_by_one = [sample_spec(cfg, np.random.default_rng(i)).parts[0][0] for i in range(3000)]
    assert abs(one_by_one.count("gaussian") / 3000 - 0.6) < 0.03
    mixed = draw_specs(NoiseConfig(kinds=kinds, kind_weights=(6.0, 1.0, 3.0), mix_prob=1.0),
                       np.random.default_rng(1), 2000).specs()
    assert all(len({k for k, _ in s.parts}) == len(s.parts) >= 2 for s in mixed)
    plain = NoiseConfig(kinds=kinds)
    a = draw_specs(plain, np.random.default_rng(2), 100)
    b = draw_specs(NoiseConfig(kinds=kinds, kind_weights=()), np.random.default_rng(2), 100)
    assert np.array_equal(a.kinds, b.kinds)
