"""Run chapter notebooks top to bottom and save their outputs in place, so the site shows them.

The site renders the outputs stored in the notebooks (Quarto and smalldocs both render without executing), so
after changing a chapter, run it here, look at it, then `nbdev_clean` and commit. Cells flagged with a test flag
(`slow`, `gpu`, `weights`) are skipped exactly as `nbdev_test` skips them, unless named in --flags.

    python tools/run_nbs.py nbs/03_attention.ipynb [more.ipynb ...] [--flags "slow"]
"""
import argparse, os, sys, time
from pathlib import Path

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.process import extract_directives


def run_nb(fn: Path, flags: set) -> float:
    "Execute `fn` skipping flagged cells (as nbdev_test does) and write the outputs back; return seconds."
    nb = read_nb(fn)  # the raw notebook: its `#|` directives must survive the round trip
    skip = set(get_config().tst_flags.split()) - flags

    def no_eval(cell):
        if cell.cell_type != 'code': return True
        d = extract_directives(cell, remove=False)
        if d.get('eval:', [''])[0].lower() == 'false': return True
        if skip & d.keys():
            cell.outputs, cell.execution_count = [], None  # a skipped cell keeps no stale output
            return True
        return False

    os.environ.setdefault('IN_TEST', '1')
    t0, sh = time.time(), CaptureShell(fn)
    with working_directory(fn.parent):
        sh.run_all(nb, exc_stop=True, preproc=no_eval)
    write_nb(nb, fn)
    return time.time() - t0


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('nbs', nargs='+', type=Path)
    p.add_argument('--flags', default='', help='space-separated test flags to run anyway (e.g. "slow")')
    a = p.parse_args()
    sys.path.insert(0, str(get_config().config_path))
    for fn in a.nbs:
        print(f'{fn}: {run_nb(fn.absolute(), set(a.flags.split())):.1f}s', flush=True)
