"""Reference handlers: what a user would write with Powertools for AWS Lambda instead of Sluice.

intake_handler: API Gateway HTTP API (v2) event carrying a GitHub push webhook. Verifies
X-Hub-Signature-256, then, once per X-GitHub-Delivery (Powertools idempotency, 24 h), enqueues
one SQS message {execution_id, stage: 0} and answers 202. A duplicate delivery gets the stored
202 back.

stage_handler: SQS batch through Powertools BatchProcessor (partial batch response). Each record
runs once per (execution_id, stage): it calls the connector over HTTP with an Idempotency-Key
header, then writes the stage result to DynamoDB with PutItem.

Configuration comes from the environment, as in a deployed function: IDEMPOTENCY_TABLE,
RESULTS_TABLE, QUEUE_URL, CONNECTOR_URL, WEBHOOK_SECRET (plus the usual AWS_REGION and
credentials; AWS_ENDPOINT_URL points boto3 at a local engine).
"""

import base64
import hashlib
import hmac
import json
import os
import urllib.request
import uuid

import boto3
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

DAY_SECONDS = 24 * 60 * 60
CONNECTOR_TIMEOUT_SECONDS = 10

# Module-level init: runs once per cold start, like any Lambda written this way.
WEBHOOK_SECRET = os.environ["WEBHOOK_SECRET"].encode()
QUEUE_URL = os.environ["QUEUE_URL"]
CONNECTOR_URL = os.environ["CONNECTOR_URL"]

sqs = boto3.client("sqs")
results_table = boto3.resource("dynamodb").Table(os.environ["RESULTS_TABLE"])
# One persistence layer per idempotent function: a layer keeps the first config it is given.
# In a deployment intake and stage are two functions, each with its own.
intake_persistence = DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"])
stage_persistence = DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"])

delivery_config = IdempotencyConfig(
    event_key_jmespath="delivery_id",
    expires_after_seconds=DAY_SECONDS,
)
stage_config = IdempotencyConfig(
    event_key_jmespath="[execution_id, stage]",
    expires_after_seconds=DAY_SECONDS,
)
processor = BatchProcessor(event_type=EventType.SQS)


def _response(status, body):
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


def _signature_ok(body, header):
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(WEBHOOK_SECRET, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header[len("sha256=") :])


@idempotent_function(
    data_keyword_argument="delivery",
    persistence_store=intake_persistence,
    config=delivery_config,
)
def accept_delivery(delivery):
    execution_id = str(uuid.uuid4())
    sqs.send_message(
        QueueUrl=QUEUE_URL,
        MessageBody=json.dumps({"execution_id": execution_id, "stage": 0}),
    )
    return _response(202, {"execution_id": execution_id})


def intake_handler(event, context):
    delivery_config.register_lambda_context(context)
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    raw = event.get("body") or ""
    body = raw.encode()
    if event.get("isBase64Encoded"):
        body = base64.b64decode(raw)
    if not _signature_ok(body, headers.get("x-hub-signature-256")):
        return _response(401, {"error": "bad signature"})
    delivery_id = headers.get("x-github-delivery")
    if not delivery_id:
        return _response(400, {"error": "missing X-GitHub-Delivery"})
    try:
        payload = json.loads(body)
    except ValueError:
        return _response(400, {"error": "body is not JSON"})
    return accept_delivery(
        delivery={
            "delivery_id": delivery_id,
            "event": headers.get("x-github-event", ""),
            "repository": (payload.get("repository") or {}).get("full_name"),
        }
    )


@idempotent_function(
    data_keyword_argument="job",
    persistence_store=stage_persistence,
    config=stage_config,
)
def run_stage(job):
    key = f"{job['execution_id']}:{job['stage']}"
    request = urllib.request.Request(
        CONNECTOR_URL,
        data=json.dumps(job).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": key},
    )
    with urllib.request.urlopen(request, timeout=CONNECTOR_TIMEOUT_SECONDS) as resp:
        status = resp.status
        output = resp.read().decode()
    results_table.put_item(
        Item={
            "pk": job["execution_id"],
            "sk": f"STAGE#{job['stage']}",
            "status": "SUCCEEDED",
            "http_status": status,
            "output": output,
        }
    )
    return {"execution_id": job["execution_id"], "stage": job["stage"], "http_status": status}


def record_handler(record: SQSRecord):
    message = json.loads(record.body)
    return run_stage(job={"execution_id": message["execution_id"], "stage": message["stage"]})


def stage_handler(event, context):
    stage_config.register_lambda_context(context)
    return process_partial_response(
        event=event,
        record_handler=record_handler,
        processor=processor,
        context=context,
    )
