from dataclasses import dataclass, field

import pytest

from ersam_ssl import config


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    steps: int = 10
    band: tuple[float, float] = (1.0, 2.0)
    name: str | None = None


@dataclass(frozen=True)
class Outer:
    seed: int = 0
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    tags: tuple[str, ...] = ()


def test_overrides_are_typed_and_nested():
    cfg = config.load(
        Outer, overrides=["seed=3", "inner.lr=1e-3", "--inner.band=[0.5,4]", "flag=true", "tags=[a,b]"]
    )
    assert cfg == Outer(seed=3, flag=True, inner=Inner(lr=1e-3, band=(0.5, 4.0)), tags=("a", "b"))
    assert config.load(Outer, overrides=["inner.name=null"]).inner.name is None
    assert config.load(Outer, overrides=["inner.steps=20.0"]).inner.steps == 20


@pytest.mark.parametrize(
    "bad, msg",
    [("sede=1", "unknown config key 'sede'"), ("inner.steps=1.5", "expected an int"), ("flag=maybe", "bool"),
     ("inner=3", "section"), ("inner.band=[1]", "expected 2 values"), ("novalue", "key=value")],
)  # fmt: skip
def test_bad_overrides_are_clear_errors(bad, msg):
    with pytest.raises(config.ConfigError, match=msg):
        config.load(Outer, overrides=[bad])


def test_yaml_diff_round_trip(tmp_path):
    cfg = config.load(Outer, overrides=["inner.lr=0.5", "tags=[x]"])
    d = config.diff(cfg)
    assert d == {"inner": {"lr": 0.5}, "tags": ["x"]}
    p = tmp_path / "preset.yaml"
    import yaml

    p.write_text(yaml.safe_dump(d))
    assert config.load(Outer, p) == cfg
    config.save(cfg, tmp_path / "resolved.yaml")
    assert config.load(Outer, tmp_path / "resolved.yaml") == cfg
    assert config.load(Outer, p, ["seed=9"]).seed == 9


def test_data_config_validates(tmp_path):
    from ersam_ssl.data import DataConfig

    with pytest.raises(ValueError, match="needs data.root"):
        config.load(DataConfig, overrides=["source=librispeech"])
    cfg = config.load(DataConfig, overrides=["mixture.max_speakers=4", "subset_splits=[test-clean:test]"])
    assert cfg.mixture.num_classes == 5 and cfg.subset_splits == ("test-clean:test",)


def test_flatten_gives_the_dotted_keys_overrides_use():
    from ersam_ssl.config import flatten

    assert flatten({"a": 1, "b": {"c": 2, "d": {"e": [3]}}, "f": {}}) == {"a": 1, "b.c": 2, "b.d.e": [3]}


@dataclass(frozen=True)
class Optim:
    lr: float = 0.1

    def validate(self) -> None:
        config.check_positive("optim", self, "lr")


@dataclass(frozen=True)
class Stage:
    steps: int = 1
    optim: Optim = Optim()


@dataclass(frozen=True)
class Run:
    teacher: Stage = Stage()


def test_a_nested_library_config_names_the_full_key_of_a_bad_value():
    with pytest.raises(config.ConfigError, match=r"^teacher\.optim\.lr=0\.0: must be > 0$"):
        config.load(Run, overrides=["teacher.optim.lr=0"])
    with pytest.raises(
        config.ConfigError, match=r"^optim\.lr=-1\.0: must be > 0$"
    ):  # on its own: its own terms
        config.load(Optim, overrides=["lr=-1"])


def test_a_key_that_moved_into_a_section_is_named():
    with pytest.raises(
        config.ConfigError, match=r"unknown config key 'teacher\.lr' \(did you mean 'teacher\.optim\.lr'\?\)"
    ):
        config.load(Run, overrides=["teacher.lr=0.5"])
