"""The header every stored benchmark starts with: when, where (CPU model, cores, threads, load), which torch."""
import os, platform, subprocess, time

import torch


def cpu_model() -> str:
    "The CPU's model name as `lscpu` prints it (else /proc/cpuinfo, else platform.processor())."
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith('Model name:'): return line.split(':', 1)[1].strip()
    except (OSError, subprocess.SubprocessError): pass
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or 'unknown CPU'


def cpu_flags() -> str:
    "The widest x86 vector extension present (avx512f, avx2, ...) or the architecture's name."
    try: flags = next(l for l in open('/proc/cpuinfo') if l.startswith('flags')).split()
    except (OSError, StopIteration): return platform.machine()
    return next((f for f in ('avx512f', 'avx2', 'avx') if f in flags), platform.machine())


def header(what: str) -> str:
    "One line: date, torch version, CPU model, its vector width, cores, threads used, load average."
    return (f'{time.strftime("%Y-%m-%d %H:%M %Z")} | {what} | torch {torch.__version__} | machine {platform.node()} '
            f'{platform.machine()} | CPU {cpu_model()} ({cpu_flags()}) | {os.cpu_count()} CPUs, '
            f'threads {torch.get_num_threads()} | load avg {os.getloadavg()[0]:.1f}')
