"""deploy/: the Kubernetes manifests against Kubernetes' own OpenAPI schemas (kubernetes-validate,
strict: an unknown field is an error, as `kubectl apply --validate=strict` makes it), then what no
schema sees: probes on the serving port asking health names maas answers, a termination budget that
covers the drain, flags `maas serve` has (and that start it), selectors that find the pods, and a
Containerfile whose steps and packages are scripts/serve's. No cluster and no container engine
here: this is all that can be checked of them."""
import copy
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BIN_DIR = Path(os.environ.get("MAAS_BIN_DIR", ROOT / ".build" / "debug"))  # as conftest.py

# The oldest Kubernetes the manifests are for (1.30: gRPC probes and unhealthyPodEvictionPolicy
# are GA or on by default) and the newest kubernetes-validate 1.37.0 has schemas for (1.25-1.37).
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]

# terminationGracePeriodSeconds must leave this much after the preStop sleep and the server's
# shutdown grace: the batchers finish what they hold, models unload, the access log is flushed.
SHUTDOWN_TAIL_SECONDS = 5

# In debian:bookworm-slim already (libc6 and libgcc-s1 are essential; apt needs libstdc++6).
BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6"}


def load_manifests():
    manifests = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            manifests += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return manifests


MANIFESTS = load_manifests()


def only(kind, name=None):
    found = [doc for _, doc in MANIFESTS if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind}{f' {name}' if name else ''} in deploy/k8s, found {len(found)}"
    return found[0]


def every(kind):
    return [doc for _, doc in MANIFESTS if doc["kind"] == kind]


def pod_template():
    return only("Deployment")["spec"]["template"]


def container():
    containers = pod_template()["spec"]["containers"]
    assert len(containers) == 1, "one container: maas"
    return containers[0]


def grpc_port():
    ports = [p for p in container().get("ports", []) if p.get("name") == "grpc"]
    assert len(ports) == 1, "the container names its serving port grpc"
    return ports[0]["containerPort"]


def selects(match_labels, labels):
    return bool(match_labels) and all(labels.get(key) == value for key, value in match_labels.items())


def label_selector(selector):
    """A LabelSelector's matchLabels; matchExpressions are not used here, so refused."""
    assert "matchExpressions" not in selector, "matchExpressions: not used by these manifests, not checked here"
    return selector.get("matchLabels", {})


# ---- the container's arguments, as the kubelet passes them to `maas serve`


def environment():
    """The container's environment as far as the manifests fix it: ConfigMap keys (envFrom) and
    literal env values; a valueFrom (known only in the pod) maps to None."""
    env = {}
    for source in container().get("envFrom", []):
        assert set(source) <= {"configMapRef", "prefix"}, f"envFrom {source}: only ConfigMaps are read here"
        data = only("ConfigMap", source["configMapRef"]["name"]).get("data", {})
        env.update({source.get("prefix", "") + key: value for key, value in data.items()})
    for variable in container().get("env", []):
        env[variable["name"]] = variable.get("value")
    return env


def expand(argument, env):
    """Kubernetes' $(NAME) expansion in args; $$ escapes."""
    def replace(match):
        if match.group(1):
            return match.group(0)[1:]
        name = match.group(2)
        assert env.get(name) is not None, f"{argument!r}: $({name}) is neither a ConfigMap key nor a literal env value"
        return env[name]
    return re.sub(r"\$(\$)?\((\w+)\)", replace, argument)


def serve_arguments():
    assert "command" not in container(), "no command: the image's ENTRYPOINT is `maas serve` and args are its flags"
    env = environment()
    return [expand(argument, env) for argument in container().get("args", [])]


def parse_flags(arguments, takes_value=None):
    """[(flag, value or None)]. Without `takes_value` (no binary to ask), a flag takes the next
    argument when it has no `=` and the next one is not a flag."""
    flags, i = [], 0
    while i < len(arguments):
        argument = arguments[i]
        assert argument.startswith("--"), f"{argument!r}: maas serve takes no positional arguments"
        name, equals, value = argument.partition("=")
        if not equals:
            wants = takes_value(name) if takes_value else i + 1 < len(arguments) and not arguments[i + 1].startswith("--")
            if wants:
                assert i + 1 < len(arguments), f"{name} needs a value"
                i += 1
                value = arguments[i]
            else:
                value = None
        flags.append((name, value))
        i += 1
    return flags


def flag(name):
    values = [value for key, value in parse_flags(serve_arguments()) if key == name]
    assert len(values) <= 1, f"{name} given {len(values)} times"
    return values[0] if values else None


def shutdown_grace_seconds():
    """The server's drain budget: --shutdown-grace-secs when the args pass it, else its default
    (Serve.swift once the flag exists, GRPCServerConfiguration before)."""
    if (value := flag("--shutdown-grace-secs")) is not None:
        return float(value)
    if match := re.search(r"var shutdownGraceSecs = ([0-9.]+)", (ROOT / "Sources/maas/Serve.swift").read_text()):
        return float(match.group(1))
    configuration = (ROOT / "Sources/MaaSGRPC/ServerConfiguration.swift").read_text()
    match = re.search(r"shutdownGracePeriod: Duration = \.seconds\((\d+)\)", configuration)
    assert match, "GRPCServerConfiguration.shutdownGracePeriod's default not found"
    return float(match.group(1))


def prestop_sleep_seconds():
    pre_stop = container()["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert len(command) == 2 and Path(command[0]).name == "sleep", f"preStop {command}: expected sleep SECONDS"
    return float(command[1])


def inference_service_name():
    source = (ROOT / "Sources/MaaSServer/ModelServer.swift").read_text()
    match = re.search(r'static let inferenceServiceName = "([^"]+)"', source)
    assert match, "ModelServer.inferenceServiceName not found"
    return match.group(1)


INFERENCE_SERVICE = inference_service_name()


def health_service_names():
    """What grpc.health.v1 Check answers for in maas serve: "" (the server) and the inference
    service; anything else is NOT_FOUND."""
    return {"", INFERENCE_SERVICE}


# ---- maas serve --help, from the binary the other interop tests run


def serve_help():
    path = BIN_DIR / "maas"
    if not path.exists():
        return None
    result = subprocess.run([str(path), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # "  --port <port>   Port to listen on..." takes a value; "  --allow-cleartext   With TLS..." does not.
    return {m.group(1): bool(m.group(2)) for m in re.finditer(r"^  (--[a-z0-9-]+)( <[^>]+>)?", result.stdout, re.M)}


@pytest.fixture(scope="module")
def serve_options():
    options = serve_help()
    if options is None:
        pytest.skip(f"{BIN_DIR / 'maas'} not built: the flags are checked against its --help")
    assert "--port" in options and "--model-repository" in options, "maas serve --help did not parse"
    return options


# ---- schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path,doc", MANIFESTS, ids=[f"{p}:{d['kind']}/{d['metadata']['name']}" for p, d in MANIFESTS])
def test_manifest_is_valid_for_kubernetes(path, doc, version):
    problem = None
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(map(str, error.path)) or "(top)"
        problem = f"{path}: {where}: {error.message} (Kubernetes {error.version})"
    except kubernetes_validate.SchemaNotFoundError as error:
        problem = f"{path}: {error.message}"
    if problem:  # outside the except: the jsonschema error's traceback holds the whole schema
        pytest.fail(problem, pytrace=False)


def test_strict_validation_refuses_an_unknown_field():
    # Strictness is what catches a misspelt field, which Kubernetes would otherwise drop.
    deployment = copy.deepcopy(only("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["servce"] = INFERENCE_SERVICE
    with pytest.raises(kubernetes_validate.ValidationError, match="servce"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files


# ---- the Deployment


def test_probes_ask_grpc_health_on_the_serving_port():
    port = grpc_port()
    assert flag("--port") == str(port), "maas listens where the probes and the Service look"
    probes = {kind: container().get(kind) for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        assert probe, f"no {kind}"
        handlers = set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"}
        assert handlers == {"grpc"}, f"{kind}: grpc.health.v1, not {handlers}"
        assert probe["grpc"]["port"] == port, f"{kind} on port {probe['grpc']['port']}, maas on {port}"
        service = probe["grpc"].get("service", "")
        assert service in health_service_names(), f"{kind}: maas answers NOT_FOUND for service {service!r}"
    # Ready once the models have loaded; "" is SERVING from the moment the port opens.
    assert probes["readinessProbe"]["grpc"]["service"] == INFERENCE_SERVICE
    assert probes["startupProbe"]["grpc"]["service"] == INFERENCE_SERVICE
    # Alive while the event loops answer, whatever the models do.
    assert probes["livenessProbe"]["grpc"].get("service", "") == ""


def test_termination_grace_covers_prestop_and_drain():
    pod = pod_template()["spec"]
    sleep, grace = prestop_sleep_seconds(), shutdown_grace_seconds()
    assert sleep >= 3, "preStop must outlast the endpoint removal reaching kube-proxy and ingresses (seconds)"
    budget = pod["terminationGracePeriodSeconds"]
    assert budget >= sleep + grace + SHUTDOWN_TAIL_SECONDS, (
        f"terminationGracePeriodSeconds {budget} < preStop {sleep} + shutdown grace {grace} + {SHUTDOWN_TAIL_SECONDS}: "
        "SIGKILL would cut the drain")


def test_compute_pool_matches_the_cpu_limit():
    resources = container()["resources"]
    assert resources["requests"] == resources["limits"], "requests = limits: the pool, the HPA and the CPUs agree"
    cpu = str(resources["limits"]["cpu"])
    assert re.fullmatch(r"[1-9][0-9]*", cpu), f"cpu {cpu}: whole CPUs, one pool thread each"
    threads = [v for v in container().get("env", []) if v["name"] == "MAAS_COMPUTE_THREADS"]
    assert len(threads) == 1, "MAAS_COMPUTE_THREADS: the pool counts the node's cores, not the quota"
    field = threads[0].get("valueFrom", {}).get("resourceFieldRef", {})
    assert field.get("resource") == "limits.cpu" and field.get("containerName", container()["name"]) == container()["name"]
    assert str(field.get("divisor", "1")) == "1"


def test_repository_volume_read_only_in_poll_mode():
    repository = flag("--model-repository")
    mounts = [m for m in container().get("volumeMounts", []) if m["mountPath"] == repository]
    assert len(mounts) == 1, f"--model-repository {repository} is not a volume mount"
    assert mounts[0].get("readOnly") is True
    volumes = [v for v in pod_template()["spec"]["volumes"] if v["name"] == mounts[0]["name"]]
    claim = volumes[0]["persistentVolumeClaim"]["claimName"]
    assert claim == only("PersistentVolumeClaim")["metadata"]["name"]
    assert flag("--model-control-mode") == "poll", "new versions on the volume are served without a restart"


def test_writes_go_where_they_can():
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod_template()["spec"]["securityContext"]["runAsNonRoot"] is True
    log = flag("--access-log")
    if log not in (None, "-"):
        writable = [m["mountPath"] for m in container().get("volumeMounts", []) if not m.get("readOnly")]
        assert any(log.startswith(path.rstrip("/") + "/") for path in writable), f"--access-log {log} on a read-only filesystem"


def test_rolling_update_keeps_capacity():
    spec = only("Deployment")["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert "replicas" not in spec, "the HPA owns the replica count; a value here resets it on apply"


def test_metrics_are_scraped_on_the_serving_port():
    annotations = pod_template()["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(grpc_port())
    assert annotations["prometheus.io/path"] == "/metrics"


def test_configmap_keys_are_used():
    used = set(re.findall(r"\$\((\w+)\)", " ".join(container().get("args", []))))
    knobs = set(re.findall(r"^\| `(MAAS_[A-Z0-9_]+)` \|", (ROOT / "README.md").read_text(), re.M))
    for key in only("ConfigMap")["data"]:
        assert key != "MAAS_COMPUTE_THREADS", "set from the CPU limit in deployment.yaml"
        assert key in used or key in knobs, f"ConfigMap key {key}: in no argument, and not an engine knob of the README"


# ---- flags: the ones the manifests pass exist, and start the server


def test_flags_are_maas_serve_flags(serve_options):
    arguments = serve_arguments()
    for name, value in parse_flags(arguments, lambda name: serve_options.get(name, False)):
        assert name in serve_options, f"maas serve has no {name}"
        assert (value is not None) == serve_options[name], f"{name}: {'needs' if serve_options[name] else 'takes no'} value"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_arguments_start_maas_serve(serve_options, tmp_path):
    """The Deployment's args (on loopback, a free port, an empty repository) start maas serve; every
    probe's health name turns SERVING; SIGTERM ends it (no calls open) well inside the budget."""
    port = free_port()
    arguments = []
    for name, value in parse_flags(serve_arguments(), lambda name: serve_options.get(name, False)):
        value = {"--host": "127.0.0.1", "--port": str(port), "--model-repository": str(tmp_path)}.get(name, value)
        arguments.append(name if value is None else f"{name}={value}")
    stderr = open(tmp_path / "stderr", "w+")
    server = subprocess.Popen([str(BIN_DIR / "maas"), "serve", *arguments], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        probes = ("startupProbe", "readinessProbe", "livenessProbe")
        services = sorted({container()[kind]["grpc"].get("service", "") for kind in probes})
        deadline = time.monotonic() + 30
        for service in services:
            while True:
                assert server.poll() is None, f"maas serve {arguments} exited: {(tmp_path / 'stderr').read_text()}"
                check = subprocess.run(
                    [str(BIN_DIR / "maas"), "health", "--port", str(port), "--service", service, "--timeout", "2"],
                    capture_output=True, text=True, timeout=30)
                if check.returncode == 0:
                    break
                assert "unknown service" not in check.stdout, f"health {service!r}: {check.stdout}"
                assert time.monotonic() < deadline, f"health {service!r}: {check.stdout}{check.stderr}"
                time.sleep(0.2)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        budget = pod_template()["spec"]["terminationGracePeriodSeconds"] - prestop_sleep_seconds()
        assert server.wait(timeout=budget) == 0, (tmp_path / "stderr").read_text()
        assert time.monotonic() - started < budget
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        stderr.close()


# ---- Services, HPA, PDB find the pods


def test_services_select_the_pods():
    labels = pod_template()["metadata"]["labels"]
    assert selects(label_selector(only("Deployment")["spec"]["selector"]), labels)
    named = {p["name"]: p["containerPort"] for p in container()["ports"]}
    services = every("Service")
    assert services
    for service in services:
        assert selects(service["spec"]["selector"], labels), f"Service {service['metadata']['name']} selects no maas pod"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in named or target in named.values(), f"Service port {port['name']}: no container port {target}"
    for constraint in pod_template()["spec"].get("topologySpreadConstraints", []):
        assert selects(label_selector(constraint["labelSelector"]), labels)


def test_hpa_scales_the_deployment_on_cpu():
    hpa = only("HorizontalPodAutoscaler")["spec"]
    deployment = only("Deployment")
    target = {"apiVersion": deployment["apiVersion"], "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert hpa["scaleTargetRef"] == target
    cpu = [m for m in hpa["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert len(cpu) == 1 and cpu[0]["resource"]["target"]["type"] == "Utilization"
    assert hpa["minReplicas"] >= 2, "one pod may be disrupted at a time (pdb.yaml); one must stay"


def test_pdb_covers_the_pods():
    pdb = only("PodDisruptionBudget")["spec"]
    assert selects(label_selector(pdb["selector"]), pod_template()["metadata"]["labels"])
    minimum = only("HorizontalPodAutoscaler")["spec"]["minReplicas"]
    if "maxUnavailable" in pdb:
        assert pdb["maxUnavailable"] == 1
    else:
        assert pdb["minAvailable"] < minimum, "a budget the minimum replica count cannot meet blocks every drain"


# ---- deploy/Containerfile against scripts/serve and scripts/lib.sh


def containerfile_stages():
    """[{"from", "name", "instructions": [(INSTRUCTION, text)]}], continuations joined, comments dropped."""
    instructions, pending = [], ""
    for raw in (DEPLOY / "Containerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instructions.append(pending + line)
        pending = ""
    stages = []
    for text in instructions:
        keyword, _, rest = text.partition(" ")
        if keyword.upper() == "FROM":
            parts = rest.split()
            stages.append({"from": parts[0], "name": parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None,
                           "instructions": []})
        else:
            stages[-1]["instructions"].append((keyword.upper(), rest.strip()))
    return stages


def apt_installs(stage):
    packages = []
    for keyword, text in stage["instructions"]:
        if keyword == "RUN":
            for match in re.finditer(r"apt-get\s+install\s+([^;&|]*)", text):
                packages += [token for token in match.group(1).split() if not token.startswith("-")]
    return packages


def build_packages():
    match = re.search(r"^BUILD_PACKAGES=\(([^)]*)\)", (ROOT / "scripts/lib.sh").read_text(), re.M)
    assert match, "BUILD_PACKAGES not found in scripts/lib.sh"
    return match.group(1).split()


def stage_instructions(stage, keyword):
    return [text for k, text in stage["instructions"] if k == keyword]


def build_stage():
    stages = containerfile_stages()
    assert len(stages) == 2, "two stages: build, runtime"
    return stages[0]


def runtime_stage():
    return containerfile_stages()[-1]


def test_containerfile_says_it_is_not_built_here():
    assert "NOT BUILT HERE" in (DEPLOY / "Containerfile").read_text()


def test_build_stage_does_what_scripts_serve_does():
    stage = build_stage()
    assert sorted(apt_installs(stage)) == sorted(build_packages()), "the build stage installs scripts/lib.sh's BUILD_PACKAGES"
    builds = re.findall(r"^(swift build [^\n]*)$", (ROOT / "scripts/serve").read_text(), re.M)
    assert builds, "scripts/serve's swift build not found"
    runs = " ".join(stage_instructions(stage, "RUN"))
    for command in builds:
        assert command in runs, f"scripts/serve runs `{command}`; the build stage does not"


def test_images_match_this_toolchain_and_debian():
    match = re.fullmatch(r"swift:(\d+\.\d+(?:\.\d+)?)-(\w+)", build_stage()["from"])
    assert match, f"build stage {build_stage()['from']}: an official swift:VERSION-CODENAME image"
    version, codename = match.groups()
    assert runtime_stage()["from"] == f"debian:{codename}-slim", "the runtime is the build stage's Debian"
    os_release = Path("/etc/os-release")
    if os_release.exists() and (here := re.search(r"^VERSION_CODENAME=(\w+)", os_release.read_text(), re.M)):
        assert codename == here.group(1), f"image Debian {codename}, these machines {here.group(1)}"
    if swift := shutil.which("swift"):
        printed = subprocess.run([swift, "--version"], capture_output=True, text=True, timeout=60).stdout
        toolchain = re.search(r"Swift version (\d+\.\d+(?:\.\d+)?)", printed)
        assert toolchain and toolchain.group(1) == version, f"swift:{version}, toolchain here: {printed.strip()}"


def dpkg_field(package, field):
    result = subprocess.run(["dpkg-query", "-W", f"-f=${{{field}}}", package], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def require_dpkg(packages):
    if not shutil.which("dpkg-query"):
        pytest.skip("no dpkg here: the runtime packages are derived from Debian's package data")
    missing = [p for p in packages if dpkg_field(p, "Status") != "install ok installed"]
    if missing:
        pytest.skip(f"not installed: {missing} (scripts/test installs BUILD_PACKAGES first)")


def runtime_counterpart(package):
    """A -dev package's library: the dependency it pins to its own version, `libnghttp2-14 (= V)`
    for libnghttp2-dev V. Tools (pkg-config, protobuf-c-compiler) pin none and have none."""
    version = dpkg_field(package, "Version")
    for entry in dpkg_field(package, "Depends").split(","):
        match = re.fullmatch(r"\s*([a-z0-9.+-]+)(?::\w+)?\s*\(=\s*(\S+)\)\s*", entry)
        if match and match.group(2) == version:
            return match.group(1)
    return None


def test_runtime_packages_are_the_build_packages_libraries():
    require_dpkg(build_packages())
    wanted = sorted(filter(None, map(runtime_counterpart, build_packages())))
    assert sorted(apt_installs(runtime_stage())) == wanted


def dependency_closure(packages):
    """Installed packages reachable through Depends and Pre-Depends (alternatives: those installed)."""
    seen, todo = set(), list(packages)
    while todo:
        package = todo.pop()
        if package in seen:
            continue
        seen.add(package)
        fields = ",".join(filter(None, (dpkg_field(package, "Depends"), dpkg_field(package, "Pre-Depends"))))
        for entry in filter(str.strip, fields.split(",")):
            for alternative in entry.split("|"):
                name = re.match(r"\s*([a-z0-9.+-]+)", alternative).group(1)
                if dpkg_field(name, "Status") == "install ok installed":
                    todo.append(name)
    return seen


def owning_package(path):
    real = os.path.realpath(path)
    # Debian 12 merges /lib into /usr/lib, but dpkg knows each file by the path its package ships.
    candidates = {path, real} | {p.removeprefix("/usr") for p in (path, real)}
    candidates |= {"/usr" + p for p in (path, real) if not p.startswith("/usr")}
    for candidate in candidates:
        result = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":")[0].strip()
    return None


def test_runtime_image_has_every_library_the_binary_links():
    binary = BIN_DIR / "maas"
    if not binary.exists() or not shutil.which("ldd"):
        pytest.skip(f"{binary} not built (or no ldd): its libraries are what the image must hold")
    require_dpkg(apt_installs(runtime_stage()))
    available = dependency_closure(set(apt_installs(runtime_stage())) | BASE_IMAGE_PACKAGES)
    # The image builds maas without the MPI trait; the tests' maas has it (for
    # test_mpi_training.py), so Open MPI's libraries, and only they, are the tests' own.
    with_mpi = "--traits MPI" in (DEPLOY / "Containerfile").read_text()
    mpi_only = set() if with_mpi else dependency_closure({"libopenmpi3"}) - available
    linked = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    for name, path in re.findall(r"^\s*(\S+) => (/\S+)", linked, re.M):
        # The image copies no Swift library: maas links them statically (Package.swift).
        assert "/lib/swift/" not in path, f"maas links {name} from the toolchain"
        package = owning_package(path)
        assert package, f"{name} ({path}) belongs to no Debian package"
        if package in mpi_only:
            continue
        assert package in available, f"{name} is in {package}, which the runtime stage does not install"
    # OpenBLAS is opened when a model needs it (BLAS.swift), so ldd does not list it.
    openblas = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    path = re.search(r"^\s*libopenblas\.so\.0 \(libc6,x86-64\) => (/\S+)", openblas, re.M)
    assert path, "libopenblas.so.0 is not installed here"
    assert owning_package(path.group(1)) in available, f"{path.group(1)}'s package is not in the runtime stage"


def test_image_user_port_and_entrypoint_fit_the_deployment():
    runtime = runtime_stage()
    users = stage_instructions(runtime, "USER")
    assert len(users) == 1 and re.fullmatch(r"\d+(:\d+)?", users[0]), "a numeric USER, so the kubelet can check runAsNonRoot"
    uid = int(users[0].split(":")[0])
    assert uid != 0 and uid == pod_template()["spec"]["securityContext"]["runAsUser"]
    exposed = " ".join(stage_instructions(runtime, "EXPOSE")).split()
    assert str(grpc_port()) in exposed
    entrypoints = stage_instructions(runtime, "ENTRYPOINT")
    assert len(entrypoints) == 1
    entrypoint = yaml.safe_load(entrypoints[0])  # the exec form is a JSON array
    assert isinstance(entrypoint, list) and Path(entrypoint[0]).name == "maas" and entrypoint[1:] == ["serve"]
