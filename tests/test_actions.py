"""The registry of action types and operations (reconciler/actions.py) against the sandbox's model of Zuora.

The sandbox is an independent model (it imports nothing from reconciler), so each side can gain or lose
a column without the other: these tests compare what each declares and, where the sandbox only says
it in code, what each does with the same rows.
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap

import pytest

from reconciler import actions
from reconciler.actions import MASS_ACTIONS, OPERATIONS
from reconciler.dataset import results
from reconciler.sandbox import customobjects, massupdater, records
from reconciler.sandbox.web import ApiError
from reconciler.spec import schema as specschema
from reconciler.spec.columns import ObjectTable, mass_table

# Registry columns without a value rule: nothing to probe, so they are listed here, and adding or removing one
# means changing this set too. Linked Transaction Key: the sandbox caps it at 32 characters, validate does not.
RULELESS = {("CreateRevenueSchedule", "Linked Transaction Key"), ("MPU", "Reference ID")}


def test_the_same_action_types_in_the_same_order():
    assert actions.ACTION_TYPES == massupdater.ACTION_TYPES
    assert set(actions.ACTION_TYPES) == set(massupdater.CHECKS) == set(massupdater.REQUIRED_COLUMNS)


@pytest.mark.parametrize("action_type", actions.ACTION_TYPES)
def test_required_columns_agree(action_type):
    action = MASS_ACTIONS[action_type]
    ours = {(c,) for c in action.required} | ({action.one_of} if action.one_of else set())
    assert ours == set(massupdater.REQUIRED_COLUMNS[action_type])


@pytest.mark.parametrize("action_type", actions.ACTION_TYPES)
def test_result_columns_agree(action_type):
    assert list(actions.result_columns(action_type)) == massupdater.response_columns(action_type)
    assert results.RESPONSE_COLUMNS[action_type] == actions.result_columns(action_type)
    assert results.KEY_COLUMNS[action_type] == MASS_ACTIONS[action_type].natural_key
    assert set(MASS_ACTIONS[action_type].natural_key) <= set(MASS_ACTIONS[action_type].columns)
    assert actions.result_columns("NoSuchType") == tuple(massupdater.DEFAULT_RESPONSE_COLUMNS)


def test_enumerated_values_agree():
    assert actions.OBJECT_TYPES == massupdater.OBJECT_TYPES
    assert actions.LINKED_TRANSACTION_TYPES == massupdater.LINKED_TRANSACTION_TYPES
    assert actions.PAYMENT_TYPES == massupdater.PAYMENT_TYPES


def test_the_columns_without_a_rule_are_the_listed_ones():
    found = {(a.name, c) for a in MASS_ACTIONS.values() for c, rule in a.columns.items() if not rule.checks}
    assert found == RULELESS


def _sandbox_columns(action_type: str) -> set[str]:
    """The columns the sandbox's row check for `action_type` reads by name (values[...], values.get, helpers)."""
    names = {c for alternatives in massupdater.REQUIRED_COLUMNS[action_type] for c in alternatives}
    tree = ast.parse(textwrap.dedent(inspect.getsource(massupdater.CHECKS[action_type])))
    for node in ast.walk(tree):
        args: list = []
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "values":
            args = [node.slice]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "values":
            args = node.args[:1]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = {"_required": node.args[1:], "_currency": node.args[:1], "_decimal": node.args[:1]}.get(
                node.func.id, [])
        names |= {a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return names


@pytest.mark.parametrize("action_type", actions.ACTION_TYPES)
def test_every_column_the_sandbox_reads_is_in_the_registry(action_type):
    found = _sandbox_columns(action_type)
    assert found, "the column scan of the sandbox found nothing: has its code changed shape?"
    assert found - set(MASS_ACTIONS[action_type].columns) == set()


def test_every_length_limit_of_the_sandbox_is_on_a_registry_column():
    known = {c for a in MASS_ACTIONS.values() for c in a.columns}
    assert set(massupdater.MAX_LENGTHS) - known == set()
    assert set(massupdater.RS_NUMBER_LENGTH) <= set(MASS_ACTIONS)


_GOOD = {actions.DATE: "2026-11-01", actions.AMOUNT: "10.00", actions.CURRENCY: "USD",
         actions.CURRENCY_OR_ID: "USD", actions.INVOICES: "INV-1:5.00"}
_BAD = {actions.DATE: "2026-13-01", actions.AMOUNT: "1,000.00", actions.CURRENCY: "US1",
        actions.CURRENCY_OR_ID: "US1", actions.INVOICES: "INV-1", actions.ENUM: "Nope"}


def _good(column: str, rule: actions.Column) -> str:
    if column == "Currency (To)":
        return "EUR"  # not the Currency (From)
    if rule.kind == actions.ENUM:
        return rule.values[0]
    return _GOOD.get(rule.kind, "A" * (rule.max_len or 8))


def _verdicts(action_type: str, row: dict) -> tuple[bool, bool]:
    """(validate accepts the row, the sandbox's Mass Updater accepts it)."""
    header = list(row)
    ours = not mass_table(action_type, tuple(header)).header_problems and not mass_table(
        action_type, tuple(header)).batch_problems([2], [list(row.values())])
    outcome = massupdater.process(action_type, header, [list(row.values())], "job", iter(range(1, 99)).__next__)
    return ours, outcome[0][0] == "Y"


@pytest.mark.parametrize("currency, accepted", [("USD", True), ("0123456789abcdef0123456789ABCDEF", True),
                                               ("US", False), ("0123456789abcdef", False)])
def test_mpu_currency_is_a_code_or_a_currency_id_on_both_sides(currency, accepted):
    row = {c: _good(c, r) for c, r in MASS_ACTIONS["MPU"].columns.items()}
    assert _verdicts("MPU", {**row, "Currency": currency}) == (accepted, accepted)


def _cases():
    for action in MASS_ACTIONS.values():
        for column, rule in action.columns.items():
            if rule.checks:
                yield action.name, column


@pytest.mark.parametrize(("action_type", "column"), list(_cases()))
def test_both_sides_check_each_column_the_same_way(action_type, column):
    action = MASS_ACTIONS[action_type]
    row = {c: _good(c, r) for c, r in action.columns.items()}
    assert _verdicts(action_type, row) == (True, True)
    rule = action.columns[column]
    if rule.max_len is not None:
        assert _verdicts(action_type, {**row, column: "A" * rule.max_len}) == (True, True)
        assert _verdicts(action_type, {**row, column: "A" * (rule.max_len + 1)}) == (False, False), "length"
    if rule.kind is not None:
        assert _verdicts(action_type, {**row, column: _BAD[rule.kind]}) == (False, False), rule.kind
    if column in action.required:
        assert _verdicts(action_type, {**row, column: ""}) == (False, False), "required"
    if column in action.one_of:
        assert _verdicts(action_type, {**row, **dict.fromkeys(action.one_of, "")}) == (False, False), "one of"


# ---------------------------------------------------------------- custom object operations


def test_the_same_operations_and_system_fields():
    assert tuple(OPERATIONS) == customobjects.OPERATIONS
    assert actions.SYSTEM_FIELDS == records.SYSTEM_FIELDS
    assert actions.FILE_OPERATIONS + actions.FILTER_OPERATIONS == tuple(OPERATIONS)


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_operations_agree_on_filters_and_the_id_column(operation):
    op = OPERATIONS[operation]
    payload = {"namespace": "default", "object": "vehicle", "operation": operation,
               "filter": {"conditions": [{"field": "year__c", "operator": "LT", "value": 2000}]}}
    try:
        customobjects._validate(payload)
        sandbox_filters = True
    except ApiError:
        sandbox_filters = False
    assert sandbox_filters == op.takes_filter
    if not op.takes_file:
        return
    for header, fails in ((["Id", "make__c"], op.record_id == "forbidden"),
                          (["make__c"], op.record_id == "required")):
        assert (customobjects._file_error(operation, header) is not None) == fails, header
        assert bool(ObjectTable(operation, header).header_problems) == fails, header
    for field in actions.SYSTEM_FIELDS:
        assert customobjects._file_error(operation, ["Id", field]) is not None
        assert ObjectTable(operation, ["Id", field]).header_problems


def test_the_errors_entries_carry_the_result_fields():
    source = inspect.getsource(customobjects.errors)
    entry = next(n for n in ast.walk(ast.parse(textwrap.dedent(source))) if isinstance(n, ast.Dict)
                 and any(isinstance(k, ast.Constant) and k.value == "record" for k in n.keys))
    assert tuple(sorted(k.value for k in entry.keys)) == tuple(sorted(actions.RESULT_FIELDS))


# ---------------------------------------------------------------- the schema derives its enums from the registry


def test_the_schema_enums_come_from_the_registry():
    schema = json.loads(specschema.schema_text())
    assert schema["$defs"]["massActionSpec"]["properties"]["actionType"]["enum"] == list(actions.ACTION_TYPES)
    assert schema["$defs"]["customObjectJobSpec"]["properties"]["operation"]["enum"] == list(OPERATIONS)
    assert specschema.load_schema() == schema


def test_a_new_action_type_reaches_the_printed_schema():
    text = specschema.render_enums(specschema.schema_text(), (("actionType", ("ImportFXRate", "Brand_New")),
                                                              ("operation", ("create",))))
    schema = json.loads(text)
    assert schema["$defs"]["massActionSpec"]["properties"]["actionType"]["enum"] == ["ImportFXRate", "Brand_New"]
    assert schema["$defs"]["customObjectJobSpec"]["properties"]["operation"]["enum"] == ["create"]
    assert '          "enum": [\n            "ImportFXRate",\n            "Brand_New"\n          ]' in text
