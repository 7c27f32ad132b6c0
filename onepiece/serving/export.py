"""Export a checkpoint into a Triton model repository and keep its ``config.pbtxt`` right.

Layout (standard Triton, loads unchanged in NVIDIA's server container); the retrieval
model's ``onepiece_user_tower`` is laid out the same way (its versions also carry their
``item_index/``, ``onepiece.retrieval.publish``)::

    model_repo/onepiece_ranker/
        config.pbtxt            generated: tensor contract, batching, instances, versions
        <N>/model.py            thin adapter: re-exports onepiece.serving.triton_model
        <N>/config.json         the checkpoint's ModelConfig   (written by export, git-ignored)
        <N>/model.safetensors   the weights                    (written by export, git-ignored)

``config.pbtxt`` is shared by all versions; what differs per version (the model config
and its FeatureService) is recorded as parameters ``v<N>.config_json``,
``v<N>.config_sha256`` and ``v<N>.feature_service``, so a client can check a remote
server's version against its checkpoint before scoring. Inputs and outputs are generated
from the tensor contract (``onepiece.model.inputs.served_inputs`` / ``served_outputs``) in
the layout the checkpoint's config needs (``layout_of``): one sequence per batch element
for a model whose context sees the candidates, bundles of whole requests (each context
once, its groups, a ``group_context`` index; ragged inputs) for one that shares it, one
context per batch element and its user vectors out for a retrieval model. One
``config.pbtxt`` holds one layout, so the versions it keeps loaded must agree on it: the
layout served is the newest version's, and Triton loads the newest ``latest_versions``
versions of that layout (``served_versions``). A version whose layout differs from the
versions loaded today is exported only with ``layout_change="replace"``; the versions of
the old layout then stay on disk, unloaded. Rolling back across the change means
exporting the old version's directory again as a new version (``onepiece pin`` says so).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from onepiece.errors import UserError

MODEL_NAME = "onepiece_ranker"
#: The retrieval model's user tower (layout ``user_tower``): contexts in, user vectors out.
USER_TOWER_MODEL = "onepiece_user_tower"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ADAPTER_FILE = "model.py"

#: The committed adapter every version directory carries (see model_repo/README.md).
ADAPTER_SOURCE = '''\
"""Triton Python-backend entry point of one model version (onepiece_ranker or
onepiece_user_tower): a thin adapter.

The model is built and run by the installed ``onepiece`` package
(onepiece/serving/triton_model.py); this file only makes it importable. In NVIDIA's
server container the package is pip-installed and ONEPIECE_PYTHONPATH is absent. The
embedded launcher (onepiece/serving/server.py) sets it because the backend stub ignores
PYTHONPATH.
"""

import os
import site
import sys

_before = list(sys.path)
for _path in filter(None, os.environ.get("ONEPIECE_PYTHONPATH", "").split(os.pathsep)):
    site.addsitedir(_path)  # also runs .pth files (editable installs)
# The project's paths go first, ahead of any system dist-packages.
sys.path[:] = [p for p in sys.path if p not in _before] + _before

from onepiece.serving.triton_model import TritonPythonModel  # noqa: E402,F401
'''


@dataclass(frozen=True)
class ExportConfig:
    """How the model is served; written into config.pbtxt."""

    model_name: str = MODEL_NAME
    max_batch_size: int = 256  # sequences (one context plus one candidate group) per batch
    preferred_batch_sizes: tuple[int, ...] = (64, 128, 256)
    max_queue_delay_us: int = 2000  # how long the batcher waits to fill a preferred batch
    instance_kind: Literal["auto", "cpu", "gpu"] = "auto"  # auto: GPU when torch sees one
    instance_count: int = 1
    # Keep the newest N versions loaded: the current one and its predecessor for rollback
    # and A/B pinning; 0 means all versions in the repository (of the served layout).
    latest_versions: int = 2
    # A new version whose tensor layout differs from the loaded versions' (a shared-context
    # model after per-group ones): "refuse" with a clear error, or "replace": serve the new
    # layout; the older layout's versions stay on disk but are no longer loaded.
    layout_change: Literal["refuse", "replace"] = "refuse"
    # Shared-context layout: Triton requests (bundles of whole requests, each of about
    # max(preferred_batch_sizes) groups) merged into one execution. Bundles vary in size,
    # so they are not counted in groups; score() chunks the merged input itself.
    max_bundles: int = 8
    # torch intra-op threads per CPU instance. Scale with instance_count instead: several
    # threads per instance spin against each other on a busy machine (measured 16x slower
    # with 2 threads than with 1 on a loaded 2-core host).
    cpu_threads: int = 1

    def __post_init__(self) -> None:
        if not self.preferred_batch_sizes or max(self.preferred_batch_sizes) > self.max_batch_size:
            raise UserError(
                f"preferred batch sizes {self.preferred_batch_sizes} must be non-empty and "
                f"at most max_batch_size {self.max_batch_size}"
            )
        if self.instance_count < 1:
            raise UserError(f"instance_count must be at least 1, got {self.instance_count}")
        if self.max_bundles < 1:
            raise UserError(f"max_bundles must be at least 1, got {self.max_bundles}")
        if self.layout_change not in ("refuse", "replace"):
            raise UserError(f"layout_change must be refuse or replace, got {self.layout_change!r}")

    @property
    def groups_per_request(self) -> int:
        """Shared-context layout: the candidate groups a client puts in one bundle."""
        return max(self.preferred_batch_sizes)


def config_sha256(config_json: str) -> str:
    """A fingerprint of a model config (canonical JSON), compared by the client."""
    canonical = json.dumps(json.loads(config_json), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def model_digest(directory: str | Path) -> str:
    """A model directory's weights and config (canonical JSON): equal for the same model,
    so a checkpoint exported before is found again (a calibrated copy differs in config)."""
    directory = Path(directory)
    weights = hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()
    return weights + config_sha256((directory / CONFIG_FILE).read_text())


def _pb_string(text: str) -> str:
    """A protobuf text-format string literal (JSON escaping is a subset for ASCII text)."""
    return json.dumps(text, ensure_ascii=True)


def _instance_kind(kind: str) -> str:
    if kind == "auto":
        import torch

        kind = "gpu" if torch.cuda.is_available() else "cpu"
    return {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}[kind]


def version_dirs(model_dir: Path) -> dict[int, Path]:
    """The numbered version directories of a model, by version."""
    if not model_dir.is_dir():
        return {}
    return {int(p.name): p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}


def exported_versions(model_dir: Path) -> dict[int, Path]:
    """Version directories that hold exported weights (the committed ``1/`` may hold only
    the adapter until the first export)."""
    return {v: p for v, p in version_dirs(model_dir).items() if (p / WEIGHTS_FILE).is_file()}


def check_exported(model_repo: str | Path, model_name: str = MODEL_NAME) -> list[int]:
    """The exported versions of a model; a clear error when there is none."""
    if not Path(model_repo).is_dir():
        raise UserError(f"model repository {model_repo} does not exist")
    versions = sorted(exported_versions(Path(model_repo) / model_name))
    if not versions:
        raise UserError(
            f"model {model_name!r} in {model_repo} has no exported weights: run "
            f"`onepiece export --checkpoint CKPT_DIR --model-repo {model_repo}` first"
        )
    return versions


def loaded_versions(versions: list[int], latest: int) -> list[int]:
    """The versions a ``latest { num_versions: N }`` policy loads (0: all)."""
    return sorted(versions)[-latest:] if latest else sorted(versions)


def version_configs(dirs: dict[int, Path]) -> dict[int, str]:
    """Each version directory's config.json text (``dirs``: version -> directory; those
    without one are left out)."""
    return {v: (path / CONFIG_FILE).read_text() for v, path in dirs.items() if (path / CONFIG_FILE).is_file()}


def version_layouts(versions: dict[int, str]) -> dict[int, str]:
    """Each version's tensor layout (``versions``: version -> config.json text)."""
    from onepiece.model import ModelConfig
    from onepiece.model.inputs import layout_of

    return {v: layout_of(ModelConfig.from_json(text)) for v, text in versions.items()}


def served_versions(layouts: dict[int, str], latest: int) -> list[int]:
    """The versions Triton loads: the newest ``latest`` (0: all) of those that share the
    newest version's layout. Equal to the plain ``latest`` policy unless a layout change
    left versions of the older layout in the repository."""
    if not layouts:
        return []
    layout = layouts[max(layouts)]
    return loaded_versions([v for v, lay in layouts.items() if lay == layout], latest)


def check_layout_change(config: ExportConfig, versions: dict[int, str], new_version: int, new_config: str) -> None:
    """Refuse (unless ``config.layout_change`` is "replace") a new version that would put
    two tensor layouts among the versions the ``latest`` policy loads."""
    layouts = version_layouts(versions | {new_version: new_config})
    loaded = {v: layouts[v] for v in loaded_versions(list(layouts), config.latest_versions)}
    if len(set(loaded.values())) < 2 or config.layout_change == "replace":
        return
    listed = ", ".join(f"v{v} {layout}" for v, layout in sorted(loaded.items()))
    raise UserError(
        f"model {config.model_name}: the versions its policy keeps loaded would need different "
        f"tensor layouts ({listed}) and one config.pbtxt declares one. To serve the new "
        "layout, export with --layout-change replace (the model_publish DAG: Param "
        "layout_change=replace): the older layout's versions stay on disk but are no longer "
        "loaded, and rolling back to one means exporting it again as a new version"
    )


def default_layout(model_name: str) -> str:
    """The layout of a model's repository before any version is exported: the user tower's,
    or the product variant's (the committed config.pbtxt)."""
    from onepiece.model import variant_config
    from onepiece.model.inputs import USER_TOWER, layout_of
    from onepiece.pipeline.config import PRODUCT_VARIANT

    return USER_TOWER if model_name == USER_TOWER_MODEL else layout_of(variant_config(PRODUCT_VARIANT))


def policy_versions(model_dir: Path, exported: list[int]) -> list[int]:
    """The exported versions Triton loads under the version policy of the model's
    config.pbtxt (``latest``, ``specific`` or ``all``; no file: all)."""
    import re

    path = model_dir / "config.pbtxt"
    text = path.read_text() if path.is_file() else ""
    latest = re.search(r"latest\s*\{\s*num_versions:\s*(\d+)", text)
    specific = re.search(r"specific\s*\{\s*versions:\s*\[([\d,\s]*)\]", text)
    if latest:
        return loaded_versions(exported, int(latest.group(1)))
    if specific:
        return sorted(set(exported) & {int(v) for v in specific.group(1).replace(",", " ").split()})
    return sorted(exported)


def check_served(model_repo: str | Path, model_name: str, version: int) -> None:
    """A clear error unless ``version`` is exported and its model's config.pbtxt loads it;
    across a layout change the error names the way back (export it again)."""
    model_dir = Path(model_repo) / model_name
    exported = check_exported(model_repo, model_name)
    if version not in exported:
        raise UserError(f"model {model_name} version {version} is not exported in {model_repo} (exported: {exported})")
    loaded = policy_versions(model_dir, exported)
    if version in loaded:
        return
    layouts = version_layouts(version_configs({v: model_dir / str(v) for v in exported}))
    newest = max(exported)
    if layouts[version] != layouts[newest]:
        since = newest  # the first version of the unbroken run of the served layout
        for v in sorted(exported, reverse=True):
            if layouts[v] != layouts[newest]:
                break
            since = v
        raise UserError(
            f"model {model_name} version {version} needs the {layouts[version]} tensor layout, but "
            f"{model_dir / 'config.pbtxt'} serves {layouts[newest]} since version {since}: to roll "
            f"back across the layout change, export it again as a new version (`onepiece export "
            f"--checkpoint {model_dir / str(version)} --model-repo {model_repo} --layout-change replace`) "
            "and pin that one"
        )
    raise UserError(
        f"model {model_name} version {version} is exported but Triton's version policy in "
        f"{model_dir / 'config.pbtxt'} loads only {loaded}: re-export with --latest-versions 0 "
        "or pin a newer version"
    )


def render_config_pbtxt(config: ExportConfig, versions: dict[int, str], layout: str | None = None) -> str:
    """config.pbtxt text for the model; ``versions`` maps version -> its config.json text.
    ``layout`` (default: the newest version's; the product's in a repository without
    versions) picks the tensor contract."""
    from onepiece.model.inputs import SHARED_CONTEXT, USER_TOWER, served_inputs, served_outputs

    layouts = version_layouts(versions)
    layout = layout or (layouts[max(layouts)] if layouts else default_layout(config.model_name))
    shared = layout == SHARED_CONTEXT
    served = served_versions(layouts, config.latest_versions)
    unloaded = sorted(set(loaded_versions(list(layouts), config.latest_versions)) - set(served))
    ragged = " allow_ragged_batch: true" if shared else ""

    def tensor(name: str, dtype: str, dims: tuple[int, ...], extra: str = "") -> str:
        return f'  {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(map(str, dims))} ]{extra} }}'

    inputs = ",\n".join(
        tensor(n, s.triton_dtype, s.shape, ragged) for n, s in served_inputs(layout).items()
    )
    outputs = ",\n".join(
        tensor(n, s.triton_dtype, s.shape) for n, s in served_outputs(layout).items()
    )
    if unloaded:
        # a layout change: only the served layout's versions load; the others stay on disk
        policy = f"{{ specific {{ versions: [ {', '.join(map(str, served))} ] }} }}"
    elif config.latest_versions:
        policy = f"{{ latest {{ num_versions: {config.latest_versions} }} }}"
    else:
        policy = "{ all { } }"
    params = [f'parameters {{ key: "cpu_threads" value {{ string_value: "{config.cpu_threads}" }} }}']
    if shared:
        params.append(
            f'parameters {{ key: "groups_per_request" value {{ string_value: "{config.groups_per_request}" }} }}'
        )
    for version, text in sorted(versions.items()):
        model_config = json.loads(text)
        for key, value in (
            ("config_json", json.dumps(model_config, sort_keys=True, separators=(",", ":"))),
            ("config_sha256", config_sha256(text)),
            ("feature_service", str(model_config.get("feature_service", ""))),
        ):
            params.append(
                f'parameters {{ key: "v{version}.{key}" value {{ string_value: {_pb_string(value)} }} }}'
            )
    if shared:
        header = [
            "# Generated by `onepiece export` from onepiece/model/inputs.py (TENSOR_SPECS,",
            "# OUTPUT_SPECS, served_inputs); do not edit by hand. Shared-context layout: one",
            "# sample = a bundle of whole requests: R contexts, G candidate groups and",
            "# group_context [G], each group's context row; ragged, so bundles of any R and G",
            "# batch together. Length tensors mark padding.",
        ]
        batching = [f"  max_queue_delay_microseconds: {config.max_queue_delay_us}"]
    elif layout == USER_TOWER:
        header = [
            "# Generated by `onepiece export` from onepiece/model/inputs.py (TENSOR_SPECS,",
            "# USER_TOWER_OUTPUTS); do not edit by hand. The retrieval model's user tower: one",
            "# sample = one request's context (no candidates), out its user vectors r_k [S, d];",
            "# length tensors mark padding. The item index is searched by the job, not here.",
        ]
    else:
        header = [
            "# Generated by `onepiece export` from onepiece/model/inputs.py (TENSOR_SPECS,",
            "# OUTPUT_SPECS); do not edit by hand. One sample = one context plus one group of",
            "# at most C candidates; length tensors mark padding.",
        ]
    if not shared:
        batching = [
            f"  preferred_batch_size: [ {', '.join(map(str, config.preferred_batch_sizes))} ]",
            f"  max_queue_delay_microseconds: {config.max_queue_delay_us}",
        ]
    if unloaded:
        older = ", ".join(f"v{v} ({lay})" for v, lay in sorted(layouts.items()) if lay != layouts[max(layouts)])
        header.append(f"# Layout changed: {older} stay on disk, not loaded (exported with --layout-change replace).")
    lines = [
        *header,
        f'name: "{config.model_name}"',
        'backend: "python"',
        f"max_batch_size: {config.max_bundles if shared else config.max_batch_size}",
        f"version_policy: {policy}",
        f"input [\n{inputs}\n]",
        f"output [\n{outputs}\n]",
        f"instance_group [ {{ kind: {_instance_kind(config.instance_kind)} "
        f"count: {config.instance_count} }} ]",
        "dynamic_batching {",
        *batching,
        "}",
        *params,
    ]
    return "\n".join(lines) + "\n"


def write_config_pbtxt(model_dir: Path, config: ExportConfig) -> Path:
    """(Re)generate config.pbtxt from the tensor contract and the exported versions."""
    versions = version_configs(version_dirs(model_dir))
    target = model_dir / "config.pbtxt"
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(render_config_pbtxt(config, versions))
    os.replace(tmp, target)  # a reader sees the old or the new file, never half
    return target


def model_name_for(model_config: Any) -> str:
    """The served model a checkpoint's config belongs to: the user tower for a retrieval
    model, else the ranker."""
    from onepiece.model.inputs import USER_TOWER, layout_of

    return USER_TOWER_MODEL if layout_of(model_config) == USER_TOWER else MODEL_NAME


def export_checkpoint(
    checkpoint: str | Path,
    model_repo: str | Path,
    version: int | None = None,
    config: ExportConfig | None = None,
    fill: Callable[[Path, int], None] | None = None,
) -> Path:
    """Write ``checkpoint`` as version ``version`` (default: next) of the served model.

    The checkpoint is loaded first (weights without unpickling), so a broken one never
    reaches the repository. A retrieval checkpoint is a version of ``onepiece_user_tower``
    (the default ``onepiece_ranker`` name follows it there); a ranking one is refused
    there. ``fill(staging, version)`` writes more into the staged version directory (the
    item index of ``onepiece.retrieval.publish``) before it is published. The version
    directory is published atomically; exporting the same checkpoint again writes
    identical bytes.
    """
    from onepiece.model import load_checkpoint
    from onepiece.storage import staged_dir

    config = config or ExportConfig()
    checkpoint = Path(checkpoint)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (checkpoint / name).is_file():
            raise UserError(f"checkpoint {checkpoint} has no {name} (expected a model directory)")
    try:
        model = load_checkpoint(checkpoint)
    except Exception as err:  # the model package's own error, with our context
        raise UserError(f"checkpoint {checkpoint} does not load: {err}") from err
    kind = model_name_for(model.config)
    if config.model_name == MODEL_NAME and kind == USER_TOWER_MODEL:
        config = dataclasses.replace(config, model_name=USER_TOWER_MODEL)
    elif config.model_name == USER_TOWER_MODEL and kind != USER_TOWER_MODEL:
        raise UserError(
            f"checkpoint {checkpoint} is a {model.config.mode} model ({model.config.name}): "
            f"{USER_TOWER_MODEL} serves retrieval models only"
        )
    model_dir = Path(model_repo) / config.model_name
    existing = exported_versions(model_dir)
    if version is None:
        version = max(existing, default=0) + 1
    if version < 1:
        raise UserError(f"model version must be a positive integer, got {version}")
    # Refuse a layout the loaded versions do not share before anything is written.
    check_layout_change(config, version_configs(existing), version, (checkpoint / CONFIG_FILE).read_text())
    with staged_dir(model_dir / str(version)) as staging:
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copyfile(checkpoint / name, staging / name)
        (staging / ADAPTER_FILE).write_text(ADAPTER_SOURCE)
        if fill is not None:
            fill(staging, version)
    write_config_pbtxt(model_dir, config)
    return model_dir / str(version)
