"""deploy/fleet/: the files say what the README says. The compose file's published ports and
the systemd units' command lines match the README's port table and flags; Triton's flags are
ones the real ``tritonserver`` binary knows (nvidia-pytriton's, where .venv-pytriton is);
the two edge configs validate as ``adedge serve`` reads them; ``rollout.sh`` has its usage and
the options the README names, prints without writing in ``--dry-run``, and really adds
versions N+1 to a repository (test_fleet_rollout.py runs it against a real Triton server and
a real ``adedge serve``)."""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "deploy" / "fleet"
README = (FLEET / "README.md").read_text(encoding="utf-8")
ROLLOUT = FLEET / "rollout.sh"
CONFIG_ENV = {
    "MQTT_PASSWORD": "broker-secret",
    "CAM_USER": "viewer",
    "CAM_PASSWORD": "camera-secret",
}
# what tritonserver.service and compose.yaml run, each also named in the README
TRITON_FLAGS = (
    "--model-control-mode=poll",
    "--repository-poll-secs=15",
    "--disable-auto-complete-config",
)


def readme_ports() -> dict[str, dict[int, bool]]:
    """The README's "Who listens where" table: service -> {port: optional}."""
    ports: dict[str, dict[int, bool]] = {}
    for service, port, what in re.findall(r"^\| `([a-z-]+)` \| (\d+) \| ([^|]+) \|", README, re.M):
        ports.setdefault(service, {})[int(port)] = "optional" in what
    return ports


def published(service: dict) -> dict[int, int]:
    """A compose service's ``ports`` as container port -> host port."""
    mapping = {}
    for entry in service.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        mapping[int(container)] = int(host.rpartition(":")[2])
    return mapping


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(FLEET / name, encoding="utf-8")
    return parser


def exec_start(parser: configparser.ConfigParser) -> list[str]:
    """ExecStart as argv: systemd's trailing-backslash continuations joined."""
    return shlex.split(parser["Service"]["ExecStart"].replace("\\\n", " "))


def test_compose_ports_services_and_gpu_match_the_readme():
    compose = yaml.safe_load((FLEET / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    documented = readme_ports()
    assert set(documented) == set(services) == {"triton", "mosquitto", "adedge-edge"}
    for name, service in services.items():
        ports = published(service)
        assert all(host == container for container, host in ports.items()), name
        required = {port for port, optional in documented[name].items() if not optional}
        assert required <= set(ports) <= set(documented[name]), (name, ports, documented[name])
    assert documented["triton"] == {8000: False, 8001: False, 8002: False}
    assert documented["adedge-edge"] == {5080: False}
    assert set(documented["mosquitto"]) == {1883, 8883}

    triton = services["triton"]
    device = triton["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "http://127.0.0.1:8000/v2/health/ready" in triton["healthcheck"]["test"]
    assert "./models:/models:ro" in triton["volumes"]
    assert triton["command"][0] == "tritonserver"
    for flag in TRITON_FLAGS:
        assert flag in triton["command"]
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto")
    assert services["adedge-edge"]["image"] == "adedge:latest"
    assert any(volume.endswith(":/var/lib/adedge") for volume in services["adedge-edge"]["volumes"])


def test_tritonserver_unit_runs_the_container_the_readme_describes():
    parser = unit("tritonserver.service")
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    argv = exec_start(parser)
    assert argv[:2] == ["/usr/bin/docker", "run"]
    assert argv[argv.index("--gpus") + 1] == "all"
    ports = {int(argv[i + 1].split(":")[1]) for i, arg in enumerate(argv) if arg == "-p"}
    assert ports == set(readme_ports()["triton"])
    assert "/srv/triton/models:/models:ro" in argv
    image = next(arg for arg in argv if arg.startswith("nvcr.io/nvidia/tritonserver:"))
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", image)
    server = argv[argv.index(image) + 1 :]
    assert server[0] == "tritonserver" and "--model-repository=/models" in server
    for flag in TRITON_FLAGS:
        assert flag in server and flag in README, flag
    assert parser["Service"]["Restart"] == "always"
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_triton_flags_are_known_to_the_real_tritonserver():
    from triton_server import PYTRITON_VENV, pytriton_missing

    missing = pytriton_missing()
    if missing:
        pytest.skip(missing)
    server = next(PYTRITON_VENV.glob("lib/python3.*/site-packages/pytriton/tritonserver"))
    libraries = [str(p) for p in server.parent.parent.glob("nvidia_pytriton.libs")]
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join([*libraries, str(server / "external_libs")])}
    result = subprocess.run(
        [str(server / "bin/tritonserver"), "--help"], capture_output=True, text=True, env=env
    )
    known = set(re.findall(r"^\s+(--[a-z-]+)", result.stdout + result.stderr, re.M))
    assert "--model-repository" in known, result.stderr[-500:]
    flags = [arg for arg in exec_start(unit("tritonserver.service")) if arg.startswith("--")]
    server_flags = flags[flags.index("--model-repository=/models") :]
    assert {flag.split("=")[0] for flag in server_flags} <= known


def test_edge_unit_runs_adedge_serve_hardened():
    parser = unit("adedge-serve.service")
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    service = parser["Service"]
    argv = exec_start(parser)
    assert Path(argv[0]).name == "adedge" and argv[1:] == [
        "serve",
        "--config",
        "/etc/adedge/serve.yaml",
    ]
    assert "/etc/adedge/serve.yaml" in README and "SIGHUP" in README
    assert service["User"] == "adedge"
    assert service["EnvironmentFile"] == "/etc/adedge/adedge.env"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "143" in service["SuccessExitStatus"].split()
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "true" and service["PrivateTmp"] == "true"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/adedge"


def test_mosquitto_conf_refuses_anonymous_clients():
    text = (FLEET / "mosquitto.conf").read_text(encoding="utf-8")
    settings = [
        tuple(line.split(None, 1))
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert settings[0] == ("per_listener_settings", "true")  # before the listeners
    for setting in (
        ("listener", "1883 0.0.0.0"),
        ("allow_anonymous", "false"),
        ("password_file", "/etc/mosquitto/passwd"),
        ("persistence", "true"),
    ):
        assert setting in settings, setting


@pytest.mark.parametrize("name", ["edge-local.yaml", "edge-triton.yaml"])
def test_edge_configs_validate(name, monkeypatch):
    from adedge.runtime.serve.config import load_config

    for key, value in CONFIG_ENV.items():
        monkeypatch.setenv(key, value)
    config = load_config(FLEET / name)
    assert config.mqtt is not None and config.mqtt.password == CONFIG_ENV["MQTT_PASSWORD"]
    assert config.api.port == 5080 and config.api.tokens  # on the LAN only with tokens
    assert str(config.storage.path) == unit("adedge-serve.service")["Service"]["ReadWritePaths"]
    model = config.models["line"]
    assert str(model.bundle).startswith("/var/lib/adedge/models/")  # rollout.sh's --edge-dir
    if name == "edge-triton.yaml":
        assert model.backend == "triton://triton-a.plant.lan:8001/line_global"  # gRPC port
        assert getattr(model.fallback, "value", model.fallback) == "local"
        # with a fallback the new card comes with its bundle (rollout.sh --edge), not a watch
        assert model.watch is False
        # the README's other Triton box: no fallback, watch: true, nothing to load
        from adedge.runtime.serve.config import ModelConfig

        watched = ModelConfig(backend=model.backend, watch=True)
        assert watched.remote and watched.bundle is None


def rollout(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROLLOUT), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_rollout_usage():
    assert subprocess.run(["bash", "-n", str(ROLLOUT)]).returncode == 0
    helped = rollout("-h")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: rollout.sh")
    assert "--dry-run" in helped.stdout and "ADEDGE_ADMIN_TOKEN" in helped.stdout
    for args in ((), ("--no-such-option", "a", "b"), ("only-one",), ("--added", "m:1", "a", "b")):
        result = rollout(*args)
        assert result.returncode != 0
        assert result.stderr.startswith("usage: rollout.sh"), result.stderr
    # every option the README's rollout paragraph names is one the script has
    paragraph = README[README.index("`rollout.sh` runs steps") :].split("\n\n")[0]
    named = set(re.findall(r"`(--[a-z-]+)", paragraph))
    assert {"--triton", "--edge", "--added", "--edge-bundle", "--dry-run"} <= named
    for option in named:
        assert f"  {option} " in helped.stdout, option
    assert "--edge-fallback" not in helped.stdout + README  # --edge loads Triton boxes too


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    from bundles import two_stage_bundle

    from adedge.bundle import TilingSpec

    return two_stage_bundle(tmp_path / "line", TilingSpec((128, 96), 32, 32))


def test_rollout_dry_run_prints_commands_and_writes_nothing(bundle, tmp_path):
    repo = tmp_path / "repo"
    token = "dry-run-token-never-shown-0123456789"
    result = rollout(
        "--dry-run", "--triton", "triton-a.plant.lan", "--edge", "adedge@edge1",
        "--edge", "adedge@edge2", "--edge-model", "line", bundle, repo,
        env={"ADEDGE_ADMIN_TOKEN": token, "ADEDGE": "adedge"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"would run: adedge triton-repo {bundle} --out {repo}\n" in out
    assert "http://triton-a.plant.lan:8000/v2/models/MODEL/versions/N/ready" in out
    for box in ("edge1", "edge2"):  # a local box and a Triton box with a fallback alike
        assert f"rsync -a -- {bundle}/ adedge@{box}:/var/lib/adedge/models/line-" in out
        assert f"https://{box}:5080/api/models/line/load" in out
    assert "Bearer ***" in out and token not in out + result.stderr
    assert out.endswith("dry run: nothing was written\n")
    assert not repo.exists()
    # a version already in the repository, a bundle already on the boxes: no export, no rsync
    added = rollout(
        "--dry-run", "--added", "line_global:3", "--added", "line_local:3",
        "--triton", "triton-a.plant.lan:8010", "--edge", "edge1", "--edge-model", "line",
        "--edge-bundle", "/mnt/bundles/line", bundle,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "triton-repo" not in added.stdout and "rsync" not in added.stdout
    for model in ("line_global", "line_local"):
        assert f"http://triton-a.plant.lan:8010/v2/models/{model}/versions/3/ready" in added.stdout
    assert """--data '{"bundle": "/mnt/bundles/line"}' https://edge1:5080""" in added.stdout
    for wrong, why in (
        (("--added", "line_global"), "is not MODEL:N"),
        (("--added", "line_global:3"), "does nothing"),
        (("--added", "line_global:3", "--edge", "e1", "--edge-model", "line",
          "--edge-bundle", "relative/path"), "must be an absolute path"),
    ):  # fmt: skip
        refused = rollout("--dry-run", *wrong, bundle)
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr


def triton_python() -> str:
    python = os.environ.get("ADEDGE_TRITON_PYTHON") or str(ROOT / ".venv-triton/bin/python")
    if not Path(python).is_file():
        pytest.fail(f"no python with tritonclient at {python}: run `make triton-venv`")
    return python


def test_rollout_adds_versions_and_waits_for_the_server(bundle, tmp_path):
    """A real run (no edge boxes): version 1, then 2, never rewriting 1; a --triton server that
    is not there ends the rollout with an error after --timeout, the new version written."""
    repo = tmp_path / "repo"
    env = {
        "ADEDGE": str(Path(sys.executable).parent / "adedge"),
        "ADEDGE_TRITON_PYTHON": triton_python(),
    }
    first = rollout(bundle, repo, "--", "--instance-kind", "cpu", env=env)
    assert first.returncode == 0, first.stderr
    assert "line_global: version 1 (onnxruntime_onnx)" in first.stdout
    assert first.stdout.endswith(
        "rolled out line: 2 model(s) to " + f"{repo}, 0 server(s), 0 edge box(es)\n"
    )
    version_1 = (repo / "line_local/1/model.onnx").read_bytes()
    second = rollout("--name", "line", bundle, repo, env=env)
    assert second.returncode == 0, second.stderr
    assert "line_local: version 2 " in second.stdout
    assert (repo / "line_local/1/model.onnx").read_bytes() == version_1
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: the wait for a server is not tested")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waited = rollout("--triton", f"127.0.0.1:{port}", "--timeout", "1", bundle, repo, env=env)
    assert waited.returncode != 0
    assert (
        "is not ready on 127.0.0.1" in waited.stderr
        and "edge boxes were not touched" in waited.stderr
    )
    assert (repo / "line_global/3").is_dir()


def mqtt_connects(port: int, username: str | None, password: str | None) -> bool:
    """Whether the broker accepts this client (its CONNACK), with paho-mqtt as adedge uses."""
    import threading

    import paho.mqtt.client as mqtt

    answered = threading.Event()
    accepted: list[bool] = []

    def on_connect(client, userdata, flags, reason_code, properties):
        accepted.append(not reason_code.is_failure)
        answered.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert answered.wait(10), "no CONNACK from the broker"
    finally:
        client.disconnect()
        client.loop_stop()
    return accepted[0]


def test_mosquitto_conf_runs_in_a_real_broker(tmp_path):
    """The file as it is (its port, password file and persistence folder moved into
    tmp_path): mosquitto starts with it, takes a user's password, refuses anonymous clients."""
    mosquitto = Path("/usr/sbin/mosquitto")
    if not mosquitto.exists():
        pytest.skip(f"{mosquitto} is missing: `make system-deps` installs mosquitto")
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "adedge-line-a", "broker-secret"],
        check=True,
        capture_output=True,
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = (FLEET / "mosquitto.conf").read_text(encoding="utf-8")
    for old, new in (
        ("listener 1883 0.0.0.0", f"listener {port} 127.0.0.1"),
        ("password_file /etc/mosquitto/passwd", f"password_file {passwords}"),
        ("persistence_location /var/lib/mosquitto/", f"persistence_location {tmp_path}/"),
    ):
        assert f"\n{old}\n" in text, old
        text = text.replace(f"\n{old}\n", f"\n{new}\n")
    if os.geteuid() == 0:  # as root, mosquitto would switch to a user that cannot write tmp
        text += "user root\n"
    config = tmp_path / "mosquitto.conf"
    config.write_text(text, encoding="utf-8")
    log = tmp_path / "mosquitto.log"
    with open(log, "wb") as output:
        broker = subprocess.Popen([str(mosquitto), "-c", str(config)], stdout=output, stderr=output)
    try:
        for _ in range(500):  # up to 10 s for the listener
            assert broker.poll() is None, log.read_text(errors="replace")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            time.sleep(0.02)
        assert mqtt_connects(port, "adedge-line-a", "broker-secret")
        assert not mqtt_connects(port, "adedge-line-a", "wrong")
        assert not mqtt_connects(port, None, None)
    finally:
        broker.terminate()
        broker.wait(10)
