"""Where the API server is and how to authenticate to it, resolved one way for all of gentask.

Order: an explicit kubeconfig path, else the first entry of KUBECONFIG, else ~/.kube/config,
else the in-cluster service account (KUBERNETES_SERVICE_HOST/PORT and
/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}). No `kubernetes` package:
yaml and ssl are enough for what gentask's deployments use (and a kubeconfig written as JSON, as
the local cluster's process node writes its pods', is read without importing yaml).

Supported in a kubeconfig: current-context; the cluster's server, certificate-authority(-data),
insecure-skip-tls-verify, tls-server-name; the user's token, tokenFile, client-certificate(-data)
with client-key(-data), and exec credential plugins (client.authentication.k8s.io/v1 and v1beta1
ExecCredential; the token is cached until its expirationTimestamp). Relative paths are relative
to the kubeconfig's folder, as kubectl takes them. Token files (tokenFile, the in-cluster token)
are read again at most once a minute: bound service-account tokens rotate.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import json
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gentask.kube.errors import ConfigError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REFRESH_SECONDS = 60.0
EXEC_TIMEOUT_SECONDS = 60.0
EXEC_EXPIRY_MARGIN_SECONDS = 10.0
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


# --- tokens -----------------------------------------------------------------------------------


class TokenSource:
    """A bearer token that may change: static, read from a file, or produced by an exec plugin."""

    def token(self) -> str | None:
        """The current token (may block briefly: a file read or a plugin run)."""
        raise NotImplementedError

    async def token_async(self) -> str | None:
        """The current token without blocking the event loop."""
        return self.token()

    def stale(self) -> bool:
        """True when the next token() would read a file or run a plugin."""
        return False

    def invalidate(self) -> bool:
        """Forget the cached token (after a 401); True when a new one may differ."""
        return False

    @property
    def expiration(self) -> datetime | None:
        """When the cached token expires, if the source says so."""
        return None


@dataclass
class StaticToken(TokenSource):
    """A token written in the kubeconfig itself."""

    value: str

    def token(self) -> str | None:
        """The token as written."""
        return self.value


@dataclass
class FileToken(TokenSource):
    """A token file (tokenFile, the in-cluster token), read again at most every `refresh` seconds."""

    path: Path
    refresh: float = TOKEN_REFRESH_SECONDS
    _value: str | None = None
    _read_at: float | None = None

    def stale(self) -> bool:
        """True when the file is due to be read again."""
        return self._read_at is None or time.monotonic() - self._read_at > self.refresh

    def token(self) -> str | None:
        """The file's token; on a read error after a first success, the previous one."""
        if self.stale():
            try:
                self._value = self.path.read_text().strip()
            except OSError as exc:
                if self._value is None:
                    raise ConfigError(f"cannot read the token file {self.path}: {exc.strerror or exc}") from None
            self._read_at = time.monotonic()
        return self._value

    def invalidate(self) -> bool:
        """Read the file again on the next call."""
        self._read_at = None
        return True


@dataclass
class ExecToken(TokenSource):
    """A token from an exec credential plugin, cached until its expirationTimestamp."""

    command: str
    args: list[str]
    env: dict[str, str]
    api_version: str
    source: str
    cluster: dict[str, Any] | None = None
    cwd: Path | None = None
    _value: str | None = None
    _expires: datetime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def expiration(self) -> datetime | None:
        """The plugin's expirationTimestamp of the cached token."""
        return self._expires

    def stale(self) -> bool:
        """True when there is no token yet or the cached one is (about to be) expired."""
        if self._value is None:
            return True
        if self._expires is None:
            return False
        return (self._expires - datetime.now(UTC)).total_seconds() < EXEC_EXPIRY_MARGIN_SECONDS

    def invalidate(self) -> bool:
        """Run the plugin again on the next call."""
        self._value, self._expires = None, None
        return True

    def _environment(self) -> dict[str, str]:
        info: dict[str, Any] = {"apiVersion": self.api_version, "kind": "ExecCredential",
                                "spec": {"interactive": False}}
        if self.cluster is not None:
            info["spec"]["cluster"] = self.cluster
        return {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}

    def _accept(self, returncode: int, stdout: bytes, stderr: bytes) -> str:
        if returncode != 0:
            raise ConfigError(f"{self.source}: the exec credential plugin {self.command!r} exited {returncode}: "
                              f"{stderr.decode(errors='replace').strip()[-500:]}")
        try:
            doc = json.loads(stdout)
        except ValueError:
            raise ConfigError(f"{self.source}: the exec credential plugin {self.command!r} printed no JSON "
                              "ExecCredential") from None
        if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
            raise ConfigError(f"{self.source}: the exec credential plugin {self.command!r} printed no ExecCredential")
        if doc.get("apiVersion") != self.api_version:
            raise ConfigError(f"{self.source}: the exec credential plugin answered apiVersion "
                              f"{doc.get('apiVersion')!r}, the kubeconfig asked for {self.api_version!r}")
        status = doc.get("status") or {}
        token = status.get("token")
        if not token:
            raise ConfigError(f"{self.source}: the exec credential plugin {self.command!r} returned no status.token "
                              "(client certificates from plugins are not supported)")
        expires = status.get("expirationTimestamp")
        self._expires = _parse_time(expires, f"{self.source}: expirationTimestamp") if expires else None
        self._value = str(token)
        return self._value

    def token(self) -> str | None:
        """The cached token, or a fresh one from the plugin (blocking: at start-up and on expiry)."""
        with self._lock:
            if not self.stale():
                return self._value
            try:
                proc = subprocess.run([self.command, *self.args], env=self._environment(), cwd=self.cwd,
                                      capture_output=True, timeout=EXEC_TIMEOUT_SECONDS, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConfigError(f"{self.source}: cannot run the exec credential plugin {self.command!r}: {exc}") \
                    from None
            return self._accept(proc.returncode, proc.stdout, proc.stderr)

    async def token_async(self) -> str | None:
        """The cached token, or a fresh one from the plugin run as a subprocess of the event loop."""
        if not self.stale():
            return self._value
        try:
            proc = await asyncio.create_subprocess_exec(self.command, *self.args, env=self._environment(),
                                                        cwd=self.cwd, stdout=subprocess.PIPE,
                                                        stderr=subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), EXEC_TIMEOUT_SECONDS)
        except (TimeoutError, OSError) as exc:
            raise ConfigError(f"{self.source}: cannot run the exec credential plugin {self.command!r}: {exc}") \
                from None
        return self._accept(proc.returncode or 0, stdout, stderr)


# --- the connection ---------------------------------------------------------------------------


@dataclass
class Connection:
    """Where the API server is and how to authenticate to it (also what Kopf's login gets)."""

    host: str
    ssl: ssl.SSLContext | bool
    source: str = ""                                    # the kubeconfig path, or "in-cluster"
    namespace: str | None = None                        # the context's (or the pod's) namespace
    tokens: TokenSource | None = None
    insecure: bool = False
    ca_file: str | None = None
    ca_data: str | None = None                          # PEM
    cert_file: str | None = None
    key_file: str | None = None
    server_hostname: str | None = None                  # tls-server-name

    def authorization(self) -> str | None:
        """The Authorization header value, or None for a connection without a token."""
        token = self.tokens.token() if self.tokens else None
        return f"Bearer {token}" if token else None

    async def authorization_async(self) -> str | None:
        """The Authorization header value, refreshed without blocking the event loop."""
        token = await self.tokens.token_async() if self.tokens else None
        return f"Bearer {token}" if token else None

    def invalidate(self) -> bool:
        """Drop a cached token after a 401; True when asking again may give another one."""
        return self.tokens.invalidate() if self.tokens else False


def _parse_time(value: Any, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not an RFC 3339 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_temp_files: list[str] = []


def _remove_temp_files() -> None:
    for name in _temp_files:
        try:
            os.unlink(name)
        except OSError:
            pass


atexit.register(_remove_temp_files)


def _private_file(data: bytes, suffix: str) -> str:
    """A file only this user can read (mkstemp: mode 0600), removed when the process exits."""
    import tempfile  # here: only client-key data needs it (a worker pod pays every import in CPU)

    fd, name = tempfile.mkstemp(prefix="gentask-kube-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    _temp_files.append(name)
    return name


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what} is not valid base64") from None


def _tls(conn: Connection, what: str) -> ssl.SSLContext | bool:
    if conn.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        try:
            context = ssl.create_default_context(cafile=conn.ca_file, cadata=conn.ca_data)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"{what}: cannot load the certificate authority "
                              f"{conn.ca_file or '(certificate-authority-data)'}: {exc}") from None
    if conn.cert_file:
        try:
            context.load_cert_chain(conn.cert_file, conn.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{what}: cannot load the client certificate and key: {exc}") from None
    if not conn.server_hostname and not conn.cert_file and conn.insecure:
        return False        # as aiohttp takes "no verification"
    return context


def _named(doc: dict[str, Any], section: str, name: str, path: Path) -> dict[str, Any]:
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise ConfigError(f"kubeconfig {path}: {section} is not a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(section[:-1])
            if not isinstance(body, dict):
                raise ConfigError(f"kubeconfig {path}: {section[:-1]} {name!r} has no {section[:-1]} mapping")
            return body
    raise ConfigError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")


def _json(text: str) -> Any:
    """A kubeconfig written as JSON (which is YAML too; the local cluster's pods get one), read
    without yaml; None when the text is not JSON."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None         # a YAML flow mapping, perhaps: yaml decides


def from_kubeconfig(path: str | os.PathLike[str], context: str | None = None) -> Connection:
    """The connection a kubeconfig's (current) context describes; ConfigError names what is missing."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the kubeconfig {path}: {exc.strerror or exc}") from None
    doc = _json(text)
    if doc is None:
        import yaml  # here: a pod reads no YAML kubeconfig, and a worker pod pays every import in CPU

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path} is not a kubeconfig (expected a YAML mapping)")
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {path}: no current-context is set")
    ctx = _named(doc, "contexts", str(name), path)
    if not ctx.get("cluster"):
        raise ConfigError(f"kubeconfig {path}: context {name!r} names no cluster")
    cluster = _named(doc, "clusters", str(ctx["cluster"]), path)
    user = _named(doc, "users", str(ctx["user"]), path) if ctx.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"kubeconfig {path}: cluster {ctx['cluster']!r} has no server")
    base = path.parent
    where = f"kubeconfig {path}"

    def local(value: Any) -> str:
        p = Path(str(value)).expanduser()
        return str(p if p.is_absolute() else base / p)

    conn = Connection(host=str(server).rstrip("/"), ssl=False, source=str(path), namespace=ctx.get("namespace"),
                      insecure=bool(cluster.get("insecure-skip-tls-verify")),
                      server_hostname=cluster.get("tls-server-name"))
    if cluster.get("certificate-authority-data"):
        conn.ca_data = _b64(cluster["certificate-authority-data"], f"{where}: certificate-authority-data").decode()
    elif cluster.get("certificate-authority"):
        conn.ca_file = local(cluster["certificate-authority"])
    for key in ("client-certificate", "client-key"):
        if user.get(f"{key}-data"):
            data = _b64(user[f"{key}-data"], f"{where}: {key}-data")
            setattr(conn, "cert_file" if key == "client-certificate" else "key_file", _private_file(data, ".pem"))
        elif user.get(key):
            setattr(conn, "cert_file" if key == "client-certificate" else "key_file", local(user[key]))
    if bool(conn.cert_file) != bool(conn.key_file):
        raise ConfigError(f"{where}: user {ctx.get('user')!r} has a client certificate without a key or a key "
                          "without a certificate")
    if user.get("token"):
        conn.tokens = StaticToken(str(user["token"]))
    elif user.get("tokenFile"):
        conn.tokens = FileToken(Path(local(user["tokenFile"])))
    elif user.get("exec"):
        conn.tokens = _exec(user["exec"], where, cluster, base)
    if conn.host.startswith("http://"):
        conn.ssl = False
    else:
        conn.ssl = _tls(conn, where)
    if isinstance(conn.tokens, FileToken):
        conn.tokens.token()                  # fail now, naming the file, rather than on the first request
    return conn


def _exec(spec: Any, where: str, cluster: dict[str, Any], base: Path) -> ExecToken:
    if not isinstance(spec, dict) or not spec.get("command"):
        raise ConfigError(f"{where}: the user's exec section has no command")
    api_version = spec.get("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        raise ConfigError(f"{where}: exec apiVersion {api_version!r} is not supported "
                          f"(use one of {', '.join(EXEC_API_VERSIONS)})")
    env = {str(e["name"]): str(e.get("value", ""))
           for e in spec.get("env") or [] if isinstance(e, dict) and "name" in e}
    command = str(spec["command"])
    if os.sep in command and not os.path.isabs(command):
        command = str(base / command)       # a relative path with a slash is relative to the kubeconfig
    info = None
    if spec.get("provideClusterInfo"):
        info = {k: v for k, v in {"server": cluster.get("server"),
                                  "certificate-authority-data": cluster.get("certificate-authority-data"),
                                  "insecure-skip-tls-verify": cluster.get("insecure-skip-tls-verify")}.items()
                if v is not None}
    return ExecToken(command=command, args=[str(a) for a in spec.get("args") or []], env=env,
                     api_version=str(api_version), source=where, cluster=info, cwd=base)


def in_cluster(environ: Mapping[str, str] | None = None, service_account_dir: str | os.PathLike[str] | None = None
               ) -> Connection:
    """The pod's own service account: the API server's service address, token and CA."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    folder = Path(service_account_dir) if service_account_dir else SERVICE_ACCOUNT_DIR
    if not host or not port:
        raise ConfigError("not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
    token, ca = folder / "token", folder / "ca.crt"
    for needed in (token, ca):
        if not needed.is_file():
            raise ConfigError(f"in-cluster configuration: {needed} does not exist (is a service account token "
                              "mounted?)")
    address = f"[{host}]" if ":" in host else host
    conn = Connection(host=f"https://{address}:{port}", ssl=False, source="in-cluster", ca_file=str(ca),
                      tokens=FileToken(token))
    namespace = folder / "namespace"
    if namespace.is_file():
        conn.namespace = namespace.read_text().strip() or None
    conn.ssl = _tls(conn, "in-cluster configuration")
    if conn.tokens is not None:
        conn.tokens.token()
    return conn


def load_connection(kubeconfig: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None,
                    service_account_dir: str | os.PathLike[str] | None = None) -> Connection:
    """From the given kubeconfig, else KUBECONFIG's first entry or ~/.kube/config, else in-cluster."""
    env = os.environ if environ is None else environ
    if kubeconfig:
        return from_kubeconfig(kubeconfig)
    listed = env.get("KUBECONFIG", "")
    first = next((p for p in listed.split(os.pathsep) if p), "")
    path = Path(first).expanduser() if first else Path(env.get("HOME") or Path.home()) / ".kube" / "config"
    if path.exists():
        return from_kubeconfig(path)
    try:
        return in_cluster(env, service_account_dir)
    except ConfigError as exc:
        what = f"KUBECONFIG names {path}, which does not exist" if first else f"{path} does not exist"
        raise ConfigError(f"no Kubernetes connection: {what}, and {exc}") from None


__all__ = ["ConfigError", "Connection", "ExecToken", "FileToken", "StaticToken", "TokenSource", "from_kubeconfig",
           "in_cluster", "load_connection"]
