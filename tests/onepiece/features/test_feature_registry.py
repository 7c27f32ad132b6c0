"""Registry updates through the Feast SDK: validation, compatibility with services in use."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from feast_fixtures import T
from typer.testing import CliRunner

from onepiece.contract import ContractError
from onepiece.features import EntityRequest, open_store, side_features
from onepiece.features.registry import IncompatibleChange, apply, plan
from onepiece.features.repo import FeatureRepoConfig


def registry_file(repo: FeatureRepoConfig) -> Path:
    return Path(repo.resolved_data_root()) / "feast" / "registry.db"


def edit(repo: FeatureRepoConfig, file: str, old: str, new: str, header: str = "") -> None:
    path = Path(repo.repo_dir) / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(header + text.replace(old, new))


def item_view_features(repo: FeatureRepoConfig) -> dict[str, str]:
    registry = open_store(repo).registry
    view = registry.get_feature_view("item_features", "onepiece", allow_cache=False)
    return {f.name: str(f.dtype) for f in view.features}


def test_first_apply_creates_the_registry_and_then_nothing_is_left_to_plan(repo):
    first = plan(repo)
    assert "onepiece_ranker_v1" in first.registry_diff and not first.breaking
    assert open_store(repo).list_feature_services() == []  # plan registers nothing
    apply(repo)
    assert registry_file(repo).exists()
    again = plan(repo)
    assert "No changes to registry" in again.registry_diff
    assert "No changes to infrastructure" in again.infra_diff


def test_removing_a_feature_in_use_is_refused_until_forced(repo):
    apply(repo)
    before = registry_file(repo).read_bytes()
    edit(repo, "feature_views.py", 'schema=contract_fields(ITEM_FEATURES, "items"),',
         'schema=[f for f in contract_fields(ITEM_FEATURES, "items") if f.name != "ctr_7d"],')

    assert any("'item_features'" in p and "'ctr_7d'" in p for p in plan(repo).breaking)
    with pytest.raises(IncompatibleChange, match=r"feature view 'item_features', feature 'ctr_7d': would be removed"):
        apply(repo)
    assert registry_file(repo).read_bytes() == before
    assert "ctr_7d" in item_view_features(repo)

    apply(repo, force=True)
    assert "ctr_7d" not in item_view_features(repo)


def test_changing_the_type_of_a_feature_in_use_is_refused_until_forced(repo):
    apply(repo)
    before = registry_file(repo).read_bytes()
    edit(
        repo, "feature_views.py", 'schema=contract_fields(ITEM_FEATURES, "items"),',
        'schema=[Field(name=f.name, dtype=Float64 if f.name == "cvr_7d" else f.dtype)'
        ' for f in contract_fields(ITEM_FEATURES, "items")],',
        header="from feast import Field\nfrom feast.types import Float64\n",
    )
    with pytest.raises(IncompatibleChange, match=r"'item_features', feature 'cvr_7d': type would change from Float32 to Float64"):
        apply(repo)
    assert registry_file(repo).read_bytes() == before
    apply(repo, force=True)
    assert item_view_features(repo)["cvr_7d"] == "Float64"


def test_a_new_service_version_is_compatible_and_serves_defaults_for_what_it_omits(repo):
    apply(repo)
    edit(repo, "feature_services.py", "onepiece_ranker_v1 = FeatureService(", '''onepiece_ranker_v2 = FeatureService(
    name="onepiece_ranker_v2",
    features=[item_features_fv[["shop_id", "category_id", "price"]], user_profile_fv],
)

onepiece_ranker_v1 = FeatureService(''')
    result = apply(repo)
    assert not result.breaking and "onepiece_ranker_v2" in result.registry_diff

    v2 = dataclasses.replace(repo, feature_service="onepiece_ranker_v2")
    got = side_features(v2, EntityRequest.at(T, item_ids=[1], query_ids=[1]))
    assert set(got.unserved) == {"items.ctr_7d", "items.cvr_7d", "items.sales_30d",
                                 "queries.query_text", "queries.popularity_7d"}
    assert got.items["sales_30d"].to_pylist() == [0] and got.items["shop_id"].to_pylist() != [-1]
    assert got.queries["query_text"].to_pylist() == [""] and got.unknown["queries"] == 0


def test_removing_a_service_in_use_is_refused(repo):
    apply(repo)
    edit(repo, "feature_services.py", "onepiece_ranker_v1 = FeatureService(", "_unused = dict(")
    with pytest.raises(IncompatibleChange, match="feature service 'onepiece_ranker_v1' is in use and would be removed"):
        apply(repo)


def test_a_missing_source_is_named(repo):
    shutil.rmtree(Path(repo.resolved_data_root()) / "users")
    with pytest.raises(ContractError, match=r"feast source 'users_source' of feature view 'user_profile' at .*/users\): no Parquet files"):
        apply(repo)
    assert not registry_file(repo).exists()


def test_a_renamed_column_is_named_with_its_source(repo):
    path = Path(repo.resolved_data_root()) / "items" / "part-0.parquet"
    table = pq.read_table(path)
    renamed = ["item_price" if c == "price" else c for c in table.column_names]
    pq.write_table(table.rename_columns(renamed), path)
    with pytest.raises(ContractError) as err:
        plan(repo)
    assert err.value.column == "price"
    assert "feast source 'items_source'" in str(err.value) and str(path) in str(err.value)


def test_cli_plan_apply_and_refusal(repo):
    from onepiece.cli import app

    runner = CliRunner()
    common = ["--repo", str(repo.repo_dir), "--data", repo.resolved_data_root()]
    applied = runner.invoke(app, ["features", "apply", *common])
    assert applied.exit_code == 0, applied.output
    assert "Created feature service onepiece_ranker_v1" in applied.output
    edit(repo, "feature_views.py", 'schema=contract_fields(ITEM_FEATURES, "items"),',
         'schema=[f for f in contract_fields(ITEM_FEATURES, "items") if f.name != "price"],')
    planned = runner.invoke(app, ["features", "plan", *common])
    assert planned.exit_code == 0 and "feature 'price'" in planned.output
    refused = runner.invoke(app, ["features", "apply", *common])
    assert refused.exit_code == 2 and "'item_features', feature 'price'" in refused.output
    forced = runner.invoke(app, ["features", "apply", "--force", *common])
    assert forced.exit_code == 0, forced.output
