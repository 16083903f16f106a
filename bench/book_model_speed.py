"""Seconds per image of the book's own model (chapter 13, `sd_book.BOOK_MODEL`): our `StableDiffusion` against diffusers'
`StableDiffusionPipeline` on the same folder, side by side in one process, from the prompt to the image.

    python bench/book_model_speed.py                       # threads 1 and 2, 7 rounds: about 1 min on 2 quiet cores
    python bench/book_model_speed.py --model runs/ch13/book --threads 2 --rounds 3

One image per call (batch 1), the model's own size (32 px), 20 DDIM steps, guidance 3 (so the UNet runs on a batch of
two, the prompt and the empty prompt), the text encoder and the decoder included. Both pipelines load the folder in
float32 (it is stored in float16). Each round runs ours and theirs in turn, the order alternating; we print the median
wall and CPU seconds per image and the ratio ours / diffusers. Not a test: it asserts nothing.
"""
import argparse, statistics, sys, time, warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ldm_memory import Tee, results_path, timed  # noqa: E402
from machine import header  # noqa: E402
import sd_book  # noqa: E402
from sd_book.pipeline import StableDiffusion  # noqa: E402

PROMPT = 'a green seven on a white background'


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default=sd_book.BOOK_MODEL, help='a pipeline folder (default: sd_book.BOOK_MODEL)')
    p.add_argument('--threads', default='1,2', help='torch thread counts to measure, e.g. 1,2')
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--guidance', type=float, default=3.0)
    a = p.parse_args()
    if a.model is None or not (Path(a.model) / 'model_index.json').is_file():
        sys.exit(f'--model: {a.model!r} is not a pipeline folder (sd_book.BOOK_MODEL is None until chapter 13 ships the model)')
    import diffusers, transformers
    transformers.logging.set_verbosity_error(); diffusers.logging.set_verbosity_error(); diffusers.utils.logging.disable_progress_bar()
    torch.set_flush_denormal(True)
    ours = StableDiffusion.from_pretrained(a.model, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        theirs = diffusers.StableDiffusionPipeline.from_pretrained(a.model, safety_checker=None, requires_safety_checker=False)
    theirs.set_progress_bar_config(disable=True)
    size = ours.default_size
    run = {'ours': lambda: ours(PROMPT, steps=a.steps, guidance_scale=a.guidance, sampler='ddim', seed=0, output_type='np', progress=False),
           'diffusers': lambda: theirs(PROMPT, num_inference_steps=a.steps, guidance_scale=a.guidance, height=size, width=size,
                                       generator=torch.Generator().manual_seed(0), output_type='np')}
    out = Tee()
    out(f'model {a.model}: {size}x{size} px, {a.steps} DDIM steps, guidance {a.guidance}, batch 1, prompt {PROMPT!r}')
    out(f"{'threads':>7}{'ours s/image':>14}{'(CPU s)':>9}{'diffusers s/image':>19}{'(CPU s)':>9}{'ours / diffusers':>18}")
    for n in [int(t) for t in a.threads.split(',')]:
        torch.set_num_threads(n)
        with torch.inference_mode():
            for f in run.values(): f()  # warm-up
            times = {k: [] for k in run}
            for r in range(a.rounds):
                for k in (list(run) if r % 2 == 0 else list(run)[::-1]):
                    times[k].append(timed(run[k], 'cpu'))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
        out(f"{n:7}{med['ours'][0]:14.3f}{med['ours'][1]:9.3f}{med['diffusers'][0]:19.3f}{med['diffusers'][1]:9.3f}"
            f"{med['ours'][0] / med['diffusers'][0]:18.2f}")
    out.write(results_path('book_model_speed', 'cpu', False), [header('book model s/image, ours vs diffusers'), '$ ' + ' '.join(['python'] + sys.argv)])


if __name__ == '__main__':
    main()
