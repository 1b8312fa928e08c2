"""The one registry of what reconciler can submit: Mass Updater action types and custom object operations.

Per Mass Updater action type: its columns (required, at least one of, optional) with the rule every
value must follow, the columns that name the record a row is about, whether running it twice leaves
Zuora as running it once did, and the columns its response file appends (reference A.4, A.5). Per
custom object operation: whether it takes a file, what it says about the `Id` column, idempotence.

Adding an action type is one entry in MASS_ACTIONS (and the sandbox's own model of Zuora,
reconciler/sandbox/massupdater.py, which tests/test_actions.py compares with this file). The spec
schema's enums, the data file checks and the reading of result files all derive from here.

Standard library only, like model.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ---------------------------------------------------------------- value rules

DATE, AMOUNT, CURRENCY, CURRENCY_OR_ID, INVOICES, ENUM = "date", "amount", "currency", "currency_or_id", "invoices", "enum"


@dataclass(frozen=True)
class Column:
    """The rule for one column's values; a Column() with neither max_len nor kind checks nothing."""

    max_len: int | None = None
    kind: str | None = None  # DATE | AMOUNT | CURRENCY | CURRENCY_OR_ID | INVOICES | ENUM
    values: tuple[str, ...] = ()  # ENUM: the allowed values

    @property
    def checks(self) -> bool:
        """True when the rule constrains a value at all."""
        return self.max_len is not None or self.kind is not None


OBJECT_TYPES = (
    "Credit Balance Adjustment", "Invoice Adjustment", "Invoice Item", "Invoice Item Adjustment", "Taxation Item",
    "Payment", "Product Rate Plan Charge", "Refund", "Revenue Schedule", "Credit Memo Item", "Debit Memo Item",
)
LINKED_TRANSACTION_TYPES = ("Invoice Item", "Invoice Item Adjustment", "Credit Memo Item", "Debit Memo Item")
PAYMENT_TYPES = ("External", "Electronic")

# ---------------------------------------------------------------- Mass Updater action types

SUCCESS, ERROR_MESSAGE = "Success", "Error Message"
DEFAULT_RESULT_COLUMNS = (SUCCESS, ERROR_MESSAGE)
GROUP_ID = "Group ID"  # every action type: once a row of a group fails, Zuora skips the rest of the group


@dataclass(frozen=True)
class ActionType:
    """One Mass Updater action type (`params.actionType` of POST /v1/bulk)."""

    name: str
    columns: dict[str, Column]  # every column reconciler knows, in file order, with its rule
    required: tuple[str, ...] = ()  # columns the header must have, each with a value in every row
    one_of: tuple[str, ...] = ()  # the header needs at least one of these, and each row a value in one
    natural_key: tuple[str, ...] = ()  # the columns naming the record a row is about (shown for failed rows)
    idempotent: bool = True  # False: running the file twice creates its records twice
    row_key: tuple[str, ...] | None = None  # pairs an edited row with its earlier version; None: natural_key
    result_columns: tuple[str, ...] = DEFAULT_RESULT_COLUMNS  # appended to the input columns in the response

    @property
    def pairing_key(self) -> tuple[str, ...]:
        """The columns that say an edited row is the same record as an earlier row."""
        return self.natural_key if self.row_key is None else self.row_key

    @property
    def optional(self) -> tuple[str, ...]:
        """The known columns a file may leave out."""
        return tuple(c for c in self.columns if c not in self.required and c not in self.one_of)


def _action(name: str, columns: dict[str, Column], **fields) -> ActionType:
    return ActionType(name, {GROUP_ID: Column(255), **columns}, **fields)


MASS_ACTIONS: dict[str, ActionType] = {a.name: a for a in (
    _action(
        "UpdateAccountingCode",
        {"Object Key": Column(32), "Object Type": Column(kind=ENUM, values=OBJECT_TYPES),
         "Deferred Revenue Accounting Code": Column(100)},
        required=("Object Key", "Object Type"),
        natural_key=("Object Type", "Object Key"),
    ),
    _action(
        "CreateRevenueSchedule",
        {"Subscription Charge Key": Column(32), "Linked Transaction Key": Column(),
         "Linked Transaction Type": Column(kind=ENUM, values=LINKED_TRANSACTION_TYPES)},
        one_of=("Subscription Charge Key", "Linked Transaction Key"),
        natural_key=("Subscription Charge Key", "Linked Transaction Key"),
        idempotent=False,
        result_columns=(SUCCESS, "Revenue Schedule Number", ERROR_MESSAGE),
    ),
    _action(
        "UpdateRevenueSchedule",
        {"Revenue Schedule Number": Column(100), "Revenue Schedule Reference ID": Column(60),
         "Revenue Schedule Notes": Column(2000)},
        required=("Revenue Schedule Number",),
        natural_key=("Revenue Schedule Number",),
    ),
    _action(
        "DeleteRevenueSchedule",
        {"Revenue Schedule Number": Column(50)},
        required=("Revenue Schedule Number",),
        natural_key=("Revenue Schedule Number",),
    ),
    _action(
        "ImportFXRate",
        {"Provider Exchange Rate Date": Column(kind=DATE), "Currency (From)": Column(kind=CURRENCY),
         "Currency (To)": Column(kind=CURRENCY), "Exchange Rate": Column(kind=AMOUNT)},
        required=("Provider Exchange Rate Date", "Currency (From)", "Currency (To)", "Exchange Rate"),
        natural_key=("Provider Exchange Rate Date", "Currency (From)", "Currency (To)"),
    ),
    _action(
        "MPU",
        {"Payment Amount": Column(kind=AMOUNT), "Currency": Column(kind=CURRENCY_OR_ID),
         "Payment Date": Column(kind=DATE), "Payment Method ID": Column(32), "Billing Account ID": Column(32),
         "Payment Invoice": Column(kind=INVOICES), "Payment Comment": Column(255),
         "Payment Type": Column(kind=ENUM, values=PAYMENT_TYPES), "Gateway ID": Column(32),
         "Reference ID": Column()},
        required=("Payment Amount", "Currency", "Payment Date", "Payment Method ID"),
        natural_key=("Billing Account ID", "Payment Amount", "Currency", "Reference ID"),
        row_key=("Reference ID",),  # a payment whose amount was corrected is the same payment
        idempotent=False,
        result_columns=(SUCCESS, ERROR_MESSAGE, "Payment ID", "Gateway Response Code", "Gateway Response Message",
                        "Payment Status"),
    ),
)}
ACTION_TYPES = tuple(MASS_ACTIONS)  # the order the schema and messages list them in


def result_columns(action_type: str) -> tuple[str, ...]:
    """The columns a Mass Updater response file appends for `action_type` (Success and Error Message if unknown)."""
    action = MASS_ACTIONS.get(action_type)
    return action.result_columns if action is not None else DEFAULT_RESULT_COLUMNS


# ---------------------------------------------------------------- custom object bulk job operations

RECORD_ID = "Id"  # the natural key of a custom object record
SYSTEM_FIELDS = ("CreatedDate", "UpdatedDate", "CreatedById", "UpdatedById")  # Zuora sets them; never in a file
RESULT_FIELDS = ("code", "message", "row", "record")  # of each entry in GET /objects/jobs/{id}/errors


@dataclass(frozen=True)
class Operation:
    """One custom object bulk job operation (`operation` of POST /objects/jobs)."""

    name: str
    takes_file: bool  # create/update upload a CSV after the job is created; delete selects with a filter
    record_id: str  # the Id column: "required" (update), "forbidden" (create: Zuora assigns ids), "" (no file)
    idempotent: bool = True
    natural_key: tuple[str, ...] = field(default=(RECORD_ID,))

    @property
    def takes_filter(self) -> bool:
        """Only a job without a file selects its records with spec.filter."""
        return not self.takes_file


OPERATIONS: dict[str, Operation] = {o.name: o for o in (
    Operation("create", takes_file=True, record_id="forbidden", idempotent=False, natural_key=()),
    Operation("update", takes_file=True, record_id="required"),
    Operation("delete", takes_file=False, record_id=""),
)}
FILE_OPERATIONS = tuple(name for name, o in OPERATIONS.items() if o.takes_file)
FILTER_OPERATIONS = tuple(name for name, o in OPERATIONS.items() if o.takes_filter)
