"""Registry updates through the Feast SDK: plan, compatibility check, apply.

A FeatureService is a model's contract: every service already in the registry is
taken to be in use (a model may have been trained with it). An update is refused,
unless forced, when it would remove such a service, remove a feature view or feature
that a service depends on, change that feature's type, or change what the service
names. Sources are validated first; a refused update leaves the registry untouched.

Every successful apply records the fingerprint of the definitions it applied (the
repository's definition files and its ``feature_store.yaml``) in
``<data>/feast/applied_definitions.json``, so a scheduler can tell cheaply whether
``features/`` changed since (:func:`definitions_fingerprint`, :func:`applied_fingerprint`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from onepiece.errors import UserError
from onepiece.features.repo import FeatureRepoConfig, load_definitions, open_store
from onepiece.features.validate import validate_sources
from onepiece.storage import fingerprint_files, write_json_atomic

APPLIED_RECORD = Path("feast") / "applied_definitions.json"


@dataclass(frozen=True)
class Plan:
    """What an apply would change: Feast's registry and infrastructure diffs as text,
    and the breaking changes found (empty when the update is compatible)."""

    registry_diff: str
    infra_diff: str
    breaking: tuple[str, ...]

    def __str__(self) -> str:
        lines = [self.registry_diff.rstrip(), self.infra_diff.rstrip()]
        if self.breaking:
            lines.append("Breaking changes for feature services in use:")
            lines += [f"  - {problem}" for problem in self.breaking]
        return "\n".join(line for line in lines if line) + "\n"


class IncompatibleChange(UserError):
    """The update would break a feature service in use (apply with force to override)."""


def _service_features(services, views) -> dict[str, dict[tuple[str, str], str]]:
    """{service: {(view, feature): dtype}} for feast FeatureService objects."""
    by_name = {view.name: view for view in views}
    result: dict[str, dict[tuple[str, str], str]] = {}
    for service in services:
        features: dict[tuple[str, str], str] = {}
        for projection in service.feature_view_projections:
            view = by_name.get(projection.name)
            declared = {f.name: str(f.dtype) for f in (view.features if view else [])}
            for field in projection.features:
                features[(projection.name, field.name)] = declared.get(
                    field.name, str(field.dtype)
                )
        result[service.name] = features
    return result


def breaking_changes(current_services, current_views, new_contents) -> list[str]:
    """Every way ``new_contents`` breaks a service of the current registry."""
    old = _service_features(current_services, current_views)
    new = _service_features(new_contents.feature_services, new_contents.feature_views)
    new_views = {view.name: view for view in new_contents.feature_views}
    problems: list[str] = []
    for service, features in sorted(old.items()):
        if service not in new:
            problems.append(f"feature service '{service}' is in use and would be removed")
            continue
        for (view, feature), dtype in sorted(features.items()):
            where = f"feature view '{view}', feature '{feature}'"
            if view not in new_views:
                problems.append(
                    f"{where}: the feature view would be removed, "
                    f"but feature service '{service}' depends on it"
                )
                continue
            declared = {f.name: str(f.dtype) for f in new_views[view].features}
            if feature not in declared:
                problems.append(
                    f"{where}: would be removed, but feature service '{service}' depends on it"
                )
            elif declared[feature] != dtype:
                problems.append(
                    f"{where}: type would change from {dtype} to {declared[feature]}, "
                    f"but feature service '{service}' depends on it"
                )
            elif (view, feature) not in new[service]:
                problems.append(
                    f"{where}: feature service '{service}' would no longer name it "
                    f"(a model trained with it needs it; make a new service version)"
                )
        for view, feature in sorted(set(new[service]) - set(features)):
            problems.append(
                f"feature view '{view}', feature '{feature}': would be added to feature "
                f"service '{service}' (make a new service version instead)"
            )
    return problems


def _current(store) -> tuple[list, list]:
    """The feature services and views of the registry (empty before the first apply)."""
    registry_path = store.config.registry.path
    if "://" not in str(registry_path) and not Path(registry_path).exists():
        return [], []
    project = store.project
    registry = store.registry
    services = registry.list_feature_services(project, allow_cache=False)
    views = registry.list_feature_views(project, allow_cache=False)
    return services, views


def plan(repo: FeatureRepoConfig, validate: bool = True) -> Plan:
    """Validate the repository's sources and diff its definitions against the registry."""
    contents = load_definitions(repo)
    if validate:
        validate_sources(contents)
    store = open_store(repo)
    registry_diff, infra_diff, _ = store.plan(contents)
    services, views = _current(store)
    return Plan(
        registry_diff.to_string(),
        infra_diff.to_string(),
        tuple(breaking_changes(services, views, contents)),
    )


def apply(repo: FeatureRepoConfig, force: bool = False) -> Plan:
    """Validate, check compatibility with the services in use, then apply.

    Raises IncompatibleChange (registry untouched) when the update breaks a service in
    use and ``force`` is False.
    """
    from feast.repo_operations import extract_objects_for_apply_delete

    fingerprint = definitions_fingerprint(repo)  # before loading: what this apply reads
    contents = load_definitions(repo)
    validate_sources(contents)
    store = open_store(repo)
    services, views = _current(store)
    problems = breaking_changes(services, views, contents)
    if problems and not force:
        raise IncompatibleChange(
            f"feature repository {repo.repo_dir}: refusing to apply "
            f"(the registry is unchanged; use --force to override):\n  - "
            + "\n  - ".join(problems)
        )
    registry_diff, infra_diff, new_infra = store.plan(contents)
    if store._should_use_plan():
        # What `feast apply` does for the local provider: apply the planned diffs, so
        # that the infrastructure recorded in the registry matches the plan.
        store._apply_diffs(registry_diff, infra_diff, new_infra)
    else:
        to_apply, to_delete, _, _ = extract_objects_for_apply_delete(
            store.project, store.registry, contents
        )
        store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    _record_applied(repo, fingerprint)
    return Plan(registry_diff.to_string(), infra_diff.to_string(), tuple(problems))


# --- what was applied last --------------------------------------------------------------


def definitions_fingerprint(repo: FeatureRepoConfig) -> str:
    """A content fingerprint of what an apply reads: the definition files Feast loads
    (its ``.feastignore`` honoured) and the repository's store configuration."""
    from feast.repo_operations import get_repo_files

    repo_dir = Path(repo.repo_dir).resolve()
    files = [*get_repo_files(repo_dir), repo_dir / repo.yaml_name]
    return fingerprint_files([str(f) for f in files])


def _record_path(repo: FeatureRepoConfig) -> Path:
    return Path(repo.resolved_data_root()) / APPLIED_RECORD


def applied_fingerprint(repo: FeatureRepoConfig) -> str | None:
    """The fingerprint recorded by the last successful apply over this data root, or
    None when none was recorded (or the record is unreadable: then apply again)."""
    try:
        return str(json.loads(_record_path(repo).read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record_applied(repo: FeatureRepoConfig, fingerprint: str) -> None:
    """Replace the record in one step (write aside, ``os.replace``)."""
    path = _record_path(repo)
    record = {
        "fingerprint": fingerprint,
        "repo_dir": str(Path(repo.repo_dir).resolve()),
        "applied_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(record, path)
