"""Measures the Powertools reference (handler.py) against a local engine; writes one JSON file.

    python bench.py --endpoint http://127.0.0.1:<port> --out result.json

Three measurements, all against fresh tables and a fresh queue on the endpoint (ministack):
  requests          exact AWS requests per unit of work, counted by a botocore `before-send`
                    hook on every client the handler module holds;
  init_ms           fresh interpreters timing `import handler` (module init, no network call);
  cpu_ms_per_event  process CPU time per webhook and per stage record, in one warm process.
The connector the stage handler calls is a stdlib http.server on 127.0.0.1:0 in a child
process, so its CPU time is not counted against the handler.
"""

import argparse
import hashlib
import hmac
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections import Counter
from datetime import UTC, datetime
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "bench-webhook-secret"
REGION = "us-east-1"
SUBPROCESS_TIMEOUT_SECONDS = 60
FUNCTION_TIMEOUT_MS = 30_000


def fail(message):
    print(f"[powertools-bench] ERROR: {message}", file=sys.stderr)
    sys.exit(1)


def log(message):
    print(f"[powertools-bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- connector (child process)


class ConnectorHandler(http.server.BaseHTTPRequestHandler):
    """Answers every POST with 200 and remembers its Idempotency-Key; GET /_keys lists them."""

    keys = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        ConnectorHandler.keys.append(self.headers.get("Idempotency-Key"))
        self._reply(b'{"ok":true}')

    def do_GET(self):
        self._reply(json.dumps(ConnectorHandler.keys).encode())

    def _reply(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve_connector():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ConnectorHandler)
    print(server.server_address[1], flush=True)

    # The parent closes our stdin when it is done; a watcher thread then stops the server.
    def watch_parent():
        sys.stdin.read()
        server.shutdown()

    threading.Thread(target=watch_parent, daemon=True).start()
    server.serve_forever()


def start_connector():
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve-connector"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        fail(f"connector did not start (got {line!r})")
    return proc, f"http://127.0.0.1:{line}"


def connector_keys(url):
    with urllib.request.urlopen(url + "/_keys", timeout=5) as resp:
        return json.loads(resp.read())


# ---------------------------------------------------------------- engine


def check_endpoint(endpoint):
    request = urllib.request.Request(
        endpoint.rstrip("/") + "/",
        data=b"{}",
        method="POST",
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
            "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/"
            "aws4_request, SignedHeaders=host, Signature=0",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            if resp.status != 200 or b"TableNames" not in resp.read():
                fail(
                    f"{endpoint} answered ListTables with HTTP {resp.status}, not a DynamoDB engine"
                )
    except (urllib.error.URLError, OSError) as err:
        fail(f"engine endpoint {endpoint} is unreachable: {err}")


def lambda_env(endpoint, names):
    """The environment a deployed function would have, pointed at the local engine."""
    env = dict(os.environ)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_LAMBDA_FUNCTION_NAME="powertools-reference",
        WEBHOOK_SECRET=SECRET,
        # As on Lambda, where /var/task is read-only: the packages' .pyc files (pip compiled
        # them) are used, none is written for handler.py. Also keeps the worktree clean.
        PYTHONDONTWRITEBYTECODE="1",
        **names,
    )
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    env.pop("POWERTOOLS_IDEMPOTENCY_DISABLED", None)
    return env


def create_resources(admin_ddb, admin_sqs, suffix):
    idem = f"pt-idempotency-{suffix}"
    results = f"pt-results-{suffix}"
    admin_ddb.create_table(
        TableName=idem,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    admin_ddb.create_table(
        TableName=results,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for table in (idem, results):
        admin_ddb.get_waiter("table_exists").wait(
            TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
        )
    queue_url = admin_sqs.create_queue(QueueName=f"pt-stages-{suffix}")["QueueUrl"]
    return {"IDEMPOTENCY_TABLE": idem, "RESULTS_TABLE": results, "QUEUE_URL": queue_url}


def delete_resources(admin_ddb, admin_sqs, names):
    for table in (names["IDEMPOTENCY_TABLE"], names["RESULTS_TABLE"]):
        try:
            admin_ddb.delete_table(TableName=table)
        except Exception as err:  # cleanup is best effort; the names are unique per run
            log(f"could not delete table {table}: {err}")
    try:
        admin_sqs.delete_queue(QueueUrl=names["QUEUE_URL"])
    except Exception as err:
        log(f"could not delete queue: {err}")


# ---------------------------------------------------------------- events


class FakeContext:
    """The parts of a Lambda context object Powertools reads."""

    function_name = "powertools-reference"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:powertools-reference"

    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + FUNCTION_TIMEOUT_MS / 1000

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))


PUSH_PAYLOAD = {
    "ref": "refs/heads/main",
    "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    "after": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5",
    "repository": {"id": 1296269, "full_name": "octo-org/octo-repo", "private": False},
    "pusher": {"name": "octocat", "email": "octocat@example.com"},
    "sender": {"login": "octocat", "id": 1},
    "commits": [
        {
            "id": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5",
            "message": "Update README.md",
            "timestamp": "2026-11-22T10:00:00Z",
            "author": {"name": "octocat", "email": "octocat@example.com"},
            "added": [],
            "removed": [],
            "modified": ["README.md"],
        }
    ],
}
PUSH_BODY = json.dumps(PUSH_PAYLOAD)


def webhook_event(delivery_id):
    """An API Gateway HTTP API (payload 2.0) event of a signed GitHub push delivery."""
    signature = hmac.new(SECRET.encode(), PUSH_BODY.encode(), hashlib.sha256).hexdigest()
    return {
        "version": "2.0",
        "routeKey": "POST /webhooks/github",
        "rawPath": "/webhooks/github",
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "user-agent": "GitHub-Hookshot/abc1234",
            "x-github-event": "push",
            "x-github-delivery": delivery_id,
            "x-hub-signature-256": "sha256=" + signature,
        },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "bench",
            "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "http": {
                "method": "POST",
                "path": "/webhooks/github",
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "GitHub-Hookshot/abc1234",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "POST /webhooks/github",
            "stage": "$default",
            "time": "22/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795341600000,
        },
        "body": PUSH_BODY,
        "isBase64Encoded": False,
    }


def sqs_record(message_id, receipt_handle, body, queue_arn):
    return {
        "messageId": message_id,
        "receiptHandle": receipt_handle,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795341600000",
            "SenderId": "000000000000",
            "ApproximateFirstReceiveTimestamp": "1795341600001",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def synthetic_stage_events(count, batch_size, queue_arn):
    """SQS events of fresh stage-0 jobs, as the event source mapping would hand them over."""
    events = []
    for start in range(0, count, batch_size):
        records = []
        for _ in range(min(batch_size, count - start)):
            body = json.dumps({"execution_id": str(uuid.uuid4()), "stage": 0})
            records.append(sqs_record(str(uuid.uuid4()), str(uuid.uuid4()), body, queue_arn))
        events.append({"Records": records})
    return events


# ---------------------------------------------------------------- request counting


class RequestCounter:
    """Counts (service, operation) of every HTTP request botocore sends, retries included."""

    def __init__(self):
        self.counts = Counter()

    def __call__(self, event_name, **kwargs):
        # event_name is "before-send.<service>.<Operation>"
        _, service, operation = event_name.split(".", 2)
        self.counts[f"{service}:{operation}"] += 1

    def take(self):
        counts, self.counts = self.counts, Counter()
        return counts


def handler_clients(module):
    """Every botocore client the handler module holds (clients, resources, persistence layer)."""
    from botocore.client import BaseClient

    found = {}
    for name, value in vars(module).items():
        for candidate in (
            value,
            getattr(getattr(value, "meta", None), "client", None),  # boto3 resource / Table
            getattr(value, "client", None),  # Powertools persistence layer
        ):
            if isinstance(candidate, BaseClient):
                found[id(candidate)] = (name, candidate)
    return list(found.values())


def summarize(counts, lambda_service=None):
    by_operation = dict(sorted(counts.items()))
    summary = {
        "total": sum(counts.values()),
        "dynamodb": sum(n for k, n in counts.items() if k.startswith("dynamodb:")),
        "sqs": sum(n for k, n in counts.items() if k.startswith("sqs:")),
        "by_operation": by_operation,
    }
    other = summary["total"] - summary["dynamodb"] - summary["sqs"]
    if other:
        summary["other"] = other
    if lambda_service is not None:
        summary["lambda_service"] = dict(sorted(lambda_service.items()))
    return summary


def measure_requests(handler, clients, service_sqs, connector_url, queue_url, queue_arn):
    counter = RequestCounter()
    for _, client in clients:
        client.meta.events.register("before-send", counter)
    try:
        delivery_id = str(uuid.uuid4())
        event = webhook_event(delivery_id)
        forged = webhook_event(delivery_id)
        forged["headers"]["x-hub-signature-256"] = "sha256=" + "0" * 64
        counter.take()
        rejected = handler.intake_handler(forged, FakeContext())
        if rejected["statusCode"] != 401 or counter.take():
            fail(f"a forged signature was not rejected before any request: {rejected}")
        first = handler.intake_handler(event, FakeContext())
        accepted = counter.take()
        if first["statusCode"] != 202:
            fail(f"accepted webhook answered {first}")

        again = handler.intake_handler(event, FakeContext())
        duplicate = counter.take()
        if again["statusCode"] != 202 or json.loads(again["body"]) != json.loads(first["body"]):
            fail(f"duplicate delivery answered {again}, first answer was {first}")

        # What Lambda's event source mapping does around the stage function: receive, then
        # delete what the function reported as done. Counted apart from the handler.
        service = RequestCounter()
        service_sqs.meta.events.register("before-send", service)
        messages = []
        for _ in range(5):
            messages = service_sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
            ).get("Messages", [])
            if messages:
                break
        if not messages:
            fail("the accepted webhook's stage message never arrived on the queue")
        message = messages[0]
        expected_id = json.loads(first["body"])["execution_id"]
        if json.loads(message["Body"]) != {"execution_id": expected_id, "stage": 0}:
            fail(f"unexpected stage message {message['Body']}")
        stage_event = {
            "Records": [
                sqs_record(
                    message["MessageId"], message["ReceiptHandle"], message["Body"], queue_arn
                )
            ]
        }
        counter.take()
        result = handler.stage_handler(stage_event, FakeContext())
        stage = counter.take()
        if result.get("batchItemFailures"):
            fail(f"stage handler reported failures: {result}")
        service_sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        service_sqs.meta.events.unregister("before-send", service)
        lambda_service = service.take()

        keys = connector_keys(connector_url)
        if keys != [f"{expected_id}:0"]:
            fail(f"connector saw Idempotency-Keys {keys}, expected one for {expected_id}:0")
    finally:
        for _, client in clients:
            client.meta.events.unregister("before-send", counter)
    return {
        "accepted_webhook": summarize(accepted),
        "duplicate": summarize(duplicate),
        "stage": summarize(stage, lambda_service),
    }


# ---------------------------------------------------------------- init time

IMPORT_PROBE = (
    "import time; t0 = time.perf_counter()\n"
    "import handler\n"
    "t1 = time.perf_counter()\n"
    "print('READY', (t1 - t0) * 1000.0, flush=True)\n"
)


def percentile(values, fraction):
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def measure_init(env, runs):
    imports, processes = [], []
    for i in range(runs + 1):  # the first run warms the page cache and __pycache__
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", IMPORT_PROBE],
            cwd=HERE,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = proc.stdout.readline()
        ready = time.perf_counter()
        try:
            _, stderr = proc.communicate(timeout=SUBPROCESS_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            fail("import probe did not exit")
        if proc.returncode != 0 or not line.startswith("READY "):
            fail(f"import probe failed (exit {proc.returncode}): {stderr.strip()}")
        if i == 0:
            continue
        imports.append(float(line.split()[1]))
        processes.append((ready - started) * 1000.0)
    return {
        "import_median": round(statistics.median(imports), 2),
        "import_p90": round(percentile(imports, 0.9), 2),
        "process_median": round(statistics.median(processes), 2),
        "process_p90": round(percentile(processes, 0.9), 2),
        "runs": runs,
    }


# ---------------------------------------------------------------- CPU per event


def run_webhooks(handler, events):
    for event in events:
        response = handler.intake_handler(event, FakeContext())
        if response["statusCode"] != 202:
            fail(f"webhook answered {response}")


def run_stages(handler, events):
    for event in events:
        result = handler.stage_handler(event, FakeContext())
        if result.get("batchItemFailures"):
            fail(f"stage handler reported failures: {result}")


def measure_cpu(handler, webhooks, stage_records, repetitions, batch_size, queue_arn):
    warm = 20
    run_webhooks(handler, [webhook_event(str(uuid.uuid4())) for _ in range(warm)])
    run_stages(handler, synthetic_stage_events(warm, batch_size, queue_arn))
    webhook_ms, stage_ms = [], []
    for _ in range(repetitions):
        # Events are built (and signed) before the clock starts: that is the caller's work.
        events = [webhook_event(str(uuid.uuid4())) for _ in range(webhooks)]
        started = time.process_time()
        run_webhooks(handler, events)
        webhook_ms.append((time.process_time() - started) * 1000.0 / webhooks)

        events = synthetic_stage_events(stage_records, batch_size, queue_arn)
        started = time.process_time()
        run_stages(handler, events)
        stage_ms.append((time.process_time() - started) * 1000.0 / stage_records)
    return {
        "webhook": round(statistics.median(webhook_ms), 3),
        "stage_record": round(statistics.median(stage_ms), 3),
        "webhooks": webhooks,
        "stage_records": stage_records,
        "repetitions": repetitions,
        "stage_batch_size": batch_size,
        "webhook_each_repetition": [round(x, 3) for x in webhook_ms],
        "stage_record_each_repetition": [round(x, 3) for x in stage_ms],
    }


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default=os.environ.get("SLUICE_MINISTACK_ENDPOINT"))
    parser.add_argument("--out")
    parser.add_argument("--init-runs", type=int, default=15)
    parser.add_argument("--webhooks", type=int, default=300)
    parser.add_argument("--stage-records", type=int, default=300)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--stage-batch-size",
        type=int,
        default=1,
        help="SQS records per stage_handler invocation in the CPU run",
    )
    parser.add_argument("--serve-connector", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_connector:
        serve_connector()
        return
    if not args.endpoint:
        fail("no engine endpoint: pass --endpoint or export SLUICE_MINISTACK_ENDPOINT")
    if not args.out:
        fail("no output file: pass --out <file.json>")
    for name in ("init_runs", "webhooks", "stage_records", "repetitions", "stage_batch_size"):
        if not 1 <= getattr(args, name) <= 10_000:
            fail(f"--{name.replace('_', '-')} must be between 1 and 10000")
    check_endpoint(args.endpoint)
    if os.path.exists(args.out):
        os.remove(args.out)  # a failed run must not leave an older result looking fresh
    begun = time.monotonic()
    load_at_start = round(os.getloadavg()[0], 2)

    import boto3

    suffix = uuid.uuid4().hex[:12]
    connector, connector_url = start_connector()
    names = None
    admin = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
    )
    admin_ddb = admin.client("dynamodb", endpoint_url=args.endpoint)
    admin_sqs = admin.client("sqs", endpoint_url=args.endpoint)
    try:
        names = create_resources(admin_ddb, admin_sqs, suffix)
        queue_arn = admin_sqs.get_queue_attributes(
            QueueUrl=names["QUEUE_URL"], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        env = lambda_env(args.endpoint, {**names, "CONNECTOR_URL": connector_url})

        log(f"init: {args.init_runs} fresh interpreters importing handler")
        init_ms = measure_init(env, args.init_runs)

        os.environ.clear()
        os.environ.update(env)
        # Powertools warns (and skips idempotency) when a key is missing: make that fatal.
        warnings.filterwarnings("error", category=UserWarning, module="aws_lambda_powertools")
        sys.path.insert(0, HERE)
        import botocore

        import handler

        clients = handler_clients(handler)
        log(f"counting requests on handler clients: {[name for name, _ in clients]}")
        requests = measure_requests(
            handler, clients, admin_sqs, connector_url, names["QUEUE_URL"], queue_arn
        )
        log(
            f"cpu: {args.repetitions} x ({args.webhooks} webhooks + {args.stage_records} "
            f"stage records, batches of {args.stage_batch_size})"
        )
        cpu = measure_cpu(
            handler,
            args.webhooks,
            args.stage_records,
            args.repetitions,
            args.stage_batch_size,
            queue_arn,
        )
        result = {
            "reference": "aws-lambda-powertools",
            "powertools_version": version("aws-lambda-powertools"),
            "boto3_version": boto3.__version__,
            "botocore_version": botocore.__version__,
            "python_version": ".".join(map(str, sys.version_info[:3])),
            "engine": "ministack",
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": {
                "cpus": os.cpu_count(),
                "load_average_1m_at_start": load_at_start,
                "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            },
            "requests": requests,
            "init_ms": init_ms,
            "cpu_ms_per_event": cpu,
        }
    finally:
        if connector.stdin:
            connector.stdin.close()
        try:
            connector.wait(timeout=5)
        except subprocess.TimeoutExpired:
            connector.kill()
        if names:
            delete_resources(admin_ddb, admin_sqs, names)
    partial = args.out + ".partial"
    with open(partial, "w") as out:
        json.dump(result, out, indent=2)
        out.write("\n")
    os.replace(partial, args.out)
    log(f"wrote {args.out} in {time.monotonic() - begun:.1f} s")


if __name__ == "__main__":
    main()
