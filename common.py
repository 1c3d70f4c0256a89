"""
What every script needs, training or not, written once: the device and precision, CPU threads and the allocator,
one-line errors instead of tracebacks, JSON files. generate.py, serve.py, eval_benchmarks.py and export_hf.py import
this and nothing of the training code (train_utils.py builds on it).
"""
import ctypes
import json
import math
import os
import sys

import torch
import torch.distributed as dist


def env_default(name, default, cast):
    """Environment overrides (documented in the README), e.g. MINIGPT_TRAIN_SEED=3."""
    value = os.environ.get(name)
    return cast(value) if value not in (None, "") else default


def mps_available():
    """Whether torch can use an Apple GPU (Metal Performance Shaders) here: a Mac with torch built for it."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name, local_rank=0):
    """'auto' -> cuda when there is one, else mps (an Apple GPU), else cpu; a bare 'cuda' gets this process's GPU
    index, which torch.cuda.set_device requires (each torchrun rank takes the GPU of its LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if name == "mps" and not mps_available():
        raise ValueError(f"--device mps: no Apple GPU is available to torch {torch.__version__} (it needs a Mac with "
                         f"Apple silicon or an AMD GPU, macOS 12.3+); pass --device cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device cuda: no CUDA GPU is visible to torch {torch.__version__}; pass --device cpu")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {local_rank} needs GPU {local_rank} but this machine has {torch.cuda.device_count()}: "
                             f"start at most that many with torchrun --nproc_per_node, or pass --device cpu")
        name = f"cuda:{local_rank}"
    return name


def keep_freed_memory(device="cpu", limit=1 << 30):
    """Make glibc keep freed blocks of up to `limit` bytes for reuse instead of handing them back to the OS: by
    default it unmaps or trims them, so the next tensor of that size page-faults every 4 KB page in again
    (34,000-75,000 faults in a small-model bf16 step on CPU, 1,000-1,900 with this: 2-9% faster a step).
    What tcmalloc or jemalloc would do, from the standard library. Only for a CPU `device`: CUDA tensors live in
    torch's own caching allocator, so there it does nothing and returns False."""
    if torch.device(device).type != "cpu" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, limit) and libc.mallopt(M_TRIM_THRESHOLD, limit))
    except (OSError, AttributeError):  # not glibc (musl, ...): the default allocator stays
        return False


def usable_cpus():
    """(logical CPUs this process may use, physical cores among them). Logical CPUs: the affinity mask, capped by a
    cgroup CPU quota (a container limited to 2 CPUs on a 64-CPU host sees 64, and torch starts 64 threads). Physical
    cores: distinct (package, core) pairs in sysfs; two logical CPUs of one core are SMT (hyper-)threads."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    logical = len(cpus)
    for path in ("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"):
        try:
            with open(path) as f:
                fields = f.read().split()
            if path.endswith("cpu.max") and fields[0] != "max":
                logical = min(logical, max(1, math.ceil(int(fields[0]) / int(fields[1]))))
            elif path.endswith("quota_us") and int(fields[0]) > 0:
                with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                    logical = min(logical, max(1, math.ceil(int(fields[0]) / int(f.read()))))
        except (OSError, ValueError, IndexError):
            continue
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id") as f:
                core = f.read().strip()
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id") as f:
                cores.add((f.read().strip(), core))
        except OSError:
            cores.add(("?", cpu))  # no topology (not Linux): count each CPU as a core
    return logical, min(logical, len(cores))


def cpu_threads(requested=None, max_cpu=100):
    """Set torch's CPU threads and say why, in one line: --num-threads, else OMP_NUM_THREADS, else one thread per
    physical core this process may use. torch's own default counts logical CPUs, so on a VM whose 2 vCPUs are the
    two hyper-threads of one core it runs 2 threads that fight over one core's vector units, and every parallel
    region waits for the slower one (the pattern of a step time that swings several-fold); PyTorch's CPU tuning
    guide likewise recommends one thread per physical core."""
    logical, cores = usable_cpus()
    if requested:
        threads, why = requested, "--num-threads"
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads, why = int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    elif max_cpu < 100:
        threads = max(1, math.floor(cores * max_cpu / 100))
        why = f"--max-cpu {max_cpu:g}% of {cores} core{'s' if cores > 1 else ''}"
    else:
        threads = cores
        why = (f"one per physical core: {logical} logical CPUs share {cores}; --num-threads {logical} uses them all"
               if cores < logical else "one per core")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return f"{threads} CPU thread{'s' if threads > 1 else ''} ({why})"


def cpu_has_fast_bf16():
    """Whether this CPU multiplies bf16 matrices natively (AVX-512 BF16 or AMX). Without it oneDNN emulates them:
    measured on an AVX2-only AMD EPYC, 1.3 GFLOP/s in bf16 against 84 in fp32 (on an AVX-512 BF16 Xeon, ~4x fp32)."""
    return getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()


def mps_supports_bf16():
    """Whether this torch and macOS multiply bf16 on the Apple GPU (macOS 14+ with a recent torch); older ones
    raise on the first bf16 kernel, so we try one small matmul."""
    try:
        x = torch.ones(2, 2, dtype=torch.bfloat16, device="mps")
        return bool((x @ x).float().sum().item() == 8)
    except (RuntimeError, TypeError):
        return False


def resolve_dtype(name, device_type):
    if name == "auto":
        if device_type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device_type == "mps":
            if mps_supports_bf16():
                return torch.bfloat16
            print("note: this torch/macOS has no bf16 on the Apple GPU, so training runs in float32", file=sys.stderr)
            return torch.float32
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if name == "float16" and device_type in ("cpu", "mps"):  # fp16 needs loss scaling, which we run on CUDA only
        raise SystemExit(f"error: --dtype float16 is for CUDA; on {device_type} use bfloat16 or float32")
    if name == "bfloat16" and device_type == "mps" and not mps_supports_bf16():
        raise SystemExit("error: --dtype bfloat16: this torch/macOS has no bf16 on the Apple GPU; use --dtype float32")
    dtype = getattr(torch, name)
    warn_slow_cpu_bf16(dtype, device_type)
    return dtype


def warn_slow_cpu_bf16(dtype, device):
    """One line on stderr when bf16 is asked for on a CPU that emulates it."""
    if dtype == torch.bfloat16 and torch.device(device).type == "cpu" and not cpu_has_fast_bf16():
        print("warning: this CPU has no AVX-512 BF16 or AMX, so bf16 matrix multiplies run tens of times slower than "
              "fp32 here; use --dtype float32 (a training script's --dtype auto picks it)", file=sys.stderr)


def read_json(path):
    """The JSON in a file, or None when it is missing or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, default=str)
    os.replace(tmp, path)


def save_checkpoint(path, state):
    """Atomic save: write a temp file, fsync, rename. A kill -9 at any moment leaves the previous file intact."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def duration(seconds):
    """'42 s', '3.5 min', '4.7 hours'."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} hours"


def os_message(e):
    """'out/a_file: a file is in the way of a folder' rather than "[Errno 17] File exists: 'out/a_file'"."""
    if not e.filename or not e.strerror:
        return str(e)  # our own FileNotFoundError(f"{path}: ...") messages already say it
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        blocker = str(e.filename)  # makedirs('f.txt/plots') names the folder; the file in the way is f.txt
        while os.path.dirname(blocker) != blocker and not os.path.isfile(blocker):
            blocker = os.path.dirname(blocker)
        if os.path.isfile(blocker):
            return f"{blocker}: a file is in the way of a folder"
    return f"{e.filename}: {e.strerror[0].lower()}{e.strerror[1:]}"


def cli(main, on_failure=None):
    """Run main() and return what it returns; bad input and data, and files that are missing, unreadable or in the
    way (OSError: the message names the path) end with a one-line message, not a traceback. `on_failure` runs when
    main() did not finish (the training scripts remove the run folders they made: train_utils.cli)."""
    finished = False
    try:
        code = main()
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # rank 0 may still be saving: tearing gloo down under it aborts the other ranks
        finished = True
        return code
    except (ValueError, OSError) as e:
        sys.exit(f"error: {os_message(e) if isinstance(e, OSError) else e}")
    finally:
        if not finished and on_failure is not None:
            on_failure()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
