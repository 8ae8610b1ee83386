"""No secret is printed (issue 19): passwords planted in a remote cache URL (WORKSPACE.toml
and ``--remote-cache``), tokens and malformed entries in DOCKER_CONFIG, credential helpers'
answers. Builds that hit errors and warnings with them (a wrong password against the
htpasswd registry on 127.0.0.1:5001, a closed port, a malformed config, ``forge doctor``,
``--json``, ``forge cache push``, ``-v``) run as real processes, and every output is
searched for every planted secret, in every form it could take (as is, percent-encoded,
base64 of ``user:secret``): stdout, stderr, the ``--json`` events, ``forge-out/**`` (logs,
``.forge/keys.json``), the whole local cache (action-cache entries included) and the
records the remote cache holds.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from forge.core.errors import RegistryError
from forge.core.oci import media
from forge.core.oci.registry import (
    Credentials,
    RegistryClient,
    parse_reference,
    redact_url,
    scrub,
    split_credentials,
)
from forge.plugins.cache_settings import CacheSettings, parse_url, settings_for
from forge.plugins.oci_cache import OciCache, scrub_exception
from tests.remote.conftest import free_port, tags, unique_repo
from tests.services import AUTH_PASSWORD, AUTH_USER, require_auth_registry, testdata

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = '[plugins]\nmodules = ["tests.core.fake_rules"]\n'

integration = pytest.mark.integration


def planted(kind: str) -> str:
    """A secret no message could contain by chance."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def forms(secret: str, user: str = AUTH_USER) -> set[str]:
    """Every way ``secret`` could leak: as is, percent-encoded, as the base64 of a login."""
    basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {secret, quote(secret, safe=""), basic, basic.rstrip("=")}


@dataclass
class Run:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def warnings(self) -> list[str]:
        return [e["message"] for e in self.events if e.get("event") == "warning"]


@dataclass
class Lab:
    """Workspaces, caches and every output of the forge processes a test runs."""

    tmp: Path
    runs: list[Run] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)  # searched after the test: forge-out, caches
    secrets: set[str] = field(default_factory=set)
    text: str = field(default_factory=lambda: uuid.uuid4().hex)  # keys unique to this test

    def plant(self, *secrets: str, user: str = AUTH_USER) -> None:
        for secret in secrets:
            self.secrets |= forms(secret, user)

    def workspace(self, name: str, url: str | None = None, write: bool = False) -> Path:
        root = self.tmp / name
        (root / "p").mkdir(parents=True)
        toml = f'[workspace]\nname = "{name}"\n{PLUGIN}'
        if url:
            toml += f'[remote_cache]\nurl = "{url}"\nwrite = {str(write).lower()}\n'
        (root / "WORKSPACE.toml").write_text(toml)
        text = self.text
        (root / "p/a.txt").write_text("alpha\n")
        (root / "p/BUILD").write_text(
            f'concat(name = "a", srcs = ["a.txt"], text = "{text}")\n'
            f'concat(name = "b", deps = [":a"], text = "b-{text}")\n')
        self.dirs.append(root / "forge-out")
        return root

    def forge(self, ws: Path, *args: str, env: dict[str, str] | None = None,
              cache: str = "cache") -> Run:
        cache_dir = ws.parent / f"{ws.name}-{cache}"
        self.dirs.append(cache_dir)
        no_login = self.tmp / "no-docker-config"  # never the machine's own Docker config
        no_login.mkdir(exist_ok=True)
        environ = {**os.environ, "PYTHONPATH": str(ROOT), "FORGE_CACHE": str(cache_dir),
                   "CI": "true", "DOCKER_CONFIG": str(no_login), **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "forge.cli", *args], cwd=ws, env=environ,
                              capture_output=True, text=True, timeout=180)
        run = Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        self.runs.append(run)
        if "-v" not in args:
            assert "Traceback" not in run.stderr, run.stderr
        return run

    def assert_nothing_leaked(self, extra: dict[str, str] | None = None) -> None:
        texts = {f"forge {' '.join(r.args)} (exit {r.code})": r.stdout + r.stderr for r in self.runs}
        texts.update(extra or {})
        for d in self.dirs:
            for path in sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else ():
                texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
        assert self.secrets and texts
        leaks = [(where, s) for where, text in texts.items() for s in self.secrets if s in text]
        assert not leaks, "\n".join(f"{s!r} in {where}:\n{texts[where][:2000]}" for where, s in leaks)


@pytest.fixture
def lab(tmp_path) -> Lab:
    return Lab(tmp_path)


def _get(url: str, accept: str = "*/*") -> bytes:
    token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {token}", "Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def remote_records(host: str, repo: str) -> dict[str, str]:
    """Manifest and record (config blob) of every tag of the cache repository."""
    out = {}
    for tag in tags(host, repo, auth=(AUTH_USER, AUTH_PASSWORD)) or []:
        manifest = _get(f"http://{host}/v2/{repo}/manifests/{tag}", media.OCI_MANIFEST)
        record = _get(f"http://{host}/v2/{repo}/blobs/{json.loads(manifest)['config']['digest']}")
        out[f"remote {repo}:{tag}"] = (manifest + record).decode()
    assert out
    return out


# -- pieces (no service) ------------------------------------------------------------------


def test_urls_are_split_and_redacted():
    assert split_credentials("forge:pw%40x@127.0.0.1:5001/c") == ("127.0.0.1:5001/c", "forge", "pw@x")
    assert split_credentials("http://u:p/q@reg.example.com/c") == ("http://reg.example.com/c", "u", "p/q")
    assert split_credentials("reg.example.com/c@sha256:" + "a" * 64)[1] is None
    assert split_credentials("127.0.0.1:5000/c@latest")[1] is None
    assert redact_url("oci://u:secret@reg.example.com/c") == "oci://u:***@reg.example.com/c"
    assert redact_url("token-only@reg.example.com/c") == "***@reg.example.com/c"
    assert redact_url("reg.example.com/c") == "reg.example.com/c"
    text = "HTTPConnectionPool: url http://u:hunter22@h:1/v2/ (hunter22, aHVudGVyMjI=)"
    assert scrub(text, ["hunter22", "aHVudGVyMjI="]) == "HTTPConnectionPool: url http://u:***@h:1/v2/ (***, ***)"


def test_url_credentials_leave_every_string_when_parsed(tmp_path):
    secret = planted("pw")
    loc = parse_url(f"http://forge:{secret}@127.0.0.1:5001/team/cache")
    assert (loc.host, loc.repo, loc.insecure) == ("127.0.0.1:5001", "team/cache", True)
    assert loc.credentials == Credentials("forge", secret, "the remote cache URL")
    (tmp_path / "WORKSPACE.toml").write_text(
        f'[workspace]\nname = "w"\n[remote_cache]\nurl = "forge:{secret}@127.0.0.1:5001/c"\n')
    from forge.core.workspace import load_workspace

    settings = settings_for(load_workspace(tmp_path), {})
    assert settings.url == "127.0.0.1:5001/c" and settings.credentials.password == secret
    cache = OciCache(CacheSettings(f"forge:{secret}@127.0.0.1:5001/c"))
    shown = [repr(settings), repr(loc), repr(loc.credentials), repr(cache), cache.describe(),
             repr(cache.client)]
    assert not [s for s in shown if secret in s], shown
    for bad, message in ((f"forge:{secret}@/c", "names no registry host"),
                         (f"ftp://forge:{secret}@h.example.com/c", "scheme 'ftp'"),
                         (f"forge:{secret}@h.example.com/c:tag", "names a tag or digest"),
                         (f"{secret}@h.example.com/c", "no user:password")):
        with pytest.raises(Exception, match=message) as info:
            parse_url(bad)
        assert secret not in str(info.value)
    with pytest.raises(RegistryError, match="cannot carry credentials") as info:
        parse_reference(f"forge:{secret}@127.0.0.1:5000/base/busybox:1")
    assert secret not in str(info.value) and "forge:***@127.0.0.1:5000" in str(info.value)


def test_an_exception_leaving_the_backend_is_scrubbed():
    secret = planted("pw")
    client = RegistryClient("127.0.0.1:1", credentials=Credentials("forge", secret))
    try:
        try:
            raise OSError(f"connect to http://forge:{secret}@127.0.0.1:1/v2/ failed")
        except OSError as inner:
            raise RegistryError(f"inner said {inner} and {secret}") from inner
    except RegistryError as exc:
        raised = exc
        clean = scrub_exception(exc, client._scrub)
    assert clean is raised and secret not in str(clean) and clean.__cause__ is None
    assert clean.__suppress_context__


# -- against the htpasswd registry --------------------------------------------------------


@integration
def test_credentials_in_the_url_work_and_are_never_shown(lab):
    host, user, password = require_auth_registry()
    lab.plant(password, user=user)
    repo = unique_repo()
    url = f"{user}:{quote(password, safe='')}@{host}/{repo}"
    ws = lab.workspace("writer", url, write=True)
    first = lab.forge(ws, "build", "//p:all", "--json")
    assert first.code == 0 and first.warnings() == [], first.stderr
    assert len(tags(host, repo, auth=(user, password))) == 2  # the URL's login was used
    reader = lab.workspace("reader", url)
    again = lab.forge(reader, "build", "//p:all", "--json")
    assert {e["status"] for e in again.events if e.get("event") == "action"} == {"cached-remote"}
    pushed = lab.forge(ws, "cache", "push", "//p:all")
    assert pushed.code == 0 and f"pushed to {host}/{repo}" in pushed.stdout
    flag = lab.forge(lab.workspace("flag"), "build", "//p:all", "--json",
                     "--remote-cache", f"http://{url}", "--remote-cache-write")
    assert flag.code == 0 and flag.warnings() == []
    doctor = lab.forge(ws, "doctor")
    assert f"remote cache {host}/{repo}: reachable (read-write)" in doctor.stdout
    verbose = lab.forge(ws, "-v", "cache", "push", "//p:all", "--remote-cache",
                        f"{user}:{password}@{host}/{repo}")
    assert verbose.code == 0 and "2 already there" in verbose.stdout, verbose.stdout
    lab.assert_nothing_leaked(remote_records(host, repo))


@integration
def test_wrong_passwords_in_urls_are_never_shown(lab):
    host, user, _ = require_auth_registry()
    in_toml, on_cli = planted("toml-pw"), planted("cli-pw")
    lab.plant(in_toml, on_cli)
    repo = unique_repo()
    ws = lab.workspace("ws", f"{user}:{in_toml}@{host}/{repo}", write=True)
    refused = f"registry {host} refused the credentials of user '{user}' from the remote cache URL"
    for i, args in enumerate((("--json",), ())):
        out = lab.forge(ws, "build", "//p:all", *args, cache=f"c{i}")
        assert out.code == 0 and refused in out.stdout + out.stderr
    cli = f"{user}:{on_cli}@{host}/{repo}"
    out = lab.forge(ws, "build", "//p:all", "--json", "--remote-cache", cli, cache="c2")
    assert out.code == 0 and [w for w in out.warnings() if refused in w]
    closed = f"http://{user}:{on_cli}@127.0.0.1:{free_port()}/c"
    out = lab.forge(ws, "build", "//p:all", "--json", "--remote-cache", closed, cache="c3")
    assert out.code == 0 and "connection refused" in out.warnings()[0]
    out = lab.forge(ws, "build", "//p:all", "--remote-cache", closed, "--remote-cache-required", cache="c4")
    assert out.code == 1 and "connection refused" in out.stderr
    out = lab.forge(ws, "-v", "build", "//p:all", "--remote-cache", cli, "--remote-cache-required",
                    cache="c5")
    assert out.code == 1 and refused in out.stderr
    out = lab.forge(ws, "cache", "push", "//p:all", "--remote-cache", cli, cache="c6")
    assert out.code == 1 and refused in out.stderr
    out = lab.forge(ws, "cache", "push", "//p:all", cache="c7")
    assert out.code == 1 and refused in out.stderr
    out = lab.forge(ws, "build", "//p:all", "--remote-cache", f"{on_cli}@{host}/{repo}", cache="c8")
    assert out.code == 2 and f"'***@{host}/{repo}'" in out.stderr
    assert tags(host, repo, auth=(user, AUTH_PASSWORD)) is None
    lab.assert_nothing_leaked()


@integration
def test_doctor_never_shows_the_password_of_the_url(lab):
    host, user, _ = require_auth_registry()
    secret = planted("doctor-pw")
    lab.plant(secret)
    ws = lab.workspace("ws", f"{user}:{secret}@{host}/{unique_repo()}")
    out = lab.forge(ws, "doctor")
    assert out.code == 1 and "refused the credentials" in out.stdout
    closed = lab.workspace("closed", f"{user}:{secret}@127.0.0.1:{free_port()}/c")
    assert "connection refused" in lab.forge(closed, "doctor").stdout
    lab.assert_nothing_leaked()


def _helper(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def docker_configs(tmp: Path, host: str, lab: Lab) -> dict[str, tuple[dict[str, str], str]]:
    """name -> (environment, what the warning must say) for each planted Docker config."""
    def secret(kind: str) -> str:
        value = planted(kind)
        lab.plant(value)
        return value

    token, ident = secret("dc-token"), secret("identity-token")
    garbage, helper_pw, helper_junk, helper_err = (secret("auths-string"), secret("helper-pw"),
                                                   secret("helper-junk"), secret("helper-stderr"))
    nocolon = base64.b64encode(secret("no-colon").encode()).decode()
    lab.secrets.add(nocolon)
    bad_b64 = "!!" + secret("bad-b64")
    auth = base64.b64encode(f"{AUTH_USER}:{token}".encode()).decode()
    configs = {
        "wrong-token": ({"auths": {host: {"auth": auth, "identitytoken": ident}}}, "refused the credentials"),
        "auths-entry-is-a-string": ({"auths": {host: garbage}}, f'auths["{host}"] is a string'),
        "bad-base64": ({"auths": {host: {"auth": bad_b64}}}, f'auths["{host}"].auth is not base64'),
        "no-colon": ({"auths": {host: {"auth": nocolon}}}, f'auths["{host}"].auth is not base64'),
        "auths-is-a-list": ({"auths": [garbage]}, '"auths" is an array'),
        "username-not-a-string": ({"auths": {host: {"username": 7, "password": token}}},
                                  f'auths["{host}"].username is a number'),
        "identity-token-only": ({"auths": {host: {"identitytoken": ident}}}, "identity token"),
        "not-json": ('{"auths": {"' + host + '": {"auth": "' + garbage, "is not JSON"),
        "helper-wrong-secret": ({"credHelpers": {host: "forgetest-pw"}}, "refused the credentials"),
        "helper-junk": ({"credHelpers": {host: "forgetest-junk"}}, "something that is not"),
        "helper-fails": ({"credsStore": "forgetest-err"}, "requires a login"),
    }
    bin_dir = tmp / "bin"
    _helper(bin_dir, "forgetest-pw", f'echo \'{{"Username": "{AUTH_USER}", "Secret": "{helper_pw}"}}\'')
    _helper(bin_dir, "forgetest-junk", f"echo 'oops {helper_junk} not json'")
    _helper(bin_dir, "forgetest-err", f"echo '{helper_err}' >&2; echo '{helper_err}'; exit 1")
    out = {}
    for name, (config, expected) in configs.items():
        directory = tmp / "docker" / name
        directory.mkdir(parents=True)
        text = config if isinstance(config, str) else json.dumps(config)
        (directory / "config.json").write_text(text)
        env = {"DOCKER_CONFIG": str(directory), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        out[name] = (env, expected)
    return out


@integration
def test_docker_config_values_are_never_shown(lab, tmp_path):
    host, user, password = require_auth_registry()
    repo = unique_repo()
    ws = lab.workspace("ws", f"{host}/{repo}", write=True)
    for name, (env, expected) in docker_configs(tmp_path, host, lab).items():
        config = str(Path(env["DOCKER_CONFIG"]) / "config.json")
        out = lab.forge(ws, "build", "//p:all", "--json", env=env, cache=name)
        assert out.code == 0, (name, out.stderr)
        [warning] = out.warnings()
        assert warning.startswith(f"remote cache {host}/{repo} unusable") and expected in warning, (name, warning)
        if "helper" not in name and "token" not in name:
            assert config in warning, (name, warning)  # names the file (and the key, above)
        plain = lab.forge(ws, "build", "//p:all", env=env, cache=name + "-plain")
        assert plain.code == 0 and expected in plain.stdout + plain.stderr
        doctor = lab.forge(ws, "doctor", env=env, cache=name)
        assert doctor.code == 1 and f"[FAIL] remote cache {host}/{repo}" in doctor.stdout, doctor.stdout
        push = lab.forge(ws, "cache", "push", "//p:a", env=env, cache=name)
        assert push.code == 1 and expected in push.stderr, (name, push.stderr)
        verbose = lab.forge(ws, "-v", "build", "//p:a", "--remote-cache-required", env=env,
                            cache=name + "-v")
        assert verbose.code == 1 and expected in verbose.stderr
    assert tags(host, repo, auth=(user, password)) is None
    lab.assert_nothing_leaked()


def test_build_arg_values_are_never_written_to_keys_json(forge_workspace, docker_client):
    """An args file often holds tokens: keys.json and `forge explain` show its values as
    hashes (a change is still named), and a malformed line is never echoed."""
    secret = planted("args-token")
    ws = forge_workspace({
        "p/BUILD": 'oci_import(name = "base", src = "busybox-amd64.tar", platform = "amd64")\n'
                   'dockerfile(name = "t", base = ":base", args_file = "t-args")\n',
        "p/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG TOKEN\nLABEL built=yes\n",
        "p/t-args": f"TOKEN={secret}\n",
    })
    shutil.copy(testdata("busybox-amd64.tar"), ws.root / "p/busybox-amd64.tar")
    out = ws.run("build", "//p:t", "--json").assert_success()
    keys = (ws.root / "forge-out/.forge/keys.json").read_text()
    assert "build_args" in keys and secret not in keys
    (ws.root / "p/t-args").write_text(f"TOKEN={secret}-2\n")
    explained = ws.run("explain", "//p:t")
    assert "build_args" in explained.stdout + explained.stderr
    assert secret not in explained.stdout + explained.stderr
    (ws.root / "p/t-args").write_text(f"# a comment\n{secret} without an equals sign\n")
    bad = ws.run("build", "//p:t", "--json").assert_failure(2)
    assert "p/t-args:2: expected KEY=VALUE" in bad.stderr
    assert secret not in bad.stdout + bad.stderr + out.stdout
