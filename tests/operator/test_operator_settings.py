from __future__ import annotations

import pytest

from omendb_operator.main import Settings


def test_defaults_watch_all_namespaces_with_peering():
    s = Settings.from_env({})
    assert s.namespaces == ()
    assert s.resync_seconds == 300 and s.port == 8080 and s.workers == 2
    assert s.peering == "omendb-operator"
    assert 1 <= s.priority <= 1_000_000
    assert s.log_format == "json" and s.cluster_domain == "cluster.local"


def test_environment_overrides():
    s = Settings.from_env(
        {
            "OMENDB_OPERATOR_NAMESPACES": " a, b ,,",
            "OMENDB_OPERATOR_RESYNC_SECONDS": "30",
            "OMENDB_OPERATOR_PORT": "9000",
            "OMENDB_OPERATOR_PEERING": "none",
            "OMENDB_OPERATOR_PRIORITY": "7",
            "OMENDB_OPERATOR_LOG_FORMAT": "text",
            "OMENDB_OPERATOR_CLUSTER_DOMAIN": "corp.local",
        }
    )
    assert s.namespaces == ("a", "b")
    assert s.resync_seconds == 30 and s.port == 9000
    assert s.peering is None and s.priority == 7
    assert s.log_format == "text" and s.cluster_domain == "corp.local"


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"OMENDB_OPERATOR_RESYNC_SECONDS": "soon"}, "OMENDB_OPERATOR_RESYNC_SECONDS='soon' is not a number"),
        ({"OMENDB_OPERATOR_WORKERS": "0"}, "must be greater than 0"),
        ({"OMENDB_OPERATOR_LOG_FORMAT": "xml"}, "must be json or text"),
        ({"OMENDB_OPERATOR_PRIORITY": "high"}, "is not an integer"),
    ],
)
def test_bad_environment_is_refused_clearly(env, fragment):
    with pytest.raises(SystemExit) as err:
        Settings.from_env(env)
    assert fragment in str(err.value)
