"""Score context rows on one or more Triton servers (gRPC by default, HTTP for comparison).

- Tensors come from the model package's ``tensorize`` with fixed shapes, so requests from
  different calls have equal shapes and Triton's dynamic batcher can merge them.
- Batches of sequences are cut to the served model's preferred batch size and spread
  round-robin over the server URLs; a server that fails is skipped for a cool-down and
  the batch goes to the next one (failover), with exponential backoff between attempts
  (tenacity). Inference is pure, so a retried batch cannot double-count.
- ``preflight()`` checks, before any scoring, that every server has the pinned model
  version ready, that its inputs are the tensor contract in the layout the checkpoint
  needs (``onepiece.model.inputs.layout_of``), and that its recorded config and
  FeatureService match the checkpoint the run expects.
- Layouts: a per-group model gets one sequence per group (the context repeated); a model
  that shares its context gets bundles of whole requests, each context sent once with all
  its groups and their ``group_context`` index (a chunk of rows is one bundle); a
  retrieval model's user tower gets contexts alone and returns their user vectors
  (``user_vectors``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.errors import UserError

#: gRPC status codes after which the same batch may succeed on another (or a restarted)
#: server; anything else (INVALID_ARGUMENT: a wrong shape, ...) is the request's fault.
_RETRYABLE_GRPC = frozenset(
    {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED",
     "StatusCode.CANCELLED", "StatusCode.ABORTED"}
)


class TritonUnavailable(UserError):
    """No server could answer (all down or failing) after every retry.

    ``circuit_open``: the fleet was already known down when this batch started (it got
    one probe, not a full round of retries); retrying it later is pointless.
    """

    def __init__(self, message: str, circuit_open: bool = False) -> None:
        super().__init__(message)
        self.circuit_open = circuit_open


class TritonRequestRejected(UserError):
    """A server rejected the request itself (wrong shape, unknown input, ...): not retried."""


class _ServerFailed(Exception):
    """Internal: one attempt on one server failed in a way worth retrying elsewhere."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url


@dataclass(frozen=True)
class TritonClientConfig:
    """Where and how to call Triton. ``model_version`` None pins the newest version that is
    ready on every server, once, at preflight."""

    urls: tuple[str, ...]
    model_name: str = "onepiece_ranker"
    model_version: int | None = None
    protocol: Literal["grpc", "http"] = "grpc"
    timeout_s: float = 120.0
    attempts: int = 5  # per batch, over all servers
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 3.0
    cooldown_s: float = 5.0  # a failed server is skipped this long while others remain
    max_in_flight: int = 4  # concurrent batches (lets the dynamic batcher merge them)
    batch_size: int | None = None  # sequences per request; None: served preferred size

    def __post_init__(self) -> None:
        if not self.urls:
            raise UserError("no Triton URL given")
        if self.attempts < 1 or self.max_in_flight < 1:
            raise UserError("attempts and max_in_flight must be at least 1")


@dataclass(frozen=True)
class ServedModel:
    """What preflight found: the pinned version and the config it was exported with.

    ``max_batch_size`` / ``preferred_batch_size``: candidate groups per Triton request, at
    most / aimed at (per-group layout: the dynamic batcher's sizes; shared-context layout:
    the bundle size config.pbtxt records as ``groups_per_request``)."""

    name: str
    version: int
    config_json: str
    config_sha256: str
    feature_service: str
    max_batch_size: int
    preferred_batch_size: int
    layout: str = "per_group"

    @property
    def model_config(self) -> Any:
        from onepiece.model import ModelConfig

        return ModelConfig.from_json(self.config_json)


class _Transport:
    """One protocol's client classes and error handling."""

    def __init__(self, protocol: str, timeout_s: float) -> None:
        self.protocol = protocol
        self.timeout_s = timeout_s
        if protocol == "grpc":
            import tritonclient.grpc as module
        elif protocol == "http":
            import tritonclient.http as module
        else:
            raise UserError(f"unknown Triton protocol {protocol!r} (grpc or http)")
        self.module = module

    def client(self, url: str) -> Any:
        if self.protocol == "grpc":
            return self.module.InferenceServerClient(url)
        return self.module.InferenceServerClient(
            url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
        )

    def infer(self, client: Any, model: str, version: int, tensors: dict[str, np.ndarray]) -> Any:
        inputs = []
        for name, array in tensors.items():
            dtype = "INT64" if array.dtype == np.int64 else "FP32"
            tensor = self.module.InferInput(name, list(array.shape), dtype)
            if self.protocol == "http":
                tensor.set_data_from_numpy(array, binary_data=True)
            else:
                tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        if self.protocol == "grpc":
            return client.infer(model, inputs, model_version=str(version), client_timeout=self.timeout_s)
        return client.infer(model, inputs, model_version=str(version))

    def retryable(self, err: Exception) -> bool:
        from tritonclient.utils import InferenceServerException

        if isinstance(err, InferenceServerException):
            status = str(err.status() or "")
            if self.protocol == "grpc":
                return status in _RETRYABLE_GRPC
            return status.startswith("5")  # HTTP: 4xx is the request's fault
        return isinstance(err, (OSError, ConnectionError, TimeoutError)) or (
            type(err).__module__.startswith(("geventhttpclient", "gevent"))
        )

    def model_config(self, client: Any, model: str, version: int) -> dict[str, Any]:
        if self.protocol == "grpc":
            return client.get_model_config(model, str(version), as_json=True)["config"]
        return client.get_model_config(model, str(version))


def _message(err: Exception) -> str:
    from tritonclient.utils import InferenceServerException

    if isinstance(err, InferenceServerException):
        return f"{err.message()} [{err.status()}]"
    return f"{type(err).__name__}: {err}"


class TritonRankerClient:
    """Scores ModelInputs / context rows on Triton; one per process (or per Beam DoFn)."""

    def __init__(self, config: TritonClientConfig) -> None:
        self.config = config
        self.transport = _Transport(config.protocol, config.timeout_s)
        self.served: ServedModel | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._down_until: dict[str, float] = {}
        self._all_clients: list[Any] = []
        self._consecutive_failures = 0
        self._next = 0
        self._pool = ThreadPoolExecutor(config.max_in_flight, thread_name_prefix="triton")
        self.failovers = 0  # attempts that moved a batch to another server

    # --- connections -------------------------------------------------------------------

    def _client(self, url: str) -> Any:
        """This thread's client for ``url`` (the HTTP client is not thread-safe)."""
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if url not in clients:
            clients[url] = self.transport.client(url)
            with self._lock:
                self._all_clients.append(clients[url])
        return clients[url]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            clients, self._all_clients = self._all_clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 (best effort)
                pass
        self._local = threading.local()

    def __enter__(self) -> TritonRankerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- preflight -----------------------------------------------------------------------

    def preflight(self, expected_config_json: str | None = None, feature_service: str | None = None) -> ServedModel:
        """Pin the model version and check every server serves it as the run expects.

        ``expected_config_json``: the checkpoint's config.json; the served version must
        have been exported from the same config. ``feature_service``: the FeatureService
        the run's features came from.
        """
        from onepiece.serving.export import config_sha256

        cfg = self.config
        reachable: list[str] = []
        problems: list[str] = []
        for url in cfg.urls:
            try:
                if self._client(url).is_server_live():
                    reachable.append(url)
                    continue
                problems.append(f"{url}: server is not live")
            except Exception as err:  # noqa: BLE001
                problems.append(f"{url}: {_message(err)}")
        if not reachable:
            raise TritonUnavailable(
                f"Triton server down or unreachable ({cfg.protocol}): " + "; ".join(problems)
            )
        version = cfg.model_version or self._newest_common_version(reachable)
        served, checked = [], []
        for url in reachable:
            try:
                served.append(self._check_server(url, version))
                checked.append(url)
            except Exception:
                # A server that died after the liveness probe is dropped like any down
                # server (failover); a live server's real mismatch is re-raised.
                if self._still_live(url):
                    raise
        if not served:
            raise TritonUnavailable(f"every Triton server went down during preflight: {reachable}")
        reachable = checked
        first = served[0]
        for url, other in zip(reachable, served):
            if other.config_sha256 != first.config_sha256:
                raise UserError(
                    f"servers disagree on {cfg.model_name} v{version}: {reachable[0]} and {url} "
                    "were exported from different configs"
                )
        self._check_layout(first, reachable[0], expected_config_json)
        if expected_config_json is not None and config_sha256(expected_config_json) != first.config_sha256:
            raise UserError(
                f"{cfg.model_name} v{version} on {reachable[0]} was exported from a different "
                "model config than the checkpoint this run expects (config_sha256 "
                f"{first.config_sha256[:12]} vs {config_sha256(expected_config_json)[:12]})"
            )
        if feature_service is not None and first.feature_service != feature_service:
            raise UserError(
                f"{cfg.model_name} v{version} was trained on FeatureService "
                f"{first.feature_service!r}, but this run's features come from {feature_service!r}"
            )
        self.served = first
        return first

    def _check_layout(self, served: ServedModel, url: str, expected_config_json: str | None) -> None:
        """The served inputs must be the layout export picks for the checkpoint (the run's,
        else the one the served version records): a stale repository is refused."""
        from onepiece.model import ModelConfig
        from onepiece.model.inputs import SHARED_CONTEXT, USER_TOWER, layout_of

        which = "the checkpoint this run expects" if expected_config_json else "its own recorded config"
        config = ModelConfig.from_json(expected_config_json or served.config_json)
        needed = layout_of(config)
        if needed != served.layout:
            why = {
                SHARED_CONTEXT: "its context is blind to the candidates, so each request's context is sent once",
                USER_TOWER: "it is a retrieval model: contexts in, user vectors out",
            }.get(needed, "its context sees the candidates, so every group is sent as its own sequence")
            raise UserError(
                f"{served.name} v{served.version} on {url} is served in the {served.layout} "
                f"tensor layout, but {which} ({config.name}) needs the {needed} layout ({why}): "
                "re-export the checkpoint with `onepiece export`"
            )

    def _ready_versions(self, url: str) -> list[int]:
        client = self._client(url)
        if self.config.protocol == "grpc":
            index = client.get_model_repository_index(as_json=True).get("models", [])
        else:
            index = client.get_model_repository_index()
        return sorted(
            int(m["version"])
            for m in index
            if m.get("name") == self.config.model_name and m.get("state") == "READY" and m.get("version")
        )

    def _newest_common_version(self, urls: list[str]) -> int:
        common = set.intersection(*(set(self._ready_versions(u)) for u in urls))
        if not common:
            raise UserError(
                f"no version of model {self.config.model_name!r} is ready on every server "
                f"({', '.join(urls)})"
            )
        return max(common)

    def _still_live(self, url: str) -> bool:
        try:
            return bool(self._client(url).is_server_live())
        except Exception:  # noqa: BLE001
            return False

    def _check_server(self, url: str, version: int) -> ServedModel:
        from onepiece.model.inputs import LAYOUTS, SHARED_CONTEXT, served_inputs, served_outputs

        cfg = self.config
        client = self._client(url)
        if not client.is_model_ready(cfg.model_name, str(version)):
            ready = self._ready_versions(url)
            raise UserError(
                f"model {cfg.model_name!r} version {version} is not loaded on {url} "
                f"(ready versions: {', '.join(map(str, ready)) or 'none'})"
            )
        served = self.transport.model_config(client, cfg.model_name, version)

        def tensors(section: str) -> dict[str, tuple[str, tuple[int, ...]]]:
            return {
                t["name"]: (t["data_type"], tuple(int(d) for d in t["dims"]))
                for t in served.get(section, [])
            }

        def declared(layout: str) -> tuple[dict, ...]:
            specs = (served_inputs(layout), served_outputs(layout))
            return tuple({n: (s.triton_dtype, s.shape) for n, s in d.items()} for d in specs)

        found = (tensors("input"), tensors("output"))
        layout = next((name for name in LAYOUTS if declared(name) == found), None)
        if layout is None:
            raise UserError(
                f"{cfg.model_name} v{version} on {url}: its inputs {found[0]} and outputs "
                f"{found[1]} match no layout of this package's tensor contract "
                f"({', '.join(LAYOUTS)}): re-export the model"
            )
        params = {k: v.get("string_value", "") for k, v in served.get("parameters", {}).items()}
        key = f"v{version}."
        if key + "config_json" not in params:
            raise UserError(
                f"{cfg.model_name} on {url}: config.pbtxt records no config for version "
                f"{version}; export it with `onepiece export`"
            )
        max_batch = int(served.get("max_batch_size", 0))
        preferred = served.get("dynamic_batching", {}).get("preferred_batch_size") or [max_batch]
        if layout == SHARED_CONTEXT:  # Triton batches bundles; the client counts groups
            if not params.get("groups_per_request", "").isdigit():
                raise UserError(
                    f"{cfg.model_name} on {url}: config.pbtxt records no groups_per_request "
                    "for its shared-context layout; re-export it with `onepiece export`"
                )
            max_batch = int(params["groups_per_request"])
            preferred = [max_batch]
        return ServedModel(
            name=cfg.model_name,
            version=version,
            config_json=params[key + "config_json"],
            config_sha256=params[key + "config_sha256"],
            feature_service=params[key + "feature_service"],
            max_batch_size=max_batch,
            preferred_batch_size=int(max(int(p) for p in preferred)),
            layout=layout,
        )

    # --- scoring -------------------------------------------------------------------------

    def _pick(self) -> str:
        """The next server round-robin, skipping those in cool-down while others remain."""
        with self._lock:
            now = time.monotonic()
            urls = self.config.urls
            for step in range(len(urls)):
                url = urls[(self._next + step) % len(urls)]
                if self._down_until.get(url, 0.0) <= now:
                    self._next = (self._next + step + 1) % len(urls)
                    return url
            return min(urls, key=lambda u: self._down_until.get(u, 0.0))

    def _mark_down(self, url: str) -> None:
        with self._lock:
            self._down_until[url] = time.monotonic() + self.config.cooldown_s
            self.failovers += 1
            self._consecutive_failures += 1

    def _fleet_down(self) -> bool:
        """Circuit breaker: after ``attempts`` failures in a row with no success anywhere,
        later batches get one probe each instead of a full round of backoff."""
        return self._consecutive_failures >= self.config.attempts

    def _infer_once(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.served is not None, "call preflight() first"
        url = self._pick()
        try:
            result = self.transport.infer(
                self._client(url), self.served.name, self.served.version, tensors
            )
        except Exception as err:  # noqa: BLE001 (classified below)
            if self.transport.retryable(err):
                self._mark_down(url)
                raise _ServerFailed(url, _message(err)) from err
            raise TritonRequestRejected(
                f"Triton at {url} rejected a request to {self.served.name} "
                f"v{self.served.version}: {_message(err)}"
            ) from None
        self._consecutive_failures = 0
        return {name: result.as_numpy(name) for name in self._served_outputs()}

    def _served_outputs(self) -> list[str]:
        from onepiece.model.inputs import served_outputs

        assert self.served is not None, "call preflight() first"
        return list(served_outputs(self.served.layout))

    def infer_batch(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request (at most max_batch_size sequences), with failover and backoff."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

        cfg, served = self.config, self.served
        assert served is not None, "call preflight() first"
        failures: list[str] = []
        circuit_open = self._fleet_down()
        retrying = Retrying(
            stop=stop_after_attempt(1 if circuit_open else cfg.attempts),
            wait=wait_exponential_jitter(initial=cfg.backoff_initial_s, max=cfg.backoff_max_s),
            retry=retry_if_exception_type(_ServerFailed),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        return self._infer_once(tensors)
                    except _ServerFailed as err:
                        failures.append(str(err))
                        raise
        except _ServerFailed:
            raise TritonUnavailable(
                f"no Triton server could score a batch of {served.name} "
                f"v{served.version} after {len(failures)} attempts: " + "; ".join(failures[-len(cfg.urls):]),
                circuit_open=circuit_open,
            ) from None
        raise AssertionError("unreachable")

    def _step(self) -> int:
        """Sequences per request: the served preferred batch size (or the configured one)."""
        assert self.served is not None, "call preflight() first"
        wanted = self.config.batch_size or self.served.preferred_batch_size
        return min(wanted, self.served.max_batch_size)

    def _infer_all(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Requests of at most one step each, sent one after another; outputs concatenated."""
        b, step = len(next(iter(tensors.values()))), self._step()
        parts = [
            self.infer_batch({n: a[i : i + step] for n, a in tensors.items()})
            for i in range(0, b, step)
        ]
        return {name: np.concatenate([p[name] for p in parts]) for name in self._served_outputs()}

    @property
    def shared(self) -> bool:
        """Whether the served model takes shared-context bundles (known after preflight)."""
        assert self.served is not None, "call preflight() first"
        from onepiece.model.inputs import SHARED_CONTEXT

        return self.served.layout == SHARED_CONTEXT

    def infer_bundle(self, inputs: Any) -> dict[str, np.ndarray]:
        """Shared-context layout: one bundle (ModelInputs with ``group_context``) as one
        request; ``p_<task>`` -> [G, C]."""
        if inputs.n_groups == 0:  # nothing to score (requests without candidates)
            width = inputs.cand_item_cat.shape[1]
            return {name: np.zeros((0, width), np.float32) for name in _output_names()}
        out = self.infer_batch({name: t.numpy() for name, t in inputs.bundle().items()})
        return {name: a[0] for name, a in out.items()}

    def score_inputs(self, inputs: Any) -> dict[str, np.ndarray]:
        """Task probabilities ``p_<task>`` -> [groups, C] for ModelInputs, in concurrent
        requests. The served layout decides: per-sequence inputs to a per-group model, the
        shared-context layout (cut into bundles of whole contexts) to a shared one."""
        step = self._step()
        if self.shared:
            if inputs.group_context is None:
                raise UserError("the served model takes the shared-context layout: tensorize(..., shared_context=True)")
            bundles = [inputs.contexts(rows) for rows in _bundle_rows(inputs, step)]
            results = list(self._pool.map(self.infer_bundle, [b for b, _ in bundles]))
            width = inputs.cand_item_cat.shape[1]
            out = {name: np.zeros((inputs.n_groups, width), np.float32) for name in _output_names()}
            for (_, groups), result in zip(bundles, results):
                for name in out:
                    out[name][groups.numpy()] = result[name]
            return out
        inputs = inputs.sequences()
        tensors = {name: t.numpy() for name, t in inputs.tensors().items()}
        chunks = [{n: a[i : i + step] for n, a in tensors.items()} for i in range(0, inputs.batch_size, step)]
        results = list(self._pool.map(self.infer_batch, chunks))
        return {
            name: np.concatenate([r[name] for r in results]) if results else np.zeros((0, 0), np.float32)
            for name in _output_names()
        }

    def score_contexts(self, contexts: pa.Table, source: str = "<contexts>") -> dict[str, np.ndarray]:
        """Per-candidate probabilities ``p_<task>``, aligned with the flattened
        ``cand_item_id`` lists of ``contexts`` (float32 arrays).

        Rows are cut into chunks of about one request each; every chunk is tensorised in
        the worker thread that sends it, so the client prepares the next requests while
        the server computes (tensorize releases the GIL in numpy and Arrow).
        """
        from onepiece.model import tensorize
        from onepiece.serving.scoring import chunk_rows

        assert self.served is not None, "call preflight() first"
        model_config = self.served.model_config

        shared = self.shared

        def one(chunk: pa.Table) -> dict[str, np.ndarray]:
            inputs = tensorize(chunk, model_config, fixed_shape=True, shared_context=shared, source=source)
            assert inputs.cand_flat_index is not None  # tensorize() always sets it
            if shared:  # the chunk is one bundle: each context once, all its groups
                probs = self.infer_bundle(inputs)
            else:
                probs = self._infer_all({name: t.numpy() for name, t in inputs.tensors().items()})
            return scatter_to_candidates(probs, inputs.cand_flat_index.numpy(), chunk)

        chunks = list(chunk_rows(contexts, model_config.group_size, self._step()))
        results = list(self._pool.map(one, chunks))
        return {
            name: np.concatenate([r[name] for r in results]) if results else np.zeros(0, np.float32)
            for name in _output_names()
        }

    def user_vectors(self, contexts: pa.Table, batch_size: int, source: str = "<contexts>") -> np.ndarray:
        """User tower: every context row's user vectors r_k, [R, S, d] float32 in row
        order. The rows go in consecutive batches of ``batch_size``, one request each,
        padded to the batch's longest (``tensorize_contexts``): the batches the route's
        in-process path (``onepiece.model.retrieval.user_vectors``) runs, so the vectors
        are the same."""
        from onepiece.model.inputs import CONTEXT_TENSORS, USER_TOWER, tensorize_contexts

        assert self.served is not None, "call preflight() first"
        if self.served.layout != USER_TOWER:
            raise UserError(
                f"{self.served.name} v{self.served.version} is served in the {self.served.layout} layout: "
                "user vectors need a retrieval model's user tower (onepiece_user_tower)"
            )
        if batch_size > self.served.max_batch_size:
            raise UserError(
                f"batches of {batch_size} contexts exceed {self.served.name}'s max_batch_size "
                f"{self.served.max_batch_size}: re-export it with a larger --max-batch-size"
            )
        model_config = self.served.model_config

        def one(start: int) -> np.ndarray:
            inputs = tensorize_contexts(contexts.slice(start, batch_size), model_config, source=source)
            return self.infer_batch({name: getattr(inputs, name).numpy() for name in CONTEXT_TENSORS})["user_vectors"]

        parts = list(self._pool.map(one, range(0, contexts.num_rows, batch_size)))
        if not parts:
            return np.zeros((0, model_config.num_outputs, model_config.d_model), np.float32)
        return np.concatenate(parts)


def _bundle_rows(inputs: Any, max_groups: int) -> list[Any]:
    """Shared layout: consecutive runs of context rows with at most ``max_groups`` groups
    each (a context with more is a run of its own), like ``scoring.chunk_rows``."""
    import torch

    per_context = torch.bincount(inputs.group_context, minlength=inputs.batch_size).tolist()
    runs, start, total = [], 0, 0
    for row, n in enumerate(per_context):
        if total and total + n > max_groups:
            runs.append(torch.arange(start, row))
            start, total = row, 0
        total += n
    if inputs.batch_size > start:
        runs.append(torch.arange(start, inputs.batch_size))
    return runs


def _output_names() -> list[str]:
    from onepiece.model.inputs import OUTPUT_SPECS

    return list(OUTPUT_SPECS)


def scatter_to_candidates(
    probs: dict[str, np.ndarray], flat_index: np.ndarray, contexts: pa.Table
) -> dict[str, np.ndarray]:
    """Put [B, C] slot probabilities back on the flat candidate order of ``contexts``."""
    total = int(pc.sum(pc.list_value_length(contexts.column("cand_item_id"))).as_py() or 0)
    valid = flat_index >= 0
    out = {}
    for name, p in probs.items():
        flat = np.full(total, np.nan, np.float32)
        flat[flat_index[valid]] = p[valid]
        out[name] = flat
    return out


def client_for(urls: Sequence[str], **overrides: Any) -> TritonRankerClient:
    """A client for ``urls`` (``HOST:PORT``; gRPC unless protocol="http")."""
    return TritonRankerClient(TritonClientConfig(urls=tuple(urls), **overrides))


def describe(served: ServedModel) -> dict[str, Any]:
    """The served model as recorded in a run's manifest."""
    return {
        "name": served.name,
        "version": served.version,
        "feature_service": served.feature_service,
        "config_sha256": served.config_sha256,
        "config": json.loads(served.config_json),
    }
