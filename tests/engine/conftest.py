import pytest

from omendb import Config, Database


def make_config(tmp_path, **sections) -> Config:
    config = Config().replace("database", data_dir=str(tmp_path / "data"), name="test")
    config = config.replace("wal", dir=str(tmp_path / "wal"))
    for section, values in sections.items():
        config = config.replace(section, **values)
    return config


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
def db(config):
    with Database.open(config) as database:
        yield database
