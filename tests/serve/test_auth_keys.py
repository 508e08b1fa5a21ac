"""Tokens: RS256/ES256 verified with public keys only, the SMART scope grammar, the CLIs."""

from __future__ import annotations

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from healthtwin.cli import main
from healthtwin.serve.auth import AuthError, Scope, TokenVerifier, mint_token
from healthtwin.serve.settings import Settings


def _pem(key) -> tuple[str, str]:
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return priv, pub


@pytest.mark.parametrize(
    ("alg", "key"),
    [
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_asymmetric_tokens(alg, key) -> None:
    priv, pub = _pem(key)
    v = TokenVerifier(Settings(jwt_public_keys=(pub,), issuer="idp", audience="ht"))
    tok = mint_token(priv, sub="s", scope="system/*.rs", alg=alg, issuer="idp", audience="ht")
    p = v.verify(tok)
    assert p.sub == "s" and p.allows("Observation", "r") and not p.allows("Observation", "c")
    with pytest.raises(AuthError):  # wrong audience
        v.verify(
            mint_token(priv, sub="s", scope="system/*.rs", alg=alg, issuer="idp", audience="x")
        )
    # an HS256 token signed with the public key text (algorithm confusion) is refused
    forged = jwt.encode(
        {"sub": "s", "scope": "system/*.rs", "exp": 4_000_000_000, "iss": "idp", "aud": "ht"},
        "k" * 40,
        algorithm="HS256",
    )
    with pytest.raises(AuthError):
        v.verify(forged)


def test_settings_refuse_no_key_and_weak_secret() -> None:
    with pytest.raises(ValueError, match="no token key"):
        Settings().check()
    with pytest.raises(ValueError, match="32 characters"):
        Settings(jwt_secret="short").check()


@given(
    ctx=st.sampled_from(["patient", "user", "system"]),
    rtype=st.sampled_from(["*", "Observation", "Patient"]),
    perms=st.sets(st.sampled_from("cruds"), min_size=1),
)
def test_scope_grammar_v2(ctx, rtype, perms) -> None:
    text = f"{ctx}/{rtype}." + "".join(c for c in "cruds" if c in perms)
    s = Scope.parse(text)
    assert s is not None and s.context == ctx and s.rtype == rtype and s.perms == frozenset(perms)
    # out-of-order permissions are not SMART v2
    if len(perms) > 1:
        assert Scope.parse(f"{ctx}/{rtype}." + "".join(c for c in "sdurc" if c in perms)) is None


def test_scope_v1_and_non_data_scopes() -> None:
    assert Scope.parse("user/*.read").perms == frozenset("rs")
    assert Scope.parse("user/*.write").perms == frozenset("cud")
    assert Scope.parse("patient/*.*").perms == frozenset("cruds")
    for s in ("openid", "launch/patient", "fhirUser", "user/observation.rs", "admin/*.rs"):
        assert Scope.parse(s) is None


def test_token_cli_mints_a_verifiable_token(tmp_path, monkeypatch) -> None:
    secret = "cli-secret-" + "z" * 40
    monkeypatch.setenv("HEALTHTWIN_JWT_SECRET", secret)
    r = CliRunner().invoke(
        main,
        [
            "token",
            "--sub",
            "alice",
            "--scope",
            "patient/*.rs",
            "--patient",
            "123",
            "--role",
            "patient",
        ],
    )
    assert r.exit_code == 0, r.output
    p = TokenVerifier(Settings(jwt_secret=secret)).verify(r.output.strip())
    assert p.patient == "Patient/123" and p.sub == "alice" and p.role.value == "patient"
    bad = CliRunner().invoke(main, ["token", "--sub", "a", "--scope", "everything"])
    assert bad.exit_code != 0 and "not SMART scopes" in bad.output


def test_serve_refuses_dev_off_loopback_and_duckdb_workers() -> None:
    r = CliRunner().invoke(main, ["serve", "--dev", "--host", "0.0.0.0"])
    assert r.exit_code != 0 and "loopback" in r.output
    r = CliRunner().invoke(main, ["serve", "--workers", "2", "--store", "x.duckdb"])
    assert r.exit_code != 0 and "one process" in r.output
