import dataclasses

import pytest

from distgan.config import Config, ConfigError, dump_config, load_config, to_dict

from .conftest import ROOT


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert isinstance(cfg, Config)


def test_defaults_come_from_the_dataclass_only():
    assert load_config(None) == Config()


def test_paper_config_has_the_paper_settings():
    c = load_config(ROOT / "configs" / "paper.yaml")
    assert c.data.chunk == 32 and c.data.batch_size == 200
    assert c.model.gen_filters == (256, 128, 64) and c.model.latent == 3500
    assert c.model.disc_filters == (248,) * 4 and c.model.disc_strides == (2,) * 4
    assert (c.train.d_steps, c.train.g_steps) == (2, 3)
    assert c.noise.amount[1] == 0.25
    assert c.model.generator == "autoencoder" and not c.model.skips and not c.model.residual
    t = c.train
    assert (t.optimizer, t.schedule, t.ema, t.lr_g) == ("rmsprop", "constant", 0, 2e-4)


def test_overrides_are_typed():
    c = load_config(None, ["train.steps=100", "train.lr_g=1e-3", "train.xla=true",
                           "model.gen_filters=[8, 16]", "model.gen_strides=1,2",
                           "data.source=folder:/x", "noise.kinds=[gaussian, s&p]"])
    assert c.train.steps == 100 and c.train.lr_g == 1e-3 and c.train.xla is True
    assert c.model.gen_filters == (8, 16) and c.model.gen_strides == (1, 2)
    assert c.data.source == "folder:/x" and c.noise.kinds == ("gaussian", "s&p")


def test_unknown_key_names_file_and_suggests(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "train.stepz" in msg and "did you mean 'train.steps'" in msg


def test_unknown_section_suggests():
    with pytest.raises(ConfigError, match="did you mean 'model.latent'"):
        load_config(None, ["modle.latent=4"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.steps=abc", "'train.steps' must be an integer"),
        ("train.steps=-1", "out of range"),
        ("data.chunk=40", "must be one of 32, 48, 64"),
        ("train.xla=maybe", "must be true or false"),
        ("noise.kinds=[gaussian, blur]", "unknown kind 'blur'"),
        ("model.gen_strides=[1]", "one stride per"),
        ("noise.gaussian_sigma=[5]", "a list of 2 values"),
        ("model.stem=3", "must be one of 1, 2, 4"),
        ("train.optimizer=sgd", "must be one of 'adam', 'adamw', 'rmsprop'"),
        ("train.loss=huber", "must be one of 'mse', 'l1', 'charbonnier'"),
        ("train.lr_min=0.1", "'train.lr_min' .* is above 'train.lr_g'"),
        ("model.latent=64", "'model.latent' is for the autoencoder"),
        ("noise.kind_weights=[1, 2]", "'noise.kind_weights' needs one weight > 0 per kind"),
        ("noise.kind_weights=[1, 1, 1, 1, 1, 1, 0]", "needs one weight > 0"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, [override])


def test_chunk_must_divide_by_total_stride():
    with pytest.raises(ConfigError, match="not divisible"):
        load_config(None, ["data.chunk=48", "model.gen_strides=[2, 2, 2, 2, 2]",
                           "model.gen_filters=[8, 8, 8, 8, 8]"])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    c = load_config(ROOT / "configs" / "paper.yaml", ["train.steps=7"])
    dump_config(c, tmp_path / "r.yaml")
    assert load_config(tmp_path / "r.yaml") == c


def test_config_is_frozen_and_replace_validates():
    c = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.train.steps = 3  # type: ignore[misc]
    assert c.replace(train={"steps": 5}).train.steps == 5
    with pytest.raises(ConfigError):
        c.replace(train={"stepz": 5})
    assert to_dict(c)["model"]["gen_filters"] == list(c.model.gen_filters)


def test_unet_downsampling_must_divide_16_and_start_at_1():
    with pytest.raises(ConfigError, match="must divide 16"):
        load_config(None, ["model.stem=4", "model.gen_filters=[8, 8, 8, 8]",
                           "model.gen_strides=[1, 2, 2, 2]"])
    with pytest.raises(ConfigError, match="must start with 1"):
        load_config(None, ["model.gen_filters=[8, 8]", "model.gen_strides=[2, 2]"])


def test_bfloat16_training_is_for_the_unet():
    with pytest.raises(ConfigError, match="needs model.generator=unet"):
        load_config(ROOT / "configs" / "paper.yaml", ["train.precision=bfloat16"])
    assert load_config(None, ["train.precision=bfloat16"]).train.precision == "bfloat16"
