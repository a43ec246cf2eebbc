import json

import numpy as np
import pytest
from PIL import Image

from distgan.config import load_config
from distgan.evaluation import eval_noisy, markdown_table
from distgan.imagefile import read_image
from distgan.noise import parse_spec

from .conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from distgan.models import build_generator

    d = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    (d / "imgs").mkdir()
    yy, xx = np.mgrid[0:40, 0:48] / 40
    for i in range(2):
        img = np.stack([0.5 + 0.3 * np.sin(5 * xx + i + c) for c in range(3)], -1)
        img = img + 0.05 * rng.random(img.shape)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(d / "imgs" / f"{i}.png")
    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    build_generator(cfg.model, cfg.data.chunk).save(d / "identity.keras")  # zero noise head
    return d


def _eval(setup, out, *extra):
    r = run_cli("eval", "--data", str(setup / "imgs"), "--noise",
                "gaussian:25:unclipped,mix:gaussian:15+s&p:0.02", "--model",
                str(setup / "identity.keras"), "--baselines", "noisy,nlm,tv,wavelet",
                "--out", str(out), *extra)
    assert r.returncode == 0, r.stderr[-2000:]
    return r, json.loads(out.read_text())


@pytest.fixture(scope="module")
def seed3(setup):
    """One eval run at seed 3, shared by the tests that read it."""
    return _eval(setup, setup / "a.json", "--seed", "3")


def test_table_json_and_determinism(setup, seed3, tmp_path):
    r, a = seed3
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "| method | gaussian:25:unclipped | mix:gaussian:15+s&p:0.02 | s/MP |"
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["distgan", "noisy", "nlm", "tv",
                                                              "wavelet"]
    assert (setup / "a.md").read_text().strip() == r.stdout.strip()
    assert {tuple(sorted(x)) for x in a["results"]} == {
        ("method", "noise", "psnr", "s_per_mp", "ssim")}
    assert len(a["images"]) == 2 * 2 * 5
    _, b = _eval(setup, tmp_path / "b.json", "--seed", "3")
    key = lambda rep: [(x["method"], x["noise"], x["psnr"], x["ssim"]) for x in rep["results"]]  # noqa: E731
    assert key(a) == key(b)
    _, c = _eval(setup, tmp_path / "c.json", "--seed", "4")
    assert key(a) != key(c)


def test_jobs_give_the_same_scores_in_the_same_order(setup, seed3, tmp_path):
    _, one = seed3
    r, two = _eval(setup, tmp_path / "two.json", "--seed", "3", "--jobs", "2")
    # the worker processes import TensorFlow as quietly as the command does
    assert not [ln for ln in r.stderr.splitlines() if "cuda" in ln or "oneDNN" in ln
                or "absl" in ln], r.stderr[-2000:]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "s_per_mp"} for r in rows]  # noqa: E731
    assert strip(one["images"]) == strip(two["images"]) and len(one["images"]) == 20
    assert strip(one["results"]) == strip(two["results"])
    assert two["settings"]["jobs"] == 2


def test_psnr_of_known_cases(setup, seed3):
    _, rep = seed3
    res = {(x["method"], x["noise"]): x for x in rep["images"] if x["image"] == "0.png"}
    clean, _ = read_image(setup / "imgs" / "0.png")
    spec = parse_spec("gaussian:25:unclipped")
    noisy, _ = eval_noisy(clean, spec, 3, "0.png")
    mse = np.mean((np.clip(noisy, 0, 1) - clean) ** 2)
    assert res[("noisy", str(spec))]["psnr"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-4)
    # the identity model changes nothing, so it scores exactly what the noisy input scores
    assert res[("distgan", str(spec))]["psnr"] == pytest.approx(
        res[("noisy", str(spec))]["psnr"], abs=0.01)
    assert res[("nlm", str(spec))]["psnr"] > res[("noisy", str(spec))]["psnr"]


def test_markdown_table_layout():
    rep = {"results": [{"method": "m", "noise": "n", "psnr": 30.0, "ssim": 0.9, "s_per_mp": 2.0}]}
    assert markdown_table(rep).splitlines()[2] == "| m | 30.00 / 0.900 | 2 |"


def test_bad_eval_arguments(setup, tmp_path):
    r = run_cli("eval", "--data", str(setup / "imgs"), "--noise", "random", "--model",
                str(setup / "identity.keras"), "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "fixed specs" in r.stderr
    r = run_cli("eval", "--data", str(setup / "imgs"), "--noise", "gaussian:5", "--baselines",
                "bm4d", "--model", str(setup / "identity.keras"), "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "unknown" in r.stderr
    r = run_cli("eval", "--data", str(setup / "imgs"), "--noise", "gaussian:5", "--jobs", "0",
                "--model", str(setup / "identity.keras"), "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "--jobs" in r.stderr and "Traceback" not in r.stderr


def test_self_ensembles_are_rows_of_their_own(setup, tmp_path):
    out = tmp_path / "e.json"
    r = run_cli("eval", "--data", str(setup / "imgs"), "--noise", "gaussian:25:unclipped",
                "--model", str(setup / "identity.keras"), "--baselines", "noisy",
                "--ensemble", "1,8", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    psnr = {x["method"]: x["psnr"] for x in rep["results"]}
    assert list(psnr) == ["distgan", "distgan x8", "noisy"] and rep["settings"]["ensembles"] == [1, 8]
    # every symmetry of the identity is the identity: x8 scores what the input scores
    assert psnr["distgan x8"] == pytest.approx(psnr["noisy"], abs=0.01)
    bad = run_cli("eval", "--data", str(setup / "imgs"), "--noise", "gaussian:25",
                  "--ensemble", "1,3", "--out", str(tmp_path / "x.json"))
    assert bad.returncode != 0 and "ensemble must be one of 1, 2, 4, 8" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_noise_level_auto_rows_use_the_estimated_sigma(setup, tmp_path):
    from distgan.models import build_generator

    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    g = build_generator(cfg.model, cfg.data.chunk)
    rng = np.random.default_rng(1)
    g.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in g.get_weights()])
    g.save(tmp_path / "random.keras")  # a model whose output depends on the noise level it is told
    out = tmp_path / "auto.json"
    r = run_cli("eval", "--data", str(setup / "imgs"), "--noise", "gaussian:25:unclipped",
                "--model", str(tmp_path / "random.keras"), "--baselines", "noisy",
                "--noise-level", "true,auto", "--ensemble", "1,2", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    psnr = {x["method"]: x["psnr"] for x in rep["results"]}
    assert list(psnr) == ["distgan", "distgan x2", "distgan auto", "distgan x2 auto", "noisy"]
    assert psnr["distgan"] != psnr["distgan auto"]
    bad = run_cli("eval", "--data", str(setup / "imgs"), "--noise", "gaussian:25",
                  "--noise-level", "guess", "--out", str(tmp_path / "x.json"))
    assert bad.returncode == 2 and "--noise-level" in bad.stderr and "Traceback" not in bad.stderr
