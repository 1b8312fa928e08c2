"""Mass Updater row processing per action type (reference A.4, A.5).

Each row is checked against the documented columns of its action type: required values, lengths,
enums, YYYY-MM-DD dates, plain decimals, 3-letter currencies. Columns starting with `#` are
informational and never processed. Once a row with a Group ID fails, later rows of that group are
skipped with "A previous row with the same Group ID failed". Outcomes depend only on the file's
content (and, for generated numbers, on the job), so a file always gets the same Y/N answers.
Referential integrity (does RS-00000001 exist?) is not simulated: well-formed rows succeed.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date

ACTION_TYPES = (
    "UpdateAccountingCode", "CreateRevenueSchedule", "UpdateRevenueSchedule",
    "DeleteRevenueSchedule", "ImportFXRate", "MPU",
)

# Each entry is a set of alternatives: at least one column of the set must be in the header.
REQUIRED_COLUMNS = {
    "ImportFXRate": [("Provider Exchange Rate Date",), ("Currency (From)",), ("Currency (To)",), ("Exchange Rate",)],
    "DeleteRevenueSchedule": [("Revenue Schedule Number",)],
    "UpdateRevenueSchedule": [("Revenue Schedule Number",)],
    "UpdateAccountingCode": [("Object Key",), ("Object Type",)],
    "CreateRevenueSchedule": [("Subscription Charge Key", "Linked Transaction Key")],
    "MPU": [("Payment Amount",), ("Currency",), ("Payment Date",), ("Payment Method ID",)],
}

# Response columns after the input columns, in the documented order.
RESPONSE_COLUMNS = {
    "CreateRevenueSchedule": ["Success", "Revenue Schedule Number", "Error Message"],
    "MPU": ["Success", "Error Message", "Payment ID", "Gateway Response Code", "Gateway Response Message",
            "Payment Status"],
}
DEFAULT_RESPONSE_COLUMNS = ["Success", "Error Message"]

OBJECT_TYPES = (
    "Credit Balance Adjustment", "Invoice Adjustment", "Invoice Item", "Invoice Item Adjustment", "Taxation Item",
    "Payment", "Product Rate Plan Charge", "Refund", "Revenue Schedule", "Credit Memo Item", "Debit Memo Item",
)
LINKED_TRANSACTION_TYPES = ("Invoice Item", "Invoice Item Adjustment", "Credit Memo Item", "Debit Memo Item")
PAYMENT_TYPES = ("External", "Electronic")

MAX_LENGTHS = {
    "Group ID": 255, "Object Key": 32, "Subscription Charge Key": 32, "Linked Transaction Key": 32,
    "Revenue Schedule Reference ID": 60, "Revenue Schedule Notes": 2000, "Billing Account ID": 32,
    "Payment Method ID": 32, "Payment Comment": 255, "Gateway ID": 32,
}
RS_NUMBER_LENGTH = {"DeleteRevenueSchedule": 50, "UpdateRevenueSchedule": 100}

GROUP_FAILED = "A previous row with the same Group ID failed"
DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
# Upper-case codes, as Zuora writes them; MPU's Currency also takes a currency id (reference A.5).
CURRENCY = re.compile(r"^[A-Z]{3}$")
CURRENCY_ID = re.compile(r"^[0-9a-fA-F]{32}$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
INVOICE_SPLIT = re.compile(r"^[^:|]+:\d+(\.\d+)?$")


class RowError(Exception):
    """One row's failure message."""


def response_columns(action_type: str) -> list[str]:
    """The columns the response file adds after the input columns."""
    return RESPONSE_COLUMNS.get(action_type, DEFAULT_RESPONSE_COLUMNS)


def missing_columns(action_type: str, header: list[str]) -> list[str]:
    """Required columns absent from the header (a file-level problem)."""
    present = set(header)
    return [" or ".join(alternatives) for alternatives in REQUIRED_COLUMNS[action_type]
            if not present.intersection(alternatives)]


def process(action_type: str, header: list[str], rows: list[list[str]], job_key: str, next_number) -> list:
    """Outcome per row: [success "Y"/"N", error message, extra response values]."""
    failed_groups = set()
    outcomes = []
    width = len(response_columns(action_type)) - 2
    for index, row in enumerate(rows):
        values = {name: (row[i].strip() if i < len(row) else "") for i, name in enumerate(header)
                  if not name.startswith("#")}
        group = values.get("Group ID", "")
        try:
            if group and group in failed_groups:
                raise RowError(GROUP_FAILED)
            if len(row) != len(header):
                raise RowError(f"The row has {len(row)} values but the header has {len(header)} columns")
            _check_common(values)
            extras = CHECKS[action_type](values, job_key, index, next_number)
            outcomes.append(["Y", "", extras])
        except RowError as err:
            if group:
                failed_groups.add(group)
            outcomes.append(["N", str(err), [""] * width])
    return outcomes


def _check_common(values: dict) -> None:
    for name, limit in MAX_LENGTHS.items():
        if len(values.get(name, "")) > limit:
            raise RowError(f"{name} must be at most {limit} characters")
    for name, value in values.items():
        if value and name.endswith("Date"):
            _date(name, value)


def _date(name: str, value: str) -> None:
    try:
        if not ISO_DATE.match(value):
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        raise RowError(f"{name} must be a date in YYYY-MM-DD format, not '{value}'") from None


def _required(values: dict, *names: str) -> None:
    for name in names:
        if not values.get(name):
            raise RowError(f"{name} is required")


def _decimal(name: str, value: str, positive: bool = False) -> float:
    if not DECIMAL.match(value):
        raise RowError(f"{name} must be a plain decimal number such as 1234.56, not '{value}'")
    number = float(value)
    if positive and number <= 0:
        raise RowError(f"{name} must be greater than 0")
    return number


def _currency(name: str, value: str, *, or_id: bool = False) -> None:
    if CURRENCY.match(value) or (or_id and CURRENCY_ID.match(value)):
        return
    what = "a 3-letter currency code such as USD" + (" or a 32-character currency id" if or_id else "")
    raise RowError(f"{name} must be {what}, not '{value}'")


def _import_fx_rate(values, job_key, index, next_number):
    _required(values, "Provider Exchange Rate Date", "Currency (From)", "Currency (To)", "Exchange Rate")
    _currency("Currency (From)", values["Currency (From)"])
    _currency("Currency (To)", values["Currency (To)"])
    _decimal("Exchange Rate", values["Exchange Rate"], positive=True)
    return []


def _revenue_schedule(action_type):
    def check(values, job_key, index, next_number):
        _required(values, "Revenue Schedule Number")
        limit = RS_NUMBER_LENGTH[action_type]
        if len(values["Revenue Schedule Number"]) > limit:
            raise RowError(f"Revenue Schedule Number must be at most {limit} characters")
        return []
    return check


def _update_accounting_code(values, job_key, index, next_number):
    _required(values, "Object Key", "Object Type")
    if values["Object Type"] not in OBJECT_TYPES:
        raise RowError(f"Object Type must be one of: {', '.join(OBJECT_TYPES)}")
    for name, value in values.items():
        if "Accounting Code" in name and len(value) > 100:
            raise RowError(f"{name} must be at most 100 characters")
    return []


def _create_revenue_schedule(values, job_key, index, next_number):
    if not (values.get("Subscription Charge Key") or values.get("Linked Transaction Key")):
        raise RowError("Subscription Charge Key or Linked Transaction Key is required")
    linked_type = values.get("Linked Transaction Type", "")
    if linked_type and linked_type not in LINKED_TRANSACTION_TYPES:
        raise RowError(f"Linked Transaction Type must be one of: {', '.join(LINKED_TRANSACTION_TYPES)}")
    for name, value in values.items():
        if value and "Amount" in name:
            _decimal(name, value)
    return [f"RS-{next_number():08d}"]


def _mass_payment_upload(values, job_key, index, next_number):
    _required(values, "Payment Amount", "Currency", "Payment Date", "Payment Method ID")
    amount = _decimal("Payment Amount", values["Payment Amount"], positive=True)
    _currency("Currency", values["Currency"], or_id=True)
    payment_type = values.get("Payment Type") or "External"
    if payment_type not in PAYMENT_TYPES:
        raise RowError("Payment Type must be External or Electronic")
    invoices = values.get("Payment Invoice", "")
    if not values.get("Billing Account ID"):
        if invoices:
            raise RowError("Payment Invoice must be empty when Billing Account ID is blank (unassigned payment)")
        if payment_type != "External":
            raise RowError("An unassigned payment (no Billing Account ID) must use an External payment method")
    if invoices:
        splits = invoices.split("|")
        if not all(INVOICE_SPLIT.match(split) for split in splits):
            raise RowError("Payment Invoice must look like InvoiceID1:amount|InvoiceID2:amount")
        if sum(float(split.rpartition(":")[2]) for split in splits) > amount + 1e-9:
            raise RowError("The amounts applied to invoices exceed the Payment Amount")
    payment_id = hashlib.md5(f"{job_key}:{index}".encode()).hexdigest()
    if payment_type == "Electronic":
        return [payment_id, "00", "Approved", "Processed"]
    return [payment_id, "", "", "Processed"]


CHECKS = {
    "ImportFXRate": _import_fx_rate,
    "DeleteRevenueSchedule": _revenue_schedule("DeleteRevenueSchedule"),
    "UpdateRevenueSchedule": _revenue_schedule("UpdateRevenueSchedule"),
    "UpdateAccountingCode": _update_accounting_code,
    "CreateRevenueSchedule": _create_revenue_schedule,
    "MPU": _mass_payment_upload,
}
