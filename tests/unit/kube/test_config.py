"""The one connection resolver: kubeconfig (token, tokenFile, client certificates, CA, exec
plugins), in-cluster, and clear errors; each checked by a real request to a local server."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from gentask.kube.client import KubeClient
from gentask.kube.config import ConfigError, load_connection


def kubeconfig(path: Path, server: str, user: dict, cluster: dict | None = None, namespace: str | None = None) -> Path:
    context = {"cluster": "c", "user": "u", **({"namespace": namespace} if namespace else {})}
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "here",
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "other", "context": {"cluster": "nowhere", "user": "nobody"}},
                     {"name": "here", "context": context}]}))
    return path


async def echo_auth(request: web.Request) -> web.Response:
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    subject = dict(x[0] for x in peer["subject"]) if peer else {}
    return web.json_response({"auth": request.headers.get("Authorization"), "cn": subject.get("commonName")})


LIGHT = False


@pytest.fixture(autouse=True, params=[False, True], ids=["aiohttp", "streams"])
def _both_transports(request, monkeypatch):
    """Every connection is checked with the aiohttp pool and with the light client a worker uses."""
    monkeypatch.setattr(sys.modules[__name__], "LIGHT", request.param)


async def ask(conn) -> dict:
    async with KubeClient(conn, light=LIGHT) as kube:
        return await kube.request("GET", "/version")


async def test_token_from_the_current_context(tmp_path, start_server):
    server = await start_server()
    server.on("GET", "/version", echo_auth)
    conn = load_connection(kubeconfig(tmp_path / "config", server.url, {"token": "abc"}, namespace="tasks"))
    assert conn.namespace == "tasks" and conn.source == str(tmp_path / "config")
    assert (await ask(conn))["auth"] == "Bearer abc"


async def test_client_certificate_and_ca_as_data_over_tls(tmp_path, pki, start_server):
    server = await start_server(pki.server_context(require_client_cert=True))
    server.on("GET", "/version", echo_auth)
    cert, key = pki.client_cert("gentask-test-user")
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    path = kubeconfig(tmp_path / "config", server.url,
                      {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
                      {"certificate-authority-data": b64(pki.ca.read_bytes())})
    conn = load_connection(path)
    assert conn.key_file and stat.S_IMODE(os.stat(conn.key_file).st_mode) == 0o600     # a private temp file
    answer = await ask(conn)
    assert answer == {"auth": None, "cn": "gentask-test-user"}


async def test_a_kubeconfig_written_as_json_reads_as_its_yaml_does_and_needs_no_yaml(tmp_path, pki, start_server):
    """The local cluster's process node writes its pods' kubeconfigs as JSON: a worker pod imports no yaml."""
    server = await start_server(pki.server_context())
    server.on("GET", "/version", echo_auth)
    as_yaml = kubeconfig(tmp_path / "config", server.url, {"token": "abc"}, {"certificate-authority": str(pki.ca)},
                         namespace="tasks")
    as_json = tmp_path / "config.json"
    as_json.write_text(json.dumps(yaml.safe_load(as_yaml.read_text()), indent=2))
    a, b = load_connection(as_yaml), load_connection(as_json)
    assert (b.host, b.namespace, b.ca_file, b.insecure, b.tokens) == (a.host, a.namespace, a.ca_file, a.insecure,
                                                                    a.tokens)
    assert (await ask(b))["auth"] == "Bearer abc"        # over TLS, the server's name checked:
    from gentask.kube.errors import ClusterUnavailable
    with pytest.raises(ClusterUnavailable):                 # a name the certificate does not hold is refused
        await ask(load_connection(kubeconfig(tmp_path / "other-name", server.url, {"token": "abc"}, {
            "certificate-authority": str(pki.ca), "tls-server-name": "not-the-apiserver.example"})))
    code = f"import sys; from gentask.kube.config import load_connection; load_connection({str(as_json)!r}); " \
           "print('yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_ca_file_relative_to_the_kubeconfig_and_a_wrong_ca_is_refused(tmp_path, pki, start_server):
    server = await start_server(pki.server_context())
    server.on("GET", "/version", echo_auth)
    (tmp_path / "ca.crt").write_bytes(pki.ca.read_bytes())
    conn = load_connection(kubeconfig(tmp_path / "config", server.url, {"token": "t"},
                                      {"certificate-authority": "ca.crt"}))
    assert (await ask(conn))["auth"] == "Bearer t"
    # without the CA the server's certificate is not trusted; with insecure-skip-tls-verify it is accepted
    from gentask.kube.errors import ClusterUnavailable
    with pytest.raises(ClusterUnavailable):
        await ask(load_connection(kubeconfig(tmp_path / "plain", server.url, {"token": "t"})))
    insecure = load_connection(kubeconfig(tmp_path / "insecure", server.url, {"token": "t"},
                                          {"insecure-skip-tls-verify": True}))
    assert (await ask(insecure))["auth"] == "Bearer t"


async def test_token_file_is_read_again_after_a_401(tmp_path, start_server):
    server = await start_server()
    token = tmp_path / "token"
    token.write_text("old\n")

    async def only_new(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer new":
            return web.json_response({"kind": "Status", "reason": "Unauthorized", "message": "no", "code": 401},
                                     status=401)
        return await echo_auth(request)
    server.on("GET", "/version", only_new)
    conn = load_connection(kubeconfig(tmp_path / "config", server.url, {"tokenFile": "token"}))
    token.write_text("new\n")             # rotated after the first read: the cached one is refused once
    assert (await ask(conn))["auth"] == "Bearer new"
    assert [r.headers["Authorization"] for r in server.seen] == ["Bearer old", "Bearer new"]


def plugin(tmp_path: Path, api_version: str, expires: str | None, token: str = "from-plugin") -> Path:
    """An exec credential plugin: prints an ExecCredential, counts its runs, checks KUBERNETES_EXEC_INFO."""
    script = tmp_path / "plugin.py"
    status = {"token": token, **({"expirationTimestamp": expires} if expires else {})}
    script.write_text(f"""#!{sys.executable}
import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["kind"] == "ExecCredential" and os.environ["GREETING"] == "hello", info
with open({str(tmp_path / 'runs')!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
print(json.dumps({{"apiVersion": {api_version!r}, "kind": "ExecCredential", "status": {status!r}}}))
""")
    script.chmod(0o700)
    return script


@pytest.mark.parametrize("api_version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
async def test_exec_plugin_token_is_cached_until_it_expires(tmp_path, start_server, api_version):
    server = await start_server()
    server.on("GET", "/version", echo_auth)
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    script = plugin(tmp_path, api_version, later)
    exec_ = {"apiVersion": api_version, "command": str(script), "args": ["get-token", "--cluster", "c"],
             "env": [{"name": "GREETING", "value": "hello"}], "interactiveMode": "Never"}
    conn = load_connection(kubeconfig(tmp_path / "config", server.url, {"exec": exec_}))
    async with KubeClient(conn) as kube:
        for _ in range(3):
            assert (await kube.request("GET", "/version"))["auth"] == "Bearer from-plugin"
    assert (tmp_path / "runs").read_text() == "get-token --cluster c\n"      # one run for three requests
    assert conn.tokens.expiration == datetime.fromisoformat(later.replace("Z", "+00:00"))
    assert conn.authorization() == "Bearer from-plugin"                     # the synchronous face agrees


async def test_an_expired_exec_token_runs_the_plugin_again(tmp_path, start_server):
    server = await start_server()
    server.on("GET", "/version", echo_auth)
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    script = plugin(tmp_path, "client.authentication.k8s.io/v1", past)
    exec_ = {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script),
             "env": [{"name": "GREETING", "value": "hello"}]}
    conn = load_connection(kubeconfig(tmp_path / "config", server.url, {"exec": exec_}))
    await ask(conn)
    await ask(conn)
    assert len((tmp_path / "runs").read_text().splitlines()) == 2


async def test_exec_plugin_failures_name_the_kubeconfig(tmp_path):
    script = plugin(tmp_path, "client.authentication.k8s.io/v1beta1", None)   # answers v1beta1
    exec_ = {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script),
             "env": [{"name": "GREETING", "value": "hello"}]}
    conn = load_connection(kubeconfig(tmp_path / "config", "http://127.0.0.1:1", {"exec": exec_}))
    with pytest.raises(ConfigError, match=r"config: the exec credential plugin answered apiVersion"):
        conn.authorization()
    missing = {"apiVersion": "client.authentication.k8s.io/v1", "command": str(tmp_path / "no-such-plugin")}
    conn = load_connection(kubeconfig(tmp_path / "config2", "http://127.0.0.1:1", {"exec": missing}))
    with pytest.raises(ConfigError, match="cannot run the exec credential plugin"):
        await conn.authorization_async()
    old = {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}
    with pytest.raises(ConfigError, match=r"config3: exec apiVersion 'client.authentication.k8s.io/v1alpha1'"):
        load_connection(kubeconfig(tmp_path / "config3", "http://127.0.0.1:1", {"exec": old}))


async def test_in_cluster_from_the_environment_and_the_mounted_token(tmp_path, pki, start_server, monkeypatch):
    server = await start_server(pki.server_context())
    server.on("GET", "/version", echo_auth)
    port = server.url.rsplit(":", 1)[1]
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("pod-token")
    (sa / "ca.crt").write_bytes(pki.ca.read_bytes())
    (sa / "namespace").write_text("tasks")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port, "HOME": str(tmp_path)}
    conn = load_connection(environ=env, service_account_dir=sa)
    assert conn.source == "in-cluster" and conn.namespace == "tasks" and conn.host == f"https://127.0.0.1:{port}"
    assert (await ask(conn))["auth"] == "Bearer pod-token"
    (sa / "token").write_text("rotated")
    assert conn.authorization() == "Bearer pod-token"           # read at most once a minute
    conn.tokens._read_at -= 61
    assert conn.authorization() == "Bearer rotated"


def test_kubeconfig_env_first_entry_then_home(tmp_path):
    first = kubeconfig(tmp_path / "first", "http://127.0.0.1:1", {"token": "one"})
    second = kubeconfig(tmp_path / "second", "http://127.0.0.1:2", {"token": "two"})
    conn = load_connection(environ={"KUBECONFIG": os.pathsep.join([str(first), str(second)])})
    assert conn.host == "http://127.0.0.1:1"
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:3", {"token": "home"})
    assert load_connection(environ={"HOME": str(tmp_path)}).host == "http://127.0.0.1:3"


@pytest.mark.parametrize("text,message", [
    ("{not yaml: [", "is not valid YAML"),
    ("- a list", "is not a kubeconfig"),
    (json.dumps({"clusters": []}), "no current-context is set"),
    (json.dumps({"current-context": "x", "contexts": []}), "no context named 'x'"),
    (json.dumps({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                 "clusters": [{"name": "c", "cluster": {}}], "users": [{"name": "u", "user": {}}]}),
     "cluster 'c' has no server"),
    (json.dumps({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                 "clusters": [{"name": "c", "cluster": {"server": "https://h"}}]}), "no user named 'u'"),
    (json.dumps({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                 "clusters": [{"name": "c", "cluster": {"server": "https://h", "certificate-authority-data": "%%"}}],
                 "users": [{"name": "u", "user": {}}]}), "certificate-authority-data is not valid base64"),
    (json.dumps({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                 "clusters": [{"name": "c", "cluster": {"server": "http://h"}}],
                 "users": [{"name": "u", "user": {"tokenFile": "missing-token"}}]}), "cannot read the token file"),
])
def test_a_broken_kubeconfig_names_the_file_and_what_is_missing(tmp_path, text, message):
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_connection(path)
    assert message in str(err.value) and str(tmp_path) in str(err.value)


def test_no_kubeconfig_and_not_in_a_cluster(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the kubeconfig .*/absent"):
        load_connection(tmp_path / "absent")
    with pytest.raises(ConfigError) as err:
        load_connection(environ={"KUBECONFIG": str(tmp_path / "gone")}, service_account_dir=tmp_path)
    assert f"KUBECONFIG names {tmp_path / 'gone'}, which does not exist" in str(err.value)
    assert "KUBERNETES_SERVICE_HOST" in str(err.value)
    with pytest.raises(ConfigError, match=r"token does not exist"):
        load_connection(environ={"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.0.0.1",
                                 "KUBERNETES_SERVICE_PORT": "443"}, service_account_dir=tmp_path)
