"""Where the feature repository is, and how a Feast FeatureStore is built on it.

``features/feature_store.yaml`` names the registry and online store under
``${ONEPIECE_DATA}``; here that variable is filled with the configured data root (made
absolute), so a test can point a copy of the repository at a temporary data root
without touching the environment of the process.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from onepiece.errors import UserError
from onepiece.storage import DATA_ENV, data_root

#: The project's own feature repository.
PROJECT_REPO = Path(__file__).resolve().parents[2] / "features"
DEFAULT_FEATURE_SERVICE = "onepiece_ranker_v1"
#: Infrastructure profiles: $ONEPIECE_FEAST_PROFILE -> the repository's yaml. The scale
#: profile's sources are declared as SparkSources by features/data_sources.py, which
#: reads the same variable, so one setting switches both.
PROFILE_ENV = "ONEPIECE_FEAST_PROFILE"
PROFILES = {"local": "feature_store.yaml", "scale": "profiles/scale.feature_store.yaml"}


def profile_yaml() -> str:
    """The feature_store yaml of the profile $ONEPIECE_FEAST_PROFILE names (default local)."""
    profile = os.environ.get(PROFILE_ENV) or "local"
    if profile not in PROFILES:
        raise UserError(f"${PROFILE_ENV}={profile!r} is not a profile; expected one of {sorted(PROFILES)}")
    return PROFILES[profile]


@dataclass(frozen=True)
class FeatureRepoConfig:
    """A feature repository directory, the data root it reads, and the service to serve."""

    repo_dir: Path = PROJECT_REPO
    data_root: str | None = None  # None: $ONEPIECE_DATA, else ./data
    feature_service: str = DEFAULT_FEATURE_SERVICE
    yaml_name: str = field(default_factory=profile_yaml)  # relative to repo_dir
    env: dict[str, str] = field(default_factory=dict)  # more ${VARS} for the yaml

    def resolved_data_root(self) -> str:
        """The data root, absolute (Feast stores source paths in the registry)."""
        root = data_root(self.data_root)
        return root if "://" in root else os.path.abspath(root)

    def variables(self) -> dict[str, str]:
        # The profile goes with the yaml: features/data_sources.py reads it to declare
        # SparkSources for the scale profile's Spark offline store.
        profile = {v: k for k, v in PROFILES.items()}.get(self.yaml_name)
        chosen = {PROFILE_ENV: profile} if profile else {}
        return {**chosen, **self.env, DATA_ENV: self.resolved_data_root()}


def repo_config(repo: FeatureRepoConfig):
    """The Feast RepoConfig of ``repo``, with its ${VARS} filled in."""
    from feast.repo_config import RepoConfig

    path = Path(repo.repo_dir) / repo.yaml_name
    if not path.is_file():
        raise UserError(f"feature repository: no {repo.yaml_name} in {repo.repo_dir}")
    text = path.read_text()
    for name, value in repo.variables().items():
        text = text.replace("${" + name + "}", value)
    raw = yaml.safe_load(os.path.expandvars(text))
    config = RepoConfig(**raw)
    config.repo_path = Path(repo.repo_dir)
    return config


def open_store(repo: FeatureRepoConfig):
    """A Feast FeatureStore on ``repo`` (its registry and online store under the data root)."""
    from feast import FeatureStore

    Path(repo.resolved_data_root(), "feast").mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(repo.repo_dir), config=repo_config(repo))


@contextlib.contextmanager
def _importable(repo: FeatureRepoConfig) -> Iterator[list[str]]:
    """Make the repository's modules importable afresh, with its ${VARS} in the environment.

    Feast repositories import each other by top-level name (``from entities import
    item``), so the directory goes on sys.path; their modules are dropped from
    sys.modules before and after, so an edited or another repository is never served
    from the import cache.
    """
    from feast.repo_operations import get_repo_files

    repo_dir = Path(repo.repo_dir).resolve()
    files = get_repo_files(repo_dir)
    names = [".".join(f.relative_to(repo_dir).with_suffix("").parts) for f in files]
    saved_env = {k: os.environ.get(k) for k in repo.variables()}

    def forget() -> None:
        for name in names:
            sys.modules.pop(name, None)

    forget()
    os.environ.update(repo.variables())
    sys.path.insert(0, str(repo_dir))
    write_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # as `feast apply` does: no __pycache__ in the repository
    try:
        yield names
    finally:
        sys.dont_write_bytecode = write_bytecode
        sys.path.remove(str(repo_dir))
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        forget()
        importlib.invalidate_caches()


def load_definitions(repo: FeatureRepoConfig):
    """The Feast objects the repository's Python files declare (feast's RepoContents)."""
    from feast.project import Project
    from feast.repo_operations import parse_repo

    with _importable(repo) as names:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as err:  # a broken definition file: name it
                raise UserError(
                    f"feature repository {repo.repo_dir}: cannot load {name}.py: "
                    f"{type(err).__name__}: {err}"
                ) from err
        # parse_repo resolves module names from the working directory.
        with _chdir(Path(repo.repo_dir).resolve()):
            contents = parse_repo(Path(repo.repo_dir).resolve())
    if not contents.projects:
        project = repo_config(repo).project
        contents.projects.append(Project(name=project, description=""))
    return contents


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
