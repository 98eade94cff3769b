"""Settings: the old server's variables, ours, and the message a bad value gives."""

import pytest

from gentask.config import Settings, SettingsError, load_settings, parse_duration, parse_quantity

OLD_NAMES = ["PORT", "ENVIRONMENT", "MONGO_URL", "ARK_API_KEY", "VOLCENGINE_ACCESS_KEY",
             "VOLCENGINE_SECRET_KEY", "AI_TIMEOUT", "LOG_LEVEL", "LOG_KEEP_DAYS"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in OLD_NAMES + ["LOG_DIR", "GENTASK_PROVIDERS", "GENTASK_EXECUTOR", "OPENAI_API_KEY", "GENTASK_API_KEYS"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_sane():
    s = load_settings()
    assert s.port == 8080 and s.environment == "development" and s.log_level == "info"
    assert s.executor == "job" and s.auth_disabled is False and s.mongo_database == "gentask"


def test_old_server_variables_are_read(monkeypatch):
    env = {"PORT": "9000", "ENVIRONMENT": "production", "MONGO_URL": "mongodb://db:27017/ai_tasks",
           "ARK_API_KEY": "ark-secret", "VOLCENGINE_ACCESS_KEY": "AKLT-x", "VOLCENGINE_SECRET_KEY": "sk-y",
           "AI_TIMEOUT": "90s", "LOG_LEVEL": "WARN", "LOG_KEEP_DAYS": "30"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert (s.port, s.environment, s.mongo_database) == (9000, "production", "ai_tasks")
    assert s.ark_api_key.get_secret_value() == "ark-secret"
    assert s.ai_timeout == 90.0 and s.log_level == "warning" and s.log_keep_days == 30


@pytest.mark.parametrize("name,value,accepted", [
    ("PORT", "http", "valid integer"),
    ("PORT", "70000", "less than or equal to 65535"),
    ("LOG_LEVEL", "verbose", "'debug', 'info', 'warning' or 'error'"),
    ("ENVIRONMENT", "staging", "'development', 'test' or 'production'"),
    ("AI_TIMEOUT", "soon", "duration such as 30s"),
    ("AI_TIMEOUT", "0", "greater than 0"),
    ("LOG_KEEP_DAYS", "0", "greater than or equal to 1"),
    ("MONGO_URL", "postgres://x", "mongodb://"),
    ("GENTASK_EXECUTOR", "thread", "'job', 'inline' or 'pool'"),
    ("GENTASK_NAMESPACE", "Bad_NS", "match pattern"),
    ("GENTASK_WORKER_EPHEMERAL_STORAGE_LIMIT", "lots", "Kubernetes quantity such as 64Mi"),
    ("GENTASK_WORKER_EPHEMERAL_STORAGE_LIMIT", "32Mi", "at least GENTASK_WORKER_EPHEMERAL_STORAGE_REQUEST (64Mi)"),
    ("GENTASK_WORKER_TMP_SIZE_LIMIT", "1Gi", "at most GENTASK_WORKER_EPHEMERAL_STORAGE_LIMIT (512Mi)"),
    ("GENTASK_WORKER_MEMORY_LIMIT", "64Mi", "at least GENTASK_WORKER_MEMORY_REQUEST (128Mi)"),
    ("GENTASK_WORKER_CPU_REQUEST", "half", "Kubernetes quantity"),
])
def test_bad_value_names_the_variable_and_what_it_accepts(monkeypatch, name, value, accepted):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    text = str(err.value)
    assert f"invalid setting {name}=" in text and accepted in text


def test_a_bad_key_is_not_echoed(monkeypatch):
    monkeypatch.setenv("ARK_API_KEY", "x" * 5)
    monkeypatch.setenv("PORT", "nope")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "xxxxx" not in str(err.value)


@pytest.mark.parametrize("text,seconds", [("30", 30), ("30s", 30), ("2m", 120), ("1h", 3600), ("1500ms", 1.5)])
def test_durations_as_the_old_server_wrote_them(text, seconds):
    assert parse_duration(text) == seconds


def test_secrets_lists_every_set_credential(monkeypatch):
    monkeypatch.setenv("ARK_API_KEY", "ark-key-123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-456")
    monkeypatch.setenv("GENTASK_API_KEYS", "k-alice-1:alice,k-bob-2:bob:admin")
    assert set(load_settings().secrets()) >= {"ark-key-123", "sk-openai-456", "k-alice-1", "k-bob-2"}


def test_providers_from_a_comma_list(monkeypatch):
    monkeypatch.setenv("GENTASK_PROVIDERS", "fake, openai")
    assert load_settings().providers == ["fake", "openai"]


def test_a_dotenv_file_fills_what_the_environment_leaves_unset(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("# local development\nGENTASK_EXECUTOR=inline\nexport PORT=9001\n"
                                   "LOG_LEVEL='debug'\n")
    monkeypatch.setenv("PORT", "9002")             # the environment wins over the file
    s = load_settings()
    assert (s.executor, s.port, s.log_level) == ("inline", 9002, "debug")


def test_variable_names_are_read_whatever_their_case(monkeypatch):
    monkeypatch.setenv("gentask_inline_concurrency", "9")
    assert load_settings().inline_concurrency == 9


def test_given_values_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("MONGO_URL", "mongodb://env:1/x")
    assert load_settings(mongo_url="mongodb://given:2/y").mongo_database == "y"
    assert Settings(mongo_url="mongodb://given:2/y").mongo_url == "mongodb://given:2/y"


def test_settings_import_no_settings_library():
    """Every worker pod imports gentask.config: pydantic-settings alone cost it about 0.1 s of CPU."""
    import subprocess
    import sys
    code = "import sys, gentask.config; print('pydantic_settings' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tenant_settings_off_by_default_and_a_bad_label_is_named():
    assert not load_settings().tenancy
    s = load_settings(tenant_label=" gentask.io/tenant=enabled ", tenant_namespaces="gentask-tasks, team-*")
    assert (s.tenant_label, s.tenant_namespaces, s.tenancy) == ("gentask.io/tenant=enabled",
                                                                 ["gentask-tasks", "team-*"], True)
    assert load_settings(tenant_label="tenant").tenant_label == "tenant"
    assert not load_settings(tenant_label="  ").tenancy
    for bad in ("not a label", "Bad_Prefix/x=y", "k=v w"):
        with pytest.raises(SettingsError) as err:
            load_settings(tenant_label=bad)
        assert "GENTASK_TENANT_LABEL" in str(err.value) and "key=value" in str(err.value)


@pytest.mark.parametrize("text,amount", [("64Mi", 64 * 2**20), ("1Gi", 2**30), ("500M", 5e8), ("250m", 0.25),
                                         ("2", 2.0), ("1.5Gi", 1.5 * 2**30), ("1e3", 1000.0), ("0.5", 0.5)])
def test_quantities_as_kubernetes_writes_them(text, amount):
    assert parse_quantity(text) == amount
