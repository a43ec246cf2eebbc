import json

import numpy as np

from .conftest import run_cli


def test_help_lists_subcommands():
    r = run_cli("--help")
    assert r.returncode == 0
    for sub in ("noise", "train"):
        assert sub in r.stdout


def test_noise_writes_pngs_and_json(photo_dir, tmp_path):
    out = tmp_path / "out"
    r = run_cli("noise", str(photo_dir), "-o", str(out), "--noise", "gaussian:25", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["written"] == 4
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["img0.png", "img1.png", "img2.png", "img3.png"]
    meta = json.loads((out / "img1.json").read_text())
    assert meta["spec"] == "gaussian:25" and meta["params"][0] == 0.25
    from distgan.imagefile import read_image

    clean, _ = read_image(photo_dir / "img1.png")
    noisy, _ = read_image(out / "img1.png")
    assert 15 < np.std(noisy - clean) * 255 < 30
    # deterministic per file and seed
    again = tmp_path / "again"
    run_cli("noise", str(photo_dir / "img1.png"), "-o", str(again), "--noise", "gaussian:25",
            "--seed", "3")
    assert (again / "img1.png").read_bytes() == (out / "img1.png").read_bytes()


def test_random_noise_records_the_drawn_spec(photo_dir, tmp_path):
    r = run_cli("noise", str(photo_dir / "img0.jpg"), "-o", str(tmp_path), "--noise", "random")
    assert r.returncode == 0, r.stderr
    spec = json.loads((tmp_path / "img0.json").read_text())["spec"]
    assert spec != "random" and ":" in spec


def _one_clear_line(r):
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr
    return lines


def test_missing_file_is_one_line_exit_2(tmp_path):
    lines = _one_clear_line(run_cli("noise", str(tmp_path / "nope.png"), "-o", str(tmp_path),
                                    "--noise", "gaussian:5"))
    assert len(lines) == 1 and "nope.png: no such file" in lines[0]


def test_non_image_is_reported_others_still_done(photo_dir, tmp_path):
    (photo_dir / "zz.png").write_text("not an image")
    r = run_cli("noise", str(photo_dir), "-o", str(tmp_path / "o"), "--noise", "s&p:0.1")
    lines = _one_clear_line(r)
    assert len(lines) == 1 and "zz.png" in lines[0] and "not a readable image" in lines[0]
    assert len(list((tmp_path / "o").glob("*.png"))) == 4


def test_bad_spec_is_one_line_exit_2(photo_dir, tmp_path):
    lines = _one_clear_line(run_cli("noise", str(photo_dir), "-o", str(tmp_path),
                                    "--noise", "gauss:5"))
    assert len(lines) == 1 and "accepted" in lines[0]


def test_bad_config_key_is_one_line_exit_2(photo_dir, tmp_path):
    lines = _one_clear_line(run_cli("noise", str(photo_dir), "-o", str(tmp_path),
                                    "--noise", "random", "--set", "noise.gausian_sigma=[1,2]"))
    assert len(lines) == 1 and "did you mean 'noise.gaussian_sigma'" in lines[0]
