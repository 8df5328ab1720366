"""The deployment files: docker-compose.yml, Dockerfile, .dockerignore and gunicorn.conf.py.

No Docker engine runs here, so these check structure: the services and their order of start, healthchecks,
environments that the service's own configuration accepts, an image that runs unprivileged with a healthcheck, and
a gunicorn.conf.py that says what `otp-service serve` runs with.
"""
from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest
import yaml

from otp_service.adapters.crypto import new_key
from otp_service.config import ConfigError, Settings
from otp_service.entrypoints import server
from otp_service.entrypoints.cli import main

PROJECT = Path(__file__).resolve().parents[1]
COMPOSE = PROJECT / "docker-compose.yml"
DOCKERFILE = PROJECT / "Dockerfile"
OPERATIONS = PROJECT / "docs" / "configuration.md"  # the configuration table
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str, environ: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, against `environ`."""
    def one(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if environ.get(name):
            return environ[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return _VARIABLE.sub(one, value)


def environment(service: dict, environ: dict[str, str]) -> dict[str, str]:
    return {name: interpolate(str(value), environ) for name, value in service.get("environment", {}).items()}


def documented_variables() -> set[str]:
    return set(re.findall(r"^\| `?(OTP_[A-Z0-9_]+|PROMETHEUS_MULTIPROC_DIR)`? \|", OPERATIONS.read_text(), re.M))


# -- docker-compose.yml ------------------------------------------------------------------------------------------------
def test_compose_runs_cassandra_a_one_shot_schema_job_and_the_service(compose):
    services = compose["services"]
    assert set(services) == {"cassandra", "schema", "otp-service"}
    # The release the suite runs its Cassandra tests on (scripts/cassandra-pom.xml), not another one.
    from .cassandra_target import TESTCONTAINERS_IMAGE

    assert services["cassandra"]["image"] == TESTCONTAINERS_IMAGE
    assert services["schema"]["command"] == ["otp-service", "migrate"]
    assert services["schema"]["restart"] == "no"
    assert services["schema"]["build"] == services["otp-service"]["build"] == "."
    assert services["schema"]["image"] == services["otp-service"]["image"]
    assert (PROJECT / services["otp-service"]["build"] / "Dockerfile").is_file()
    assert "cassandra-data" in compose["volumes"]


def test_the_schema_waits_for_a_healthy_cassandra_and_the_service_for_both(compose):
    services = compose["services"]
    assert services["schema"]["depends_on"] == {"cassandra": {"condition": "service_healthy"}}
    assert services["otp-service"]["depends_on"] == {
        "cassandra": {"condition": "service_healthy"},
        "schema": {"condition": "service_completed_successfully"},
    }


def test_healthchecks_ask_cassandra_for_cql_and_the_service_for_health(compose):
    cassandra = compose["services"]["cassandra"]["healthcheck"]
    assert "cqlsh" in " ".join(cassandra["test"])
    assert cassandra["retries"] * _seconds(cassandra["interval"]) + _seconds(cassandra["start_period"]) >= 180
    service = compose["services"]["otp-service"]["healthcheck"]
    assert "http://127.0.0.1:8080/health" in " ".join(service["test"])
    for check in (cassandra, service):
        assert {"test", "interval", "timeout", "retries"} <= set(check)


def test_the_service_stops_gracefully_and_writes_only_to_tmp(compose):
    service = compose["services"]["otp-service"]
    assert _seconds(service["stop_grace_period"]) > server.BASE_OPTIONS["graceful_timeout"]
    assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
    assert _dockerfile_env()["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert any(port.endswith(":8080") for port in service["ports"])


def test_no_secret_is_written_in_compose_and_the_required_ones_stop_it_when_missing(compose):
    service = compose["services"]["otp-service"]["environment"]
    for name in ("OTP_API_KEYS", "OTP_ENCRYPTION_KEYS"):
        assert re.fullmatch(r"\$\{%s:\?[^}]+\}" % name, service[name]), name
    for name, value in service.items():
        if any(word in name for word in ("TOKEN", "PASSWORD", "SECRET", "KEYS")):
            assert value.startswith("${"), f"{name} must come from the environment"
    with pytest.raises(KeyError, match="OTP_API_KEYS"):
        environment(compose["services"]["otp-service"], {})


PROVIDERS = {
    "OTP_TWILIO_ACCOUNT_SID": "AC" + "0123456789abcdef" * 2,
    "OTP_TWILIO_AUTH_TOKEN": "token",
    "OTP_TWILIO_FROM_NUMBER": "+14155550100",
    "OTP_SMTP_HOST": "smtp.example.com",
    "OTP_SMTP_USERNAME": "otp",
    "OTP_SMTP_PASSWORD": "secret",
    "OTP_SMTP_FROM": "Sunbird <no-reply@example.com>",
}


def test_the_environments_are_accepted_by_the_services_configuration(compose):
    digest = "a" * 64
    given = {"OTP_API_KEYS": digest, "OTP_ENCRYPTION_KEYS": new_key(), **PROVIDERS}
    service = Settings.from_env(environment(compose["services"]["otp-service"], given))
    assert service.production and service.store == "cassandra"
    assert (service.delivery.sms_channel, service.delivery.email_channel) == ("twilio", "smtp")
    assert service.cassandra.contact_points == ("cassandra",)
    assert service.cassandra.local_dc == compose["services"]["cassandra"]["environment"]["CASSANDRA_DC"]
    assert service.api_key_hashes == (digest,)
    schema = Settings.from_env(environment(compose["services"]["schema"], {}))
    assert schema.cassandra == service.cassandra  # the job migrates the keyspace the service uses
    assert environment(compose["services"]["otp-service"], given)["OTP_BIND"].endswith(":8080")


def test_without_provider_settings_start_up_names_what_is_missing(compose):
    given = {"OTP_API_KEYS": "a" * 64, "OTP_ENCRYPTION_KEYS": new_key()}
    with pytest.raises(ConfigError, match="OTP_TWILIO_ACCOUNT_SID"):
        Settings.from_env(environment(compose["services"]["otp-service"], given))
    laptop = {**given, "OTP_ENV": "development", "OTP_SMS_CHANNEL": "console", "OTP_EMAIL_CHANNEL": "console"}
    assert not Settings.from_env(environment(compose["services"]["otp-service"], laptop)).production


def test_every_variable_compose_sets_is_documented(compose):
    documented = documented_variables()
    for name in ("schema", "otp-service"):
        for variable in compose["services"][name]["environment"]:
            assert variable in documented, f"{variable} is not in docs/configuration.md"


def test_every_variable_the_service_reads_is_in_the_configuration_table():
    sources = [*(PROJECT / "otp_service").rglob("*.py"), PROJECT / "gunicorn.conf.py"]
    named = set()
    for source in sources:
        named |= set(re.findall(r'"(OTP_[A-Z0-9_]+)"', source.read_text()))
    not_variables = {"OTP_SETTINGS", "OTP_DEFAULT_REGION", "OTP_API_KEY_HASHES",  # Flask config keys
                     "OTP_VERIFICATION_FAILED"}  # an error code
    missing = named - not_variables - documented_variables()
    assert not missing, f"not in the configuration table (docs/configuration.md): {sorted(missing)}"


# -- Dockerfile and .dockerignore --------------------------------------------------------------------------------------
def _dockerfile_lines() -> list[str]:
    """Instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _dockerfile_env() -> dict[str, str]:
    env = {}
    for line in _dockerfile_lines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def test_the_image_is_slim_unprivileged_and_checks_its_health():
    lines = _dockerfile_lines()
    stages = [line for line in lines if line.startswith("FROM ")]
    assert stages and all(re.match(r"FROM python:3\.11-slim\b", line) for line in stages)
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")):]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    health = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert len(health) == 1 and "http://127.0.0.1:8080/health" in health[0]
    assert "EXPOSE 8080" in final
    assert final[-1] == 'CMD ["otp-service", "serve"]'


def test_the_image_runs_serve_with_the_projects_gunicorn_conf_and_cql():
    env = _dockerfile_env()
    lines = _dockerfile_lines()
    assert env["OTP_ENV"] == "production"
    assert env["OTP_BIND"] == "0.0.0.0:8080"
    assert "WORKDIR /app" in lines
    assert "COPY gunicorn.conf.py ./" in lines and env["OTP_GUNICORN_CONFIG"] == "/app/gunicorn.conf.py"
    assert "COPY cql ./cql" in lines and env["OTP_CQL_DIR"] == "/app/cql"


def test_the_build_context_holds_no_database_key_or_repository():
    rules = [line.strip() for line in (PROJECT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # everything out, then only what the image needs back in
    assert {"!otp_service/", "!gunicorn.conf.py", "!cql/", "!setup.cfg", "!pyproject.toml", "!README.md"} <= set(rules)
    assert {"**/*.db", "**/*.key", "**/__pycache__"} <= set(rules)
    copied = {line.split()[1] for line in _dockerfile_lines() if line.startswith("COPY ") and "--from" not in line}
    for source in copied:
        assert f"!{source}" in rules or f"!{source}/" in rules, f"{source} is copied but not in the build context"


# -- gunicorn.conf.py --------------------------------------------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch):
    for name in ("OTP_BIND", "OTP_WORKERS", "OTP_THREADS", "OTP_WORKER_TIMEOUT_SECONDS", "OTP_GRACEFUL_TIMEOUT_SECONDS",
                 "OTP_KEEPALIVE_SECONDS", "OTP_WORKER_CLASS", "OTP_WORKER_CONNECTIONS", "OTP_MAX_IN_FLIGHT",
                 "OTP_BODY_READ_TIMEOUT_SECONDS", "OTP_ACCESS_LOG", "OTP_LOG_LEVEL", "OTP_GUNICORN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_gunicorn_conf_says_what_serve_runs_with_when_there_is_none(clean_env):
    conf = runpy.run_path(str(server.PROJECT_CONFIG))
    for name, value in server.BASE_OPTIONS.items():
        assert conf[name] == value, name
    assert conf["workers"] == server.default_workers()
    assert conf["bind"] == ["127.0.0.1:8080"]
    assert conf["wsgi_app"] == "otp_service.entrypoints.app:create_app()"
    assert conf["accesslog"] is None and conf["loglevel"] == "info"


def test_serve_loads_gunicorn_conf_and_its_variables(clean_env):
    clean_env.setenv("OTP_WORKERS", "3")
    clean_env.setenv("OTP_THREADS", "6")
    clean_env.setenv("OTP_WORKER_TIMEOUT_SECONDS", "45")
    clean_env.setenv("OTP_ACCESS_LOG", "true")
    assert server.config_file() == server.PROJECT_CONFIG
    app = server.OtpServer({"bind": "127.0.0.1:0", "workers": None}, server.config_file())
    cfg = app.cfg
    assert (cfg.workers, cfg.threads, cfg.timeout, cfg.graceful_timeout) == (3, 6, 45, 20)
    assert cfg.worker_class_str == "otp_service.entrypoints.workers.GeventWorker" and cfg.preload_app is False
    assert cfg.worker_connections == 1000
    assert cfg.logger_class is server.JsonLogger and cfg.accesslog == "-"
    assert cfg.settings["child_exit"].get() is server.child_exit
    assert cfg.settings["on_starting"].get() is server.on_starting
    assert cfg.address == [("127.0.0.1", 0)]  # --bind wins over the file
    workers = server.OtpServer({"bind": "127.0.0.1:0", "workers": 2}, server.config_file()).cfg.workers
    assert workers == 2  # and so does --workers
    clean_env.setenv("OTP_WORKER_CLASS", "gthread")
    clean_env.setenv("OTP_WORKER_CONNECTIONS", "300")
    cfg = server.OtpServer({"bind": "127.0.0.1:0", "workers": None}, server.config_file()).cfg
    assert cfg.worker_class_str == "gthread" and cfg.worker_connections == 300


def test_a_bad_server_variable_stops_serve_naming_it(clean_env, capsys):
    clean_env.setenv("OTP_WORKERS", "lots")
    with pytest.raises(ConfigError, match="OTP_WORKERS"):
        runpy.run_path(str(server.PROJECT_CONFIG))
    assert main(["serve", "--bind", "127.0.0.1:0"]) == 2
    assert "OTP_WORKERS" in capsys.readouterr().err
    clean_env.delenv("OTP_WORKERS")
    for name, bad in (("OTP_MAX_IN_FLIGHT", "0"), ("OTP_BODY_READ_TIMEOUT_SECONDS", "soon"),
                      ("OTP_WORKER_CLASS", "sync"), ("OTP_KEEPALIVE_SECONDS", "0")):
        clean_env.setenv(name, bad)
        with pytest.raises(ConfigError, match=name):
            runpy.run_path(str(server.PROJECT_CONFIG))
        clean_env.delenv(name)


def test_a_named_config_file_that_is_missing_stops_serve(clean_env, tmp_path, capsys):
    clean_env.setenv("OTP_GUNICORN_CONFIG", str(tmp_path / "nope.py"))
    assert main(["serve", "--bind", "127.0.0.1:0"]) == 2
    assert "OTP_GUNICORN_CONFIG" in capsys.readouterr().err


def _seconds(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    number, unit = re.fullmatch(r"(\d+)(s|m)", value).groups()
    return float(number) * (60 if unit == "m" else 1)
