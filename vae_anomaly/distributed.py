"""Score partitioned datasets on a Dask cluster: one Dask task per partition file.

The client reads the model file once and sends its bytes to the workers. Each
worker rebuilds the detector with the safe loader (``detector.loads``: safetensors
and JSON, never unpickling) and runs ``api.score_file`` on its partition. The
Monte Carlo draws are tied to each row's index within its file, so every output
is byte-for-byte the one the local engine writes, whichever worker scored it.

Dask is an optional extra (``pip install 'vae-anomaly[dask]'``), imported only
when the dask engine runs, so this module loads without it. Like the rest of the
library it raises the project's exceptions and never prints.

Example:
    >>> score_partitions(expand_inputs("data/part-*.parquet"), "model.vae",
    ...                  "scored", scheduler="tcp://scheduler:8786")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from ._version import __version__
from .api import ScoreResult, check_score_options, planned_outputs, score_file
from .data import check_output_folder
from .errors import InputError, VAEAnomalyError
from .loading import load, loads

ENGINES = ("local", "dask")
INSTALL_HINT = "pip install 'vae-anomaly[dask]'"
# A failure that is not one of the library's own (a worker died, a bug) exits like
# any unexpected error in the CLI.
EXIT_UNEXPECTED = 4


class DaskEngineError(VAEAnomalyError):
    """Dask is not installed, the scheduler cannot be reached, or a worker runs
    another version of vae-anomaly."""


class PartitionsFailedError(VAEAnomalyError):
    """Some partitions could not be scored; every other partition's output is
    complete. ``failures`` maps each failed input path to its reason."""

    def __init__(self, failures: dict[Path, str], total: int, exit_code: int = 2):
        self.failures, self.total, self.exit_code = failures, total, exit_code
        super().__init__(_failure_message(failures, total))


def _failure_message(failures: dict[Path, str], total: int) -> str:
    scored = total - len(failures)
    head = (f"{len(failures)} of {total} partitions failed"
            + (f" (the other {scored} outputs are complete)" if scored else ""))
    reasons = set(failures.values())
    if len(failures) > 1 and len(reasons) == 1:  # e.g. a bad option: say it once
        return f"{head}, each with: {reasons.pop()}"
    return f"{head}: " + " | ".join(reason if path.name in reason else f"{path}: {reason}"
                                    for path, reason in failures.items())


def check_engine_options(engine: str, *, scheduler: str | None, output, output_dir) -> None:
    """Reject engine options that do not fit together, before any work starts."""
    if engine not in ENGINES:
        raise InputError(f"--engine must be local or dask (got {engine!r})")
    if engine == "local":
        if scheduler is not None:
            raise InputError("--scheduler only applies to --engine dask; add --engine dask "
                             "or drop --scheduler")
        return
    if output is not None or output_dir is None:
        instead = " instead of --output" if output is not None else ""
        raise InputError("--engine dask writes one output per partition; pass --output-dir DIR"
                         + instead)
    import_distributed()


def import_distributed():
    """The ``distributed`` package, or DaskEngineError saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise DaskEngineError(f"--engine dask needs Dask, which is not installed; install it "
                              f"with: {INSTALL_HINT}") from None
    return distributed


def score_partitions(inputs: Sequence[Path], model_path, output_dir, *,
                     scheduler: str | None = None, **options) -> list[ScoreResult]:
    """Score each input file as one Dask task, writing ``output_dir / input.name``.

    ``scheduler`` is the address of a running Dask scheduler; None starts a
    LocalCluster sized to this machine for the run. ``options`` are those of
    ``api.score_file``. Every partition runs to the end even when another fails;
    then PartitionsFailedError names each failed partition and its reason.
    Results come back in input order, like the local engine's.
    """
    distributed = import_distributed()
    inputs, model_path = [Path(p) for p in inputs], Path(model_path)
    output_dir = check_output_folder(Path(output_dir))
    planned_outputs(inputs, None, output_dir)  # two inputs of one name: refused
    # Checked here, before a cluster starts, so the messages are the local engine's.
    check_score_options(**{k: options.get(k) for k in ("seed", "samples", "threshold", "explain",
                                                       "chunk_size")})
    payload = read_model_payload(model_path)
    with _connect(distributed, scheduler) as client:
        model = _send_model(client, payload)
        futures = [client.submit(score_partition, str(path.absolute()),
                                 str((output_dir / path.name).absolute()), model,
                                 str(model_path.absolute()), __version__, options, pure=False)
                   for path in inputs]
        # Waiting on all (not gathering, which stops at the first error) lets every
        # sibling finish and write its output.
        with client.as_current():
            distributed.wait(futures)
        return _collect(inputs, futures, output_dir)


def _send_model(client, payload: bytes):
    """One copy of the model bytes on every worker (not one per task)."""
    try:
        return client.scatter(payload, broadcast=True)
    except TimeoutError:  # Dask waits its connect timeout for a worker to appear
        raise DaskEngineError(f"the Dask scheduler at {client.scheduler.address} has no workers; "
                              "start some (e.g. `dask worker ADDRESS`) and run again") from None


def read_model_payload(model_path: Path) -> bytes:
    """The model file's bytes, read once and checked here with the same safe loader
    the workers use, so a bad model fails before any cluster starts."""
    try:
        payload = model_path.read_bytes()
    except OSError:
        load(model_path, estimator=False)  # raises ModelFileError with the reason and the fix
        raise
    loads(payload, model_path.name, estimator=False)
    return payload


def score_partition(path: str, output: str, payload: bytes, model_path: str,
                    client_version: str, options: dict) -> ScoreResult:
    """Runs on a worker: rebuild the detector from the model bytes, score one file.

    ``model_path`` is only used to name the model in messages and to refuse
    writing over it; the worker never reads it.
    """
    if client_version != __version__:
        raise DaskEngineError(f"worker {socket.gethostname()} has vae-anomaly {__version__} but "
                              f"the client has {client_version}; install the same version on "
                              "every worker")
    detector = loads(payload, Path(model_path).name, estimator=False)
    return score_file(path, model_path, output=output, detector=detector, **options)


@contextlib.contextmanager
def _connect(distributed, scheduler: str | None) -> Iterator:
    if scheduler is None:
        # Dask's own sizing: one worker process per core on small machines, a few
        # multi-threaded workers on large ones. Its nannies set OMP_NUM_THREADS=1,
        # so torch in each task uses one core. The dashboard takes a free local port
        # (never a "port in use" warning), and the workers' logs are silenced:
        # failures come back as one `Error:` line, not worker tracebacks in cron logs.
        with distributed.LocalCluster(processes=True, dashboard_address="127.0.0.1:0",
                                      silence_logs=logging.CRITICAL) as cluster, \
                distributed.Client(cluster, set_as_default=False) as client:
            yield client
        return
    try:
        client = distributed.Client(scheduler, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DaskEngineError(f"cannot connect to the Dask scheduler at {scheduler} ({reason}); "
                              "check --scheduler and that the scheduler is running") from None
    with client:
        yield client


def _collect(inputs: list[Path], futures: list, output_dir: Path) -> list[ScoreResult]:
    results, failures, exit_code = [], {}, 2
    for path, future in zip(inputs, futures):
        try:
            result = future.result()
        except VAEAnomalyError as exc:
            failures[path] = str(exc)
            exit_code = max(exit_code, exc.exit_code)
        except Exception as exc:  # a worker died or a bug: still name the partition
            failures[path] = f"unexpected {type(exc).__name__}: {exc}"
            exit_code = EXIT_UNEXPECTED
        else:
            # The worker used absolute paths; report the paths as the user gave them.
            results.append(replace(result, input=path, output=output_dir / path.name))
    if failures:
        raise PartitionsFailedError(failures, len(inputs), exit_code)
    return results
