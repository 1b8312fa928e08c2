"""Zuora's official Python SDK (zuora-sdk 3.21.0) against `sandbox serve`, in each of the sandbox's modes.

The SDK's models and operations are generated from Zuora's OpenAPI document, so what it sends and what it
expects back is Zuora's shape: each test makes the SDK's own calls over loopback HTTP (OAuth client
credentials, then Mass Updater and Custom Object bulk jobs and definitions) and asserts what the SDK hands
back: its model types, their fields, each field of the type the SDK declares (sdk_support.violations; the
SDK's models do not check that themselves) and, for a refusal, the SDK's exception class. One served
sandbox per mode; jobs move on by POST /_sandbox/clock, never by waiting.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

import sdk_support

# the SDK's generated models use pydantic APIs deprecated since 2.0/2.11 (construct, instance model_fields)
# and dump a field holding what its declared type does not (a date-time kept as the answer's string)
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:zuora_sdk"),
              pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")]
from reconciler.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, make_app, serve

FX_CSV = (b"Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate\r\n"
          b"2024-01-31,USD,EUR,0.92\r\n2024-01-31,USD,GBP,0.79\r\n2024-01-31,USD,JPY,147.1\r\n")
FX = json.dumps({"actionType": "ImportFXRate"})
TICKET = {"CreatedById": "u", "CreatedDate": "2026-01-01T00:00:00.000Z", "Id": "d", "UpdatedById": "u",
          "UpdatedDate": "2026-01-01T00:00:00.000Z", "type": "ticket",
          "schema": {"object": "ticket", "label": "Ticket", "type": "object",
                     "properties": {"code__c": {"type": "string", "maxLength": 8, "origin": "custom"},
                                    "price__c": {"type": "number", "origin": "custom"}},
                     "required": ["code__c"], "filterable": ["code__c"], "unique": ["code__c"]}}
# (id, make_app's settings): every `sandbox serve` option that changes what a client sees.
MODES = [
    ("default", {}),
    ("replay-status-409", {"replay_status": 409}),
    ("v1-errors-200", {"v1_errors": "200"}),
    ("job-limit-failed", {"job_limit": "failed"}),
    ("tenant-type-apisandbox", {"tenant_type": "apisandbox"}),
    ("tenant-type-developer-sandbox", {"tenant_type": "developer-sandbox"}),
    ("without-permission", {"denied_permissions": ("view", "edit", "delete")}),
    ("stopping-seconds-30", {"stopping_seconds": 30}),
    ("definitions-file", {"definitions": "TICKET"}),
]
# FailedReason.code is a string in the SDK (and Zuora's OpenAPI document) but a number in every example of
# Zuora's documentation, which the sandbox follows (reference: "the docs' examples show a number"); the SDK
# passes the number through. The one field where the sandbox knowingly differs from the SDK's types.
NUMBER_CODES = re.compile(r"^(\w+\.)*reasons\.code: \d+ is not ")
LIMITS = {"production": 50_000, "apisandbox": 2_500, "developer-sandbox": 12_500}


@pytest.fixture(scope="module")
def sdk():
    """The SDK's classes this file uses (sdk_support.load: the installed SDK, without its 20 s import)."""
    sdk_support.load()
    from zuora_sdk import exceptions
    from zuora_sdk.api.custom_object_definitions_api import CustomObjectDefinitionsApi
    from zuora_sdk.api.custom_object_jobs_api import CustomObjectJobsApi
    from zuora_sdk.api.mass_updater_api import MassUpdaterApi
    from zuora_sdk.api.o_auth_api import OAuthApi
    from zuora_sdk.api_client import ApiClient
    from zuora_sdk.configuration import Configuration
    from zuora_sdk.models.custom_object_bulk_job_request import CustomObjectBulkJobRequest

    assert sdk_support.load().__version__ == "3.21.0"
    return {name: value for name, value in locals().items()}


class Tenant:
    """One served sandbox in one mode, the SDK's ApiClient on it (with a token) and an admin client."""

    def __init__(self, sdk, mode: str, settings: dict, tmp_path):
        if settings.get("definitions") == "TICKET":
            (tmp_path / "ticket.json").write_text(json.dumps(TICKET), encoding="utf-8")
            settings = {**settings, "definitions": str(tmp_path / "ticket.json")}
        self.sdk, self.mode, self.settings = sdk, mode, settings
        self.object_name = "ticket" if "definitions" in settings else "vehicle"
        self.server = serve(make_app(pending_seconds=1, rows_per_second=10, **settings)).start()
        self.admin = httpx.Client(base_url=self.server.url, timeout=10)
        self.client = sdk["ApiClient"](sdk["Configuration"](host=self.server.url))
        # ZuoraClient._auth()'s call: the client credentials grant, then a Bearer default header
        self.token = sdk["OAuthApi"](self.client).create_token(
            client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET, grant_type="client_credentials")
        self.client.default_headers["Authorization"] = "Bearer " + self.token.access_token
        self.mass = sdk["MassUpdaterApi"](self.client)
        self.jobs = sdk["CustomObjectJobsApi"](self.client)
        self.definitions = sdk["CustomObjectDefinitionsApi"](self.client)

    def advance(self, seconds: float) -> None:
        assert self.admin.post("/_sandbox/clock", json={"advance_seconds": seconds}).status_code == 200

    def job_request(self, object_name: str | None = None, operation: str = "create"):
        return self.sdk["CustomObjectBulkJobRequest"](namespace="default", object=object_name or self.object_name,
                                                      operation=operation)

    def close(self) -> None:
        self.admin.close()
        self.client.rest_client.pool_manager.clear()
        self.server.shutdown()


@pytest.fixture(scope="module", params=MODES, ids=[mode for mode, _ in MODES])
def served(request, sdk, tmp_path_factory):
    mode, settings = request.param
    tenant = Tenant(sdk, mode, settings, tmp_path_factory.mktemp(mode))
    yield tenant
    tenant.close()


@pytest.fixture
def tenant(served):
    assert served.admin.post("/_sandbox/reset", json={}).status_code == 200
    return served


def conforms(model, cls_name: str):
    assert type(model).__name__ == cls_name, repr(model)
    assert [v for v in sdk_support.violations(model) if not NUMBER_CODES.match(v)] == [], repr(model)
    return model


def refusal(tenant, call, v1: bool, status: int, sdk_class: str):
    """A refusal as the SDK gives it: its exception for the status, or with --v1-errors 200 (v1 calls only)
    the operation's own model with success false. Returns the parsed model."""
    if v1 and tenant.settings.get("v1_errors") == "200":
        answer = call()
        assert answer.success is False and answer.reasons, repr(answer)
        return answer
    with pytest.raises(getattr(tenant.sdk["exceptions"], sdk_class)) as caught:
        call()
    assert caught.value.status == status
    return caught.value.data


def test_oauth_token_is_the_sdks_token_response(tenant):
    token = conforms(tenant.token, "TokenResponse")
    assert re.fullmatch(r"[0-9a-f]{32}", token.access_token) and token.token_type == "bearer"
    assert token.expires_in == 3599 and "service.bulk.write" in token.scope
    bad = refusal(tenant, lambda: tenant.sdk["OAuthApi"](tenant.client).create_token(
        client_id=DEFAULT_CLIENT_ID, client_secret="wrong", grant_type="client_credentials"),
        False, 401, "UnauthorizedException")
    assert bad is None or bad.message


def test_mass_updater_file_upload_runs_to_completed(tenant, tmp_path):
    path = tmp_path / "fx-rates.csv"
    path.write_bytes(FX_CSV)
    created = conforms(tenant.mass.create_mass_updater(file=str(path), params=FX), "CreateMassUpdateResponse")
    assert created.success is True and re.fullmatch(r"[0-9a-f]{32}", created.bulk_key)
    pending = conforms(tenant.mass.get_mass_updater(created.bulk_key), "GetMassUpdateResponse")
    assert pending.status == "Pending" and pending.action_type == "ImportFXRate" and pending.input_size == len(FX_CSV)
    assert pending.total_count is None and pending.output_url is None
    tenant.advance(5)
    done = conforms(tenant.mass.get_mass_updater(created.bulk_key), "GetMassUpdateResponse")
    assert done.status == "Completed" and done.additional_properties == {}
    assert (done.total_count, done.processed_count, done.success_count, done.error_count) == ("3", "3", "3", "0")
    assert done.output_type == "(url:.csv.zip)" and done.output_url.startswith(tenant.server.url)
    for stamp in (done.uploaded_on, done.started_on, done.ended_on):
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", stamp)  # the SDK's `yyyy-MM-dd hh:mm:ss`
    refused = refusal(tenant, lambda: tenant.mass.stop_mass_updater(created.bulk_key), True, 400,
                      "BadRequestException")
    conforms(refused, "CommonResponse")
    assert refused.success is False and refused.reasons[0].message


def test_stop_mass_updater_goes_through_stopping_to_stopped(tenant):
    created = tenant.mass.create_mass_updater(file=FX_CSV, params=FX)  # bytes: the SDK names the part "file"
    stopped = conforms(tenant.mass.stop_mass_updater(created.bulk_key), "CommonResponse")
    assert stopped.success is True and stopped.reasons is None
    assert tenant.mass.get_mass_updater(created.bulk_key).status == "Stopping"
    if tenant.settings.get("stopping_seconds"):
        tenant.advance(20)
        assert tenant.mass.get_mass_updater(created.bulk_key).status == "Stopping"
    tenant.advance(31)
    final = conforms(tenant.mass.get_mass_updater(created.bulk_key), "GetMassUpdateResponse")
    assert final.status == "Stopped" and final.processed_count == "0"


def test_a_file_refused_at_upload_parses_into_the_sdks_model(tenant):
    refused = refusal(tenant, lambda: tenant.mass.create_mass_updater(file=b"a,b\r\n1,2\r\n", params=FX), True, 400,
                      "BadRequestException")
    expected = "CreateMassUpdateResponse" if tenant.settings.get("v1_errors") == "200" else "CommonResponse"
    conforms(refused, expected)
    assert refused.success is False and getattr(refused, "bulk_key", None) is None
    assert [type(reason).__name__ for reason in refused.reasons] == ["FailedReason"]
    assert "Missing required column" in refused.reasons[0].message
    missing = refusal(tenant, lambda: tenant.mass.get_mass_updater("0" * 32), True, 404, "NotFoundException")
    if missing is not None:  # with HTTP statuses the SDK maps no model to a 404 of /v1/bulk
        conforms(missing, "GetMassUpdateResponse")
        assert missing.status is None


def test_a_retried_keyed_request_gives_the_original_answer(tenant):
    first = tenant.mass.create_mass_updater(file=FX_CSV, params=FX, idempotency_key="sdk-retry-1")
    job = tenant.jobs.post_custom_object_bulk_job(tenant.job_request(), idempotency_key="sdk-retry-2") \
        if "edit" not in tenant.settings.get("denied_permissions", ()) else None
    if tenant.settings.get("replay_status") == 409:
        # Zuora's error-handling guide: "extract the result from the response body"; the SDK maps no model
        # to a 409, so the result is in the exception's body
        with pytest.raises(tenant.sdk["exceptions"].ApiException) as caught:
            tenant.mass.create_mass_updater(file=FX_CSV, params=FX, idempotency_key="sdk-retry-1")
        assert caught.value.status == 409 and json.loads(caught.value.body)["bulkKey"] == first.bulk_key
        with pytest.raises(tenant.sdk["exceptions"].ApiException) as caught:
            tenant.jobs.post_custom_object_bulk_job(tenant.job_request(), idempotency_key="sdk-retry-2")
        assert caught.value.status == 409 and json.loads(caught.value.body)["Id"] == job.id
        return
    again = conforms(tenant.mass.create_mass_updater(file=FX_CSV, params=FX, idempotency_key="sdk-retry-1"),
                     "CreateMassUpdateResponse")
    assert again.bulk_key == first.bulk_key
    if job is not None:
        replayed = tenant.jobs.post_custom_object_bulk_job(tenant.job_request(), idempotency_key="sdk-retry-2")
        assert conforms(replayed, "CustomObjectBulkJobResponse").id == job.id


def test_custom_object_job_create_upload_get_errors_list_cancel(tenant):
    if tenant.settings.get("denied_permissions"):
        denied = refusal(tenant, lambda: tenant.jobs.post_custom_object_bulk_job(tenant.job_request()), False, 403,
                         "ForbiddenException")
        assert conforms(denied, "CommonErrorResponse").code == 71012515
        listed = refusal(tenant, tenant.jobs.get_all_custom_object_bulk_jobs, False, 403, "ForbiddenException")
        assert conforms(listed, "CommonErrorResponse").code == 71013012
        return
    ticket = tenant.object_name == "ticket"
    csv = "code__c,price__c\nT1,9.5\nT1,3\n" if ticket else "make__c,year__c,registration__c\nVW,2020,R1\nVW,old,R2\n"
    job = conforms(tenant.jobs.post_custom_object_bulk_job(tenant.job_request()),
                   "CustomObjectBulkJobResponse")
    assert job.status == "pending" and job.object == tenant.object_name and job.operation == "create"
    assert re.fullmatch(r"[0-9a-f-]{36}", job.id) and job.namespace == "default"
    uploaded = conforms(tenant.jobs.post_upload_file_for_custom_object_bulk_job(
        content_type="text/csv", id=job.id, file=csv), "CustomObjectBulkJobResponse")
    assert uploaded.id == job.id and uploaded.status in ("in_progress", "completed")
    tenant.advance(5)
    done = conforms(tenant.jobs.get_custom_object_bulk_job(job.id), "CustomObjectBulkJobResponse")
    assert done.status == "completed" and done.records_processed == 2 and done.error is None
    errors = conforms(tenant.jobs.get_custom_object_bulk_job_errors(job.id),
                      "CustomObjectBulkJobErrorResponseCollection")
    [error] = errors.errors
    assert error.row == 3 and isinstance(error.code, int) and error.message
    assert error.code == (71012530 if ticket else 71012523)  # a duplicate unique value; a year that is no integer
    assert type(error.record).__name__ == "CustomObjectRecordWithAllFields"
    other = tenant.jobs.post_custom_object_bulk_job(tenant.job_request())
    cancelled = conforms(tenant.jobs.p_atch_custom_object_bulk_job(other.id), "CustomObjectBulkJobResponse")
    assert cancelled.id == other.id and cancelled.status == "cancelled"
    listed = conforms(tenant.jobs.get_all_custom_object_bulk_jobs(), "CustomObjectBulkJobResponseCollection")
    assert listed.count == 2 and {j.id for j in listed.jobs} == {job.id, other.id}
    unknown = refusal(tenant, lambda: tenant.jobs.post_custom_object_bulk_job(tenant.job_request("spaceship")),
                      False, 400, "BadRequestException")
    assert conforms(unknown, "CommonErrorResponse").code == 71013020


def test_the_sixth_active_job(tenant):
    if tenant.settings.get("denied_permissions"):  # no job can be created, so no limit can be reached
        refused = refusal(tenant, lambda: tenant.jobs.post_custom_object_bulk_job(tenant.job_request()), False, 403,
                          "ForbiddenException")
        assert conforms(refused, "CommonErrorResponse").code == 71012515
        return
    for _ in range(5):
        tenant.jobs.post_custom_object_bulk_job(tenant.job_request())
    request = tenant.job_request()
    if tenant.settings.get("job_limit") == "failed":
        sixth = conforms(tenant.jobs.post_custom_object_bulk_job(request), "CustomObjectBulkJobResponse")
        assert sixth.status == "failed" and type(sixth.error).__name__ == "CustomObjectBulkJobResponseError"
        assert (sixth.error.code, sixth.error.message) == (71012560, "Service limit reached, please retry later.")
    else:
        refused = refusal(tenant, lambda: tenant.jobs.post_custom_object_bulk_job(request), False, 400,
                          "BadRequestException")
        assert conforms(refused, "CommonErrorResponse").code == 71013030


def test_custom_object_definitions(tenant):
    if tenant.settings.get("denied_permissions"):
        denied = refusal(tenant, tenant.definitions.get_all_custom_object_definitions_in_namespace, False, 403,
                         "ForbiddenException")
        assert conforms(denied, "CommonErrorResponse").code == 71000012
        return
    listed = conforms(tenant.definitions.get_all_custom_object_definitions_in_namespace(),
                      "GetAllCustomObjectDefinitionsInNamespaceResponse")
    expected = {"ticket"} if "definitions" in tenant.settings else {"vehicle", "car", "bus", "passenger", "driver"}
    assert set(listed.definitions) == expected and listed.count == len(expected)
    name = sorted(expected)[-1]
    one = conforms(tenant.definitions.get_custom_object_definition_by_type(name), "CustomObjectDefinition")
    assert one.type == name and one.var_schema.object == name and one.var_schema.required
    assert one.model_dump(by_alias=True) == listed.definitions[name].model_dump(by_alias=True)
    assert type(one.var_schema.properties).__name__ == "CustomObjectAllFieldsDefinition"
    assert type(one.var_schema.properties.id).__name__ == "CustomObjectAllFieldsDefinitionAllOfId"
    missing = refusal(tenant, lambda: tenant.definitions.get_custom_object_definition_by_type("Nope"), False, 404,
                      "NotFoundException")
    assert missing is None or conforms(missing, "CommonErrorResponse").code == 71000040


def test_a_429_is_the_sdks_api_exception_with_its_rate_limit_fields(tenant):
    tenant_type = tenant.settings.get("tenant_type", "production")
    limit = LIMITS[tenant_type]
    assert tenant.admin.post("/_sandbox/rate", json={"api": {"minute": limit}}).status_code == 200
    # POST: urllib3 (under the SDK) sends it once; a GET it would retry by itself after Retry-After
    with pytest.raises(tenant.sdk["exceptions"].ApiException) as caught:
        tenant.mass.create_mass_updater(file=FX_CSV, params=FX)
    error = caught.value
    assert type(error).__name__ == "ApiException" and error.status == 429
    assert error.rate_limit_remaining == 0 and 1 <= error.rate_limit_reset <= 60
    assert error.rate_limit_limit.startswith(f"{limit}, {limit};w=60, ")
    assert json.loads(error.body)["reasons"][0]["code"] == 70
    with pytest.raises(tenant.sdk["exceptions"].ApiException) as caught:
        tenant.jobs.post_custom_object_bulk_job(tenant.job_request())
    assert caught.value.status == 429 and json.loads(caught.value.body)["code"] == 71013070


def test_the_type_check_sees_what_the_sdks_models_let_through(sdk):
    """The SDK builds its models without validating them; sdk_support.violations is what would notice."""
    from zuora_sdk.models.custom_object_bulk_job_response_collection import CustomObjectBulkJobResponseCollection
    from zuora_sdk.models.get_mass_update_response import GetMassUpdateResponse

    wrong = GetMassUpdateResponse.from_dict({"status": "Completed", "errorCount": 0, "inputSize": "120"})
    assert wrong.error_count == 0  # accepted as is
    assert [v.split(":")[0] for v in sdk_support.violations(wrong)] == ["errorCount", "inputSize"]
    jobs = CustomObjectBulkJobResponseCollection.from_dict({"jobs": [{"Id": "j", "CreatedDate": "yesterday"}]})
    assert [v.split(":")[0] for v in sdk_support.violations(jobs)] == ["jobs.CreatedDate"]
    assert [v.split(":")[0] for v in sdk_support.violations(CustomObjectBulkJobResponseCollection.from_dict({}))] \
        == ["jobs"]
