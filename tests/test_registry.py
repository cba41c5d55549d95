"""The registry of backfill classes, their defaults, parameter cleaning and system checks."""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterator

import pytest
from django import forms
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from backfills import ModelBackfill, register
from backfills.checks import check_registered_backfills
from backfills.exceptions import ImproperlyDefinedBackfill, InvalidParameters, UnknownBackfill
from backfills.registry import Registry, registry
from example.backfills import CopyCommentsToSearch, FillBodyLength, ReindexByCreation
from example.models import Comment
from tests.testapp.backfills import TouchEvents, TouchItems, TouchOddItems, TouchUUIDItems
from tests.testapp.models import Item, Tagged

EXAMPLE_NAMES = {"copy-comments-to-search", "fill-body-length", "reindex-by-creation"}
TESTAPP_NAMES = {"touch-items", "touch-odd-items", "touch-uuid-items", "touch-events"}


@pytest.fixture(autouse=True)
def restore_registry() -> Iterator[None]:
    """Whatever a test registers or unregisters, the global registry is put back after it."""
    snapshot = dict(registry._backfills)
    try:
        yield
    finally:
        registry._backfills.clear()
        registry._backfills.update(snapshot)


def backfill_class(class_name: str, **attrs: object) -> type[ModelBackfill]:
    """A ModelBackfill subclass built at run time (its module and qualname are this file's)."""
    return type(class_name, (ModelBackfill,), {"__module__": __name__, **attrs})


def check_ids(messages: list) -> list[tuple[str, object]]:
    return [(message.id, message.obj) for message in messages]


# --- register ---------------------------------------------------------------------------


def test_duplicate_name_from_a_different_class_is_refused_naming_both():
    first = backfill_class("FirstCopy", name="dup", model=Item)
    second = backfill_class("SecondCopy", name="dup", model=Item)
    fresh = Registry()
    fresh.register(first)

    with pytest.raises(ImproperlyDefinedBackfill) as excinfo:
        fresh.register(second)

    message = str(excinfo.value)
    assert "'dup'" in message
    assert f"{__name__}.FirstCopy" in message
    assert f"{__name__}.SecondCopy" in message
    assert fresh.get("dup") is first


def test_duplicate_name_of_an_already_registered_backfill_is_refused():
    clash = backfill_class("Impostor", name="touch-items", model=Item)

    with pytest.raises(ImproperlyDefinedBackfill, match=r"tests\.testapp\.backfills\.TouchItems"):
        register(clash)

    assert registry.get("touch-items") is TouchItems


def test_same_class_path_registered_again_replaces_silently():
    # A module imported twice re-creates its classes: same module and qualname.
    old = backfill_class("Reimported", name="reimported", model=Item)
    new = backfill_class("Reimported", name="reimported", model=Item)
    fresh = Registry()

    fresh.register(old)
    fresh.register(new)

    assert fresh.get("reimported") is new


@pytest.mark.parametrize(
    "candidate",
    [object, Item, "touch-items", TouchItems(), None],
    ids=["object", "model", "string", "instance", "none"],
)
def test_register_refuses_anything_but_a_model_backfill_subclass(candidate):
    fresh = Registry()
    with pytest.raises(ImproperlyDefinedBackfill, match="expects a ModelBackfill subclass"):
        fresh.register(candidate)
    assert fresh.all() == []


def test_register_refuses_a_class_without_model():
    no_model = backfill_class("NoModelHere")
    fresh = Registry()

    with pytest.raises(ImproperlyDefinedBackfill, match=r"NoModelHere must set `model`"):
        fresh.register(no_model)

    assert "no-model-here" not in fresh


def test_register_returns_the_class_so_it_works_as_a_decorator():
    @register
    class DecoratedBackfill(ModelBackfill):
        model = Item

    assert registry.get("decorated-backfill") is DecoratedBackfill


def test_unregister_removes_a_backfill():
    registry.unregister("touch-items")

    assert "touch-items" not in registry
    with pytest.raises(UnknownBackfill):
        registry.get("touch-items")


# --- get --------------------------------------------------------------------------------


def test_unknown_name_lists_the_known_backfills():
    with pytest.raises(UnknownBackfill) as excinfo:
        registry.get("no-such-backfill")

    message = str(excinfo.value)
    assert "'no-such-backfill'" in message
    for name in EXAMPLE_NAMES | TESTAPP_NAMES:
        assert name in message


def test_unknown_name_in_an_empty_registry_says_none_are_registered():
    with pytest.raises(UnknownBackfill, match="none are registered"):
        Registry().get("anything")


def test_all_is_sorted_by_name():
    names = [backfill.name for backfill in registry.all()]
    assert names == sorted(names)
    assert len(names) == len(set(names))


# --- class defaults ---------------------------------------------------------------------


def test_default_name_is_a_slug_of_the_class_name():
    class CopyCommentsToSearch(ModelBackfill):
        model = Comment

    class Fill(ModelBackfill):
        model = Comment

    assert CopyCommentsToSearch.name == "copy-comments-to-search"
    assert Fill.name == "fill"


def test_explicit_name_is_kept_and_a_subclass_without_one_gets_its_own():
    class Parent(ModelBackfill):
        name = "explicit-name"
        model = Item

    class ChildOfParent(Parent):
        pass

    assert Parent.name == "explicit-name"
    assert ChildOfParent.name == "child-of-parent"


def test_description_defaults_to_the_first_line_of_the_docstring():
    class Documented(ModelBackfill):
        """First line here.

        More detail that a listing should not show.
        """

        model = Item

    class Undocumented(ModelBackfill):
        model = Item

    class Described(ModelBackfill):
        """Docstring line."""

        description = "Explicit description."
        model = Item

    assert Documented.description == "First line here."
    assert Undocumented.description == ""
    assert Described.description == "Explicit description."


def test_cursor_fields_given_as_a_string_become_a_tuple():
    class StringCursor(ModelBackfill):
        model = Item
        cursor_fields = "value"  # type: ignore[assignment]

    assert StringCursor.cursor_fields == ("value",)


# --- autodiscovery ----------------------------------------------------------------------


def test_autodiscovery_registered_the_example_and_testapp_backfills():
    names = {backfill.name for backfill in registry.all()}

    assert names >= EXAMPLE_NAMES | TESTAPP_NAMES
    assert registry.get("copy-comments-to-search") is CopyCommentsToSearch
    assert registry.get("fill-body-length") is FillBodyLength
    assert registry.get("reindex-by-creation") is ReindexByCreation
    assert registry.get("touch-items") is TouchItems
    assert registry.get("touch-odd-items") is TouchOddItems
    assert registry.get("touch-uuid-items") is TouchUUIDItems
    assert registry.get("touch-events") is TouchEvents


# --- clean_params / typed_params --------------------------------------------------------


def test_clean_params_fills_defaults_from_initial():
    assert TouchItems.clean_params({}) == {"sleep": 0.0, "poison_id": None, "transient": False}
    assert FillBodyLength.clean_params({}) == {"only_missing": True}


def test_clean_params_returns_typed_values():
    cleaned = TouchItems.clean_params({"sleep": "1.5", "poison_id": "7", "transient": "true"})

    assert cleaned == {"sleep": 1.5, "poison_id": 7, "transient": True}
    assert type(cleaned["sleep"]) is float
    assert type(cleaned["poison_id"]) is int


def test_clean_params_accepts_json_values():
    cleaned = TouchItems.clean_params({"sleep": 0.25, "poison_id": 3, "transient": True})
    assert cleaned == {"sleep": 0.25, "poison_id": 3, "transient": True}


def test_clean_params_is_json_ready_while_typed_params_is_typed():
    raw = {"since": "2024-05-01T12:00:00+00:00"}

    typed = ReindexByCreation.typed_params(raw)
    cleaned = ReindexByCreation.clean_params(raw)

    assert isinstance(typed["since"], datetime.datetime)
    assert isinstance(cleaned["since"], str)
    # The stored string parses back to the same value.
    assert ReindexByCreation.typed_params(cleaned) == typed


def test_clean_params_refuses_an_unknown_key_naming_it_and_the_known_ones():
    with pytest.raises(InvalidParameters) as excinfo:
        TouchItems.clean_params({"sleep": "0", "speed": "3"})

    message = str(excinfo.value)
    assert "Unknown parameter speed" in message
    assert "sleep, poison_id, transient" in message


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        ({"sleep": "-1"}, "sleep", "greater than or equal to 0"),
        ({"sleep": "abc"}, "sleep", "Enter a number"),
        ({"poison_id": "1.5"}, "poison_id", "Enter a whole number"),
        ({"transient": "maybe"}, "transient", "'maybe' is not a boolean"),
    ],
)
def test_clean_params_refuses_invalid_values(raw, field, fragment):
    with pytest.raises(InvalidParameters) as excinfo:
        TouchItems.clean_params(raw)

    assert fragment in str(excinfo.value)
    assert f"{field}:" in str(excinfo.value)
    assert list(excinfo.value.errors) == [field]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        (" on ", True),
    ],
)
def test_booleans_from_the_command_line_are_read_strictly(text, expected):
    assert TouchItems.clean_params({"transient": text})["transient"] is expected


def test_boolean_with_initial_true_can_be_turned_off():
    assert FillBodyLength.clean_params({"only_missing": "false"}) == {"only_missing": False}


def test_invalid_boolean_is_reported_together_with_other_errors():
    with pytest.raises(InvalidParameters) as excinfo:
        TouchItems.clean_params({"transient": "maybe", "sleep": "abc"})
    assert set(excinfo.value.errors) == {"transient", "sleep"}


def test_backfill_without_parameters_refuses_any_param():
    assert CopyCommentsToSearch.clean_params({}) == {}
    with pytest.raises(InvalidParameters, match=r"takes no parameters \(got batch, x\)"):
        CopyCommentsToSearch.clean_params({"x": "1", "batch": "2"})


def test_parameters_form_declared_inline_is_used():
    class Limited(ModelBackfill):
        model = Item

        class Parameters(forms.Form):
            limit = forms.IntegerField(initial=10, min_value=1)

    assert Limited.clean_params({}) == {"limit": 10}
    assert Limited.clean_params({"limit": "3"}) == {"limit": 3}
    with pytest.raises(InvalidParameters, match="limit"):
        Limited.clean_params({"limit": "0"})


# --- system checks ----------------------------------------------------------------------


def test_registered_backfills_pass_the_checks():
    assert check_registered_backfills() == []


def test_check_reports_e001_for_bad_cursor_fields():
    bad = backfill_class("BadLabelCursor", name="bad-label-cursor", model=Tagged)
    bad.cursor_fields = ("label",)
    register(bad)

    messages = check_registered_backfills()

    assert check_ids(messages) == [("backfills.E001", bad)]
    assert "not unique together" in messages[0].msg
    assert "label" in messages[0].msg


@pytest.mark.parametrize(
    ("cursor_fields", "fragment"),
    [
        (("maybe",), "may be NULL"),
        (("nope",), "is not a field"),
        (("tags",), "is not a column"),
        ((), "is empty"),
        (("id", "pk"), "repeat a column"),
    ],
)
def test_check_reports_e001_for_each_kind_of_bad_cursor(cursor_fields, fragment):
    bad = backfill_class("BadCursorKind", name="bad-cursor-kind", model=Tagged)
    bad.cursor_fields = cursor_fields
    register(bad)

    messages = check_registered_backfills()

    assert check_ids(messages) == [("backfills.E001", bad)]
    assert fragment in messages[0].msg


def test_check_reports_e002_for_a_batch_size_below_one():
    bad = backfill_class("ZeroBatch", name="zero-batch", model=Item, batch_size=0)
    register(bad)

    assert check_ids(check_registered_backfills()) == [("backfills.E002", bad)]


def test_manage_py_check_fails_on_a_bad_registered_backfill():
    bad = backfill_class("CheckedBadCursor", name="checked-bad-cursor", model=Tagged)
    bad.cursor_fields = ("label",)
    register(bad)

    with pytest.raises(SystemCheckError, match=r"backfills\.E001"):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())

    registry.unregister("checked-bad-cursor")
    call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("BACKFILLS_MAX_BATCH_SIZE", "lots", "BACKFILLS_MAX_BATCH_SIZE must be a number"),
        ("BACKFILLS_MAX_BATCH_SIZE", 0, "BACKFILLS_MAX_BATCH_SIZE must be at least 1"),
        ("BACKFILLS_HEARTBEAT_TIMEOUT", -5, "BACKFILLS_HEARTBEAT_TIMEOUT must be at least"),
        ("BACKFILLS_WORKER_CONCURRENCY", 0, "BACKFILLS_WORKER_CONCURRENCY must be at least 1"),
    ],
)
def test_a_bad_setting_fails_the_system_checks(settings, setting, value, message):
    from backfills.checks import check_settings

    assert check_settings() == []
    setattr(settings, setting, value)

    errors = check_settings()

    assert [error.id for error in errors] == ["backfills.E003"]
    assert message in errors[0].msg
