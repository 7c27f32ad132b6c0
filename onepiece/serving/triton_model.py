"""The Triton Python-backend model for every version of ``onepiece_ranker`` and of the
retrieval model's ``onepiece_user_tower``.

Each ``model_repo/<model>/<N>/model.py`` re-exports :class:`TritonPythonModel` from here,
so the serving logic is versioned with the package, not copied per version. The user
tower (its config.pbtxt declares the ``user_vectors`` output) runs each request's
contexts through ``OnePiece.encode_users``; everything below is the ranker's.

- ``initialize`` rebuilds the model from the version directory with
  ``onepiece.model.load_checkpoint`` (safetensors, no unpickling), checks that its
  config matches the fingerprint ``config.pbtxt`` records for this version, and picks the
  device from the instance kind (CUDA with bf16 autocast on a GPU instance).
- ``execute`` concatenates the requests of a dynamic batch that share a shape, runs ONE
  ``score()`` call under ``torch.inference_mode()`` and returns exactly one response per
  request (errors attached to that response, never raised). The layout comes from the
  inputs config.pbtxt declares: per-group requests are concatenated along the batch;
  shared-context bundles (``group_context`` present) are merged by
  ``ModelInputs.from_bundles`` and each gets its own groups' rows back.
- Tensors cross the stub boundary through DLPack both ways: with numpy 2, outputs built
  from numpy arrays come back empty (platform notes).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import triton_python_backend_utils as pb_utils  # provided by the Python backend stub
from torch.utils.dlpack import from_dlpack, to_dlpack


class TritonPythonModel:
    """Triton's Python-backend interface: initialize / execute / finalize."""

    def initialize(self, args: dict[str, Any]) -> None:
        from onepiece.model import load_checkpoint
        from onepiece.serving.export import CONFIG_FILE, WEIGHTS_FILE, config_sha256

        model_config = json.loads(args["model_config"])
        version = args["model_version"]
        version_dir = Path(args["model_repository"]) / version
        if not (version_dir / WEIGHTS_FILE).is_file():
            raise pb_utils.TritonModelException(
                f"{version_dir} has no {WEIGHTS_FILE}: run `onepiece export` to write version "
                f"{version}"
            )
        recorded = model_config.get("parameters", {}).get(f"v{version}.config_sha256", {})
        actual = config_sha256((version_dir / CONFIG_FILE).read_text())
        if recorded.get("string_value") != actual:
            raise pb_utils.TritonModelException(
                f"{version_dir / CONFIG_FILE} does not match config.pbtxt's v{version}."
                "config_sha256: regenerate the repository with `onepiece export`"
            )
        gpu = args["model_instance_kind"] == "GPU"
        threads = model_config.get("parameters", {}).get("cpu_threads", {}).get("string_value")
        if not gpu and threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")
        self.model = load_checkpoint(version_dir, device=self.device)
        self.input_names = [spec["name"] for spec in model_config["input"]]
        self.output_names = [spec["name"] for spec in model_config["output"]]
        self.shared = "group_context" in self.input_names
        self.user_tower = "user_vectors" in self.output_names  # a retrieval model's user tower

    def _inputs(self, request: Any) -> dict[str, torch.Tensor]:
        return {
            name: from_dlpack(pb_utils.get_input_tensor_by_name(request, name).to_dlpack())
            for name in self.input_names
        }

    def _run(self, batch: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Score requests of identical (padded) shapes in one forward pass; split the outputs."""
        from onepiece.model import score
        from onepiece.model.inputs import ModelInputs

        if self.shared:
            inputs, bundles = ModelInputs.from_bundles(batch)  # contexts once, all groups
            sizes = [n * g for n, g in bundles]
        else:
            sizes = [int(next(iter(t.values())).shape[0]) for t in batch]
            # A lone request (the client's requests are already a preferred batch) is
            # scored straight from the stub's shared-memory views: no concatenation copy.
            inputs = ModelInputs.from_tensors(
                {name: _concat([t[name] for t in batch]) for name in self.input_names}
            )
        with torch.inference_mode():  # score() adds bf16 autocast on CUDA
            probs = score(self.model, inputs.to(self.device))  # task -> [groups, C]
        outputs = {f"p_{task}": p.float().cpu().contiguous() for task, p in probs.items()}
        split = {name: outputs[name].split(sizes) for name in self.output_names}
        results = [{name: split[name][i] for name in self.output_names} for i in range(len(batch))]
        if self.shared:  # each request's [n * G, C] back to its [n, G, C]
            results = [
                {name: t.reshape(n, g, t.shape[-1]) for name, t in out.items()}
                for out, (n, g) in zip(results, bundles)
            ]
        return results

    def _user_vectors(self, request: Any) -> Any:
        """User tower: one request's contexts -> their user vectors [B, S, d], in one
        forward of their own. A request is already a batch of contexts (the route sends
        its fixed batches), and running it alone keeps the vectors bit for bit those of
        the route's in-process path, which runs the same batches."""
        from onepiece.model.inputs import ModelInputs
        from onepiece.model.model import _autocast  # bf16 on CUDA, as score(); float32 on the CPU

        try:
            inputs = ModelInputs.from_contexts(self._inputs(request))
            with torch.inference_mode(), _autocast(self.device):
                vectors = self.model.encode_users(inputs.to(self.device))
            return _response({"user_vectors": vectors.float().cpu().contiguous()})
        except Exception as err:  # noqa: BLE001 (reported on this request's response)
            return _error(f"user vectors failed: {err}")

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.user_tower:
            return [self._user_vectors(request) for request in requests]
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        tensors: dict[int, dict[str, torch.Tensor]] = {}
        for i, request in enumerate(requests):
            try:
                tensors[i] = self._inputs(request)
            except Exception as err:  # noqa: BLE001 (reported on this request's response)
                responses[i] = _error(f"reading inputs: {err}")
                continue
            # Shared bundles merge whatever their R and G (dims 1); padded widths must agree.
            first = 2 if self.shared else 1
            shape_key = tuple(tuple(t.shape[first:]) for t in tensors[i].values())
            groups[shape_key].append(i)
        for members in groups.values():
            for i, response in zip(members, self._score([tensors[i] for i in members])):
                responses[i] = response
        return responses

    def _score(self, batch: list[dict[str, torch.Tensor]]) -> list[Any]:
        """Responses for same-shaped requests; a bad request fails alone, not its batch."""
        try:
            return [_response(out) for out in self._run(batch)]
        except Exception as err:  # noqa: BLE001 (reported on the request's response)
            if len(batch) == 1:
                return [_error(f"scoring failed: {err}")]
            return [self._score([one])[0] for one in batch]

    def finalize(self) -> None:
        del self.model


def _concat(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _response(outputs: dict[str, torch.Tensor]) -> Any:
    return pb_utils.InferenceResponse(
        [pb_utils.Tensor.from_dlpack(name, to_dlpack(t)) for name, t in outputs.items()]
    )


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
