"""Data-parallel `mpirun -np N maas train` (Open MPI from Debian) against one process: the same
model within training's rounding, rank 0 alone writes, ranks that disagree or die stop the job
and nothing is written."""
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import ROOT, binary

FIXTURES = ROOT / "Tests" / "MaaSTrainingTests" / "Fixtures"

pytestmark = pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI (openmpi-bin) is not installed")


def mpi_env():
    env = dict(os.environ)
    # Containers often forbid the cross-memory attach Open MPI's shared-memory transport tries
    # first; copying through the shared segment works everywhere.
    env["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
    # Open MPI 4.1's rtc/hwloc maps the topology into a "hole" of the address space it picks;
    # a fresh-clone CI run saw an orted segfault there (hwloc_shmem_topology_write). The tests
    # bind nothing, so they go without it.
    env["OMPI_MCA_rtc"] = "^hwloc"
    env.pop("MAAS_COMPUTE_THREADS", None)
    return env


def mpirun_prefix(ranks):
    command = ["mpirun", "--oversubscribe", "-np", str(ranks)]
    if os.geteuid() == 0:
        command.insert(1, "--allow-run-as-root")
    return command


def built_with_mpi():
    # A maas built without the MPI trait refuses to run as one of several ranks.
    result = subprocess.run([*mpirun_prefix(2), binary("maas"), "train", "--data", "x.npy", "--targets", "y.npy",
                             "--layers", "1,1", "--output", "/nonexistent/x.onnx"],
                            capture_output=True, text=True, timeout=60, env=mpi_env())
    return "built without MPI" not in result.stderr


def train(ranks, *args, timeout=180):
    prefix = mpirun_prefix(ranks) if ranks else []
    return subprocess.run([*prefix, binary("maas"), "train", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=mpi_env())


def weights(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def metadata(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module", autouse=True)
def require_mpi_build():
    if not built_with_mpi():
        pytest.fail("this maas was built without MPI: scripts/test builds it with `swift build --traits MPI`")


# Tolerances, as fractions of each weight tensor's largest entry. Every step runs the same rows as
# the single process; only the order in which the gradient's terms are summed differs (per rank,
# then across ranks), so each gradient entry is within the K·u·Σ|terms| bound of the other's.
# SGD passes that on linearly: 1e-5, PyTorchRunTests' tolerance for final weights of runs that
# stay out of the chaotic regime. Adam divides each step by √v̂, so an entry whose terms nearly
# cancel (|Σ| ≪ Σ|terms|) turns its rounding into a relative error of the step itself, which is
# O(lr): 1e-4 for the one Adam recipe, 200 full-batch steps at lr 1e-3 (measured 3.3e-7 at worst
# with OpenBLAS's SkylakeX, Haswell and Sandybridge kernels). Changing one row's features moves
# a run's weights by 1.7e-1 of scale, so a row lost, counted twice or weighted wrongly shows at
# thousands of times these tolerances.
SGD_TOLERANCE, ADAM_TOLERANCE = 1e-5, 1e-4

RECIPES = {
    # The seed's minibatch SGD with momentum: 300 steps of 100 rows in file order.
    "sgd-minibatch": ("seed_sgd_minibatch", None, SGD_TOLERANCE, ["--layers", "10,20,10", "--optimizer", "sgd", "--lr", 0.05,
                                                   "--momentum", 0.9, "--epochs", 30, "--batch-size", 100]),
    # Full-batch Adam (each rank one contiguous shard), short of where this recipe turns chaotic.
    "adam-full-batch": ("seed_adam_mse", None, ADAM_TOLERANCE, ["--layers", "10,20,10", "--epochs", 200]),
    # Shuffled cross-entropy minibatches of 64 over 962 rows: 21/21/22 rows per rank, and a
    # last step of 2 rows that leaves one of 3 ranks with nothing to do. SGD: with Adam (lr
    # 1e-2) this run is close enough to chaotic that OpenBLAS's Haswell kernel took 3 ranks
    # 5.9e-3 of scale away (loss 3.5e-4 apart), like seed_adam_mse late in PyTorchRunTests.
    "xent-shuffled": ("cls_adam_xent", 962, SGD_TOLERANCE, ["--layers", "10,32,3", "--loss", "cross-entropy",
                                            "--optimizer", "sgd", "--lr", 0.05, "--momentum", 0.9,
                                            "--epochs", 20, "--batch-size", 64, "--shuffle", "--seed", 7]),
}


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("recipe", RECIPES)
def test_ranks_train_what_one_process_trains(tmp_path, recipe, ranks):
    run, rows, tolerance, args = RECIPES[recipe]
    x, y = np.load(FIXTURES / run / "X.npy"), np.load(FIXTURES / run / "Y.npy")
    if rows:
        x, y = x[:rows], y[:rows]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    data = ["--data", tmp_path / "x.npy", "--targets", tmp_path / "y.npy", *args]

    single = train(None, *data, "--output", tmp_path / "single.onnx")
    assert single.returncode == 0, single.stderr
    parallel = train(ranks, *data, "--output", tmp_path / "parallel.onnx")
    assert parallel.returncode == 0, parallel.stderr

    ours, reference = weights(tmp_path / "parallel.onnx"), weights(tmp_path / "single.onnx")
    assert ours.keys() == reference.keys()
    for name, expected in reference.items():
        error = np.max(np.abs(ours[name] - expected)) / np.max(np.abs(expected))
        assert error <= tolerance, f"{name}: {error:.2e} of its scale apart from the single-process run"

    # Rank 0 alone prints: one header and one line per epoch.
    epochs = int(args[args.index("--epochs") + 1])
    assert parallel.stdout.count("training MLP") == 1, parallel.stdout
    assert sum(line.startswith("epoch ") for line in parallel.stdout.splitlines()) == epochs
    assert f"on each of {ranks} ranks" in parallel.stdout
    meta = metadata(tmp_path / "parallel.onnx")
    assert meta["training.ranks"] == str(ranks)
    assert meta["training.rows"] == str(len(x))


def test_rank_zero_alone_deploys_one_version_and_validates(tmp_path):
    run = FIXTURES / "cls_adam_xent"
    repo = tmp_path / "repo"
    repo.mkdir()
    result = train(2, "--data", run / "X.npy", "--targets", run / "Y.npy", "--layers", "10,32,3", "--loss", "cross-entropy",
                   "--lr", 0.01, "--epochs", 5, "--batch-size", 64, "--validation-split", 0.25,
                   "--repository", repo, "--model", "cls")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("deployed cls version 1") == 1
    assert sorted(p.name for p in (repo / "cls").iterdir() if p.is_dir()) == ["1"]
    record = json.loads((repo / "cls" / "1" / "training.json").read_text())
    assert record["ranks"] == "2" and record["rows"] == "720"
    assert float(record["validation_accuracy"]) > 0.8
    assert "val_accuracy" in result.stdout


def read_bytes(pid):
    # Bytes the process has read with read(2)/pread(2): files, not the mapped binary.
    for line in open(f"/proc/{pid}/io"):
        if line.startswith("rchar:"):
            return int(line.split()[1])


def test_a_killed_rank_stops_every_rank_and_nothing_is_written(tmp_path):
    # 200,000 rows, 16 MB in two .npy files: large enough to see what each rank reads.
    rng = np.random.default_rng(3)
    np.save(tmp_path / "x.npy", rng.standard_normal((200_000, 10), dtype=np.float32))
    np.save(tmp_path / "y.npy", rng.standard_normal((200_000, 10), dtype=np.float32))
    data_bytes = (tmp_path / "x.npy").stat().st_size + (tmp_path / "y.npy").stat().st_size
    out = tmp_path / "never.onnx"
    job = subprocess.Popen([*mpirun_prefix(2), binary("maas"), "train", "--data", tmp_path / "x.npy", "--targets", tmp_path / "y.npy",
                            "--layers", "10,20,10", "--epochs", "10000000", "--output", out],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env())
    try:
        ranks = {}
        deadline = time.monotonic() + 60
        while len(ranks) < 2 and time.monotonic() < deadline:
            for pid in subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split():
                try:
                    environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                except FileNotFoundError:
                    continue
                for entry in environ:
                    if entry.startswith(b"OMPI_COMM_WORLD_RANK="):
                        ranks[int(entry.split(b"=")[1])] = int(pid)
            time.sleep(0.2)
        assert len(ranks) == 2, "the two ranks did not start"
        # Let them get into training, then kill rank 1 without warning.
        time.sleep(3)
        assert job.poll() is None
        # Full batch over two ranks: rank 1 reads its contiguous half of the rows, and rank 0
        # reads its half plus both files whole for the SHA-256 in the model's metadata.
        rank1_read, rank0_read = read_bytes(ranks[1]), read_bytes(ranks[0])
        assert data_bytes * 0.5 <= rank1_read < data_bytes * 0.5 + 2_000_000, (rank1_read, data_bytes)
        assert rank0_read >= data_bytes * 1.5
        print("bytes read: rank 0", rank0_read, "rank 1", rank1_read, "of", data_bytes)
        killed_at = time.monotonic()
        os.kill(ranks[1], signal.SIGKILL)
        stdout, stderr = job.communicate(timeout=60)
        stopped_after = time.monotonic() - killed_at
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode != 0
    assert "rank 1" in stderr and "signal 9" in stderr, stderr
    assert stopped_after < 30
    assert not is_running(ranks[0]), "rank 0 outlived the job"
    assert not out.exists()
    assert "epoch " in stdout  # it had been training


def is_running(pid):
    # A rank mpirun left behind is reparented; one that ended is gone or a zombie.
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def mpmd(tmp_path, first, second):
    run = FIXTURES / "seed_adam_mse"
    common = ["train", "--data", str(run / "X.npy"), "--targets", str(run / "Y.npy"), "--output", str(tmp_path / "never.onnx")]
    prefix = mpirun_prefix(1)
    command = [*prefix, binary("maas"), *common, *map(str, first), ":", "-np", "1", binary("maas"), *common, *map(str, second)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=mpi_env())


def test_ranks_started_from_different_weights_stop_with_both_hashes(tmp_path):
    for seed in (1, 2):
        made = train(None, "--data", FIXTURES / "seed_adam_mse" / "X.npy", "--targets", FIXTURES / "seed_adam_mse" / "Y.npy",
                     "--layers", "10,20,10", "--epochs", 1, "--seed", seed, "--output", tmp_path / f"init{seed}.onnx")
        assert made.returncode == 0, made.stderr
    result = mpmd(tmp_path, ["--init-from", tmp_path / "init1.onnx", "--epochs", 5],
                  ["--init-from", tmp_path / "init2.onnx", "--epochs", 5])
    assert result.returncode != 0
    assert "the ranks' parameters differ before the first step" in result.stderr, result.stderr
    assert "rank 0 has hash" in result.stderr and "rank 1 has" in result.stderr
    assert not (tmp_path / "never.onnx").exists()


def test_ranks_started_with_different_options_are_stopped(tmp_path):
    result = mpmd(tmp_path, ["--layers", "10,20,10", "--epochs", 5], ["--layers", "10,20,10", "--epochs", 6])
    assert result.returncode != 0
    assert "rank 1 was started with other data or options than rank 0" in result.stderr, result.stderr
    assert not (tmp_path / "never.onnx").exists()


@pytest.fixture
def two_namespaces(tmp_path):
    """Two network namespaces joined by a veth pair, 10.77.0.1 and 10.77.0.2: two 'machines'
    whose ranks can only talk over TCP. mpirun starts its daemons in them through an agent
    that stands in for ssh."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = str(os.getpid())
    names = [f"maas-a{tag}", f"maas-b{tag}"]
    links = [f"vma{tag}", f"vmb{tag}"]
    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)
    try:
        ip("netns", "add", names[0])
    except subprocess.CalledProcessError as error:
        pytest.skip(f"cannot create a network namespace here: {error.stderr.decode().strip()}")
    try:
        ip("netns", "add", names[1])
        ip("link", "add", links[0], "type", "veth", "peer", "name", links[1])
        for index, (name, link) in enumerate(zip(names, links)):
            ip("link", "set", link, "netns", name)
            ip("-n", name, "addr", "add", f"10.77.0.{index + 1}/24", "dev", link)
            ip("-n", name, "link", "set", link, "up")
            ip("-n", name, "link", "set", "lo", "up")
        agent = tmp_path / "netns-agent"
        # It logs each launch, so the test knows a daemon (whose ranks inherit its namespace)
        # started in each namespace.
        agent.write_text(f'#!/bin/sh\nhost="$1"; shift\necho "$host" >> {tmp_path}/launches\n'
                         'exec ip netns exec "$host" /bin/sh -c "$*"\n')
        agent.chmod(0o755)
        yield names, agent
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def test_ranks_in_two_network_namespaces_train_what_one_process_trains(tmp_path, two_namespaces):
    names, agent = two_namespaces
    run = FIXTURES / "seed_sgd_minibatch"
    args = ["train", "--data", run / "X.npy", "--targets", run / "Y.npy", "--layers", "10,20,10", "--optimizer", "sgd",
            "--lr", 0.05, "--momentum", 0.9, "--epochs", 30, "--batch-size", 100]
    single = train(None, *args[1:], "--output", tmp_path / "single.onnx")
    assert single.returncode == 0, single.stderr
    # mpirun runs in the first namespace and reaches its daemons and ranks only over the veth
    # pair: TCP between the ranks, no shared memory.
    command = ["ip", "netns", "exec", names[0], "mpirun", "--allow-run-as-root", "--host", f"{names[0]}:1,{names[1]}:1", "-np", "2",
               "--mca", "plm_rsh_agent", str(agent), "--mca", "btl", "tcp,self",
               "--mca", "btl_tcp_if_include", "10.77.0.0/24", "--mca", "oob_tcp_if_include", "10.77.0.0/24",
               binary("maas"), *map(str, args), "--output", str(tmp_path / "parallel.onnx")]
    job = subprocess.run(command, capture_output=True, text=True, timeout=120, env=mpi_env())
    assert job.returncode == 0, job.stderr
    assert sorted((tmp_path / "launches").read_text().split()) == sorted(names)
    ours, reference = weights(tmp_path / "parallel.onnx"), weights(tmp_path / "single.onnx")
    for name, expected in reference.items():
        error = np.max(np.abs(ours[name] - expected)) / np.max(np.abs(expected))
        assert error <= SGD_TOLERANCE, f"{name}: {error:.2e} of its scale apart from the single-process run"
    assert "2 ranks: " in job.stdout


def test_csv_data_train_what_one_process_trains(tmp_path):
    # CSV is parsed whole on every rank, then each keeps its share; the header names the targets.
    run = FIXTURES / "seed_sgd_minibatch"
    x, y = np.load(run / "X.npy"), np.load(run / "Y.npy")
    header = ",".join([f"x{i}" for i in range(10)] + [f"y{i}" for i in range(10)])
    np.savetxt(tmp_path / "data.csv", np.hstack([x, y]), delimiter=",", header=header, comments="", fmt="%.9g")
    args = ["--data", tmp_path / "data.csv", "--target-columns", ",".join(f"y{i}" for i in range(10)),
            "--layers", "10,20,10", "--optimizer", "sgd", "--lr", 0.05, "--momentum", 0.9, "--epochs", 10, "--batch-size", 100]
    single = train(None, *args, "--output", tmp_path / "single.onnx")
    assert single.returncode == 0, single.stderr
    parallel = train(3, *args, "--output", tmp_path / "parallel.onnx")
    assert parallel.returncode == 0, parallel.stderr
    ours, reference = weights(tmp_path / "parallel.onnx"), weights(tmp_path / "single.onnx")
    for name, expected in reference.items():
        error = np.max(np.abs(ours[name] - expected)) / np.max(np.abs(expected))
        assert error <= SGD_TOLERANCE, f"{name}: {error:.2e} of its scale apart from the single-process run"


def test_bad_value_in_one_ranks_share_stops_the_job_naming_rank_and_file_row(tmp_path):
    # Full batch over 2 ranks: rank 1 alone reads rows 500-999, so only it sees the NaN, and the
    # error names the row in the file, not in its share.
    run = FIXTURES / "seed_sgd_minibatch"
    x = np.load(run / "X.npy")
    x[900, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    result = train(2, "--data", tmp_path / "x.npy", "--targets", run / "Y.npy", "--layers", "10,20,10", "--epochs", 5,
                   "--output", tmp_path / "never.onnx")
    assert result.returncode != 0
    assert f"rank 1 of 2: error: {tmp_path / 'x.npy'}: row 900, column 3: nan is not a finite number" in result.stderr, result.stderr
    assert not (tmp_path / "never.onnx").exists()


def test_a_build_without_mpi_refuses_to_run_as_one_of_several_ranks(tmp_path):
    other = os.environ.get("MAAS_WITHOUT_MPI")
    if not other:
        pytest.skip("MAAS_WITHOUT_MPI (a maas built without the trait) is set by scripts/test")
    run = FIXTURES / "seed_sgd_minibatch"
    result = subprocess.run([*mpirun_prefix(2), other, "train", "--data", run / "X.npy", "--targets", run / "Y.npy",
                             "--layers", "10,20,10", "--epochs", "1", "--output", tmp_path / "never.onnx"],
                            capture_output=True, text=True, timeout=60, env=mpi_env())
    assert result.returncode != 0
    assert "started as one of 2 MPI ranks, but this maas was built without MPI" in result.stderr, result.stderr
    assert not (tmp_path / "never.onnx").exists()
    # Alone, the same binary trains as always.
    alone = subprocess.run([other, "train", "--data", run / "X.npy", "--targets", run / "Y.npy", "--layers", "10,20,10",
                            "--epochs", "1", "--output", tmp_path / "alone.onnx"], capture_output=True, text=True, timeout=60)
    assert alone.returncode == 0, alone.stderr
