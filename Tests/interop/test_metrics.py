"""GET /metrics against the server's own statistics: N good and M bad inferences over gRPC
(tritonclient.grpc) and HTTP/1.1 (tritonclient.http), then a scrape parsed by prometheus_client,
in Prometheus text format and in OpenMetrics; the counters must equal what ModelStatistics
reports over gRPC, and the process metrics what /proc says about the server's process."""
import http.client
import os
import shutil
import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from tritonclient.utils import InferenceServerException

from conftest import ROOT, RunningProcess, binary, wait_for

SEED = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "onnx" / "seed_mlp.torchscript.op17.onnx"
OPENMETRICS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                      "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")  # what Prometheus 2.x sends
LABELS = {"model": "seed_mlp", "version": "1"}
GOOD, BAD = 7, 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    (repo / "seed_mlp" / "1").mkdir(parents=True)
    shutil.copy(SEED, repo / "seed_mlp" / "1" / "model.onnx")
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repo)])
    assert wait_for(lambda: grpcclient.InferenceServerClient(process.address).is_server_ready(), timeout=60)
    yield process
    assert process.stop() == 0


def scrape(server, method="GET", accept=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(method, "/metrics", headers={"accept": accept} if accept else {})
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    return response, body


def samples(families):
    """{(sample name, frozenset of labels): value} over every family."""
    return {(s.name, frozenset(s.labels.items())): s.value for family in families for s in family.samples}


def value(table, name, **labels):
    return table[(name, frozenset(labels.items()))]


def infer(module, client, rows, width=10):
    x = np.linspace(-1, 1, rows * width, dtype=np.float32).reshape(rows, width)
    tensor = module.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer("seed_mlp", [tensor])


@pytest.fixture(scope="module")
def traffic(server):
    """GOOD successes and BAD wrong-shape failures on each frontend; returns the gRPC statistics."""
    grpc = grpcclient.InferenceServerClient(server.address)
    rest = httpclient.InferenceServerClient(server.address)
    for module, client in ((grpcclient, grpc), (httpclient, rest)):
        for rows in range(1, GOOD + 1):
            assert infer(module, client, rows).as_numpy("output").shape == (rows, 10)
        for _ in range(BAD):
            with pytest.raises(InferenceServerException, match="expects shape"):
                infer(module, client, 1, width=3)
    # An unknown model has no metrics to count in.
    tensor = grpcclient.InferInput("input", [1, 10], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 10), np.float32))
    with pytest.raises(InferenceServerException, match="nope"):
        grpc.infer("nope", [tensor])
    return grpc.get_inference_statistics("seed_mlp", "1").model_stats[0]


def test_counters_equal_model_statistics(server, traffic):
    response, body = scrape(server)
    assert response.status == 200
    assert response.getheader("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    families = list(parse_prometheus(body))
    types = {family.name: family.type for family in families}
    table = samples(families)
    stats = traffic.inference_stats
    # Triton's sample names as dashboards query them (prometheus_client's parser adds `_total`
    # to every counter sample it reads, so the checks below use that spelling).
    assert f'nv_inference_request_success{{model="seed_mlp",version="1"}} {2 * GOOD}\n' in body
    assert f'nv_inference_request_failure{{model="seed_mlp",version="1",reason="OTHER"}} {2 * BAD}\n' in body

    assert stats.success.count == 2 * GOOD and stats.fail.count == 2 * BAD
    assert value(table, "nv_inference_request_success_total", **LABELS) == stats.success.count
    assert value(table, "nv_inference_count_total", **LABELS) == traffic.inference_count == 2 * sum(range(1, GOOD + 1))
    assert value(table, "nv_inference_exec_count_total", **LABELS) == traffic.execution_count
    # Wrong shapes are refused by validation: reason OTHER; nothing else failed.
    reasons = {reason: value(table, "nv_inference_request_failure_total", **LABELS, reason=reason)
               for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER")}
    assert reasons == {"REJECTED": 0, "CANCELED": 0, "BACKEND": 0, "OTHER": 2 * BAD}
    assert sum(reasons.values()) == stats.fail.count
    # Cumulative microseconds: the statistics' nanoseconds, in whole microseconds.
    for name, duration in (("nv_inference_request_duration_us", stats.success), ("nv_inference_queue_duration_us", stats.queue),
                           ("nv_inference_compute_input_duration_us", stats.compute_input),
                           ("nv_inference_compute_infer_duration_us", stats.compute_infer),
                           ("nv_inference_compute_output_duration_us", stats.compute_output)):
        assert value(table, name + "_total", **LABELS) == duration.ns // 1000, name
        assert types[name] == "counter"
    assert value(table, "nv_inference_pending_request_count", **LABELS) == 0
    assert types["nv_inference_pending_request_count"] == "gauge"
    # The latency histogram saw every success, and the same total time.
    histogram = "maas_inference_request_duration_seconds"
    assert types[histogram] == "histogram"
    assert value(table, histogram + "_count", **LABELS) == stats.success.count
    assert value(table, histogram + "_bucket", **LABELS, le="+Inf") == stats.success.count
    assert value(table, histogram + "_sum", **LABELS) == pytest.approx(stats.success.ns / 1e9, rel=1e-9, abs=1e-9)
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in table.items() if name == histogram + "_bucket")
    assert buckets[0][0] == 0.0001 and all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), "cumulative buckets"
    assert not any(dict(labels).get("model") == "nope" for _, labels in table)


def test_process_metrics_are_plausible(server, traffic):
    channel = grpcclient.InferenceServerClient(server.address)  # keeps an HTTP/2 connection open
    assert channel.is_server_live()
    _, body = scrape(server)
    table = samples(parse_prometheus(body))
    pid = server.proc.pid
    page = os.sysconf("SC_PAGESIZE")
    with open(f"/proc/{pid}/statm") as statm:
        resident = int(statm.read().split()[1]) * page
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = value(table, "process_resident_memory_bytes")
    assert 4 << 20 < rss < 8 << 30 and 0.5 < rss / resident < 2
    assert value(table, "process_virtual_memory_bytes") >= rss
    assert 0 < value(table, "process_cpu_seconds_total") <= cpu + 0.05
    assert abs(value(table, "process_open_fds") - len(os.listdir(f"/proc/{pid}/fd"))) <= 8
    assert value(table, "maas_open_connections", protocol="http1") >= 1, "the scrape's own connection"
    assert value(table, "maas_open_connections", protocol="http2") >= 1, "the tritonclient.grpc channel"
    channel.close()


def test_openmetrics_when_the_scrape_asks(server, traffic):
    response, body = scrape(server, accept=OPENMETRICS_ACCEPT)
    assert response.getheader("content-type") == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert body.endswith("# EOF\n")
    families = {family.name: family for family in parse_openmetrics(body)}
    success = families["nv_inference_request_success"]
    assert success.type == "counter" and success.documentation.startswith("Number of successful inference requests")
    assert [(s.name, s.labels, s.value) for s in success.samples] == [("nv_inference_request_success_total", LABELS, 2 * GOOD)]
    failure = families["nv_inference_request_failure"]
    assert {s.labels["reason"]: s.value for s in failure.samples if s.name == "nv_inference_request_failure_total"}["OTHER"] == 2 * BAD
    assert families["process_cpu_seconds"].type == "counter"
    assert families["process_cpu_seconds"].samples[0].name == "process_cpu_seconds_total"
    assert families["nv_inference_pending_request_count"].type == "gauge"
    histogram = families["maas_inference_request_duration_seconds"]
    assert histogram.type == "histogram"
    counts = [s.value for s in histogram.samples if s.name.endswith("_count")]
    assert counts == [2 * GOOD]
    # Plain curl (*/*) still gets the Prometheus text format.
    response, body = scrape(server, accept="*/*")
    assert response.getheader("content-type").startswith("text/plain") and "# EOF" not in body


def test_scrapes_during_traffic_parse_and_never_go_backwards(server, traffic):
    client = grpcclient.InferenceServerClient(server.address)
    stop = threading.Event()

    def load():
        while not stop.is_set():
            infer(grpcclient, client, 2)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        previous = 0
        for _ in range(20):
            table = samples(parse_openmetrics(scrape(server, accept=OPENMETRICS_ACCEPT)[1]))
            current = value(table, "nv_inference_request_success_total", **LABELS)
            assert current >= previous
            previous = current
    finally:
        stop.set()
        worker.join()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_metrics_takes_only_get_and_head(server, method):
    response, body = scrape(server, method=method)
    assert response.status == 405 and response.getheader("allow") == "GET, HEAD"
    assert "/metrics takes GET, HEAD" in body


def test_head_has_no_body(server):
    response, body = scrape(server, method="HEAD")
    assert response.status == 200 and body == "" and int(response.getheader("content-length")) > 0
