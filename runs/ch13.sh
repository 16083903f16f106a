#!/usr/bin/env bash
# Chapter 13's training runs: the book's own Stable Diffusion, from scratch (nbs/13_text_to_image.ipynb shows what they
# write). Run in this order; each one resumes where it was killed (--resume) and re-measures a finished run.
#   bash runs/ch11.sh kl_no_gan           # the autoencoder (chapter 11's no-GAN row: the best judge ceiling measured)
#   bash runs/ch13.sh t2i t2i_more book ship  # the text→image model (12,000 steps, then 6,000 more), the inpainting
#                                              # fine-tune, the package data
#   bash runs/ch13.sh guidance            # the text→image model judged at higher guidance and at sd-book generate's defaults
#   bash runs/ch13.sh ae8 ae16            # the other first-stage options of the chapter's ceiling table
# The autoencoders ran with OMP_NUM_THREADS=1, two at a time; t2i with 2 threads (each eval.json names its machine).
# t2i is the cpu preset's 12,000-step cosine schedule; t2i_more resumes the finished run for 6,000 more steps under a
# second cosine over 18,000 (--resume takes the step count from the command line: the learning rate restarts at 1.6e-4
# and decays to zero again), because the held-out object was still rising when the first schedule ended (chapter 13).
# The stored t2i run began under the preset's earlier 8,000-step cosine schedule and was resumed at step 2,500 under
# 12,000, so its learning rate stepped from 4.15e-4 to 4.60e-4 there. Steps 8,800-8,850 shared the two cores with other
# jobs (12.8 min lost; log.jsonl shows the gap): its first 12,000 steps' 144 min are about 131 on quiet cores. Steps
# 12,000-18,000 ran beside other jobs too (53.4 min of wall time; about 35 on quiet cores, at 0.35 s a step).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
SD_BOOK="${SD_BOOK:-sd-book}"
AE="${AE:-runs/ch11/kl_no_gan}"  # chapter 11's no-GAN autoencoder: the best judge ceiling the chapter measured
declare -A RUNS=(
  [ae8]="train autoencoder --data shapes --kind kl --preset cpu --latent-channels 8 --no-gan --out runs/ch13/ae8"
  [ae16]="train autoencoder --data shapes --kind kl --preset cpu --latent-channels 16 --no-gan --out runs/ch13/ae16"
  [t2i]="train ldm --cond text --data shapes --preset cpu --objective v --autoencoder $AE --out runs/ch13/t2i"
  [t2i_more]="train ldm --cond text --data shapes --preset cpu --objective v --autoencoder $AE --out runs/ch13/t2i --steps 18000"
  [book]="train ldm --cond text --data shapes --preset cpu --autoencoder $AE --inpaint-from runs/ch13/t2i --out runs/ch13/book"
)
for name in "$@"; do
  if [ "$name" = guidance ]; then  # the text→image run's EMA weights judged at other settings: runs/ch13/t2i/guidance.json
    python - <<'PY'
import json, time, torch
from sd_book.book_model import TextUNet, evaluate_prompts
from sd_book.loading import load_pretrained
from sd_book.train import machine
src = load_pretrained('runs/ch13/t2i', verbose=False); tok = src['tokenizer']
net, out = TextUNet(src['unet'], src['text_encoder'], tok([''])[0]).eval(), []
# eval.json's setting (guidance 3, 20 DDIM steps), higher guidance, and `sd-book generate`'s defaults (7.5, 30 DPM-Solver++ steps)
for w, steps, sampler in ((3.0, 20, 'ddim'), (5.0, 20, 'ddim'), (7.5, 20, 'ddim'), (7.5, 30, 'dpmpp_2m')):
    t0 = time.perf_counter()
    out.append(dict(guidance=w, steps=steps, sampler=sampler, per_split=500, seconds=0.0,
                    **evaluate_prompts(net, src['vae'], tok, 'v', 500, w, steps, sampler)))
    out[-1]['seconds'] = round(time.perf_counter() - t0, 1); print(out[-1], flush=True)
json.dump(dict(weights='runs/ch13/t2i (EMA)', machine=machine(), settings=out), open('runs/ch13/t2i/guidance.json', 'w'), indent=2)
PY
    continue
  fi
  if [ "$name" = ship ]; then  # float16 package data: the folder `sd_book.BOOK_MODEL` names
    python - <<'PY'
import shutil, torch
from sd_book.pipeline import StableDiffusion
from sd_book.loading import load_unet
from sd_book.book_model import export_pipeline
book, dst = StableDiffusion.from_pretrained('runs/ch13/book', verbose=False), 'sd_book/assets/book_model'
shutil.rmtree(dst, ignore_errors=True)
export_pipeline(dst, book.unet, book.vae, book.text_encoder, book.tokenizer, 'v' if book.scheduler_config.prediction_type == 'v_prediction' else 'eps',
                book.default_size, inpaint_unet=load_unet('runs/ch13/book/unet_inpaint'), dtype=torch.float16)
print(dst, 'written')
PY
    continue
  fi
  echo "\$ $SD_BOOK ${RUNS[$name]}"
  $SD_BOOK ${RUNS[$name]} --resume --no-progress
done
