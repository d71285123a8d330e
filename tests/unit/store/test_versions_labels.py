"""Staging-label moves, the label cap, idempotency outcomes and retention of unlabelled versions.

The sequences below are the ones recorded against real AWS (LocalStack snapshot tests of label cycles)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coffer.core import errors
from coffer.core import versions as v
from coffer.core.model import AWSCURRENT as CUR
from coffer.core.model import AWSPENDING as PENDING
from coffer.core.model import AWSPREVIOUS as PREV
from coffer.core.model import SecretValue


class Secret:
    """A secret's versions and labels, driven only by the pure functions under test."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}
        self.versions: list[str] = []

    def put(self, vid: str, stages: list[str] | None = None) -> None:
        """CreateSecret / PutSecretValue / UpdateSecret with a value."""
        self.versions.append(vid)
        self.labels = v.labels_for_new_value(self.labels, vid, stages)

    def move(self, label: str, *, to: str | None = None, frm: str | None = None) -> None:
        """UpdateSecretVersionStage."""
        self.labels = v.update_version_stage(
            self.labels, label, move_to=to, remove_from=frm, known_versions=self.versions
        )

    def view(self) -> dict[str, tuple[str, ...]]:
        return v.versions_to_stages(self.labels)


def test_create_then_default_put_moves_current_and_previous() -> None:
    s = Secret()
    s.put("v1")
    assert s.view() == {"v1": (CUR,)}
    s.put("v2")
    assert s.view() == {"v1": (PREV,), "v2": (CUR,)}
    s.put("v3")
    # the old AWSPREVIOUS holder loses it and becomes deprecated
    assert s.view() == {"v2": (PREV,), "v3": (CUR,)}


def test_recorded_pending_then_move_current_then_default_put() -> None:
    s = Secret()
    s.put("v1")
    s.put("v2", [PENDING])
    assert s.view() == {"v1": (CUR,), "v2": (PENDING,)}
    s.move(CUR, to="v2", frm="v1")
    # UpdateSecretVersionStage does not strip AWSPENDING
    assert s.view() == {"v1": (PREV,), "v2": (CUR, PENDING)}
    s.put("v3")
    # a default put drops the old current's AWSPENDING too; v1 is deprecated
    assert s.view() == {"v2": (PREV,), "v3": (CUR,)}


def test_recorded_pending_moves_to_the_new_version_without_error() -> None:
    s = Secret()
    s.put("v1")
    s.put("v2", [PENDING])
    s.move(CUR, to="v2", frm="v1")
    s.put("v3", [PENDING])
    assert s.view() == {"v1": (PREV,), "v2": (CUR,), "v3": (PENDING,)}
    s.move(CUR, to="v3", frm="v2")
    assert s.view() == {"v2": (PREV,), "v3": (CUR, PENDING)}


def test_recorded_custom_labels_move_individually() -> None:
    s = Secret()
    s.put("v1")
    s.put("v2", ["one", "two", "three"])
    assert s.view() == {"v1": (CUR,), "v2": ("one", "three", "two")}
    s.put("v3", ["one", "two", "four"])
    assert s.view() == {"v1": (CUR,), "v2": ("three",), "v3": ("four", "one", "two")}


def test_recorded_taking_every_custom_label_deprecates_the_old_version() -> None:
    s = Secret()
    s.put("v1")
    s.put("v2", ["one", "two", "three"])
    s.put("v3", ["one", "two", "three", "four"])
    assert s.view() == {"v1": (CUR,), "v3": ("four", "one", "three", "two")}


def test_recorded_custom_labels_survive_current_moves() -> None:
    s = Secret()
    s.put("vs")
    s.put("v2", [CUR, "PUT0"])
    assert s.view() == {"vs": (PREV,), "v2": (CUR, "PUT0")}
    s.put("v3", [PENDING, "PUT1"])
    assert s.view() == {"vs": (PREV,), "v2": (CUR, "PUT0"), "v3": (PENDING, "PUT1")}
    s.move(CUR, to="v3", frm="v2")
    assert s.view() == {"v2": (PREV, "PUT0"), "v3": (CUR, PENDING, "PUT1")}
    s.put("v4", [PENDING, "PUT2"])
    assert s.view() == {"v2": (PREV, "PUT0"), "v3": (CUR, "PUT1"), "v4": (PENDING, "PUT2")}
    s.move(CUR, to="v4", frm="v3")
    # v2 keeps living through its custom label; v3 becomes the previous version
    assert s.view() == {"v2": ("PUT0",), "v3": (PREV, "PUT1"), "v4": (CUR, PENDING, "PUT2")}


def test_aws_prefixed_custom_labels_are_accepted() -> None:
    s = Secret()
    s.put("v1")
    s.put("v2", ["AWSSOMETHING", PENDING, "PUT1"])
    assert s.view() == {"v1": (CUR,), "v2": (PENDING, "AWSSOMETHING", "PUT1")}


def test_first_version_is_always_current_even_if_not_requested() -> None:
    s = Secret()
    s.put("v1", ["custom"])
    assert s.view() == {"v1": (CUR, "custom")}
    s.put("v2", [PENDING])
    assert s.view() == {"v1": (CUR, "custom"), "v2": (PENDING,)}


def test_filling_a_rotation_placeholder_does_not_make_it_current() -> None:
    labels = v.labels_for_new_value({PENDING: "p"}, "p", [PENDING], ensure_current=False)
    assert labels == {PENDING: "p"}


def test_rollback_moves_current_back_and_previous_follows() -> None:
    s = Secret()
    s.put("v1")
    s.put("v2")
    s.move(CUR, to="v1", frm="v2")
    assert s.view() == {"v1": (CUR,), "v2": (PREV,)}


def test_attaching_a_label_already_on_the_version_changes_nothing() -> None:
    s = Secret()
    s.put("v1")
    s.put("v2")
    before = dict(s.labels)
    s.move(CUR, to="v2", frm="v2")
    assert s.labels == before


# --- UpdateSecretVersionStage errors ------------------------------------------------------------------------


def test_moving_an_attached_label_needs_remove_from_version_id() -> None:
    s = Secret()
    s.put("v1")
    s.put("v2", [PENDING])
    with pytest.raises(errors.InvalidParameter) as info:
        s.move(CUR, to="v2")
    assert info.value.code == "InvalidParameterException"
    assert info.value.message == (
        "The parameter RemoveFromVersionId can't be empty. Staging label AWSCURRENT is currently attached to "
        "version v1, so you must explicitly reference that version in RemoveFromVersionId."
    )


def test_an_unattached_label_moves_without_remove_from_version_id() -> None:
    s = Secret()
    s.put("v1")
    s.put("v2", ["x"])
    s.move("fresh", to="v2")
    assert s.view() == {"v1": (CUR,), "v2": ("fresh", "x")}


def test_placeholder_only_secret_gets_current_without_remove_from() -> None:
    s = Secret()
    s.versions.append("p")
    s.labels = {PENDING: "p"}
    s.move(CUR, to="p")
    assert s.view() == {"p": (CUR, PENDING)}


def test_remove_from_version_id_alone_detaches_the_label() -> None:
    s = Secret()
    s.put("v1")
    s.put("v2", ["x"])
    s.move("x", frm="v2")
    assert s.view() == {"v1": (CUR,)}


def test_remove_from_the_wrong_version_is_refused() -> None:
    s = Secret()
    s.put("v1")
    s.put("v2", ["x"])
    with pytest.raises(errors.InvalidParameter, match="currently attached to version v2, not to version v1"):
        s.move("x", to="v1", frm="v1")


def test_unknown_versions_are_refused() -> None:
    s = Secret()
    s.put("v1")
    with pytest.raises(errors.InvalidParameter, match="VersionId: nope"):
        s.move("x", to="nope")
    with pytest.raises(errors.InvalidParameter, match="VersionId: nope"):
        s.move(CUR, to="v1", frm="nope")


def test_current_cannot_just_be_removed() -> None:
    s = Secret()
    s.put("v1")
    with pytest.raises(errors.InvalidParameter, match="AWSCURRENT"):
        s.move(CUR, frm="v1")


def test_neither_move_nor_remove_is_refused() -> None:
    s = Secret()
    s.put("v1")
    with pytest.raises(errors.InvalidParameter):
        s.move("x")


# --- label cap ----------------------------------------------------------------------------------------------


def test_twenty_labels_fit_and_the_twenty_first_does_not() -> None:
    labels = {f"L{i}": "v1" for i in range(v.MAX_LABELS)}
    v.check_label_cap(labels)
    with pytest.raises(errors.LimitExceeded) as info:
        v.check_label_cap({**labels, "one-more": "v1"})
    assert info.value.code == "LimitExceededException"


# --- idempotency --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing_has_value", "same", "outcome"),
    [
        (None, None, v.TokenOutcome.NEW),  # token unused: new version
        (True, True, v.TokenOutcome.REPLAY),  # same token, same value: no-op success
        (True, False, v.TokenOutcome.CONFLICT),  # same token, other value: ResourceExistsException
        (False, None, v.TokenOutcome.FILL),  # the valueless rotation placeholder gets filled
    ],
)
def test_token_outcomes(existing_has_value: bool | None, same: bool | None, outcome: v.TokenOutcome) -> None:
    assert v.token_outcome(existing_has_value=existing_has_value, same=same) is outcome


def test_values_compare_by_kind_and_bytes() -> None:
    assert v.same_value(SecretValue.of_string("abc"), SecretValue.of_string("abc"))
    assert not v.same_value(SecretValue.of_string("abc"), SecretValue.of_string("abd"))
    assert not v.same_value(SecretValue.of_string("abc"), SecretValue.of_binary(b"abc"))


def test_token_messages() -> None:
    assert v.token_in_use_message("t" * 36, "arn:x") == (
        f"You can't use ClientRequestToken {'t' * 36} because that value is already in use for a version of "
        "secret arn:x."
    )
    assert (
        v.already_exists_message("db/prod")
        == "The operation failed because the secret db/prod already exists."
    )


# --- retention ----------------------------------------------------------------------------------------------

NOW = datetime(2026, 1, 10, tzinfo=UTC)


def facts(n: int, *, age: timedelta, labelled: bool = False, start: int = 0) -> list[v.VersionFacts]:
    return [
        v.VersionFacts(
            version_id=f"v{start + i:03d}",
            created_date=NOW - age - timedelta(seconds=n - i),
            labelled=labelled,
        )
        for i in range(n)
    ]


def test_no_pruning_up_to_one_hundred_versions() -> None:
    assert v.plan_prune(facts(99, age=timedelta(days=3)), now=NOW, incoming=1) == []


def test_oldest_old_unlabelled_versions_go_first() -> None:
    old = facts(60, age=timedelta(days=3))
    young = facts(40, age=timedelta(hours=1), start=60)
    assert v.plan_prune(old + young, now=NOW, incoming=1) == ["v000"]
    assert v.plan_prune(old + young, now=NOW, incoming=3) == ["v000", "v001", "v002"]


def test_labelled_and_young_versions_are_never_pruned_and_a_new_one_is_refused() -> None:
    labelled = facts(50, age=timedelta(days=3), labelled=True)
    young = facts(50, age=timedelta(hours=23), start=50)
    with pytest.raises(errors.LimitExceeded) as info:
        v.plan_prune(labelled + young, now=NOW, incoming=1)
    assert info.value.code == "LimitExceededException"


def test_label_moves_alone_never_raise_the_version_limit() -> None:
    young = facts(101, age=timedelta(hours=1))
    assert v.plan_prune(young, now=NOW, incoming=0) == []
