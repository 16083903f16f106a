"""The header every stored benchmark starts with: when, what, and where, from the book's one description of a machine
(`sd_book.train.machine_info`: CPU model as lscpu names it, cores, threads, load, GPU, torch), plus the CPU's widest
vector extension, which decides which oneDNN kernels run."""
import os, platform, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from sd_book.train import machine_info  # noqa: E402


def cpu_flags() -> str:
    "The widest x86 vector extension present (avx512f, avx2, ...) or the architecture's name, and the bf16 instructions if any (avx512_bf16, amx_bf16)."
    try: flags = next(l for l in open('/proc/cpuinfo') if l.startswith('flags')).split()
    except (OSError, StopIteration): return platform.machine()
    return '+'.join([next((f for f in ('avx512f', 'avx2', 'avx') if f in flags), platform.machine())] + [f for f in ('avx512_bf16', 'amx_bf16') if f in flags])


def header(what: str) -> str:
    "One line: date, what is measured, torch version, host, CPU model and vector width, cores, threads used, load average, GPU if any."
    m = machine_info()
    gpu = f' | GPU {m["gpu"]}' if m['gpu'] else ''
    return (f'{time.strftime("%Y-%m-%d %H:%M %Z")} | {what} | torch {m["torch"]} | machine {platform.node()} '
            f'{platform.machine()} | CPU {m["cpu"]} ({cpu_flags()}) | {m["cores"]} CPUs, threads {m["threads"]} | '
            f'load avg {m["load_avg"]}{gpu}')
