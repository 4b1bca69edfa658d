"""Secrets in URLs: every form is redacted, and no command's storage error path shows one."""

from __future__ import annotations

import pytest

from search.secrets import REDACTED, redact_text, redact_url, url_secrets
from spaces import Profile
from tests.conftest import free_port

SECRET = "Zq7-s3cret-never-shown"
#: Each way a password can ride in a storage URL (PORT is replaced by an unused port).
FORMS = {
    "userinfo": f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:PORT/db",
    "userinfo-with-at": f"postgresql+psycopg://postgres:x@{SECRET}@127.0.0.1:PORT/db",
    "query-password": f"postgresql+psycopg://postgres@127.0.0.1:PORT/db?password={SECRET}",
    "query-only": f"postgresql+psycopg:///db?host=127.0.0.1&port=PORT&user=postgres&password={SECRET}",
    "query-sslpassword": f"postgresql+psycopg://postgres@127.0.0.1:PORT/db?sslpassword={SECRET}&sslmode=disable",
}


@pytest.mark.parametrize("url", list(FORMS.values()), ids=list(FORMS))
def test_redact_url_hides_every_form(url):
    shown = redact_url(url)
    assert SECRET not in shown and REDACTED in shown
    assert SECRET in "".join(url_secrets(url))
    assert SECRET not in redact_text(f"failed at {url}: host {SECRET}@127.0.0.1", url_secrets(url))


def test_urls_without_secrets_are_left_as_they_are():
    for url in ("sqlite:///x.db", "postgresql://u@h/db?b=1&a=2", "file:./mlruns", "postgresql://u:***@h/db?b=1&a=2"):
        assert redact_url(url) == url
    assert redact_url("http://h:1/x?api_key=K&x=1") == "http://h:1/x?api_key=***&x=1"
    assert redact_url("postgresql:/u:pw@db") == "postgresql:/u:***@db"  # not a well-formed URL


#: Each command that takes --storage, as arguments before it (SPEC stands for a spec file).
COMMANDS = {
    "status": ["status"],
    "search": ["search", "SPEC"],
    "dashboard": ["dashboard", "--port", "0"],
    "best": ["best", "some-study"],
    "export": ["export", "some-study", "--format", "json"],
    "apply": ["apply", "PROFILE", "--study", "some-study", "--out", "OUT"],
    "register": ["register", "some-study", "--name", "m", "--tracking-uri", "sqlite:///TRACKING"],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_command_shows_a_storage_password_in_its_error(command, run_cli, write_spec, tmp_path):
    (tmp_path / "profile.json").write_text(Profile({"a": 1}, scheme={"name": "sparsity"}, model="m").to_json())
    replace = {
        "SPEC": str(write_spec()),
        "PROFILE": str(tmp_path / "profile.json"),
        "OUT": str(tmp_path / "out"),
        "sqlite:///TRACKING": f"sqlite:///{tmp_path}/mlflow.db",
    }
    args = [replace.get(arg, arg) for arg in COMMANDS[command]]
    for form, template in FORMS.items():
        url = template.replace("PORT", str(free_port()))
        result = run_cli(*args, "--storage", url, timeout=120)
        shown = result.stdout + result.stderr
        assert result.returncode == 2, (form, shown)
        assert "cannot use storage" in shown, (form, shown)
        assert SECRET not in shown, (form, shown)
