"""The retrieval route's user vectors through Triton: the served ``onepiece_user_tower``.

``user_tower_client`` yields a preflighted client pinned to one version of the user tower,
on the servers given, or on an embedded tritonserver over the model repository started
for the with-block and always stopped, as the scoring job starts one
(``onepiece.serving.score_job.score_window``). The version must have been exported from
the route's checkpoint: its config is checked on every server (preflight) and, in the
local repository the embedded server loads, its weights too. The item index stays with
the job; the server only turns contexts into user vectors.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from onepiece.errors import UserError
from onepiece.serving.client import TritonClientConfig, TritonRankerClient
from onepiece.serving.export import CONFIG_FILE, USER_TOWER_MODEL, WEIGHTS_FILE, check_exported

#: The two ways the route computes user vectors.
USER_VECTOR_PATHS = ("inprocess", "triton")


@dataclass(frozen=True)
class UserTowerServing:
    """Where the user tower runs: Triton servers at ``urls`` (HOST:PORT), else an embedded
    tritonserver over ``model_repo``."""

    model_repo: str = "model_repo"
    urls: tuple[str, ...] = ()
    protocol: Literal["grpc", "http"] = "grpc"
    model_name: str = USER_TOWER_MODEL


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_same_weights(serving: UserTowerServing, version: int, checkpoint: Path) -> Path:
    """The exported version directory, refused unless it holds ``checkpoint``'s weights."""
    check_exported(serving.model_repo, serving.model_name)
    version_dir = Path(serving.model_repo) / serving.model_name / str(version)
    if not (version_dir / WEIGHTS_FILE).is_file():
        raise UserError(
            f"{serving.model_name} version {version} is not exported in {serving.model_repo}: publish it "
            "with `onepiece index publish` (or `onepiece export`)"
        )
    if _sha256(version_dir / WEIGHTS_FILE) != _sha256(Path(checkpoint) / WEIGHTS_FILE):
        raise UserError(
            f"{version_dir} does not hold the weights of checkpoint {checkpoint}: user vectors from the "
            "server would not match the item index's vectors"
        )
    return version_dir


@contextlib.contextmanager
def user_tower_client(serving: UserTowerServing, version: int, checkpoint: str | Path) -> Iterator[TritonRankerClient]:
    """A client of the user tower ``version``, preflighted against ``checkpoint``'s config
    (and, embedded, its weights), on ``serving.urls`` or on an embedded server."""
    checkpoint = Path(checkpoint)
    config_json = (checkpoint / CONFIG_FILE).read_text()

    @contextlib.contextmanager
    def client_on(urls: tuple[str, ...]) -> Iterator[TritonRankerClient]:
        config = TritonClientConfig(urls=urls, model_name=serving.model_name, model_version=version,
                                    protocol=serving.protocol)
        with TritonRankerClient(config) as client:
            client.preflight(config_json)
            yield client

    if serving.urls:
        with client_on(serving.urls) as client:
            yield client
        return
    from onepiece.serving.server import TritonServerConfig, embedded_triton

    check_same_weights(serving, version, checkpoint)
    server_config = TritonServerConfig(Path(serving.model_repo), models=(serving.model_name,))
    with embedded_triton(server_config) as server:
        url = server.grpc_url if serving.protocol == "grpc" else server.http_url
        with client_on((url,)) as client:
            yield client
