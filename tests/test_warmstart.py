"""Warm starts (rewardlab.warmstart): a stage forked from the server writes what a fresh interpreter writes,
with the job's exit status, streams, directory and thread counts; commands it does not take run cold; a
cancelled job's stage ends; the server ends with its parent. (The whole DAG warm and cold, byte for byte:
tests/test_workflow.py.)"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewardlab import dag, warmstart

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    """A server for this module's jobs, and the environment that sends them to it."""
    environ = {key: value for key, value in os.environ.items() if key not in warmstart.THREAD_ENV}
    environ["REWARDLAB_PYTHON"] = sys.executable
    handle = warmstart.start(environ)
    yield handle, environ
    handle.stop()
    assert handle.process.returncode is not None
    assert not Path(handle.folder).exists()


def python(environ: dict[str, str], *args: str, cwd: Path = ROOT, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([environ["REWARDLAB_PYTHON"], *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=300, **kwargs)


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def sft_command(pipeline: dict, out: Path) -> list[str]:
    return ["-m", "rewardlab.train.sft", "--config", dag.stage_config(pipeline["config"], "sft"),
            "--data", str(pipeline["data"]), "--out", str(out), "--threads", "1"]


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "run.json"}


def test_a_stage_forked_from_the_server_writes_what_a_fresh_interpreter_writes(server, tiny_pipeline, tmp_path):
    """SFT on the tiny data three ways: through the server, in a fresh interpreter, and through the client with
    an environment the server must refuse (HF_HOME differs: read when transformers is imported). Weights,
    metrics and history are byte-identical; run.json says which started warm."""
    handle, environ = server
    cold_env = {key: value for key, value in environ.items() if key != warmstart.SOCKET_ENV}
    cold_env["REWARDLAB_PYTHON"] = sys.executable
    refused_env = {**environ, "HF_HOME": str(tmp_path / "hf")}
    runs = {"warm": environ, "cold": cold_env, "refused": refused_env}
    for name, env in runs.items():
        proc = python(env, *sft_command(tiny_pipeline, tmp_path / name))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Writing model shards" in proc.stderr  # the library reached the job's own stderr
    warm = outputs(tmp_path / "warm")
    assert {"model.safetensors", "metrics.json", "history.csv"} <= set(warm)
    assert outputs(tmp_path / "cold") == warm
    assert outputs(tmp_path / "refused") == warm
    started_warm = {name: json.loads((tmp_path / name / "run.json").read_text())["warm_start"] for name in runs}
    assert started_warm == {"warm": True, "cold": False, "refused": False}
    argv0 = json.loads((tmp_path / "warm" / "run.json").read_text())["argv"][0]
    assert argv0 == str(ROOT / "src/rewardlab/train/sft.py")  # as `python -m` sets it


def test_exit_status_streams_and_directory_are_the_jobs(server, tmp_path):
    handle, environ = server
    config = tmp_path / "bad.yaml"
    config.write_text("policy:\n  stepz: 3\n")
    bad = python(environ, "-m", "rewardlab.cli", "validate", config.name, cwd=tmp_path)  # a relative path
    good = python(environ, "-m", "rewardlab.cli", "validate", "config/config.yaml")
    missing = python(environ, "-m", "rewardlab.no_such_module")
    cold_env = {key: value for key, value in environ.items() if key != warmstart.SOCKET_ENV}
    cold = [python(cold_env, "-m", "rewardlab.cli", "validate", config.name, cwd=tmp_path),
            python(cold_env, "-m", "rewardlab.cli", "validate", "config/config.yaml")]
    assert bad.returncode == cold[0].returncode != 0
    assert "stepz" in bad.stderr and bad.stderr == cold[0].stderr and bad.stdout == cold[0].stdout
    assert good.returncode == 0 and (good.stdout, good.stderr) == (cold[1].stdout, cold[1].stderr)
    assert missing.returncode == 1 and "No module named rewardlab.no_such_module" in missing.stderr
    assert not children(handle.process.pid)  # every child was reaped


def test_a_malformed_command_is_sent_back_to_start_cold(server):
    import socket

    handle, environ = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(environ[warmstart.SOCKET_ENV])
        conn.sendall(b"\x00\x00\x00\x05{bad}")
        assert conn.recv(16) == b"C"
    assert handle.process.poll() is None  # the server goes on


def test_commands_other_than_rewardlab_modules_run_in_the_real_interpreter(server):
    handle, environ = server
    proc = python(environ, "-c", "import os, sys; print(sys.executable, os.getppid())")
    executable, parent = proc.stdout.split()
    assert proc.returncode == 0 and executable == sys.executable and int(parent) == os.getpid()


def test_the_job_thread_counts_reach_a_forked_stage():
    """Snakemake sets OMP_NUM_THREADS (and the BLAS ones) to each job's threads; the server imported torch and
    numpy without them, so a child takes them at run time: torch and OpenBLAS then use what a fresh process
    given them would use."""
    code = ("import os, json, numpy, torch, threadpoolctl; from rewardlab import warmstart;"
            "before = torch.get_num_threads();"
            "warmstart.take_environment({**os.environ, 'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1'});"
            "blas = {i['internal_api']: i['num_threads'] for i in threadpoolctl.threadpool_info()};"
            "print(json.dumps([before, torch.get_num_threads(), blas['openblas'], os.environ['OMP_NUM_THREADS']]))")
    env = {key: value for key, value in os.environ.items() if key not in warmstart.THREAD_ENV}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, torch_threads, openblas, variable = json.loads(proc.stdout)
    assert before == os.cpu_count() >= 2  # (CI and this machine: 2 cores)
    assert (torch_threads, openblas, variable) == (1, 1, "1")
    assert warmstart.import_time_differences({"OMP_NUM_THREADS": "1", "HF_HOME": "/x"}, {}) == ["HF_HOME"]
    assert warmstart.import_time_differences({}, {"OMP_NUM_THREADS": "4"}) == ["OMP_NUM_THREADS"]


def test_a_cancelled_job_ends_its_stage(server, tiny_pipeline, tmp_path):
    """Snakemake cancels a job by ending its process (the client): the server then ends the stage it forked."""
    handle, environ = server
    config = json.loads(dag.stage_config(tiny_pipeline["config"], "sft"))
    config["sft"]["epochs"] = 1000  # long enough to be running when cancelled
    command = sft_command(tiny_pipeline, tmp_path / "sft")
    command[command.index("--config") + 1] = json.dumps(config)
    job = subprocess.Popen([environ["REWARDLAB_PYTHON"], *command], cwd=ROOT, env=environ,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not children(handle.process.pid) and time.time() < deadline:
        time.sleep(0.05)
    (stage,) = children(handle.process.pid)
    job.send_signal(signal.SIGTERM)
    job.wait(timeout=30)
    deadline = time.time() + 30
    while Path(f"/proc/{stage}").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{stage}").exists()
    assert not (tmp_path / "sft" / "metrics.json").exists()


def test_the_server_ends_with_its_parent(tmp_path):
    """Snakemake killed outright never calls onsuccess/onerror: the server notices its parent is gone."""
    code = ("import os, sys; from rewardlab import warmstart; handle = warmstart.start({'PATH': os.environ['PATH']});"
            "print(handle.process.pid, handle.folder, flush=True); os._exit(0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    pid, folder = proc.stdout.split()
    deadline = time.time() + 30
    while _running(int(pid)) and time.time() < deadline:
        time.sleep(0.1)
    assert not _running(int(pid))
    Path(folder, "python").unlink(missing_ok=True)  # the folder outlives a killed parent; the socket does not
    assert not Path(folder, "socket").exists()
    Path(folder).rmdir()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_warm_starts_stay_off_on_a_machine_with_a_gpu(monkeypatch):
    """Not yet checked with CUDA in a forked child: a GPU device turns warm starts off (the workflow's onstart)."""
    import glob

    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    assert not warmstart.gpu_present()
    monkeypatch.setattr(glob, "glob", lambda pattern: ["/dev/nvidia0"] if pattern.startswith("/dev/nvidia") else [])
    assert warmstart.gpu_present()


def test_a_stage_cancelled_as_it_forks_still_ends(tmp_path, monkeypatch):
    """The window the server's fork leaves: a SIGTERM that reaches the child before the child has its default
    action back (here sent by the child itself at that point, to hit the window every time) must still end it,
    not run the server's handler in the child or be dropped. The server blocks SIGTERM across the fork."""
    import runpy
    import socket

    report = tmp_path / "ran"

    def stage(module, alter_argv):  # what the child runs in place of the stage module
        report.write_text(module)

    real_child = warmstart._child

    def child_signalled_early(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # before _child restores SIGTERM's default action
        real_child(*args, **kwargs)

    monkeypatch.setattr(runpy, "_run_module_as_main", stage)
    monkeypatch.setattr(warmstart, "_child", child_signalled_early)
    stopping = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))  # the server's own handler
    server_end, client_end = socket.socketpair()
    try:
        body = json.dumps({"argv": ["rewardlab.cli"], "cwd": str(tmp_path), "env": {}}).encode()
        with open(os.devnull, "wb") as sink:
            socket.send_fds(client_end, [struct.pack("!I", len(body)) + body], [sink.fileno()] * 3)
        pid = warmstart._take(server_end, {}, {}, closing=[client_end])
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server_end.close()
        client_end.close()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert not report.exists()  # the stage never ran
    assert not stopping and signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()  # the server: as before
