"""The deployment of deploy/compose.yaml as local processes, for people without containers
(`make serve-stack` / `make stop-stack`): PostgreSQL (initdb in <folder>/postgres), moto's S3 server,
the MLflow tracking server on them (backend store PostgreSQL, artifacts in S3) and Dagster's webserver
and daemon on deploy/dagster.yaml. Everything listens on 127.0.0.1; each process's PID is in
<folder>/pids/, its log in <folder>/logs/, and <folder>/stack.env holds the environment a client
sources to use the stack. The tests start the same pieces through these functions.

    python deploy/local_stack.py start --folder .state/stack
    python deploy/local_stack.py stop --folder .state/stack
"""
from __future__ import annotations

import argparse
import glob
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a checkout: orchestration.retry, orchestration.quiet

from orchestration.quiet import QUIET_ENV  # noqa: E402
from orchestration.retry import RetryPolicy, with_retries  # noqa: E402

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
DAGSTER_YAML = Path(__file__).with_name("dagster.yaml")
DATABASES = ("dagster", "mlflow")
BUCKETS = {"artifacts": "vimogen-mlflow", "dvc": "vimogen-dvc"}
UNPRIVILEGED_USER = "nobody"  # postgres refuses to run as root
POSTGRES_STOP = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for every client to disconnect
# Servers starting up: a few seconds for PostgreSQL and moto, MLflow's database migrations on a new store longer.
STARTUP = RetryPolicy(attempts=40, first_wait_s=0.2, max_wait_s=2.0)


@dataclass
class StackPorts:
    postgres: int = 55432
    s3: int = 59000
    mlflow: int = 55000
    dagster: int = 3000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def postgres_program(name: str) -> str:
    """A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise FileNotFoundError(f"{name} not found on PATH nor in /usr/lib/postgresql/*/bin: install the Debian "
                                "package `postgresql` (make system-deps)")
    return found


def _server_user() -> dict:
    """Popen arguments that run a server as an unprivileged user when we are root (postgres refuses root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(UNPRIVILEGED_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def postgres_env(folder: Path) -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C", "TZ": "UTC", "HOME": str(folder)}


def init_postgres(folder: Path, user: str, password: str) -> Path:
    """A database cluster in `folder`/data owned by the server's user (initdb once; reused after)."""
    data = folder / "data"
    if (data / "PG_VERSION").is_file():
        return data
    folder.mkdir(parents=True, exist_ok=True)
    _give_to_server_user(folder)
    pwfile = folder / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    _give_to_server_user(pwfile)
    try:
        done = subprocess.run([postgres_program("initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
                               "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"], cwd=folder, env=postgres_env(folder),
                              capture_output=True, text=True, timeout=120, **_server_user())
    finally:
        pwfile.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"initdb in {data} failed:\n{done.stdout}\n{done.stderr}")
    return data


def start_postgres(folder: Path, port: int, user: str, password: str, log: Path) -> subprocess.Popen:
    """PostgreSQL on 127.0.0.1:`port` (TCP only, no unix socket) over the cluster in `folder`, with the
    DATABASES created; returns the postgres process (stop it by its PID)."""
    data = init_postgres(folder, user, password)
    with open(log, "ab") as out:
        server = subprocess.Popen([postgres_program("postgres"), "-D", str(data), "-h", HOST, "-p", str(port),
                                   "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "max_connections=200"],
                                  cwd=folder, env=postgres_env(folder), stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True, **_server_user())
    try:
        create_databases(port, user, password, server)
    except BaseException:
        stop(server.pid, sig=POSTGRES_STOP)
        raise
    return server


def create_databases(port: int, user: str, password: str, server: subprocess.Popen | None = None) -> None:
    import psycopg2

    def connect():
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"postgres exited with code {server.returncode} (see its log)")
        return psycopg2.connect(host=HOST, port=port, user=user, password=password, dbname="postgres", connect_timeout=5)

    connection = with_retries(f"PostgreSQL at {HOST}:{port}", connect, STARTUP, log=None)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for name in DATABASES:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def wait_for_port(what: str, port: int, process: subprocess.Popen, policy: RetryPolicy = STARTUP) -> None:
    def connect():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} (see its log)")
        socket.create_connection((HOST, port), timeout=1).close()

    with_retries(f"{what} at {HOST}:{port}", connect, policy, log=None)


def start_s3(port: int, log: Path) -> subprocess.Popen:
    """moto's S3 server on 127.0.0.1:`port` with the BUCKETS created (credentials: the AWS_* environment)."""
    with open(log, "ab") as out:
        server = subprocess.Popen([str(BIN / "moto_server"), "-H", HOST, "-p", str(port)], stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port("moto S3 server", port, server)
        import boto3

        s3 = boto3.client("s3", endpoint_url=f"http://{HOST}:{port}", region_name="us-east-1")
        for bucket in BUCKETS.values():
            with_retries(f"S3 bucket {bucket} at {HOST}:{port}", lambda: s3.create_bucket(Bucket=bucket))
    except BaseException:
        stop(server.pid)
        raise
    return server


def start_mlflow(port: int, backend_store_uri: str, artifacts_destination: str, env: dict[str, str],
                 log: Path) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port`: runs and registry in `backend_store_uri`, artifacts proxied to
    `artifacts_destination`; returns once /health answers."""
    import requests

    command = [str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(port), "--workers", "1",
               "--backend-store-uri", backend_store_uri, "--artifacts-destination", artifacts_destination]
    with open(log, "ab") as out:
        server = subprocess.Popen(command, env={**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"},
                                  cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def healthy():
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {server.returncode} (see {log})")
        requests.get(f"http://{HOST}:{port}/health", timeout=2).raise_for_status()

    try:
        with_retries(f"MLflow tracking server at {HOST}:{port}", healthy,
                     RetryPolicy(attempts=120, first_wait_s=0.5, max_wait_s=1.0), log=None)
    except BaseException:
        stop(server.pid)
        raise
    return server


def stack_environment(ports: StackPorts, pg_user: str, pg_password: str, home: Path) -> dict[str, str]:
    """What a client of the stack sets (deploy/stack.env.example explains each); servers read it too."""
    s3 = f"http://{HOST}:{ports.s3}"
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": HOST, "DAGSTER_PG_PORT": str(ports.postgres), "DAGSTER_PG_DB": "dagster",
        "DAGSTER_PG_USERNAME": pg_user, "DAGSTER_PG_PASSWORD": pg_password,
        "DAGSTER_MAX_CONCURRENT_RUNS": "2",
        "DAGSTER_GRPC_TIMEOUT_SECONDS": "300",
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{ports.mlflow}",
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{pg_user}:{pg_password}@{HOST}:{ports.postgres}/mlflow",
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKETS['artifacts']}/artifacts",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "8", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "AWS_ACCESS_KEY_ID": "local-stack", "AWS_SECRET_ACCESS_KEY": "local-stack", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3, "MLFLOW_S3_ENDPOINT_URL": s3,
        "VIMOGEN_DVC_REMOTE_URL": f"s3://{BUCKETS['dvc']}/store",
        **QUIET_ENV,
    }


def dagster_home(home: Path) -> Path:
    """DAGSTER_HOME holding deploy/dagster.yaml (PostgreSQL storage, queued runs)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    return home


def start_dagster_daemon(env: dict[str, str], log: Path) -> subprocess.Popen:
    """`dagster-daemon run` (run queue, schedules, sensors) on the workspace of the repository."""
    with open(log, "ab") as out:
        return subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
                                env={**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}, cwd=REPO_ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def start_dagster_webserver(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        server = subprocess.Popen([str(BIN / "dagster-webserver"), "-h", HOST, "-p", str(port), "-w",
                                   str(REPO_ROOT / "workspace.yaml")],
                                  env={**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}, cwd=REPO_ROOT,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port("Dagster webserver", port, server, RetryPolicy(attempts=120, first_wait_s=0.5, max_wait_s=1.0))
    return server


def stop(pid: int, timeout_s: float = 30.0, sig: int = signal.SIGTERM) -> None:
    """Send `sig` to the process started with that PID and to its session (servers with workers), SIGKILL
    after `timeout_s`; returns once none of them is left. A process already gone is fine."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:  # our own child: reap it, or it lingers as a zombie in its group
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.1)


def start(folder: Path, ports: StackPorts) -> dict[str, str]:
    """Every piece, its PID in `folder`/pids/<name>.pid; returns the stack's environment (also written to
    `folder`/stack.env)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pids").mkdir(exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    if any((folder / "pids").glob("*.pid")):
        raise RuntimeError(f"{folder}/pids/ names running processes: `make stop-stack` first")
    secret = folder / "postgres_password"
    if not secret.is_file():
        secret.write_text(secrets.token_urlsafe(18))
        secret.chmod(0o600)
    env = stack_environment(ports, "vimogen", secret.read_text().strip(), dagster_home(folder / "dagster_home"))
    server_env = {**os.environ, **env}
    started: list[tuple[str, subprocess.Popen]] = []

    def keep(name: str, process: subprocess.Popen) -> None:
        started.append((name, process))
        (folder / "pids" / f"{name}.pid").write_text(f"{process.pid}\n")

    try:
        keep("postgres", start_postgres(folder / "postgres", ports.postgres, env["DAGSTER_PG_USERNAME"],
                                        env["DAGSTER_PG_PASSWORD"], folder / "logs" / "postgres.log"))
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
        keep("s3", start_s3(ports.s3, folder / "logs" / "s3.log"))
        keep("mlflow", start_mlflow(ports.mlflow, env["MLFLOW_BACKEND_STORE_URI"], env["MLFLOW_ARTIFACTS_DESTINATION"],
                                    server_env, folder / "logs" / "mlflow.log"))
        keep("dagster-daemon", start_dagster_daemon(server_env, folder / "logs" / "dagster-daemon.log"))
        keep("dagster-webserver", start_dagster_webserver(ports.dagster, server_env,
                                                          folder / "logs" / "dagster-webserver.log"))
    except BaseException:
        stop_folder(folder)
        raise
    (folder / "stack.env").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    (folder / "stack.env").chmod(0o600)
    return env


def stop_folder(folder: Path) -> list[str]:
    """Stop every process named in `folder`/pids/, newest first; returns their names."""
    stopped = []
    for pid_file in sorted((folder / "pids").glob("*.pid"), key=lambda p: p.stat().st_mtime_ns, reverse=True):
        stop(int(pid_file.read_text()), sig=POSTGRES_STOP if pid_file.stem == "postgres" else signal.SIGTERM)
        pid_file.unlink()
        stopped.append(pid_file.stem)
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--folder", type=Path, required=True, help="where the stack keeps its data, logs and PIDs")
    for name, default in vars(StackPorts()).items():
        parser.add_argument(f"--{name}-port", type=int, default=default)
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    if args.action == "stop":
        stopped = stop_folder(folder) if (folder / "pids").is_dir() else []
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    ports = StackPorts(**{name: getattr(args, f"{name}_port") for name in vars(StackPorts())})
    env = start(folder, ports)
    print(f"""stack running (logs in {folder}/logs, stop with `make stop-stack`):
  PostgreSQL      {HOST}:{ports.postgres} (databases {', '.join(DATABASES)}; user vimogen, password in {folder}/postgres_password)
  S3 (moto)       {env['AWS_ENDPOINT_URL']} (buckets {', '.join(BUCKETS.values())})
  MLflow          {env['MLFLOW_TRACKING_URI']} (runs in PostgreSQL, artifacts in {env['MLFLOW_ARTIFACTS_DESTINATION']})
  Dagster         http://{HOST}:{ports.dagster} (DAGSTER_HOME={env['DAGSTER_HOME']}; daemon running)
use it from a shell: source {folder}/stack.env""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
