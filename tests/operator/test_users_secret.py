from __future__ import annotations

import base64

import bcrypt

from omendb_operator.spec import parse_spec
from omendb_operator.specs.secrets import build_users_secret, decode_secret_data


def _data(manifest):
    return {k: base64.b64decode(v).decode() for k, v in manifest["data"].items()}


def test_generated_admin_user_has_a_bcrypt_htpasswd_entry(owner, spec):
    result = build_users_secret(owner, spec, existing={})
    assert result.generated
    data = _data(result.manifest)
    assert result.manifest["metadata"]["name"] == "prod-users"
    assert data["username"] == "admin"
    assert len(data["password"]) >= 24
    user, hashed = data["users.htpasswd"].strip().split(":", 1)
    assert user == "admin" and hashed.startswith("$2")
    assert bcrypt.checkpw(data["password"].encode(), hashed.encode())


def test_existing_credentials_are_kept_so_reconciles_never_rotate_them(owner, spec):
    first = build_users_secret(owner, spec, existing={})
    again = build_users_secret(owner, spec, existing=decode_secret_data(first.manifest))
    assert not again.generated
    assert again.manifest == first.manifest


def test_a_hash_that_no_longer_matches_regenerates(owner, spec):
    first = _data(build_users_secret(owner, spec, existing={}).manifest)
    tampered = {**first, "password": "something-else"}
    result = build_users_secret(owner, spec, existing=tampered, make_password=lambda: "fresh-password")
    assert result.generated
    assert _data(result.manifest)["password"] == "fresh-password"


def test_users_from_the_referenced_htpasswd_are_added_and_the_admin_name_is_reserved(owner):
    spec = parse_spec({"auth": {"htpasswdSecretName": "team-users"}})
    user_file = (
        "alice:$apr1$abc$def\n# comment\n\nadmin:$2y$05$shadow\nbob:$2y$05$xyz\nbroken-line\n"
        "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"
    )
    result = build_users_secret(owner, spec, existing={}, user_htpasswd=user_file)
    lines = _data(result.manifest)["users.htpasswd"].splitlines()
    assert [line.split(":")[0] for line in lines] == ["admin", "alice", "bob"]
    assert "$2y$05$shadow" not in "\n".join(lines)
    assert any("replaced by the operator's generated admin user" in w for w in result.warnings)
    assert any("not 'user:hash'" in w for w in result.warnings)
    assert any("'carol'" in w and "htpasswd -B" in w for w in result.warnings)
