"""Warm starts: a local Snakemake run's stage jobs as forks of one process that has already imported torch,
transformers and rewardlab, instead of each job paying ~4.5 s of imports on 2 cores.

The workflow's commands stay as they are (``"$REWARDLAB_PYTHON" -m rewardlab.<stage> …``; nothing in a rule's
command or params changes, so nothing reruns). Snakemake's ``onstart`` calls :func:`start`, which starts the
server and points ``REWARDLAB_PYTHON`` at a two-line shell script; that script runs this file as a plain script
(``python -S warmstart.py …``: the standard library only, a few milliseconds), and :func:`client`

* sends a ``-m rewardlab.…`` command to the server — its arguments, working directory, environment and its
  standard input, output and error as file descriptors — and exits with the stage's exit status;
* runs anything else (``-m accelerate.commands.launch``, a script), and any command the server refuses or
  cannot take, as the interpreter itself would: it ``exec``\\ s the real Python with the same arguments.

The server (:func:`serve`) forks one child per command. The child takes the job's descriptors, directory and
environment, runs the module as ``__main__`` (``runpy``, as ``python -m`` does) and exits with its status.
A stage's results do not depend on which way it started: every random source is seeded from the config by the
stage runner before anything is built, and torch's threads are set from ``--threads`` (the workflow test reruns
a DAG cold and compares every metrics file byte for byte with the warm run). What the child cannot take from
the job is what torch and the other libraries read when the server imported them — so a job whose environment
differs from the server's in such a variable (``OMP_*``, ``CUDA_*``, ``HF_*``, … :data:`IMPORT_TIME_ENV`) is
sent back to start cold.

The server lives for one Snakemake run: ``onsuccess``/``onerror`` stop it, and it ends itself when Snakemake
is gone; a job whose client is killed (Snakemake cancelling it) has its child killed. It serves the local
executor only (cluster executors start their jobs on other machines), on machines without a GPU
(:func:`gpu_present`); ``warm_start: false`` turns it off. Its socket lives in a private (0700) temporary folder.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys

# The environment variable that names the server's socket, read by the client.
SOCKET_ENV = "REWARDLAB_WARM_START_SOCKET"
# Variables that libraries read when they are imported (thread pools, devices, caches, Python itself): a
# forked child would run with the server's values, so a job whose values differ starts cold.
IMPORT_TIME_ENV = ("OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "BLIS_", "CUDA_", "NVIDIA_", "NCCL_", "PYTORCH_",
                   "TORCH", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "PYTHON", "LD_", "ACCELERATE_")
# Except the thread counts Snakemake sets for every job (its threads): the child applies them at run time with
# threadpoolctl, before the stage sets torch's own from --threads. Each maps to the threadpoolctl API it limits
# (Snakemake gives the BLAS ones the same value).
THREAD_ENV = {"OMP_NUM_THREADS": "openmp", "OPENBLAS_NUM_THREADS": "blas", "MKL_NUM_THREADS": "blas",
              "BLIS_NUM_THREADS": "blas"}
# The stage modules the workflow runs; the server imports them (and so everything they import) before forking.
STAGE_MODULES = ("rewardlab.data.preprocess", "rewardlab.data.ingest", "rewardlab.data.pool", "rewardlab.data.label",
                 "rewardlab.train.sft", "rewardlab.train.reward", "rewardlab.train.policy", "rewardlab.train.dpo",
                 "rewardlab.evaluate.reward_model", "rewardlab.evaluate.policy", "rewardlab.evaluate.summary",
                 "rewardlab.evaluate.dvc_view")
# In a stage that started warm: the server's process id (run.json records `warm_start`).
FORKED_FROM: int | None = None
_HEADER = struct.Struct("!I")
_STATUS = struct.Struct("!i")
_COLD, _EXIT = b"C", b"E"


# --- the client: standard library only (the shell script runs this file with `python -S`) -------------------

def client(args: list[str]) -> None:
    """Run ``python <args>``: on the server when it is a ``-m rewardlab.…`` command and the server takes it,
    otherwise by replacing this process with the real interpreter."""
    path = os.environ.get(SOCKET_ENV)
    if path and len(args) >= 2 and args[0] == "-m" and args[1].startswith("rewardlab."):
        status = _run_on_server(path, args[1:])
        if status is not None:
            sys.exit(status)
    os.execv(sys.executable, [sys.executable, *args])


def _run_on_server(path: str, argv: list[str]) -> int | None:
    """The stage's exit status, or None when the server is not there or sends the command back."""
    import signal

    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
    except OSError:
        return None
    # Killed by Snakemake (SIGTERM) or interrupted: end at once; the closed connection tells the server to kill
    # the stage.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with conn:
        body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        message = _HEADER.pack(len(body)) + body
        try:
            sent = socket.send_fds(conn, [message], [0, 1, 2])
            if sent < len(message):
                conn.sendall(message[sent:])
        except OSError:  # the server closed the connection: it sent the command back (below) or it is gone
            pass
        reply = _receive_exactly(conn, 1 + _STATUS.size, allow_short=True)
    if reply[:1] == _COLD:
        return None
    if len(reply) < 1 + _STATUS.size:
        print("rewardlab warm start: the server ended before the stage did", file=sys.stderr)
        return 1
    return _STATUS.unpack(reply[1:])[0]


def _receive_exactly(conn: socket.socket, size: int, allow_short: bool = False) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            if allow_short:
                return data
            raise ConnectionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


# --- starting and stopping the server (Snakemake's onstart/onsuccess/onerror) --------------------------------

class WarmStart:
    """A running server: its folder (socket and client script) and process."""

    def __init__(self, process, folder: str):
        self.process, self.folder = process, folder

    def stop(self) -> None:
        import shutil

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except Exception:  # noqa: BLE001 — it did not end: kill it
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA or AMD GPU device. Warm starts stay off there: a forked child can use
    CUDA only if the server never initialised it, and whether an import initialises it (``torch.cuda
    .is_available()`` at import time in some library) has not been checked on a GPU yet."""
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"))


def start(environ: dict[str, str] | None = None, python_variable: str = "REWARDLAB_PYTHON") -> WarmStart:
    """Start a server for this process's jobs and point ``environ[python_variable]`` (``os.environ`` by default)
    at the client script; the jobs inherit both variables."""
    import atexit
    import shlex
    import subprocess
    import tempfile

    environ = os.environ if environ is None else environ
    folder = tempfile.mkdtemp(prefix="rewardlab-warm-")  # 0700: only this user can connect
    path = os.path.join(folder, "socket")
    script = os.path.join(folder, "python")
    python = environ.get(python_variable) or sys.executable
    with open(script, "w") as handle:
        handle.write(f"#!/bin/sh\nexec {shlex.quote(python)} -S {shlex.quote(os.path.abspath(__file__))} \"$@\"\n")
    os.chmod(script, 0o700)
    server_env = {key: value for key, value in environ.items() if key != SOCKET_ENV}
    process = subprocess.Popen(
        [python, "-c", "import sys; from rewardlab.warmstart import serve; serve(sys.argv[1], int(sys.argv[2]))",
         path, str(os.getpid())], env=server_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    handle = WarmStart(process, folder)
    atexit.register(handle.stop)
    _wait_for(path, process)
    environ[SOCKET_ENV] = path
    environ[python_variable] = script
    return handle


def _wait_for(path: str, process) -> None:
    """Until the server listens (it binds before importing anything, so this is a fraction of a second)."""
    import time

    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"rewardlab warm start: the server did not start (exit status {process.poll()})")
        time.sleep(0.01)


# --- the server ------------------------------------------------------------------------------------------

def serve(path: str, parent: int, preload: tuple[str, ...] = STAGE_MODULES) -> None:
    """Listen on ``path``; import ``preload``; fork a child for each command; end when ``parent`` is gone or on
    SIGTERM, killing the children still running."""
    import importlib
    import selectors
    import signal

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(128)  # jobs that connect now wait in the backlog while the imports below run
    seen = dict(os.environ)  # what the imports see; a job must match it in IMPORT_TIME_ENV
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 — e.g. an optional dependency: that stage fails in its child, as cold
            pass
    # What the imports set for themselves (torch: TORCHINDUCTOR_CACHE_DIR): a cold process has it too.
    set_by_imports = {key: value for key, value in os.environ.items() if seen.get(key) != value}
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wakeup_read, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}  # pid -> the connection of the job it runs
    while not stopping and os.getppid() == parent:
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                pid = _take(conn, seen, set_by_imports,
                            closing=[listener, wakeup_read, wakeup_write, *children.values()])
                if pid is not None:
                    children[pid] = conn
                    selector.register(conn, selectors.EVENT_READ, pid)
            elif key.fileobj == wakeup_read:
                os.read(wakeup_read, 512)
            else:  # a job's client closed its connection before its stage ended: Snakemake cancelled it
                selector.unregister(key.fileobj)
                _kill(key.data)
        _reap(children, selector)
    for pid in children:
        _kill(pid)
    listener.close()
    try:
        os.unlink(path)
    except OSError:
        pass


def _take(conn: socket.socket, seen: dict[str, str], set_by_imports: dict[str, str], closing: list) -> int | None:
    """Read one command and fork its child; send it back to start cold when its environment differs from
    ``seen`` in a variable that libraries read when imported."""
    import signal

    conn.settimeout(30)
    fds: list[int] = []
    try:
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        size = _HEADER.unpack(data[:_HEADER.size])[0]
        data = data[_HEADER.size:]
        data += _receive_exactly(conn, size - len(data))
        request = json.loads(data)
        cold = len(fds) != 3 or bool(import_time_differences(request["env"], seen))
    except (OSError, ValueError, KeyError, TypeError, struct.error) as err:
        print(f"rewardlab warm start: a malformed command, sent back to start cold ({err!r})", file=sys.stderr)
        cold = True
    if cold:  # no child was started: the client runs the command in a fresh interpreter
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(_COLD)
        except OSError:
            pass
        conn.close()
        return None
    conn.settimeout(None)
    sys.stdout.flush()
    sys.stderr.flush()
    # SIGTERM stays blocked from before the fork until the child has its default action back: a job cancelled
    # at once (its client killed as the child starts) would otherwise reach the server's handler in the child,
    # or be dropped when the child resets it, and the stage would run on.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        pid = os.fork()
        if pid == 0:
            _child(request, {**request["env"], **set_by_imports}, fds, [conn, *closing])
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    for fd in fds:
        os.close(fd)
    return pid


def import_time_differences(env: dict[str, str], seen: dict[str, str]) -> list[str]:
    """The variables of IMPORT_TIME_ENV whose values differ between ``env`` and ``seen``."""
    names = {name for name in (*env, *seen) if name.startswith(IMPORT_TIME_ENV)}
    names -= {name for name in THREAD_ENV if env.get(name, "").isdigit()}
    return sorted(name for name in names if env.get(name) != seen.get(name))


def _child(request: dict, environ: dict[str, str], fds: list[int], closing: list) -> None:
    """Become the job: its descriptors, directory, environment and arguments; run the module; exit."""
    global FORKED_FROM
    import atexit
    import runpy
    import signal
    import traceback

    FORKED_FROM = os.getppid()
    signal.set_wakeup_fd(-1)
    for number in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked by the server across the fork
    for item in closing:
        item.close() if hasattr(item, "close") else os.close(item)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    take_environment(environ)
    module, *args = request["argv"]
    sys.path[0] = request["cwd"]  # as `python -m` puts it first
    sys.argv = ["-m", *args]
    sys.modules.pop(module, None)  # imported by the server: run a fresh copy as __main__, as `python -m` does
    status = 0
    try:
        # What `python -m` itself calls: the module runs in __main__, sys.argv[0] becomes its file, and a missing
        # module is reported as the interpreter reports it.
        runpy._run_module_as_main(module, alter_argv=True)
    except SystemExit as exit:
        status = _exit_status(exit.code)
    except BaseException:  # noqa: BLE001 — reported as the interpreter reports it
        traceback.print_exc()
        status = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


def take_environment(environ: dict[str, str]) -> None:
    """Replace this process's environment with ``environ`` and set the thread counts of THREAD_ENV on the
    libraries already loaded (torch's OpenMP, numpy's OpenBLAS), as if they had read them at import."""
    os.environ.clear()
    os.environ.update(environ)
    limits = {api: int(environ[name]) for name, api in THREAD_ENV.items() if environ.get(name, "").isdigit()}
    if limits:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=limits)


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _kill(pid: int) -> None:
    """End a stage as Snakemake ends a job it cancels."""
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _reap(children: dict[int, socket.socket], selector) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if conn.fileno() in selector.get_map():
            selector.unregister(conn)
        try:
            conn.sendall(_EXIT + _STATUS.pack(code if code >= 0 else 128 - code))
        except OSError:
            pass
        conn.close()


if __name__ == "__main__":
    client(sys.argv[1:])
